"""The `automl-sweep` flow: one AutoML phase (Phase 1, or Phase 3 warm-started), trials as task runs."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.futures import as_completed

from aoi_pipeline.core.search_space import build_search_space
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.pruning import make_pruner, trial_watch
from aoi_pipeline.pipeline.study import Proposal, objective_name, open_study
from aoi_pipeline.pipeline.sweep import SweepBudget, run_sweep
from aoi_pipeline.pipeline.trials import TrialOutcome, read_outcome, trial_in_flight
from tasks.phases import after_trial, sweep_started, trial


@flow(name="automl-sweep", flow_run_name="{phase}-automl", validate_parameters=False)
def automl_sweep(
    ctx: RunContext, phase: str, base_spec: Spec, pretrained_model: Path | None = None
) -> TrialOutcome | None:
    """Run the phase's recommendations; returns the winning trial's outcome (None: no trial was usable)."""
    layout, settings = ctx.layout, ctx.automl(phase)
    layout.phase_dir(phase).mkdir(parents=True, exist_ok=True)
    study = open_study(
        layout.study_storage(phase),
        study_name=phase,
        seed=settings.seed,
        recommendations=settings.recommendations,
        pruner=make_pruner(settings),
        objective=objective_name(ctx.contract.recall_target_pct),
    )
    space = build_search_space(settings.search_space, warm_start=pretrained_model is not None)

    def submit(proposal: Proposal):
        return trial.submit(
            ctx,
            phase=phase,
            number=proposal.number,
            params=proposal.params,
            base_spec=base_spec,
            pretrained_model=pretrained_model,
        )

    sweep_started(ctx, phase)
    summary = run_sweep(
        study,
        space,
        parallel=settings.parallel,
        submit=submit,
        as_completed=as_completed,
        on_progress=lambda table: after_trial(ctx, phase, table),
        finished=lambda number: read_outcome(layout.trial_dir(phase, number)),
        budget=SweepBudget.of_phase(settings, ctx.jobs.gpus),
        watch=trial_watch(ctx, phase),
        reattachable=lambda number: trial_in_flight(layout.trial_dir(phase, number)),
    )
    if summary.best_number is None:
        get_run_logger().warning(
            "%s: none of the %d trials completed with a usable model (see the trials table)", phase, len(summary.table)
        )
        return None
    return read_outcome(layout.trial_dir(phase, summary.best_number))
