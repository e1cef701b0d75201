"""The phases still ahead of a running phase, with their measured unit durations, for the run's time left.

Phase 2 still has its DEFT iterations ahead while Phase 1 runs, and Phase 3 (when enabled) its trials while
Phase 1 or Phase 2 runs. A unit's duration is the seconds per epoch measured on this run's finished units
(else on the newest earlier run in the same results root) times the epochs that phase trains, the scaling
the pre-flight estimate uses too.
"""

from __future__ import annotations

from aoi_pipeline.core.progress import PhaseAhead
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.preflight.measured import epoch_seconds


def phases_ahead(ctx: RunContext, phase: str) -> tuple[PhaseAhead, ...]:
    """The phases after `phase` that this run will still run, each with its measured unit seconds."""
    rates = epoch_seconds(ctx.layout.root.parent, ctx.layout.root.name)
    ahead = []
    if phase == "phase1":
        iteration_s = None if rates.iteration is None else rates.iteration * ctx.deft.num_epochs
        ahead.append(PhaseAhead("phase2", ctx.deft.max_iterations, iteration_s))
    if phase in ("phase1", "phase2") and ctx.phase3.enabled:
        trial_s = None if rates.trial is None else rates.trial * ctx.phase3.num_epochs
        ahead.append(PhaseAhead("phase3", ctx.phase3.recommendations, trial_s, ctx.phase3.parallel))
    return tuple(ahead)
