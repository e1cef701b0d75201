"""Tasks of the DEFT loop: one task run per stage, the report refreshed after every commit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NONE

from aoi_pipeline.core.progress import Progress, iteration_seconds
from aoi_pipeline.core.state import read_state
from aoi_pipeline.pipeline import deft, run_report
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.run_progress import phases_ahead
from tasks.progress import elapsed_s, report_progress

STAGES = deft.ITERATION_STAGES


@task(name="deft-stage", task_run_name="{label}-{stage}", cache_policy=NONE)
def deft_stage(ctx: RunContext, label: str, stage: str) -> None:
    """Run one stage and commit it; a failure is committed as the run's hard stop, then raised."""
    started = time.monotonic()
    try:
        state = STAGES[stage](ctx, label)
    except Exception as error:  # any stage error is a hard stop, recorded before it propagates
        deft.commit_failure(ctx, label, stage, error, started)
        raise
    get_run_logger().info("[%s %s] %s", label, stage, state["events"][-1]["summary"])


def refresh_report(ctx: RunContext) -> Path | None:
    """Re-render the run report from what the run directory records (a report failure never fails a step)."""
    try:
        return run_report.refresh_run_report(ctx)
    except Exception as error:  # the report is a view; the commit already happened
        get_run_logger().warning("report not refreshed: %s", error)
        return None


def report_phase2_progress(ctx: RunContext) -> None:
    """Log and publish Phase 2's progress: iteration k/M, with the measured iteration durations."""
    state = read_state(ctx.layout.root)
    progress = Progress(
        phase="phase2",
        unit="iteration",
        done=int(state.get("current_iteration", 0)),
        total=ctx.deft.max_iterations,
        elapsed_s=elapsed_s(),
        unit_seconds=iteration_seconds(state),
        ahead=phases_ahead(ctx, "phase2"),
    )
    report_progress(progress)


def start_progress(max_iterations: int) -> UUID:
    # Called from synchronous code, create_progress_artifact returns the id itself, not a coroutine.
    return cast(
        UUID,
        create_progress_artifact(0.0, key="deft-progress", description=f"DEFT loop: 0/{max_iterations} iterations"),
    )


def update_progress(artifact_id: UUID, done: int, max_iterations: int) -> None:
    share = 100.0 if max_iterations == 0 else min(100.0, 100.0 * done / max_iterations)
    update_progress_artifact(artifact_id, share, description=f"DEFT loop: {done}/{max_iterations} iterations")


def publish_iteration_summary(ctx: RunContext, label: str) -> None:
    create_markdown_artifact(deft.iteration_summary(ctx, label), key=f"deft-{label}", description=f"DEFT {label}")
