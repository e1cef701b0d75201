"""The `deft-loop` flow: Phase 2, driven stage by stage by the run state's `next_stage`.

Each pass reads deft_state.json and runs the one stage it names, so a rerun after a crash continues at the
first stage not committed and never redoes a committed one.
"""

from __future__ import annotations

from prefect import flow

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.state import BASELINE, next_stage, read_state
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import StateError
from aoi_pipeline.pipeline.evaluation import JobContext
from aoi_pipeline.pipeline.layout import RunLayout
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
    while True:
        state = read_state(layout.root)
        step = next_stage(state)
        if step.stage == "complete":
            return step.label
        if step.stage == "halt":
            raise StateError.at(
                str(layout.root / "deft_state.json"),
                f"the run stopped at {step.label} after a failed stage",
                "read the last event's summary, fix the cause, then re-run to retry that stage",
            )
        if step.stage == "train" and step.label == BASELINE:
            train_baseline(layout, base_spec, config, jobs)
        elif step.stage == "evaluate":
            evaluate(layout, step.label, contract, workspace, jobs)
        elif step.stage == "finalize":
            passed = state["iterations"][step.label]["metric_result"]["passed"]
            finalize_phase2(layout, step.label, "metric_met" if passed else "max_iterations")
        else:
            raise StateError.at(
                f"deft_state.json next stage {step.label}/{step.stage}",
                "DEFT iterations (RCA, routing, SDG, mining, merge) are not available in this version",
                "set deft.max_iterations: 0",
            )
