"""The `deft-loop` flow: Phase 2, driven stage by stage by the run state's `next_stage`.

Each pass reads deft_state.json and runs the one stage it names, so a rerun after a crash continues at the
first stage not committed and never redoes a committed one. A failed stage is committed as a hard stop (the
run state becomes failed) and ends the flow; it is never retried automatically.
"""

from __future__ import annotations

from prefect import flow

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.state import BASELINE, next_stage, read_state
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import StateError
from aoi_pipeline.pipeline.deft import DeftContext, iteration_number
from aoi_pipeline.pipeline.evaluation import JobContext
from aoi_pipeline.pipeline.layout import RunLayout
from tasks.deft import (
    STAGES,
    deft_stage,
    publish_iteration_summary,
    refresh_report,
    start_progress,
    update_progress,
)
from tasks.jobs import TaskJobRunner
from tasks.phases import evaluate, finalize_phase2, train_baseline


@flow(name="deft-loop", validate_parameters=False)
def deft_loop(
    layout: RunLayout,
    config: PipelineConfig,
    contract: MetricContract,
    workspace: Workspace,
    jobs: JobContext,
    base_spec: Spec,
) -> str:
    """Run Phase 2 to its end; returns the final iteration label."""
    ctx = DeftContext(layout, config, contract, workspace, jobs, TaskJobRunner())
    progress = start_progress(config.deft.max_iterations)
    while True:
        state = read_state(layout.root)
        step = next_stage(state)
        update_progress(progress, state["current_iteration"], config.deft.max_iterations)
        if step.stage == "complete":
            refresh_report(ctx)
            return step.label
        if step.stage == "halt":
            # A rerun by the user after a hard stop retries the failed stage once (a new event); the loop
            # itself never retries.
            failed = state["events"][-1]
            step = type(step)(failed["iter"], failed["stage"])
            if step.stage == "loop_stop":
                step = type(step)(step.label, "finalize")
        if step.stage == "train" and step.label == BASELINE:
            train_baseline(layout, base_spec, config, jobs)
        elif step.stage == "evaluate":
            evaluate(layout, step.label, contract, workspace, jobs)
            if iteration_number(step.label):
                publish_iteration_summary(ctx, step.label)
        elif step.stage == "finalize":
            passed = state["iterations"][step.label]["metric_result"]["passed"]
            finalize_phase2(layout, step.label, "metric_met" if passed else "max_iterations")
        elif step.stage in STAGES:
            deft_stage(ctx, step.label, step.stage)
        else:
            raise StateError.at(f"deft_state.json next stage {step.label}/{step.stage}", "is unknown", "report it")
        refresh_report(ctx)
