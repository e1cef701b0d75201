"""The `deft-loop` flow: Phase 2, driven stage by stage by the run state's `next_stage`.

Each pass reads deft_state.json and runs the one stage it names, so a rerun after a crash continues at the
first stage not committed and never redoes a committed one. A failed stage is committed as a hard stop (the
run state becomes failed) and ends the flow; it is never retried automatically (a rerun by the user retries
it once).
"""

from __future__ import annotations

from prefect import flow

from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.stages import BASELINE, LoopStep, Stage, iteration_number
from aoi_pipeline.core.state import read_state
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.deft import run_loop, stop_reason
from tasks.deft import (
    deft_stage,
    publish_iteration_summary,
    refresh_report,
    report_phase2_progress,
    start_progress,
    update_progress,
)
from tasks.phases import confirm_candidate, evaluate, finalize_phase2, train_baseline


@flow(name="deft-loop", flow_run_name="phase2-deft", validate_parameters=False)
def deft_loop(ctx: RunContext, base_spec: Spec) -> str:
    """Run Phase 2 to its end; returns the final iteration label."""
    max_iterations = ctx.deft.max_iterations
    progress = start_progress(max_iterations)
    report_phase2_progress(ctx)

    def run_stage(label: str, stage: str) -> None:
        try:
            if stage == Stage.TRAIN and label == BASELINE:
                train_baseline(ctx, base_spec)
            elif stage == Stage.EVALUATE:
                evaluate(ctx, label)
                if iteration_number(label):
                    publish_iteration_summary(ctx, label)
                    report_phase2_progress(ctx)
            elif stage == LoopStep.FINALIZE:
                confirm_candidate(ctx)
                finalize_phase2(ctx.layout, label, stop_reason(ctx, label))
            else:
                deft_stage(ctx, label, stage)
        finally:  # after every commit, a hard stop's included
            refresh_report(ctx)
        update_progress(progress, read_state(ctx.layout.root)["current_iteration"], max_iterations)

    final = run_loop(ctx, run_stage)
    refresh_report(ctx)
    return final
