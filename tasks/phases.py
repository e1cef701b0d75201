"""Tasks for the steps of an approved run: each calls one function of `aoi_pipeline.pipeline`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from aoi_pipeline.approval import ApprovalRecord
from aoi_pipeline.config import AutomlSettings, PipelineConfig
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.state import read_state
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.pipeline import handoff, run
from aoi_pipeline.pipeline.evaluation import JobContext, evaluate_and_commit
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.trials import TrialOutcome, run_trial
from tasks.jobs import TaskJobRunner


@task(name="start-run", cache_policy=NONE)
def start_run(layout: RunLayout, approval: ApprovalRecord, plan_markdown: str, base_spec: Spec) -> None:
    run.start_run(layout, approval=approval, plan_markdown=plan_markdown, base_spec=base_spec)
    get_run_logger().info("run directory %s", layout.root)


@task(name="trial", task_run_name="{phase}-trial-{number:03d}", cache_policy=NONE)
def trial(
    *,
    phase: str,
    number: int,
    params: dict[str, Any],
    layout: RunLayout,
    base_spec: Spec,
    settings: AutomlSettings,
    contract: MetricContract,
    workspace: Workspace,
    jobs: JobContext,
    pretrained_model: Path | None,
) -> TrialOutcome:
    outcome = run_trial(
        number=number,
        params=params,
        base_spec=base_spec,
        trial_dir=layout.trial_dir(phase, number),
        settings=settings,
        contract=contract,
        validation_csv=workspace.validation_csv,
        images_dir=workspace.images_dir,
        image=jobs.image,
        runtime=jobs.runtime,
        runner=TaskJobRunner(),
        pretrained_model=pretrained_model,
        gpus=jobs.gpus,
        timeout_s=jobs.timeout_s,
    )
    get_run_logger().info("%s trial %d: %s, FAR %s", phase, number, outcome.state, outcome.far_pct)
    return outcome


def publish_trials(phase: str, table: list[dict[str, Any]]) -> None:
    """The trials table artifact of a phase, refreshed after every trial."""
    create_table_artifact(table, key=f"{phase}-trials", description=f"{phase} AutoML trials")


@task(name="handoff-phase1-to-phase2", cache_policy=NONE)
def handoff_1_2(
    layout: RunLayout,
    base_spec: Spec,
    winner: TrialOutcome,
    contract: MetricContract,
    config: PipelineConfig,
    workspace: Workspace,
) -> Path:
    return handoff.handoff_phase1_to_phase2(
        layout=layout,
        base_spec=base_spec,
        winner=winner,
        contract=contract,
        max_iterations=config.deft.max_iterations,
        state_config=run.state_config(config, workspace, layout),
    )


@task(name="train-baseline", cache_policy=NONE)
def train_baseline(layout: RunLayout, base_spec: Spec, config: PipelineConfig, jobs: JobContext) -> Path:
    return run.train_baseline(layout=layout, base_spec=base_spec, config=config, jobs=jobs, runner=TaskJobRunner())


@task(name="evaluate", task_run_name="evaluate-{label}", cache_policy=NONE)
def evaluate(
    layout: RunLayout,
    label: str,
    contract: MetricContract,
    workspace: Workspace,
    jobs: JobContext,
) -> None:
    evaluation = evaluate_and_commit(
        layout=layout,
        label=label,
        contract=contract,
        kpi_csv=workspace.kpi_csv,
        images_dir=workspace.images_dir,
        jobs=jobs,
        runner=TaskJobRunner(),
    )
    get_run_logger().info(evaluation.summary(contract))


@task(name="finalize-phase2", cache_policy=NONE)
def finalize_phase2(layout: RunLayout, label: str, stop_reason: str) -> str:
    return run.finalize_phase2(layout, label=label, stop_reason=stop_reason).iteration


@task(name="register-phase3", cache_policy=NONE)
def register_phase3(
    layout: RunLayout, winner: TrialOutcome, contract: MetricContract, workspace: Workspace, jobs: JobContext
) -> None:
    run.register_phase3(
        layout=layout,
        winner=winner,
        contract=contract,
        kpi_csv=workspace.kpi_csv,
        images_dir=workspace.images_dir,
        jobs=jobs,
        runner=TaskJobRunner(),
    )


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
        "passed": best.result.passed,
        "deft_status": state["status"],
    }
