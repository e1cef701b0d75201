"""The state document: what `init_state` writes and refuses, and what `read_state` refuses, naming the fix."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from aoi_pipeline.core.state import (
    STATE_FILE,
    NextStage,
    init_state,
    next_stage,
    read_state,
)
from aoi_pipeline.errors import StateError

# ---------------------------------------------------------------------------------------------------------
# init_state and read_state


def test_init_writes_a_version_4_document_with_the_run_inputs(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=3)
    on_disk = json.loads(run.path.read_text())
    assert on_disk == run.state
    assert on_disk["version"] == 4
    assert on_disk["status"] == "in_progress"
    assert on_disk["started_at"] == "2026-03-01T08:00:00+00:00"
    assert on_disk["results_dir"] == str(run.rd)
    assert (on_disk["max_iterations"], on_disk["current_iteration"]) == (3, 0)
    assert on_disk["metric_contract"] == make_run.FAR_CONTRACT
    assert on_disk["config"] == {"num_epochs": 10, "batch_size": 16}
    assert (on_disk["iterations"], on_disk["events"]) == ({}, [])
    assert run.path.read_text().endswith("}\n")
    assert next_stage(on_disk) == NextStage("baseline", "train")


def test_init_refuses_to_overwrite_an_existing_run(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.baseline()
    before = run.path.read_bytes()
    with pytest.raises(StateError) as caught:
        init_state(run.rd, kpi_target="x < 1", metric_contract=make_run.FAR_CONTRACT, max_iterations=1, config={})
    assert str(run.path) in str(caught.value)
    assert "resume that run" in str(caught.value)
    assert "new results directory" in str(caught.value)
    assert run.path.read_bytes() == before


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"max_iterations": -1}, "max_iterations"),
        ({"max_iterations": True}, "max_iterations"),
        ({"kpi_target": "  "}, "kpi_target"),
        ({"config": ["not", "a", "mapping"]}, "config"),
        ({"config": {"x": math.nan}}, "config"),
        ({"metric_contract": "FAR < 5%"}, "metric_contract"),
    ],
)
def test_init_with_bad_inputs_writes_nothing(make_run, tmp_path: Path, overrides: dict, named: str) -> None:
    rd = tmp_path / "results" / "run_x"
    arguments = {"kpi_target": "FAR < 5%", "metric_contract": make_run.FAR_CONTRACT, "max_iterations": 2, "config": {}}
    arguments.update(overrides)
    with pytest.raises(StateError) as caught:
        init_state(rd, **arguments)
    assert named in str(caught.value)
    assert not rd.exists()


def test_read_state_of_a_missing_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StateError) as caught:
        read_state(tmp_path)
    assert str(tmp_path / STATE_FILE) in str(caught.value)
    assert "start a new run" in str(caught.value)


def test_a_truncated_state_file_names_the_file_the_position_and_the_fix(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.baseline()
    text = run.path.read_text()
    run.path.write_text(text[: len(text) // 2])
    with pytest.raises(StateError) as caught:
        read_state(run.rd)
    message = str(caught.value)
    assert str(run.path) in message
    assert "truncated or invalid JSON at line" in message
    assert "restore deft_state.json from a backup" in message
    assert "or start a fresh run" in message


def test_an_empty_state_file_is_reported_as_empty(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.path.write_text("")
    with pytest.raises(StateError, match="the file is empty"):
        read_state(run.rd)


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda s: s.update(version=3), "version 3 is not supported"),
        (lambda s: s.pop("events"), "required key 'events' is missing"),
        (lambda s: s.pop("metric_contract"), "required key 'metric_contract' is missing"),
        (lambda s: s.update(status="paused"), "'paused' is not one of"),
        (lambda s: s.update(iterations=[]), "iterations: must be a dict"),
        (lambda s: s["events"].reverse(), "does not increase (previous event has seq 3)"),
        (lambda s: s["events"].append(dict(s["events"][-1])), "seq 3 does not increase"),
        (lambda s: s["iterations"].update(iter01={}), "iterations.iter01"),
    ],
)
def test_an_invalid_document_is_refused_with_what_is_wrong(
    make_run, tmp_path: Path, corrupt: Callable, expected: str
) -> None:
    run = make_run(tmp_path)
    run.baseline()
    state = json.loads(run.path.read_text())
    corrupt(state)
    run.path.write_text(json.dumps(state))
    with pytest.raises(StateError) as caught:
        read_state(run.rd)
    assert expected in str(caught.value)
    assert str(run.path) in str(caught.value)


def test_a_json_array_is_not_a_state(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("[]")
    with pytest.raises(StateError, match="top level is a JSON list"):
        read_state(tmp_path)
