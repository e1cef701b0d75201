"""The `aoi-pipeline` flow: pre-flight, ONE approval, then Phase 1, Phase 2, Phase 3 and the handoff.

Nothing is written, pulled or launched before the plan is approved. A rerun with the same `run_name`
resumes: the recorded approval of the same plan stands, finished phases are skipped, and Phase 2 continues
at its next uncommitted stage. No flow-level retries: a retried flow would pause on the gate again.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled

from aoi_pipeline.approval import ApprovalRecord, rejection_message
from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.lock import WorkspaceLock
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.errors import AoiPipelineError
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.hard_stop import phase_failures_recorded
from aoi_pipeline.pipeline.layout import RunLayout, check_run_name, run_name_for
from aoi_pipeline.pipeline.phases import PhaseBook, phase3_start
from aoi_pipeline.pipeline.resume import recorded_approval
from aoi_pipeline.pipeline.run_specs import workspace_base_spec
from aoi_pipeline.pipeline.run_steps import ensure_run_state
from flows.automl_sweep import automl_sweep
from flows.deft_loop import deft_loop
from tasks.gate import approval_gate
from tasks.jobs import allow_jobs, cancel_running_jobs, job_runner, stop_local_jobs
from tasks.phases import (
    deployment_handoff,
    handoff_1_2,
    publish_report,
    register_phase3,
    start_run,
    stop_leftover_run_jobs,
)
from tasks.preflight import preflight
from tasks.progress import start_clock
from tasks.publish import publish_deliverable


def _flow_run_name() -> str:
    """The flow run is named after its run directory (`run_<YYYYMMDD_HHMMSS>` unless `run_name` is given)."""
    return run_name_for(current_flow_run.parameters.get("run_name"))


@flow(
    name="aoi-pipeline",
    flow_run_name=_flow_run_name,
    log_prints=True,
    on_cancellation=[cancel_running_jobs],
    on_crashed=[stop_local_jobs],
)
def aoi_pipeline(
    config: PipelineConfig,
    run_name: str | None = None,
    preapproved_plan_hash: str | None = None,
    preapproved_by: str = "pre-approval",
    approval_timeout_hours: float = 72.0,
    platform: str | None = None,
) -> dict[str, Any] | State[Any]:
    """Improve the workspace's model; returns where the deliverable is. A rejected plan ends the run Cancelled.

    `platform` (set by the `aoi-pipeline/<platform>` deployments) must match the config's.
    """
    logger = get_run_logger()
    config.require_platform(platform, other_deployment=f"aoi-pipeline/{config.platform}")
    allow_jobs()
    start_clock()
    run_name = check_run_name(run_name_for(run_name, current_flow_run.name), where="flow parameter run_name")
    report = preflight(config, run_name)
    if not report.ok:
        raise AoiPipelineError(report.blockers, summary="pre-flight found blockers: fix them and run again")
    layout = RunLayout.for_run(config.resolved_results_root, run_name, where="flow parameter run_name")
    approval: ApprovalRecord = recorded_approval(layout, report.plan_hash) or approval_gate(
        description=report.markdown(),
        plan_hash=report.plan_hash,
        summary=report.summary(),
        preapproved_plan_hash=preapproved_plan_hash,
        preapproved_by=preapproved_by,
        timeout_s=int(approval_timeout_hours * 3600),
    )
    if not approval.approved:
        # A rejected run ends Cancelled (not done), with who rejected it and why; nothing was written.
        logger.info("plan %s rejected by %s; nothing was written", report.plan_hash, approval.reviewer)
        return Cancelled(message=rejection_message(approval))

    ctx = RunContext.from_config(config, layout, job_runner(config, current_flow_run.id))
    base_spec = workspace_base_spec(config, ctx.workspace)
    # The lock comes before the run's first write: a refused second run leaves no trace in the results root.
    with WorkspaceLock(ctx.workspace.root, owner=f"aoi-pipeline {run_name}"):
        if not layout.approval.exists():
            start_run(layout, approval, report.markdown(), base_spec)
        stop_leftover_run_jobs(layout)
        result = _run_phases(ctx, base_spec)
    result["published"] = publish_deliverable(config, layout)
    logger.info("deliverable: %s (%s)", result["best_model"], result["iteration"])
    return {"status": "complete", "plan_hash": report.plan_hash, **result}


def _run_phases(ctx: RunContext, base_spec: Spec) -> dict[str, Any]:
    """Phase 1, the 1->2 handoff, Phase 2, Phase 3 and the deployment handoff; finished phases are skipped.

    A phase that fails is recorded as the run's hard stop (an error event with the reason and the fix)."""
    book, layout = PhaseBook(ctx.layout), ctx.layout
    publish_report(ctx)
    phase1_best, winner = None, None
    start_state = partial(ensure_run_state, ctx)
    if ctx.phase1.enabled:
        with phase_failures_recorded(layout, "phase1", start_state=start_state):
            if book.pending("phase1"):
                book.finish_phase1(automl_sweep(ctx, "phase1", base_spec), ctx.phase1.recommendations)
            winner, phase1_best = book.phase1_winner()
    if book.pending("handoff_1_2"):
        with phase_failures_recorded(layout, "handoff_1_2", start_state=start_state):
            if winner is not None:
                handoff_1_2(ctx, base_spec, winner)
            else:
                ensure_run_state(ctx)
            book.finish_handoff_1_2(phase1_enabled=ctx.phase1.enabled)

    with phase_failures_recorded(layout, "phase2"):
        book.finish_phase2(deft_loop(ctx, base_spec))

    if ctx.phase3.enabled and book.pending("phase3"):
        with phase_failures_recorded(layout, "phase3"):
            start = phase3_start(ctx)
            winner3 = automl_sweep(ctx, "phase3", start.base_spec, pretrained_model=start.checkpoint)
            if winner3 is not None:  # else no usable refinement: Phase 2's best stands
                register_phase3(ctx, winner3)
            book.finish_phase3(start.warm_start, winner3)
    if book.pending("handoff"):
        with phase_failures_recorded(layout, "handoff"):
            book.finish_handoff(deployment_handoff(ctx.layout, phase1_best))
    publish_report(ctx)  # the report and best_model.json now name the same deliverable
    return book.deliverable()
