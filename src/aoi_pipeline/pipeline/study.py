"""The Optuna study of one AutoML phase, driven by ask/tell and stored in the run directory.

Phase 1 and Phase 3 each keep one study in a SQLite file inside the run directory, so a resumed run continues
the same study with every finished trial kept. The flow asks for a recommendation, runs it as real jobs and
tells the outcome: a scored trial completes with its FAR (minimised) and keeps its `val_loss` for breaking
ties, a failed or mode-collapsed trial is told as FAIL with its reason, a pruned one as PRUNED, and trials left
RUNNING by a crashed run are failed as interrupted and queued to be proposed again (Optuna's heartbeat cannot
do that for ask/tell trials), unless their job is still alive on a work pool: then the sweep re-attaches.
The SQLite file is an ordinary Optuna RDB storage, so `optuna-dashboard sqlite:///<file>` reads it. The sampler is TPE,
multivariate (the learning rate and the loss weights interact) with the constant liar, so recommendations
asked in parallel before any of them finishes are spread apart instead of piling onto one point.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial, TrialState

from aoi_pipeline.core.search_space import SearchParam
from aoi_pipeline.errors import ConfigError, Problem, StateError
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.trials import TrialOutcome

# The recommendation budget assumed when the caller does not give one: the reference's AOI advice is 5-10.
DEFAULT_RECOMMENDATIONS = 10
INTERRUPTED = "interrupted"
# Seconds a connection waits for another writer's lock on the SQLite file before giving up.
_SQLITE_LOCK_TIMEOUT_S = 30
_TABLE_DIGITS = 6

# User attributes each told trial carries (the study is the record the trials table is built from).
ATTR_OUTCOME = "outcome"
ATTR_REASON = "reason"
_OUTCOME_ATTRS = (
    "far_pct",
    "recall_pct",
    "threshold",
    "val_loss",
    "checkpoint",
    "train_spec_path",
    "inference_csv",
    "duration_s",
    "pruned_epoch",
)


@dataclass(frozen=True)
class Proposal:
    """One recommendation: the trial number the study gave it and its parameters by spec key."""

    number: int
    params: dict[str, Any]


def startup_trials(recommendations: int) -> int:
    """Random trials before TPE models the results: half the budget, at least 2 and at most 10.

    TPE needs a few results to model; Optuna's default of 10 random trials would make a 5-10
    recommendation sweep purely random, while fewer than 2 gives TPE nothing to compare.
    """
    return min(10, max(2, recommendations // 2))


def objective_name(recall_target_pct: float | None) -> str:
    """What a trial's value is, as the study (and optuna-dashboard) names it: "FAR@100% recall on validation"."""
    recall = 100.0 if recall_target_pct is None else recall_target_pct
    return f"FAR@{recall:g}% recall on validation"


def open_study(
    storage_path: Path,
    *,
    study_name: str,
    seed: int,
    recommendations: int | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    objective: str | None = None,
) -> optuna.Study:
    """Create or reopen (same file, same name) the minimising study of one phase.

    `objective` (see `objective_name`) names the value in the study, so optuna-dashboard labels its axes with
    it instead of "Objective Value".

    The parent directory must exist: it is created by the approved flow, never here. A reopened study keeps
    all its trials; its sampler is seeded with `seed` plus the number of trials already stored, because a
    sampler restarted with the same seed would propose the first recommendations of the run again.
    """
    storage_path = Path(storage_path)
    if not storage_path.parent.is_dir():
        raise StateError.at(
            str(storage_path.parent),
            "the directory of the Optuna study does not exist",
            "create the phase directory of the run before opening its study",
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(
        url=f"sqlite:///{storage_path.absolute()}",
        engine_kwargs={"connect_args": {"timeout": _SQLITE_LOCK_TIMEOUT_S}},
    )
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="minimize",
        sampler=_sampler(seed, recommendations),
        pruner=pruner or optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    if study.direction != optuna.study.StudyDirection.MINIMIZE:
        raise StateError.at(
            f"{storage_path} study {study_name!r}",
            f"the stored study maximises ({study.direction.name}) while FAR is minimised",
            "give this phase a fresh study file or another study name",
        )
    stored = len(study.get_trials(deepcopy=False))
    if stored:
        study.sampler = _sampler(seed + stored, recommendations)
    if objective is not None and study.metric_names != [objective]:
        with warnings.catch_warnings():  # set_metric_names is marked experimental; its behaviour is what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([objective])
    return study


def _sampler(seed: int, recommendations: int | None) -> TPESampler:
    return TPESampler(
        multivariate=True,
        constant_liar=True,
        seed=seed,
        n_startup_trials=startup_trials(recommendations or DEFAULT_RECOMMENDATIONS),
    )


def distributions(space: Sequence[SearchParam]) -> dict[str, BaseDistribution]:
    """The Optuna distribution of each searchable key; ConfigError naming every key that cannot be one."""
    result: dict[str, BaseDistribution] = {}
    problems: list[Problem] = []
    for param in space:
        try:
            result[param.key] = _distribution(param)
        except (TypeError, ValueError) as error:
            problems.append(
                Problem(
                    f"search_space key {param.key}",
                    f"{error} (kind {param.kind}, low {param.low!r}, high {param.high!r}, log {param.log})",
                    "give a float/int range with low < high (low > 0 when log-scaled) or a list of choices",
                )
            )
    if problems:
        raise ConfigError(problems, summary="the AutoML search space is invalid")
    return result


def _distribution(param: SearchParam) -> BaseDistribution:
    if param.kind == "categorical":
        if not param.choices:
            raise ValueError("a categorical parameter needs choices")
        return CategoricalDistribution(param.choices)
    if param.low is None or param.high is None or not param.low < param.high:
        raise ValueError("the range needs low < high")
    if param.kind == "int":
        if param.low != int(param.low) or param.high != int(param.high):
            raise ValueError("an int range needs whole-number bounds")
        return IntDistribution(int(param.low), int(param.high), log=param.log)
    if param.kind == "float":
        return FloatDistribution(float(param.low), float(param.high), log=param.log)
    raise ValueError(f"unknown kind {param.kind!r}")


def ask(study: optuna.Study, space: Sequence[SearchParam]) -> Proposal:
    """The next recommendation; the trial stays RUNNING until `tell` (or `fail_stale` after a crash)."""
    return ask_trial(study, space)[0]


def ask_trial(
    study: optuna.Study, space: Sequence[SearchParam], params: dict[str, Any] | None = None
) -> tuple[Proposal, optuna.Trial]:
    """The next recommendation and its Optuna trial (per-epoch values are reported on it for pruning).

    `params` proposes those values again (an interrupted trial's) instead of sampling new ones.
    """
    if params:
        study.enqueue_trial(params, skip_if_exists=False)
    trial = study.ask(distributions(space))
    return Proposal(number=trial.number, params=dict(trial.params)), trial


def tell(study: optuna.Study, number: int, outcome: TrialOutcome) -> None:
    """Record a trial's outcome: complete with its FAR, PRUNED, or FAIL with the reason (failed or collapsed).

    A trial already finished in the study keeps its record, so telling again after a resume is harmless.
    """
    if outcome.number != number:
        raise StateError.at(
            f"trial {number}",
            f"the outcome belongs to trial {outcome.number}",
            "tell each trial the outcome of its own run",
        )
    complete = outcome.state == "complete"
    if complete and (outcome.far_pct is None or not math.isfinite(outcome.far_pct)):
        raise StateError.at(
            f"trial {number}",
            f"a complete outcome has no finite far_pct (got {outcome.far_pct!r})",
            "tell a trial without a FAR as failed",
        )
    frozen = _frozen_trial(study, number)
    if frozen.state.is_finished():
        return
    attrs = {ATTR_OUTCOME: outcome.state, ATTR_REASON: outcome.reason}
    attrs.update((name, _attr_value(getattr(outcome, name))) for name in _OUTCOME_ATTRS)
    _set_user_attrs(study, frozen, attrs)
    if complete:
        study.tell(number, outcome.far_pct)
    elif outcome.state == "pruned":
        study.tell(number, state=TrialState.PRUNED)  # Optuna keeps its last reported FAR as its value
    else:
        study.tell(number, state=TrialState.FAIL)


def _attr_value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _set_user_attrs(study: optuna.Study, trial: FrozenTrial, attrs: dict[str, Any]) -> None:
    # Optuna has no public handle on a running trial by number (its own `tell` goes through the storage
    # the same way); building an `optuna.Trial` instead would also run the sampler's per-trial hook.
    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)


def _frozen_trial(study: optuna.Study, number: int) -> FrozenTrial:
    for trial in study.get_trials(deepcopy=False):
        if trial.number == number:
            return trial
    raise StateError.at(
        f"study {study.study_name!r}",
        f"has no trial number {number}",
        "tell only trials that were asked from this study",
    )


def fail_stale(
    study: optuna.Study,
    *,
    finished: Callable[[int], TrialOutcome | None] | None = None,
    reattachable: Callable[[int], bool] | None = None,
) -> list[int]:
    """Settle the trials a crashed run left RUNNING; returns the numbers failed as interrupted.

    Call it once when a run reopens its study, before asking: it cannot tell a stale trial from one still
    running in this process. With `finished`, a stale trial whose run did finish (its outcome was written
    but never told) is told that outcome. With `reattachable`, a stale trial whose job is still alive (on a
    work pool) stays RUNNING for the caller to re-attach to (`stale_running`). Every other one is failed
    (reason "interrupted"); the sweep proposes its parameters again (`ask_trial`'s `params`).
    """
    failed: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        outcome = finished(trial.number) if finished is not None else None
        if outcome is not None:
            tell(study, trial.number, outcome)
        elif reattachable is None or not reattachable(trial.number):
            interrupt(study, trial)
            failed.append(trial.number)
    return failed


def interrupt(study: optuna.Study, trial: FrozenTrial) -> None:
    """Fail a trial whose run was interrupted (reason "interrupted"); it uses up no recommendation."""
    _set_user_attrs(study, trial, {ATTR_OUTCOME: "failed", ATTR_REASON: INTERRUPTED})
    study.tell(trial.number, state=TrialState.FAIL)


def stale_running(study: optuna.Study) -> list[tuple[Proposal, optuna.Trial]]:
    """The trials still RUNNING after `fail_stale` (jobs alive on a work pool), as proposals to re-attach
    to, each with the Optuna trial its per-epoch values are reported on."""
    return [
        (Proposal(trial.number, dict(trial.params)), optuna.trial.Trial(study, trial._trial_id))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial with the lowest FAR; ties go to the lower val_loss, then the earlier trial."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    return min(complete, key=_rank)


def _rank(trial: FrozenTrial) -> tuple[float, float, int]:
    val_loss = trial.user_attrs.get("val_loss")
    tie_break = val_loss if isinstance(val_loss, int | float) and math.isfinite(val_loss) else math.inf
    value = cast(float, trial.value)  # only complete trials are ranked, and they carry their value
    return (float(value), float(tie_break), trial.number)


_STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
    TrialState.PRUNED: "pruned",
}


def trials_table(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial, in trial order, for a table artifact: every row has the same columns.

    Columns: number, state (complete | failed | collapsed | pruned | running), far_pct, val_loss, duration_s,
    pruned_epoch (epochs done when pruned), one column per searched spec key (None where a trial did not
    search it), reason.
    """
    trials = sorted(study.get_trials(deepcopy=False), key=lambda trial: trial.number)
    keys: list[str] = []
    for trial in trials:
        keys += [key for key in trial.params if key not in keys]
    return [_table_row(trial, keys) for trial in trials]


def _table_row(trial: FrozenTrial, param_keys: list[str]) -> dict[str, Any]:
    attrs = trial.user_attrs
    far_pct = trial.value if trial.state == TrialState.COMPLETE else attrs.get("far_pct")
    duration = attrs.get("duration_s")
    if duration is None and trial.duration is not None:
        duration = trial.duration.total_seconds()
    row: dict[str, Any] = {
        "number": trial.number,
        "state": attrs.get(ATTR_OUTCOME) or _STATE_NAMES.get(trial.state, trial.state.name.lower()),
        "far_pct": _rounded(far_pct),
        "val_loss": _rounded(attrs.get("val_loss")),
        "duration_s": None if duration is None else round(float(duration), 1),
        "pruned_epoch": attrs.get("pruned_epoch"),
    }
    for key in param_keys:
        row[key] = _rounded(trial.params.get(key))
    row["reason"] = attrs.get(ATTR_REASON) or ""
    return row


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits: the table is read by people; the study keeps the exact values."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{_TABLE_DIGITS}g}")
    return value


def trial_counts(layout: RunLayout) -> dict[str, dict[str, int]]:
    """Each AutoML phase's trials by how they ended (complete, pruned, failed, collapsed, interrupted, ...),
    read from its study file; a phase without a study is left out."""
    counts: dict[str, dict[str, int]] = {}
    for phase in ("phase1", "phase3"):
        path = layout.study_storage(phase)
        if not path.is_file():
            continue
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=phase, storage=f"sqlite:///{path.absolute()}")
        phase_counts: dict[str, int] = {}
        for row in trials_table(study):
            state = "interrupted" if row["reason"] == INTERRUPTED else row["state"]
            phase_counts[state] = phase_counts.get(state, 0) + 1
        counts[phase] = phase_counts
    return counts
