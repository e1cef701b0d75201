"""Checkpoint discovery in a train results dir, and the latest / best-validation choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from aoi_pipeline.jobs import (
    LATEST,
    Checkpoint,
    best_val_checkpoint,
    discover_checkpoints,
    latest_checkpoint,
    new_checkpoints,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


def periodic(train_dir: Path, epoch: int, step: int) -> Path:
    return touch(train_dir / f"model_epoch_{epoch:03d}_step_{step:05d}.pth")


def write_history(train_dir: Path, val: dict[int, dict[str, float]]) -> None:
    lines = [{"status": "STARTED"}]
    lines += [{"status": "RUNNING", "epoch": epoch, "max_epoch": 5, "kpi": kpis} for epoch, kpis in val.items()]
    lines.append({"status": "SUCCESS"})
    (train_dir / "status.json").write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.fixture
def train_dir(tmp_path: Path) -> Path:
    """Six epochs, periodic checkpoints at epochs 1, 3 and 5 (10 steps each), validation every epoch.

    The lowest val_loss (0.30) is at epoch 4, which has no checkpoint; among checkpointed epochs the lowest
    is epoch 3 (0.50). The lowest val_far is at epoch 5 (8.0); the highest val_acc at epoch 1 (0.95).
    """
    directory = tmp_path / "train"
    for epoch in (1, 3, 5):
        periodic(directory, epoch, (epoch + 1) * 10)
    write_history(
        directory,
        {
            0: {"val_loss": 0.90, "val_far": 50.0, "val_acc": 0.50},
            1: {"val_loss": 0.70, "val_far": 30.0, "val_acc": 0.95},
            2: {"val_loss": 0.60, "val_far": 25.0, "val_acc": 0.80},
            3: {"val_loss": 0.50, "val_far": 20.0, "val_acc": 0.85},
            4: {"val_loss": 0.30, "val_far": 10.0, "val_acc": 0.90},
            5: {"val_loss": 0.55, "val_far": 8.0, "val_acc": 0.70},
        },
    )
    (directory / "experiment.yaml").write_text("train:\n  num_epochs: 6\n")
    return directory


def test_discovery_lists_periodic_best_and_latest_with_their_epochs(train_dir):
    touch(train_dir / "model_best_004.pth")
    (train_dir / LATEST).symlink_to(train_dir / "model_epoch_005_step_00060.pth")
    touch(train_dir / "model_epoch_001_step_00020.pth.tmp")
    (train_dir / "model_epoch_009_step_00001.pth").mkdir()

    found = discover_checkpoints(train_dir)

    assert found == [
        Checkpoint(train_dir / "model_epoch_001_step_00020.pth", 1, 20, "periodic"),
        Checkpoint(train_dir / "model_epoch_003_step_00040.pth", 3, 40, "periodic"),
        Checkpoint(train_dir / "model_epoch_005_step_00060.pth", 5, 60, "periodic"),
        Checkpoint(train_dir / "model_best_004.pth", 4, None, "best"),
        Checkpoint(train_dir / LATEST, 5, 60, "latest"),
    ]


def test_a_dangling_latest_link_is_not_a_checkpoint(tmp_path):
    (tmp_path / LATEST).symlink_to(tmp_path / "model_epoch_000_step_00001.pth")

    assert discover_checkpoints(tmp_path) == []
    assert discover_checkpoints(tmp_path / "missing") == []


def test_latest_is_the_highest_periodic_checkpoint(train_dir):
    periodic(train_dir, 5, 59)

    assert latest_checkpoint(train_dir) == Checkpoint(train_dir / "model_epoch_005_step_00060.pth", 5, 60, "periodic")


def test_latest_falls_back_to_the_latest_file_then_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None

    touch(tmp_path / LATEST)

    assert latest_checkpoint(tmp_path) == Checkpoint(tmp_path / LATEST, None, None, "latest")


def test_best_val_skips_the_best_epoch_that_has_no_checkpoint(train_dir):
    best = best_val_checkpoint(train_dir)

    assert best is not None
    assert (best.epoch, best.kind) == (3, "periodic")


@pytest.mark.parametrize(("monitor", "mode", "epoch"), [("val_far", "min", 5), ("val_acc", "max", 1)])
def test_best_val_follows_the_monitor_and_mode(train_dir, monitor, mode, epoch):
    best = best_val_checkpoint(train_dir, monitor=monitor, mode=mode)

    assert best is not None
    assert best.epoch == epoch


def test_equal_values_go_to_the_earlier_epoch(tmp_path):
    for epoch in (0, 1):
        periodic(tmp_path, epoch, epoch + 1)
    write_history(tmp_path, {0: {"val_loss": 0.4}, 1: {"val_loss": 0.4, "val_far": 1.0}})

    best = best_val_checkpoint(tmp_path)

    assert best is not None
    assert best.epoch == 0


def test_the_checkpointer_best_file_wins_when_present(train_dir):
    touch(train_dir / "model_best_004.pth")

    assert best_val_checkpoint(train_dir) == Checkpoint(train_dir / "model_best_004.pth", 4, None, "best")


def test_a_best_file_for_another_monitor_is_not_used(train_dir):
    touch(train_dir / "model_best_004.pth")
    (train_dir / "spec.yaml").write_text(yaml.safe_dump({"train": {"checkpointer": {"monitor": "val_far"}}}))

    best = best_val_checkpoint(train_dir, monitor="val_loss")

    assert best is not None
    assert (best.epoch, best.kind) == (3, "periodic")


def test_several_best_files_resolve_by_history(train_dir):
    for epoch in (1, 2, 3):
        touch(train_dir / f"model_best_{epoch:03d}.pth")

    best = best_val_checkpoint(train_dir)

    assert best == Checkpoint(train_dir / "model_best_003.pth", 3, None, "best")


def test_no_history_or_no_checkpoint_means_no_best(tmp_path):
    periodic(tmp_path, 0, 5)
    assert best_val_checkpoint(tmp_path) is None

    write_history(tmp_path, {1: {"val_loss": 0.1}})
    assert best_val_checkpoint(tmp_path) is None


def test_new_checkpoints_are_those_not_in_the_snapshot(train_dir):
    before = {checkpoint.path for checkpoint in discover_checkpoints(train_dir)}
    assert new_checkpoints(train_dir, before) == []

    added = periodic(train_dir, 7, 80)

    assert new_checkpoints(train_dir, before) == [Checkpoint(added, 7, 80, "periodic")]
