"""Pruning AutoML trials from their per-epoch validation FAR, and stopping a pruned trial's training job.

A training job writes one validation per epoch into its `status.json` (`val_far`: the share of PASS rows
scoring at or above the weakest defect, the same FAR at full recall the trial is finally scored by). While a
trial trains, the sweep reads that history, reports each new epoch to the trial's Optuna `Trial` (step =
epochs done) and asks the study's pruner; when it says prune, `request_prune` leaves `pruned.json` in the
trial's directory (the epoch reached and the FAR there) and asks the run's `JobRunner` to stop the training
job: the local launcher kills its process group, a work-pool runner cancels its child run, whose worker
removes the container, deletes the Kubernetes Job or scancels the Slurm job. The trial then ends `pruned`
(`trials.run_trial` finds the file beside a cancelled training). On work pools the parent reads the same
`status.json` through the shared workspace mount.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from aoi_pipeline.config import AutomlSettings
from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.jobs.checkpoints import STATUS_FILE
from aoi_pipeline.jobs.status_json import read_status, validation_history
from aoi_pipeline.pipeline.job_runner import JobRunner, stop_job

if TYPE_CHECKING:
    from aoi_pipeline.pipeline.context import RunContext

PRUNE_FILE = "pruned.json"
TRAIN_DIR = "train"  # the trial's training job folder (trials.TRAIN_DIR)
PRUNE_METRIC = "val_far"
# Trials the median rule lets finish before it compares: fewer leaves one trial judging the next.
MEDIAN_STARTUP_TRIALS = 3
# Successive halving keeps the best third of the trials at each rung.
HALVING_REDUCTION_FACTOR = 3
# A pruned phase's trials validate after every epoch, so the pruner sees each one.
PRUNING_OVERRIDES = ("train.validation_interval=1",)
# How often the sweep reads the running trials' status.json while it waits for one to finish.
WATCH_POLL_S = 5.0


@dataclass(frozen=True)
class TrialWatch:
    """What pruning needs from the caller: a trial's validation history so far as (epochs done, FAR %), and
    a way to stop its job (True when it was stopped; False when it had ended already)."""

    history: Callable[[int], list[tuple[int, float]]]
    stop: Callable[[int, int, float], bool]
    poll_s: float = WATCH_POLL_S


def trial_watch(ctx: RunContext, phase: str, *, poll_s: float = WATCH_POLL_S) -> TrialWatch | None:
    """The watch of a phase whose pruner is on (None when it is off): histories from each trial's
    `train/status.json`, stops through the run's runner."""
    if ctx.automl(phase).pruner == "none":
        return None
    layout = ctx.layout

    def history(number: int) -> list[tuple[int, float]]:
        return validation_far(layout.trial_dir(phase, number) / TRAIN_DIR)

    def stop(number: int, epochs_done: int, value: float) -> bool:
        trial_dir = layout.trial_dir(phase, number)
        return request_prune(ctx.runner, trial_dir, trial_dir / TRAIN_DIR, epochs_done=epochs_done, value=value)

    return TrialWatch(history=history, stop=stop, poll_s=poll_s)


def make_pruner(settings: AutomlSettings) -> optuna.pruners.BasePruner:
    """The phase's pruner: none, the median rule or successive halving, from `pruner_warmup_epochs` on."""
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=settings.pruner_warmup_epochs
        )
    if settings.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=settings.pruner_warmup_epochs, reduction_factor=HALVING_REDUCTION_FACTOR
        )
    return optuna.pruners.NopPruner()


def validation_far(train_dir: Path) -> list[tuple[int, float]]:
    """(epochs done, validation FAR %) per validation the training job has written so far, in order."""
    history = validation_history(read_status(Path(train_dir) / STATUS_FILE))
    return [
        (epoch + 1, kpis[PRUNE_METRIC]) for epoch, kpis in history if math.isfinite(kpis.get(PRUNE_METRIC, math.nan))
    ]


def request_prune(runner: JobRunner, trial_dir: Path, train_dir: Path, *, epochs_done: int, value: float) -> bool:
    """Record the pruning decision in `pruned.json` and stop the training job; False when it could not be
    stopped (it ended first): the trial then finishes as it would have."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(trial_dir / PRUNE_FILE, {"epochs_done": epochs_done, PRUNE_METRIC: value})
    stopped = stop_job(runner, train_dir, f"pruned after {epochs_done} epoch(s) at validation FAR {value:.4g} %")
    if not stopped:
        (trial_dir / PRUNE_FILE).unlink(missing_ok=True)
    return stopped


def read_prune(trial_dir: Path) -> dict[str, Any] | None:
    """The pruning decision recorded for a trial, or None (never pruned, or an unreadable record)."""
    try:
        record = json.loads((Path(trial_dir) / PRUNE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("epochs_done"), int):
        return None
    return record
