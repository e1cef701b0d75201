"""The DEFT-loop tasks: a stage commits or records its hard stop, the report never fails a stage, progress."""

from __future__ import annotations

from typing import Any

import pytest

import tasks.deft as deft_tasks
from aoi_pipeline.core.metric_target import render_target
from aoi_pipeline.core.state import init_state


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


def test_the_run_report_is_written_with_the_loops_extras(ctx, monkeypatch):
    extras = {"training_rows_by_source": {"baseline": {"base_train": 481}}, "handoff": {"iteration": "x"}}
    monkeypatch.setattr(deft_tasks.run_report.deft, "report_extras", lambda context: extras)
    init_state(
        ctx.layout.root,
        kpi_target=render_target(ctx.contract),
        metric_contract=ctx.contract.to_dict(),
        max_iterations=3,
        config={},
    )
    path = deft_tasks.refresh_report(ctx)
    assert path == ctx.layout.root / "run_report.html"
    page = path.read_text(encoding="utf-8")
    assert '<section id="growth">' in page and "<td>481</td>" in page


def test_a_report_that_cannot_be_rendered_is_a_warning_not_a_failed_stage(ctx, task_log, monkeypatch):
    def unreadable(context: Any) -> dict:
        raise OSError("deft_state.json: permission denied")

    monkeypatch.setattr(deft_tasks.run_report, "refresh_run_report", unreadable)
    assert deft_tasks.refresh_report(ctx) is None
    assert "report not refreshed: deft_state.json: permission denied" in task_log.text


def test_phase2_progress_names_the_iteration_and_the_measured_time_left(ctx, task_log, artifacts):
    init_state(
        ctx.layout.root,
        kpi_target=render_target(ctx.contract),
        metric_contract=ctx.contract.to_dict(),
        max_iterations=3,
        config={},
    )
    deft_tasks.report_phase2_progress(ctx)
    assert "progress: phase 2/3 (DEFT loop) · iteration 0/3 · elapsed" in task_log.text
    ((kind, share, options),) = artifacts
    assert (kind, share, options["key"]) == ("create_progress_artifact", 0.0, "aoi-run-progress")
    assert options["description"].endswith("time left unknown until the first iteration ends")


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
