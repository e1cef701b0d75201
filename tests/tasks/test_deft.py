"""The DEFT-loop tasks: a stage commits or records its hard stop, the report never fails a stage, progress."""

from __future__ import annotations

from typing import Any

import pytest

import tasks.deft as deft_tasks


def test_a_stage_runs_with_the_runs_context_and_logs_its_commit(ctx, task_log, monkeypatch):
    seen: list[tuple] = []

    def routing(context: Any, label: str) -> dict:
        seen.append((context, label))
        return {"events": [{"summary": "Routing: 3 rows to mining"}]}

    monkeypatch.setitem(deft_tasks.STAGES, "routing", routing)
    assert deft_tasks.deft_stage.fn(ctx, "iter1", "routing") is None
    assert seen == [(ctx, "iter1")]
    assert "[iter1 routing] Routing: 3 rows to mining" in task_log.text


def test_a_failing_stage_is_committed_as_the_hard_stop_then_raised(ctx, task_log, monkeypatch):
    failures: list[tuple] = []

    def broken(context: Any, label: str) -> dict:
        raise ValueError("pool CSV vanished")

    monkeypatch.setitem(deft_tasks.STAGES, "data_mining", broken)
    monkeypatch.setattr(
        deft_tasks.deft,
        "commit_failure",
        lambda context, label, stage, error, started: failures.append((context, label, stage, str(error))),
    )
    with pytest.raises(ValueError, match="pool CSV vanished"):
        deft_tasks.deft_stage.fn(ctx, "iter2", "data_mining")
    assert failures == [(ctx, "iter2", "data_mining", "pool CSV vanished")]


def test_the_report_is_written_from_the_state_with_the_loops_extras(ctx, monkeypatch):
    written: list[tuple] = []
    monkeypatch.setattr(deft_tasks.deft, "report_extras", lambda context: {"handoff": {"iteration": "iter1"}})
    monkeypatch.setattr(deft_tasks, "write_report", lambda root, extras: written.append((root, extras)))
    deft_tasks.refresh_report(ctx)
    assert written == [(ctx.layout.root, {"handoff": {"iteration": "iter1"}})]


def test_a_report_that_cannot_be_rendered_is_a_warning_not_a_failed_stage(ctx, task_log, monkeypatch):
    def unreadable(context: Any) -> dict:
        raise OSError("deft_state.json: permission denied")

    monkeypatch.setattr(deft_tasks.deft, "report_extras", unreadable)
    deft_tasks.refresh_report(ctx)
    assert "report not refreshed: deft_state.json: permission denied" in task_log.text


@pytest.mark.parametrize(("done", "max_iterations", "share"), [(0, 4, 0.0), (1, 4, 25.0), (6, 4, 100.0), (0, 0, 100.0)])
def test_progress_is_the_share_of_iterations_done(monkeypatch, done, max_iterations, share):
    updates: list[tuple] = []
    monkeypatch.setattr(deft_tasks, "update_progress_artifact", lambda *args, **kwargs: updates.append((args, kwargs)))
    deft_tasks.update_progress("artifact-1", done, max_iterations)
    assert updates == [
        (("artifact-1", share), {"description": f"DEFT loop: {done}/{max_iterations} iterations"}),
    ]


def test_progress_starts_at_zero_and_the_iteration_summary_is_published(ctx, artifacts, monkeypatch):
    assert deft_tasks.start_progress(3) == "artifact-1"
    monkeypatch.setattr(deft_tasks.deft, "iteration_summary", lambda context, label: f"## DEFT {label}\n")
    deft_tasks.publish_iteration_summary(ctx, "iter2")
    assert artifacts == [
        ("create_progress_artifact", 0.0, {"key": "deft-progress", "description": "DEFT loop: 0/3 iterations"}),
        ("create_markdown_artifact", "## DEFT iter2\n", {"key": "deft-iter2", "description": "DEFT iter2"}),
    ]
