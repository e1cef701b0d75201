"""Tasks for the steps of an approved run: each calls one function of `aoi_pipeline.pipeline`.

Every task that runs jobs takes the run's `RunContext`, whose runner launches them (a `tao-job` task run per
job inside a flow), plus only what varies from call to call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from aoi_pipeline.approval import ApprovalRecord
from aoi_pipeline.core.progress import Progress, trial_seconds
from aoi_pipeline.core.run_report import RUN_REPORT_FILE
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.stages import BASELINE, Stage
from aoi_pipeline.core.state import read_state
from aoi_pipeline.pipeline import handoff, phases, run_steps, seed_runs
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.evaluation import evaluate_and_commit
from aoi_pipeline.pipeline.hard_stop import stage_failures_recorded
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_progress import phases_ahead
from aoi_pipeline.pipeline.trials import TrialOutcome, run_trial
from tasks.deft import refresh_report
from tasks.progress import elapsed_s, link_report, report_progress


@task(name="start-run", cache_policy=NONE)
def start_run(layout: RunLayout, approval: ApprovalRecord, plan_markdown: str, base_spec: Spec) -> None:
    run_steps.start_run(layout, approval=approval, plan_markdown=plan_markdown, base_spec=base_spec)
    get_run_logger().info("run directory %s", layout.root)


@task(name="stop-leftover-jobs", cache_policy=NONE)
def stop_leftover_run_jobs(layout: RunLayout) -> None:
    stopped = run_steps.stop_leftover_run_jobs(layout)
    if stopped:
        get_run_logger().warning("stopped jobs a killed run left running: %s", ", ".join(stopped))


@task(name="trial", task_run_name="{phase}-trial-{number:03d}", cache_policy=NONE)
def trial(
    ctx: RunContext,
    *,
    phase: str,
    number: int,
    params: dict[str, Any],
    base_spec: Spec,
    pretrained_model: Path | None,
) -> TrialOutcome:
    outcome = run_trial(
        ctx, phase=phase, number=number, params=params, base_spec=base_spec, pretrained_model=pretrained_model
    )
    get_run_logger().info("%s trial %d: %s, FAR %s", phase, number, outcome.state, outcome.far_pct)
    return outcome


def publish_trials(phase: str, table: list[dict[str, Any]]) -> None:
    """The trials table artifact of a phase, refreshed after every trial."""
    create_table_artifact(table, key=f"{phase}-trials", description=f"{phase} AutoML trials")


def sweep_started(ctx: RunContext, phase: str) -> None:
    """The progress line when an AutoML phase starts: trial 0/N, time left unknown until a trial ends."""
    settings = ctx.automl(phase)
    ahead = phases_ahead(ctx, phase)
    report_progress(Progress(phase, "trial", 0, settings.recommendations, elapsed_s(), (), settings.parallel, ahead))


def after_trial(ctx: RunContext, phase: str, table: list[dict[str, Any]]) -> None:
    """After each finished trial: the trials table, the progress line (trial k/N, time left) and the report."""
    publish_trials(phase, table)
    settings = ctx.automl(phase)
    finished = trial_seconds(table)
    progress = Progress(
        phase,
        "trial",
        len(finished),
        settings.recommendations,
        elapsed_s(),
        finished,
        settings.parallel,
        phases_ahead(ctx, phase),
    )
    report_progress(progress)
    refresh_report(ctx)


def publish_report(ctx: RunContext) -> None:
    """Render the run report now and link it from the run's artifacts."""
    path = refresh_report(ctx)
    if path is not None:
        link_report(path)


@task(name="handoff-phase1-to-phase2", cache_policy=NONE)
def handoff_1_2(ctx: RunContext, base_spec: Spec, winner: TrialOutcome) -> Path:
    return handoff.handoff_phase1_to_phase2(
        layout=ctx.layout,
        base_spec=base_spec,
        winner=winner,
        contract=ctx.contract,
        max_iterations=ctx.deft.max_iterations,
        state_config=run_steps.state_config(ctx),
    )


@task(name="train-baseline", cache_policy=NONE)
def train_baseline(ctx: RunContext, base_spec: Spec) -> Path:
    with stage_failures_recorded(ctx.layout.root, BASELINE, Stage.TRAIN):
        return run_steps.train_baseline(ctx, base_spec)


@task(name="evaluate", task_run_name="evaluate-{label}", cache_policy=NONE)
def evaluate(ctx: RunContext, label: str) -> None:
    with stage_failures_recorded(ctx.layout.root, label, Stage.EVALUATE):
        evaluation = evaluate_and_commit(ctx, label)
    get_run_logger().info(evaluation.summary(ctx.contract))


@task(name="confirm-seeds", cache_policy=NONE)
def confirm_candidate(ctx: RunContext) -> None:
    confirmation = seed_runs.confirm_final_candidate(ctx)
    if confirmation is not None:
        get_run_logger().info(f"confirm seeds: {confirmation.to_dict()}")


@task(name="finalize-phase2", cache_policy=NONE)
def finalize_phase2(layout: RunLayout, label: str, stop_reason: str) -> str:
    with stage_failures_recorded(layout.root, label, Stage.LOOP_STOP):
        return run_steps.finalize_phase2(layout, label=label, stop_reason=stop_reason).iteration


@task(name="register-phase3", cache_policy=NONE)
def register_phase3(ctx: RunContext, winner: TrialOutcome) -> None:
    phases.register_phase3(ctx, winner)


@task(name="deployment-handoff", cache_policy=NONE)
def deployment_handoff(layout: RunLayout, phase1_best: float | None) -> dict[str, Any]:
    best = handoff.write_deployment_handoff(layout)
    trajectory = handoff.write_trajectory(layout, phase1_best=phase1_best, best=best)
    text = trajectory.read_text(encoding="utf-8")
    create_markdown_artifact(text, key="aoi-trajectory", description="Phase 1 best -> baseline -> final")
    get_run_logger().info("\n%s", text)
    state = read_state(layout.root)
    return {
        "run_dir": str(layout.root),
        "best_model": str(layout.best_model),
        "inference_spec": str(layout.best_model_inference_spec),
        "iteration": best.iteration,
        "value": best.result.value,
        "unit": best.result.unit,
        "passed": best.result.passed,
        "report": str(layout.root / RUN_REPORT_FILE),
        "deft_status": state["status"],
    }
