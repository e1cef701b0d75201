"""The nightly DEFT flow (`aoi-pipeline/deft-nightly`): a standing policy, a decision before spending, promotion on
evidence, one history row per night.

A night first looks for another night running or paused and for a live workspace lock (then it records
"skipped: busy"). It compares the workspace with what the last night saw and checks tonight's config and budget
against the approved policy: inside it the night proceeds without a person; outside it (no policy, a revoked
one, another image, a larger budget, another target, labelled rows changed or removed) it pauses on the same
typed gate, naming each limit passed, and nothing is written until someone decides. A night nobody answers
expires after `approval_timeout_minutes` and is recorded "expired". With nothing new it records "skipped:
nothing new" and launches no job. Otherwise it runs the DEFT loop warm-started from the deployed model on the
new pool rows, within the budget, and promotes the result only when it beats the deployed model on the confirm
split by more than the run-to-run spread. The flow is named like the pipeline flow, so `aoi-pipeline approve`
and the UI list its paused nights beside the pipeline's runs.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelled

from aoi_pipeline.approval import ApprovalRecord, record_from_preapproval, rejection_message
from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.lock import WorkspaceLock, live_holder
from aoi_pipeline.core.nightly_changes import Changes, Snapshot, compare, read_snapshot, write_snapshot
from aoi_pipeline.core.nightly_history import (
    EXPIRED,
    FAILED,
    REJECTED,
    SKIPPED_BUSY,
    SKIPPED_NOTHING_NEW,
    TRAINED,
    NightRecord,
    append_night,
)
from aoi_pipeline.core.nightly_policy import (
    NightlyBudget,
    NightlyPolicy,
    Standing,
    approve_policy,
    read_policy_approval,
    standing,
)
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.state import read_state
from aoi_pipeline.errors import AoiPipelineError, WorkspaceLockedError
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.layout import RunLayout, check_run_name
from aoi_pipeline.pipeline.nightly import (
    DeployedModel,
    JobCounter,
    deployed_model,
    drift_of,
    judge_night,
    night_config,
    nightly_dir,
    promote,
    proposed_policy,
    record_verdict,
    resolved_pool,
    take_snapshot,
    with_night_pool,
    write_night_pool,
)
from aoi_pipeline.pipeline.phases import PhaseBook, phase3_start
from aoi_pipeline.pipeline.run_specs import workspace_base_spec
from flows.automl_sweep import automl_sweep
from flows.deft_loop import deft_loop
from tasks.gate import approval_gate
from tasks.jobs import allow_jobs, cancel_running_jobs, job_runner, stop_local_jobs
from tasks.nightly import NIGHT_PREFIX, end_expired, other_nights, publish_history, seed_deployed
from tasks.phases import deployment_handoff, publish_report, register_phase3, start_run
from tasks.preflight import preflight
from tasks.progress import start_clock
from tasks.publish import publish_deliverable


def _night_name() -> str:
    requested = current_flow_run.parameters.get("night")
    return requested or f"{NIGHT_PREFIX}{datetime.now(UTC).strftime('%Y%m%d_%H%M%S')}"


@dataclasses.dataclass
class _Night:
    """Tonight's name, start and nightly directory; `record` appends its history row and shows the table."""

    config: PipelineConfig
    name: str
    started_at: str

    def record(self, decision: str, **fields: Any) -> dict[str, Any]:
        row = NightRecord(night=self.name, started_at=self.started_at, decision=decision, **fields)
        append_night(nightly_dir(self.config), row)
        publish_history(nightly_dir(self.config))
        get_run_logger().info("night %s: %s. %s", self.name, decision, row.promotion_reason or row.reason)
        return row.to_dict()


@flow(
    name="aoi-pipeline",
    flow_run_name=_night_name,
    log_prints=True,
    on_cancellation=[cancel_running_jobs],
    on_crashed=[stop_local_jobs],
)
def deft_nightly(
    config: PipelineConfig,
    budget: NightlyBudget,
    approval_timeout_minutes: float = 720.0,
    night: str | None = None,
    platform: str | None = None,
) -> dict[str, Any] | State[Any]:
    """One night: skip, pause for a person, or improve the deployed model within the approved policy."""
    config.require_platform(platform)
    allow_jobs()
    start_clock()
    name = check_run_name(night or current_flow_run.name or _night_name(), where="flow parameter night")
    tonight = _Night(config, name, datetime.now(UTC).isoformat(timespec="seconds"))
    busy = _busy(config)
    if busy:
        return tonight.record(SKIPPED_BUSY, reason=busy)
    deployed = deployed_model(config)
    proposed = proposed_policy(config, budget)
    current = take_snapshot(config)
    changes = compare(read_snapshot(nightly_dir(config)) or current, current)
    verdict = standing(read_policy_approval(nightly_dir(config)), proposed, changes.breaches())
    try:
        approval = _approval(config, proposed, verdict, timeout_s=int(approval_timeout_minutes * 60))
    except FlowPauseTimeout:
        message = f"expired: nobody decided within {approval_timeout_minutes:g} minutes; nothing was written"
        tonight.record(EXPIRED, reason=f"{message} ({'; '.join(verdict.reasons)})", policy_hash=proposed.hash)
        end_expired(str(current_flow_run.id), message)
        return Cancelled(message=message)
    if not approval.approved:
        tonight.record(REJECTED, reason=rejection_message(approval), policy_hash=proposed.hash)
        return Cancelled(message=rejection_message(approval))
    figure = deployed.record.get("metric_result", {}).get("value")
    if changes.nothing_new:
        write_snapshot(nightly_dir(config), current)
        return tonight.record(
            SKIPPED_NOTHING_NEW,
            reason=f"no new pool, KPI or confirm rows since the last night; deployed {deployed.describe()}",
            kpi_before=figure,
            policy_hash=approval.plan_hash,
        )
    try:
        return _train(tonight, budget, approval, deployed, (changes, current))
    except WorkspaceLockedError as error:
        return tonight.record(SKIPPED_BUSY, reason=error.render())
    except Exception as error:
        tonight.record(FAILED, reason=str(error).splitlines()[0], kpi_before=figure, policy_hash=approval.plan_hash)
        raise


def _busy(config: PipelineConfig) -> str:
    """Why tonight cannot run now ('' when it can): another night running or paused, or a live workspace lock."""
    others = other_nights(str(current_flow_run.id) if current_flow_run.id else None)
    if others:
        return f"another night is running or paused: {', '.join(others)}"
    holder = live_holder(config.workspace)
    return f"the workspace is in use by {holder.describe()}" if holder else ""


def _approval(config: PipelineConfig, proposed: NightlyPolicy, verdict: Standing, *, timeout_s: int) -> ApprovalRecord:
    """Inside the approved policy: its standing approval. Outside: the reviewer's decision on the gate, which
    (when it approves) becomes the standing policy."""
    where = nightly_dir(config)
    approved = read_policy_approval(where)
    if verdict.inside and approved is not None:
        reviewer = f"nightly policy {approved.policy_hash} (approved by {approved.reviewer})"
        return record_from_preapproval(approved.policy_hash, approved.policy_hash, reviewer=reviewer)
    reasons = "; ".join(verdict.reasons)
    description = (
        f"# Nightly DEFT: approve the policy {proposed.hash}\n\n{proposed.describe()}\n\n"
        "Tonight needs a person because:\n" + "\n".join(f"- {reason}" for reason in verdict.reasons)
    )
    record = approval_gate(
        description=description,
        plan_hash=proposed.hash,
        summary=f"nightly policy; {reasons}",
        preapproved_plan_hash=None,
        preapproved_by="",
        timeout_s=timeout_s,
    )
    if record.approved:
        approve_policy(where, proposed, reviewer=record.reviewer, comment=record.comment)
    return record


def _train(
    tonight: _Night,
    budget: NightlyBudget,
    approval: ApprovalRecord,
    deployed: DeployedModel,
    seen: tuple[Changes, Snapshot],
) -> dict[str, Any]:
    """Run the night's DEFT loop from the deployed model, promote on evidence, record the night (and the
    snapshot it trained on) and render the run report with the history; returns the history row."""
    changes, current = seen
    config = night_config(tonight.config, budget)
    report = preflight(config, tonight.name)
    if not report.ok:
        raise AoiPipelineError(report.blockers, summary="pre-flight found blockers: fix them; the next night retries")
    layout = RunLayout.for_run(config.resolved_results_root, tonight.name, where="flow parameter night")
    counter = JobCounter(job_runner(config, current_flow_run.id), budget.gpu_hours)
    ctx = RunContext.from_config(config, layout, counter)
    base_spec = workspace_base_spec(config, ctx.workspace)
    with WorkspaceLock(ctx.workspace.root, owner=f"deft-nightly {tonight.name}"):
        if not layout.approval.exists():  # a rerun of the same night resumes its run directory
            start_run(layout, approval, report.markdown(), base_spec)
        night_pool = write_night_pool(layout, resolved_pool(config), changes)
        ctx = dataclasses.replace(ctx, workspace=with_night_pool(ctx.workspace, night_pool))
        candidate = _run_night(ctx, base_spec, deployed)
        verdict = judge_night(layout, candidate, deployed)
        version = deployed.version + 1 if verdict.promotion.promote else None
        record_verdict(layout, deployed, verdict, version)
        if version is not None:
            promote(config, layout, deployed)
    published = publish_deliverable(config, layout) if version is not None else None
    drift = drift_of(layout, changes, deployed)
    write_snapshot(nightly_dir(tonight.config), current)
    row = tonight.record(
        TRAINED,
        policy_hash=approval.plan_hash,
        reason=_train_reason(changes, layout, published),
        rows_added=changes.rows_added(),
        kpi_before=verdict.deployed_value,
        kpi_after=verdict.candidate_value,
        promoted=verdict.promotion.promote,
        promotion_reason=verdict.promotion.reason,
        jobs=counter.jobs,
        gpu_hours=counter.gpu_hours,
        drift="" if drift is None else drift.describe(),
        run_dir=str(layout.root),
        handoff_version=version,
    )
    publish_report(ctx)  # now with tonight's row in the history section
    return row


def _train_reason(changes: Changes, layout: RunLayout, published: dict[str, Any] | None) -> str:
    added = ", ".join(f"{source} {count}" for source, count in changes.rows_added().items() if count)
    stopped = read_state(layout.root).get("stop_reason") or "?"
    return f"new rows: {added}; DEFT stopped: {stopped}" + (
        f"; published to {published['destination']}" if published else ""
    )


def _run_night(ctx: RunContext, base_spec: Spec, deployed: DeployedModel) -> str:
    """Seed the deployed model as the baseline, run Phase 2 (and Phase 3 when the policy allows), hand off;
    returns the handed-off candidate's label."""
    book = PhaseBook(ctx.layout)
    if book.pending("handoff_1_2"):
        seed_deployed(ctx, base_spec, deployed)
        book.finish_handoff_1_2(phase1_enabled=False)
    book.finish_phase2(deft_loop(ctx, base_spec))
    if ctx.phase3.enabled and book.pending("phase3"):
        start = phase3_start(ctx)
        winner = automl_sweep(ctx, "phase3", start.base_spec, pretrained_model=start.checkpoint)
        if winner is not None:
            register_phase3(ctx, winner)
        book.finish_phase3(start.warm_start, winner)
    if book.pending("handoff"):
        book.finish_handoff(deployment_handoff(ctx.layout, None))
    publish_report(ctx)
    return str(book.deliverable()["iteration"])
