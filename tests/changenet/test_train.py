"""Training behaviour: warm start, resume, refusals, the checkpointer, determinism and the LR schedule."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from changenet_workspace import Workspace, status_records

from aoi_pipeline.changenet.optim import lr_factor

LATEST = "changenet_model_classify_latest.pth"


def first_train_loss(results_dir: Path) -> float:
    progress = [r for r in status_records(results_dir) if r["message"] == "Training loop in progress"]
    return progress[0]["kpi"]["train_loss"]


def test_warm_start_changes_the_first_loss_and_restarts_the_epoch_count(
    trained: Workspace, workspace: Workspace, run_cli
) -> None:
    scratch = workspace.results / "scratch"
    warm = workspace.results / "warm"
    code, _, _ = run_cli("train", "-e", workspace.spec_path, "train.num_epochs=1", f"train.results_dir={scratch}")
    assert code == 0
    code, _, _ = run_cli(
        "train",
        "-e",
        workspace.spec_path,
        "train.num_epochs=1",
        f"train.results_dir={warm}",
        f"train.pretrained_model_path={trained.results / 'train' / LATEST}",
    )
    assert code == 0
    assert first_train_loss(warm) != first_train_loss(scratch)
    assert (warm / "model_epoch_000_step_00003.pth").is_file()  # a fresh epoch and step counter


def test_resume_continues_epochs_steps_and_optimiser_state(workspace: Workspace, run_cli) -> None:
    train_dir = workspace.results / "train"
    assert run_cli("train", "-e", workspace.spec_path, "train.num_epochs=1")[0] == 0
    first = torch.load(train_dir / "model_epoch_000_step_00003.pth", weights_only=True)
    code, _, _ = run_cli(
        "train",
        "-e",
        workspace.spec_path,
        "train.num_epochs=2",
        f"train.resume_training_checkpoint_path={train_dir / LATEST}",
    )
    assert code == 0
    resumed = torch.load(train_dir / "model_epoch_001_step_00006.pth", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 6
    # AdamW counts its steps per parameter: 3 before the resume plus 3 after, not a fresh 3.
    steps = {float(state["step"]) for state in resumed["optimizer"]["state"].values()}
    assert steps == {6.0}
    assert float(first["optimizer"]["state"][0]["step"]) == 3.0
    records = status_records(train_dir)
    assert [r["status"] for r in records].count("SUCCESS") == 2  # status.json is appended on resume
    assert records[-2]["epoch"] == 1


def test_resume_with_nothing_left_fails_without_writing(trained: Workspace, run_cli, tmp_path: Path) -> None:
    copy = tmp_path / "train"
    shutil.copytree(trained.results / "train", copy)
    before = {path.name: path.stat().st_mtime_ns for path in copy.iterdir()}
    code, out, err = run_cli(
        "train",
        "-e",
        trained.spec_path,
        f"train.results_dir={copy}",
        f"train.resume_training_checkpoint_path={copy / LATEST}",
    )
    assert code == 1
    assert "nothing is left to train" in err
    assert "train.pretrained_model_path" in err  # the fix names the warm-start key
    assert '"status": "FAILURE"' in out
    assert {path.name: path.stat().st_mtime_ns for path in copy.iterdir()} == before


def test_checkpoints_of_an_earlier_run_are_never_resumed_silently(trained: Workspace, run_cli) -> None:
    code, _, err = run_cli("train", "-e", trained.spec_path)
    assert code == 1
    assert "already holds checkpoints" in err
    assert "train.resume_training_checkpoint_path" in err


def test_checkpointer_keeps_the_best_validation_epoch(workspace: Workspace, run_cli) -> None:
    code, _, _ = run_cli(
        "train",
        "-e",
        workspace.spec_path,
        "train.num_epochs=3",
        "train.checkpoint_interval=3",
        "train.checkpointer.enable_topk=true",
        "train.checkpointer.monitor=val_loss",
        "train.checkpointer.mode=min",
        "train.checkpointer.save_top_k=1",
    )
    assert code == 0
    train_dir = workspace.results / "train"
    losses = {r["epoch"]: r["kpi"]["val_loss"] for r in status_records(train_dir) if "val_loss" in r.get("kpi", {})}
    best_epoch = min(losses, key=lambda epoch: (losses[epoch], epoch))  # status epochs name the checkpoint files
    assert sorted(p.name for p in train_dir.glob("model_best_*.pth")) == [f"model_best_{best_epoch:03d}.pth"]
    assert sorted(p.name for p in train_dir.glob("model_epoch_*.pth")) == ["model_epoch_002_step_00009.pth"]


@pytest.mark.slow
def test_same_seed_gives_the_same_scores(tmp_path: Path, run_cli) -> None:
    from changenet_workspace import build_workspace

    ws = build_workspace(tmp_path / "ws")

    def scores(name: str, seed: int) -> list[str]:
        results = tmp_path / name
        # Determinism is promised on a CPU; GPU kernels with atomics may differ in the last bits.
        args = ["-e", ws.spec_path, "train.num_epochs=1", f"train.seed={seed}", "reference.device=cpu"]
        assert run_cli("train", *args, f"train.results_dir={results}")[0] == 0
        assert (
            run_cli(
                "inference",
                *args,
                f"inference.checkpoint={results / LATEST}",
                f"inference.results_dir={results / 'inference'}",
            )[0]
            == 0
        )
        with (results / "inference" / "inference.csv").open(newline="") as handle:
            return [row["siamese_score"] for row in csv.DictReader(handle)]

    first = scores("a", seed=11)
    assert scores("b", seed=11) == first
    assert scores("c", seed=12) != first


@pytest.mark.parametrize(
    ("policy", "epoch", "epochs", "expected"),
    [
        ("linear", 0, 10, 1.0),
        ("linear", 5, 10, 1.0 - 5 / 11),
        ("linear", 9, 10, 2 / 11),
        ("step", 2, 10, 1.0),
        ("step", 3, 10, 0.1),
        ("step", 9, 10, 0.001),
        ("step", 1, 2, 0.1),  # 2 // 3 == 0 epochs per step: TAO's StepLR would fail; one epoch per step here
    ],
)
def test_learning_rate_policies_match_tao(policy: str, epoch: int, epochs: int, expected: float) -> None:
    assert lr_factor(policy, epoch, epochs) == pytest.approx(expected)
