"""Checkpoint names, safe loading and TAO-style status lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from aoi_pipeline.changenet.checkpoints import (
    best_name,
    load_checkpoint,
    periodic_checkpoints,
    periodic_name,
    save_checkpoint,
)
from aoi_pipeline.changenet.status_writer import FAILURE, STARTED, StatusLog, read_status
from aoi_pipeline.errors import SpecError


def test_periodic_names_follow_tao() -> None:
    assert periodic_name(0, 12) == "model_epoch_000_step_00012.pth"
    assert periodic_name(123, 123456) == "model_epoch_123_step_123456.pth"


def test_best_names_fill_the_checkpointer_pattern() -> None:
    values = {"epoch": 4, "step": 60, "val_loss": 0.25}
    assert best_name("model_best_{epoch:03d}", values) == "model_best_004.pth"
    assert best_name("best_{epoch:02d}_{val_loss:.2f}", values, auto_insert_metric_name=True) == (
        "best_epoch=04_val_loss=0.25.pth"
    )
    with pytest.raises(SpecError, match=r"train\.checkpointer\.filename"):
        best_name("model_best_{val_far}", values)


def test_periodic_checkpoints_sort_by_epoch_then_step(tmp_path: Path) -> None:
    for name in ("model_epoch_010_step_00100.pth", "model_epoch_002_step_00020.pth", "notes.pth"):
        (tmp_path / name).touch()
    assert [p.name for p in periodic_checkpoints(tmp_path)] == [
        "model_epoch_002_step_00020.pth",
        "model_epoch_010_step_00100.pth",
    ]


def test_a_saved_checkpoint_loads_back(tmp_path: Path) -> None:
    payload = {
        "model_config": {"in_channels": 1},
        "layout": {},
        "state_dict": {"w": torch.ones(2)},
        "epoch": 3,
        "global_step": 40,
        "spec": {"task": "classify"},
    }
    path = tmp_path / "c.pth"
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path, key="inference.checkpoint")
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pth"]  # no temporary file left behind


@pytest.mark.parametrize("content", [b"", b"not a checkpoint"])
def test_unreadable_files_name_the_key_and_the_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(SpecError) as error:
        load_checkpoint(path, key="train.pretrained_model_path")
    assert f"train.pretrained_model_path={path}" in str(error.value)


def test_a_missing_checkpoint_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pth", key="evaluate.checkpoint")


def test_status_log_writes_one_json_object_per_line(tmp_path: Path) -> None:
    with StatusLog(tmp_path) as status:
        status.write(STARTED, "Starting.", epoch=0, max_epoch=2)
        status.write(FAILURE, "Broken.", kpi={"val_loss": float("nan"), "val_far": 12.5})
    lines = (tmp_path / "status.json").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["STARTED", "FAILURE"]
    records = read_status(tmp_path)
    assert records[0]["epoch"] == 0 and records[0]["max_epoch"] == 2
    assert records[1]["kpi"] == {"val_loss": None, "val_far": 12.5}  # JSON has no NaN
