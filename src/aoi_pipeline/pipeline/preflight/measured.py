"""Job durations measured by earlier runs in the same results root, for the pre-flight's compute estimate.

A config without `estimates` gets its minutes per recommendation and per DEFT iteration from the most recent
earlier runs that recorded them: the median finished AutoML trial (`trial.json` durations, per epoch of its
training spec, scaled to the epochs this config asks for) and the median evaluated DEFT iteration
(`deft_state.json` stage durations, per epoch of that run, scaled likewise). Only reads; an unreadable run
is skipped. Scaling by epochs is approximate (inference and mining do not scale), so the plan says "measured".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.progress import iteration_seconds
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.state import read_state, state_path
from aoi_pipeline.errors import AoiPipelineError
from aoi_pipeline.pipeline.trials import TRIAL_FILE, read_outcome

_RECENT_RUNS = 20  # the newest run directories looked at; older ones describe older set-ups


@dataclass(frozen=True)
class Measured:
    """Minutes of one unit as measured (None: no earlier run recorded one) and the run it came from."""

    minutes: float | None = None
    source: str | None = None

    def text(self, what: str) -> str:
        return f"{self.minutes:.2g} min (measured in {self.source}, scaled to this config's epochs; {what})"


@dataclass(frozen=True)
class MeasuredMinutes:
    per_recommendation: Measured = Measured(None, None)
    per_iteration: Measured = Measured(None, None)


NOTHING_MEASURED = MeasuredMinutes()


def measured_minutes(results_root: Path, current_run: str, config: PipelineConfig) -> MeasuredMinutes:
    """The newest measured durations among the earlier runs under `results_root` (not `current_run`)."""
    try:
        runs = sorted((p for p in results_root.glob("run_*") if p.is_dir() and p.name != current_run), reverse=True)
    except OSError:
        return MeasuredMinutes()
    trial_epochs = config.phase1.num_epochs if config.phase1.enabled else config.phase3.num_epochs
    recommendation, iteration = Measured(), Measured()
    for run in runs[:_RECENT_RUNS]:
        if recommendation.minutes is None:
            per_epoch = _trial_seconds_per_epoch(run)
            if per_epoch is not None:
                recommendation = Measured(per_epoch * trial_epochs / 60.0, run.name)
        if iteration.minutes is None:
            per_epoch = _iteration_seconds_per_epoch(run)
            if per_epoch is not None:
                iteration = Measured(per_epoch * config.deft.num_epochs / 60.0, run.name)
    return MeasuredMinutes(recommendation, iteration)


@dataclass(frozen=True)
class EpochSeconds:
    """Seconds per training epoch of an AutoML trial and of a DEFT iteration (None: none measured yet)."""

    trial: float | None = None
    iteration: float | None = None


def epoch_seconds(results_root: Path, run_name: str) -> EpochSeconds:
    """This run's own seconds per epoch where it has finished a unit, else the newest earlier run's."""
    own = results_root / run_name
    trial, iteration = _trial_seconds_per_epoch(own), _iteration_seconds_per_epoch(own)
    try:
        earlier = sorted((p for p in results_root.glob("run_*") if p.is_dir() and p.name != run_name), reverse=True)
    except OSError:
        earlier = []
    for run in earlier[:_RECENT_RUNS]:
        if trial is not None and iteration is not None:
            break
        trial = trial if trial is not None else _trial_seconds_per_epoch(run)
        iteration = iteration if iteration is not None else _iteration_seconds_per_epoch(run)
    return EpochSeconds(trial, iteration)


def _trial_seconds_per_epoch(run: Path) -> float | None:
    rates = []
    for record in sorted(run.glob(f"phase[13]/trial_*/{TRIAL_FILE}")):
        try:
            outcome = read_outcome(record.parent)
            if outcome is None or outcome.state != "complete" or outcome.train_spec_path is None:
                continue
            epochs = load_spec(outcome.train_spec_path)["train"]["num_epochs"]
        except (AoiPipelineError, OSError, KeyError, TypeError):
            continue
        if isinstance(epochs, int) and epochs > 0:
            rates.append(outcome.duration_s / epochs)
    return statistics.median(rates) if rates else None


def _iteration_seconds_per_epoch(run: Path) -> float | None:
    if not state_path(run).exists():
        return None
    try:
        state = read_state(run)
        seconds = iteration_seconds(state)
        epochs = state["config"]["num_epochs"]
    except (AoiPipelineError, OSError, KeyError, TypeError):
        return None
    if not seconds or not isinstance(epochs, int) or epochs <= 0:
        return None
    return statistics.median(seconds) / epochs
