"""The `aoi-pipeline` flow: pre-flight, ONE approval, then Phase 1, Phase 2, Phase 3 and the handoff.

Nothing is written, pulled or launched before the plan is approved. A rerun with the same `run_name`
resumes: the recorded approval of the same plan stands, finished phases are skipped, and Phase 2 continues
at its next uncommitted stage. No flow-level retries: a retried flow would pause on the gate again.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from aoi_pipeline.approval import ApprovalRecord
from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.lock import WorkspaceLock
from aoi_pipeline.core.metric_target import parse_target
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import AoiPipelineError
from aoi_pipeline.pipeline.layout import PipelineRecord, RunLayout, new_run_name
from aoi_pipeline.pipeline.resume import recorded_approval
from aoi_pipeline.pipeline.run import ensure_run_state, job_context, phase2_best_checkpoint, phase2_training_csv
from aoi_pipeline.pipeline.run_specs import with_train_csv, workspace_base_spec
from aoi_pipeline.pipeline.trials import read_outcome
from flows.automl_sweep import automl_sweep
from flows.deft_loop import deft_loop
from tasks.gate import approval_gate
from tasks.jobs import allow_jobs, cancel_running_jobs
from tasks.phases import deployment_handoff, handoff_1_2, register_phase3, start_run
from tasks.preflight import preflight


@flow(
    name="aoi-pipeline",
    log_prints=True,
    on_cancellation=[cancel_running_jobs],
    on_crashed=[cancel_running_jobs],
)
def aoi_pipeline(
    config: PipelineConfig,
    run_name: str | None = None,
    preapproved_plan_hash: str | None = None,
    preapproved_by: str = "pre-approval",
    approval_timeout_hours: float = 72.0,
) -> dict[str, Any]:
    """Improve the workspace's model; returns where the deliverable is (or that the plan was rejected)."""
    logger = get_run_logger()
    allow_jobs()
    run_name = run_name or new_run_name()
    report = preflight(config, run_name)
    if not report.ok:
        raise AoiPipelineError(report.blockers, summary="pre-flight found blockers: fix them and run again")
    layout = RunLayout(config.resolved_results_root / run_name)
    approval: ApprovalRecord = recorded_approval(layout, report.plan_hash) or approval_gate(
        description=report.markdown(),
        plan_hash=report.plan_hash,
        preapproved_plan_hash=preapproved_plan_hash,
        preapproved_by=preapproved_by,
        timeout_s=int(approval_timeout_hours * 3600),
    )
    if not approval.approved:
        logger.info("plan %s rejected by %s; nothing was written", report.plan_hash, approval.reviewer)
        return {"status": "rejected", "plan_hash": report.plan_hash, "reviewer": approval.reviewer}

    workspace = Workspace.at(config.workspace)
    contract = parse_target(config.kpi_target)
    jobs = job_context(config)
    base_spec = workspace_base_spec(config, workspace)
    record = PipelineRecord(layout)
    if not layout.approval.exists():
        start_run(layout, approval, report.markdown(), base_spec)

    with WorkspaceLock(workspace.root, owner=f"aoi-pipeline {run_name}"):
        phase1_best, winner = None, None
        if config.phase1.enabled:
            if not record.done("phase1"):
                winner = automl_sweep("phase1", layout, base_spec, config.phase1, contract, workspace, jobs)
                if winner is None:
                    raise AoiPipelineError.at(
                        f"phase1 ({layout.phase_dir('phase1')})",
                        f"none of the {config.phase1.recommendations} trials produced a usable model",
                        "read the phase1 trials table artifact; widen the search space or raise epochs, then re-run",
                    )
                record.mark("phase1", "complete", trial=winner.number, far_pct=winner.far_pct)
            phase1 = record.phase("phase1")
            phase1_best = phase1["far_pct"]
            winner = winner or read_outcome(layout.trial_dir("phase1", phase1["trial"]))
        if not record.done("handoff_1_2"):
            if config.phase1.enabled:
                handoff_1_2(layout, base_spec, winner, contract, config, workspace)
            else:
                ensure_run_state(layout, config=config, contract=contract, workspace=workspace)
            record.mark("handoff_1_2", "complete" if config.phase1.enabled else "skipped")

        final_label = deft_loop(layout, config, contract, workspace, jobs, base_spec)
        record.mark("phase2", "complete", final_label=final_label)

        if config.phase3.enabled and not record.done("phase3"):
            label, checkpoint, spec_path = phase2_best_checkpoint(layout)
            csv_path, images_dir = phase2_training_csv(layout, workspace)
            phase3_spec = with_train_csv(load_spec(spec_path), csv_path=csv_path, images_dir=images_dir)
            winner3 = automl_sweep(
                "phase3",
                layout,
                phase3_spec,
                config.phase3,
                contract,
                workspace,
                jobs,
                pretrained_model=checkpoint,
            )
            if winner3 is None:  # no usable refinement: Phase 2's best stands
                record.mark("phase3", "complete", warm_start=label, trial=None)
            else:
                register_phase3(layout, winner3, contract, workspace, jobs)
                record.mark("phase3", "complete", warm_start=label, trial=winner3.number)
        if not record.done("handoff"):
            record.mark("handoff", "complete", **deployment_handoff(layout, phase1_best))
    result = {key: value for key, value in record.phase("handoff").items() if key not in ("status", "at")}
    logger.info("deliverable: %s (%s)", result["best_model"], result["iteration"])
    return {"status": "complete", "plan_hash": report.plan_hash, **result}
