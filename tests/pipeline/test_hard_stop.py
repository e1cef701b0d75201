"""Hard stops: a failed stage or phase leaves an error event with the reason and the fix, never `in_progress`."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import pytest
from run_support import FakeRunner, baseline_spec, make_context, phase2_done

from aoi_pipeline.core.state import read_state
from aoi_pipeline.errors import ProgramJobError
from aoi_pipeline.pipeline.hard_stop import (
    UNEXPECTED_FIX,
    error_parts,
    phase_failures_recorded,
    record_phase_failure,
    stage_failures_recorded,
)
from aoi_pipeline.pipeline.layout import PipelineRecord
from aoi_pipeline.pipeline.run_report import write_run_report
from aoi_pipeline.pipeline.run_steps import ensure_run_state, train_baseline

JOB_ERROR = ProgramJobError.at("job baseline-train (log job.log)", "train exited 1", "read the job log")


def _last(layout: Any) -> dict[str, Any]:
    return read_state(layout.root)["events"][-1]


def test_error_parts_keep_the_place_reason_and_fix_of_a_product_error_on_one_line() -> None:
    assert error_parts(JOB_ERROR) == {
        "where": "job baseline-train (log job.log)",
        "reason": "train exited 1",
        "fix": "read the job log",
    }
    parts = error_parts(KeyError("multi\nline"))
    assert parts["reason"] == "KeyError: 'multi\\nline'" and parts["fix"] == UNEXPECTED_FIX
    assert len(error_parts(ValueError("x" * 5000))["reason"]) < 900


def test_a_failed_baseline_training_is_recorded_as_the_hard_stop_with_reason_and_fix(workspace, layout) -> None:
    class Broken(FakeRunner):
        def run(self, job: Any) -> Any:
            raise JOB_ERROR

    ctx = make_context(workspace, layout, Broken(val_losses={}, scores={}))
    ensure_run_state(ctx)
    with pytest.raises(ProgramJobError), stage_failures_recorded(layout.root, "baseline", "train"):
        train_baseline(ctx, {})

    state = read_state(layout.root)
    assert state["status"] == "failed"
    event = state["events"][-1]
    assert (event["iter"], event["stage"], event["status"]) == ("baseline", "train", "error")
    assert event["details"]["fix"] == "read the job log" and event["details"]["phase"] == "phase2"
    assert "train exited 1" in event["summary"]


def test_a_failed_evaluation_is_recorded_and_the_report_names_the_stop_and_the_error(workspace, layout) -> None:
    ctx = make_context(workspace, layout, FakeRunner(val_losses={1: 0.5}, scores={}))
    ensure_run_state(ctx)
    train_baseline(ctx, baseline_spec())
    with pytest.raises(ValueError), stage_failures_recorded(ctx.layout.root, "baseline", "evaluate"):
        raise ValueError("checkpoint is corrupt")

    assert read_state(layout.root)["status"] == "failed"
    assert _last(layout)["stage"] == "evaluate"
    report = write_run_report(layout).read_text()
    assert "hard stop at baseline/evaluate" in report and "checkpoint is corrupt" in report
    assert "Stop reason</dt><dd>running" not in report


def test_a_phase1_sweep_that_fails_before_any_state_starts_the_state_and_records_it(workspace, layout) -> None:
    ctx = make_context(workspace, layout)
    layout.root.mkdir(parents=True)
    with (
        pytest.raises(ProgramJobError),
        phase_failures_recorded(layout, "phase1", start_state=partial(ensure_run_state, ctx)),
    ):
        raise JOB_ERROR

    state = read_state(layout.root)
    assert state["status"] == "failed"
    event = state["events"][-1]
    assert (event["iter"], event["stage"], event["details"]["phase"]) == ("baseline", "train", "phase1")
    recorded = PipelineRecord(layout).phase("phase1")
    assert recorded is not None and recorded["status"] == "failed" and recorded["fix"] == "read the job log"
    assert not PipelineRecord(layout).done("phase1")
    assert "hard stop at baseline/train" in (layout.root / "run_report.html").read_text()


def test_a_phase_whose_stage_already_recorded_the_stop_adds_no_second_event(workspace, layout) -> None:
    ctx = make_context(workspace, layout)
    ensure_run_state(ctx)
    with (
        pytest.raises(ValueError),
        phase_failures_recorded(layout, "phase2"),
        stage_failures_recorded(layout.root, "baseline", "train"),
    ):
        raise ValueError("disk full")

    events = read_state(layout.root)["events"]
    assert [e["status"] for e in events] == ["error"]
    assert PipelineRecord(layout).phase("phase2")["reason"] == "ValueError: disk full"  # type: ignore[index]


def test_a_failed_phase3_is_recorded_under_final_automl_and_phase2s_result_stands(workspace, layout) -> None:
    phase2_done(workspace, layout, [0.1, 0.2, 0.3, 0.4, 0.9, 0.95])
    record_phase_failure(layout, "phase3", RuntimeError("every trial crashed"), time.monotonic())

    state = read_state(layout.root)
    assert state["status"] == "complete"
    event = state["events"][-1]
    assert (event["iter"], event["stage"], event["status"]) == ("final_automl", "train", "error")
    assert "every trial crashed" in event["summary"]
    assert PipelineRecord(layout).phase("phase3")["status"] == "failed"  # type: ignore[index]
    report = write_run_report(layout).read_text()
    assert "then HARD STOP in train: RuntimeError: every trial crashed" in report


def test_a_failure_the_state_cannot_take_is_kept_in_the_pipeline_record(workspace, layout) -> None:
    phase2_done(workspace, layout, [0.1, 0.2, 0.3, 0.4, 0.9, 0.95])
    state = json.loads((layout.root / "deft_state.json").read_text())
    record_phase_failure(layout, "handoff", OSError("read-only file system"), time.monotonic())
    record_phase_failure(layout, "handoff", OSError("read-only file system"), time.monotonic())

    after = read_state(layout.root)
    assert len(after["events"]) <= len(state["events"]) + 1
    assert PipelineRecord(layout).phase("handoff")["reason"] == "OSError: read-only file system"  # type: ignore[index]
