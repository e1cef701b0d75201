"""Scoring actions: inference.csv, evaluate metrics, embeddings, and the architecture check."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from changenet_workspace import Workspace, status_records

LATEST = "changenet_model_classify_latest.pth"


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def inference_csv(trained: Workspace) -> Path:
    from aoi_pipeline.changenet.cli import main

    checkpoint = trained.results / "train" / LATEST
    assert main(["inference", "-e", str(trained.spec_path), f"inference.checkpoint={checkpoint}"]) == 0
    return trained.results / "inference" / "inference.csv"


def test_inference_keeps_every_row_and_column_in_order(trained: Workspace, inference_csv: Path) -> None:
    input_columns, input_rows = read_csv(trained.test_csv)
    columns, rows = read_csv(inference_csv)
    assert columns == [*input_columns, "siamese_score"]
    assert [{k: row[k] for k in input_columns} for row in rows] == input_rows
    scores = [float(row["siamese_score"]) for row in rows]
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert status_records(inference_csv.parent)[-1]["status"] == "SUCCESS"


def test_evaluate_reports_tao_metrics_and_far(trained: Workspace, inference_csv: Path, run_cli) -> None:
    checkpoint = trained.results / "train" / LATEST
    code, _, _ = run_cli("evaluate", "-e", trained.spec_path, f"evaluate.checkpoint={checkpoint}")
    assert code == 0
    metrics = json.loads((trained.results / "evaluate" / "evaluation.json").read_text())
    _, rows = read_csv(inference_csv)  # the same checkpoint on the same CSV (test = infer dataset here)
    scores = np.array([float(row["siamese_score"]) for row in rows])
    defect = np.array([row["label"] != "PASS" for row in rows])
    # FAR at 100 % recall by brute force: PASS rows scoring at least the weakest defect.
    weakest = scores[defect].min()
    assert metrics["far_pct"] == pytest.approx(100.0 * np.mean(scores[~defect] >= weakest), abs=1e-6)
    # TAO's test metrics at eval_margin 0.3, as shares of all rows.
    flagged = scores > 0.3
    assert metrics["test_acc"] == pytest.approx(100.0 * np.mean(flagged == defect), abs=1e-6)
    assert metrics["test_fpr"] == pytest.approx(100.0 * np.mean(flagged & ~defect), abs=1e-6)
    assert metrics["test_fnr"] == pytest.approx(100.0 * np.mean(~flagged & defect), abs=1e-6)
    assert metrics["defect_acc"] == pytest.approx(100.0 * np.mean(flagged[defect]), abs=1e-6)
    kpi = status_records(trained.results / "evaluate")[-2]["kpi"]
    assert kpi["test_acc"] == pytest.approx(metrics["test_acc"])


def test_evaluate_reads_its_recall_from_the_reference_section(trained: Workspace, run_cli, tmp_path) -> None:
    checkpoint = trained.results / "train" / LATEST
    code, _, _ = run_cli(
        "evaluate",
        "-e",
        trained.spec_path,
        f"evaluate.checkpoint={checkpoint}",
        f"evaluate.results_dir={tmp_path}",
        "reference.recall_pct=50",
    )
    assert code == 0
    metrics = json.loads((tmp_path / "evaluation.json").read_text())
    assert metrics["requested_recall_pct"] == 50.0
    assert metrics["recall_pct"] >= 50.0


def test_embed_writes_unit_rows_and_an_index(trained: Workspace, run_cli) -> None:
    checkpoint = trained.results / "train" / LATEST
    code, _, _ = run_cli(
        "embed",
        "-e",
        trained.spec_path,
        f"embed.checkpoint={checkpoint}",
        f"embed.csv_path={trained.train_csv}",
        f"embed.images_dir={trained.images}",
    )
    assert code == 0
    embeddings = np.load(trained.results / "embed" / "embeddings.npy")
    input_columns, input_rows = read_csv(trained.train_csv)
    assert embeddings.dtype == np.float32
    assert embeddings.shape[0] == len(input_rows) and embeddings.shape[1] > 1
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    columns, rows = read_csv(trained.results / "embed" / "embeddings_index.csv")
    assert columns == ["row_index", *input_columns, "siamese_score"]
    assert [int(row["row_index"]) for row in rows] == list(range(len(input_rows)))
    assert all(0.0 <= float(row["siamese_score"]) <= 1.0 for row in rows)
    assert [row["input_path"] for row in rows] == [row["input_path"] for row in input_rows]


def test_embed_needs_its_checkpoint(trained: Workspace, run_cli) -> None:
    code, _, err = run_cli("embed", "-e", trained.spec_path, f"embed.csv_path={trained.train_csv}")
    assert code == 1
    assert "embed.checkpoint" in err
    assert "embed.images_dir" in err


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.classify.difference_module=euclidean", "model.classify.difference_module"),
        ("dataset.classify.image_width=48", "dataset.classify.image_width"),
    ],
)
def test_an_architecture_mismatch_is_refused(trained: Workspace, run_cli, tmp_path, override: str, key: str) -> None:
    checkpoint = trained.results / "train" / LATEST
    code, _, err = run_cli(
        "inference",
        "-e",
        trained.spec_path,
        f"inference.checkpoint={checkpoint}",
        f"inference.results_dir={tmp_path / 'out'}",
        override,
    )
    assert code == 1
    assert key in err
    assert "checkpoint" in err
    assert not (tmp_path / "out").exists()


def test_a_foreign_checkpoint_is_refused(trained: Workspace, run_cli, tmp_path) -> None:
    foreign = tmp_path / "tao_model.pth"
    import torch

    torch.save({"state_dict": {}, "tao_model": "visual_changenet_classify"}, foreign)
    code, _, err = run_cli("inference", "-e", trained.spec_path, f"inference.checkpoint={foreign}")
    assert code == 1
    assert str(foreign) in err
    assert "not a checkpoint of this runtime" in err
