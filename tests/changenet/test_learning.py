"""The reference runtime learns a synthetic AOI workspace at demo size (64 px) on a CPU in a few epochs.

A regression guard for the small-image path: train with the baseline spec's augmentation on held-in boards,
score boards it never saw, and require a KPI FAR at 100 % defect recall far below chance (random scores flag
nearly every PASS row at 100 % recall), computed by the pipeline's own FAR code on the inference CSV.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from aoi_pipeline.changenet.checkpoints import LATEST_NAME
from aoi_pipeline.core.far import ScoredRows, far_at_recall
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.yaml_io import dump_spec
from aoi_pipeline.core.workspace import KPI, MINING_POOL, TRAINING, VALIDATION, Workspace
from aoi_pipeline.synth.workspace import CSV_COLUMNS, SynthSpec, write_workspace

SIZE = 64


def _combined_csv(workspace: Workspace, names: tuple[str, ...], out: Path) -> Path:
    rows = []
    for name in names:
        with workspace.csv_path(name).open(newline="", encoding="utf-8") as handle:
            rows += list(csv.DictReader(handle))
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out


def _spec(workspace: Workspace, train_csv: Path, results: Path) -> Path:
    spec = baseline_spec()
    classify = spec["dataset"]["classify"]
    images = str(workspace.images_dir)
    for block, csv_path in (
        ("train_dataset", train_csv),
        ("validation_dataset", workspace.csv_path(VALIDATION)),
        ("test_dataset", workspace.csv_path(KPI)),
        ("infer_dataset", workspace.csv_path(KPI)),
    ):
        classify[block] = {"csv_path": str(csv_path), "images_dir": images}
    classify.update(image_ext=".png", image_width=SIZE, image_height=SIZE, batch_size=16, workers=1)
    classify["input_map"] = {"SolderLight": 0}
    spec["results_dir"] = str(results)
    spec["train"].update(num_epochs=4, validation_interval=4, checkpoint_interval=4, seed=5)
    spec["train"]["optim"]["lr"] = 2e-3
    spec["model"]["classify"]["embed_dec"] = 8
    path = results.parent / "spec.yaml"
    dump_spec(spec, path)
    return path


@pytest.mark.slow
def test_a_short_cpu_training_beats_chance_by_far_on_unseen_boards(tmp_path: Path, run_cli) -> None:
    summary = write_workspace(tmp_path / "ws", SynthSpec(boards=24, size=SIZE, seed=11))
    workspace = Workspace.at(summary.root)
    train_csv = _combined_csv(workspace, (TRAINING, MINING_POOL), tmp_path / "train.csv")
    results = tmp_path / "results"
    spec = _spec(workspace, train_csv, results)
    common = ["-e", spec, "reference.device=cpu"]
    assert run_cli("train", *common)[0] == 0
    card = json.loads((results / "train" / "reference_model.json").read_text(encoding="utf-8"))
    assert card["runtime"] == "reference" and "early-fusion" in card["description"]
    assert "c_radio" not in card["description"] and card["parameters"] > 100_000
    inference = results / "inference"
    checkpoint = results / "train" / LATEST_NAME
    assert (
        run_cli("inference", *common, f"inference.checkpoint={checkpoint}", f"inference.results_dir={inference}")[0]
        == 0
    )
    with (inference / "inference.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    scored = ScoredRows(
        labels=tuple(row["label"] for row in rows), scores=np.array([float(r["siamese_score"]) for r in rows])
    )
    assert scored.is_pass.sum() >= 40 and (~scored.is_pass).sum() >= 20
    # Random scores flag about n_defect / (n_defect + 1) of PASS rows at 100 % recall (over 95 % here).
    assert far_at_recall(scored, 100.0).far_pct < 25.0
