"""Training and scoring on a CUDA GPU with bf16 autocast (skipped where no GPU is visible)."""

from __future__ import annotations

import csv

import pytest
import torch
from changenet_workspace import build_workspace, status_records

pytestmark = pytest.mark.gpu

LATEST = "changenet_model_classify_latest.pth"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_and_scores_on_cuda_with_amp(tmp_path, run_cli) -> None:
    ws = build_workspace(tmp_path / "ws", pairs=64, size=64)
    code, out, _ = run_cli("train", "-e", ws.spec_path, "reference.device=cuda", "train.num_epochs=2")
    assert code == 0
    assert "autocast torch.bfloat16" in out
    assert "onto cuda" in out
    train_dir = ws.results / "train"
    assert (train_dir / "model_epoch_001_step_00016.pth").is_file()  # 64 rows / batch 8 = 8 steps an epoch
    assert (train_dir / LATEST).is_file()
    records = status_records(train_dir)
    assert records[-1]["status"] == "SUCCESS"
    assert all(r["kpi"]["val_loss"] is not None for r in records if "val_loss" in r.get("kpi", {}))
    code, _, _ = run_cli(
        "inference", "-e", ws.spec_path, "reference.device=cuda", f"inference.checkpoint={train_dir / LATEST}"
    )
    assert code == 0
    with (ws.results / "inference" / "inference.csv").open(newline="") as handle:
        scores = [float(row["siamese_score"]) for row in csv.DictReader(handle)]
    assert len(scores) == 12 and all(0.0 <= s <= 1.0 for s in scores)
    # The GPU checkpoint scores on a CPU too.
    code, _, _ = run_cli(
        "inference",
        "-e",
        ws.spec_path,
        "reference.device=cpu",
        f"inference.checkpoint={train_dir / LATEST}",
        f"inference.results_dir={ws.results / 'cpu_inference'}",
    )
    assert code == 0


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_with_cuda_graphs(tmp_path, run_cli) -> None:
    ws = build_workspace(tmp_path / "ws", pairs=64, size=64)
    code, _, _ = run_cli(
        "train", "-e", ws.spec_path, "reference.device=cuda", "reference.compile=reduce-overhead", "train.num_epochs=2"
    )
    assert code == 0
    records = status_records(ws.results / "train")
    losses = [r["kpi"]["train_loss"] for r in records if r["message"] == "Training loop in progress"]
    assert len(losses) == 2 and all(loss is not None and loss > 0 for loss in losses)
    assert (ws.results / "train" / "model_epoch_001_step_00016.pth").is_file()
