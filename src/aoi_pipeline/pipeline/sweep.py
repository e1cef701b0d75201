"""One AutoML sweep: keep up to `parallel` trials running until the budget is spent.

The loop asks the Optuna study for a recommendation whenever a slot is free, submits the trial through the
caller's `submit` (a Prefect task's `.submit` in the flow, a thread pool in tests), tells the study each
outcome as soon as it arrives, and reports progress after every trial. The budget is a number of
recommendations, or GPU-hours (`SweepBudget.max_gpu_hours`: new trials start while the finished and running
trials have used less than that; those started finish). With a `TrialWatch`, the loop reads every running
trial's per-epoch validation FAR while it waits, reports it on the trial, and stops a trial's job when the
study's pruner says prune.

Resuming: trials already finished in the study count against the budget; a trial left RUNNING by a crashed
run is told its recorded outcome when it has one, re-attached to when its job is still alive on a work pool,
and otherwise failed as interrupted and proposed again with the same parameters. A sweep that ends by an
error fails the trials it leaves running the same way, so no trial stays RUNNING in the study.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import optuna

from aoi_pipeline.config import AutomlSettings
from aoi_pipeline.core.search_space import SearchParam
from aoi_pipeline.pipeline.pruning import TrialWatch
from aoi_pipeline.pipeline.study import (
    ATTR_REASON,
    INTERRUPTED,
    Proposal,
    ask_trial,
    best_trial,
    fail_stale,
    interrupt,
    stale_running,
    tell,
    trials_table,
)
from aoi_pipeline.pipeline.trials import TrialOutcome

__all__ = ["SweepBudget", "SweepSummary", "TrialWatch", "run_sweep"]

FutureT = TypeVar("FutureT", bound="ResultFuture")
# The most trials a GPU-hour budget may start, whatever the hours: the same cap as `recommendations`.
MAX_TIME_BUDGET_TRIALS = 200
_S_PER_HOUR = 3600.0


class ResultFuture(Protocol):
    def result(self) -> Any: ...


@dataclass(frozen=True)
class SweepSummary:
    """What a finished sweep hands to the next phase."""

    best: optuna.trial.FrozenTrial | None
    table: list[dict[str, Any]]
    interrupted: list[int]

    @property
    def best_number(self) -> int | None:
        return None if self.best is None else self.best.number


@dataclass(frozen=True)
class SweepBudget:
    """How much one sweep may spend: `recommendations` trials, or `max_gpu_hours` of trial time x GPUs.

    `gpus_per_trial` is each trial's GPU share (0.25 when four trials share a GPU); a sweep on CPU counts each
    trial's wall time once.
    """

    recommendations: int | None = None
    max_gpu_hours: float | None = None
    gpus_per_trial: float = 1.0

    @classmethod
    def of_phase(cls, settings: AutomlSettings, gpus_per_trial: float) -> SweepBudget:
        """The budget an AutoML phase's settings give: GPU-hours when set, else its recommendations."""
        if settings.max_gpu_hours is not None:
            return cls(max_gpu_hours=settings.max_gpu_hours, gpus_per_trial=gpus_per_trial)
        return cls(recommendations=settings.recommendations, gpus_per_trial=gpus_per_trial)

    def hours(self, seconds: float) -> float:
        return seconds * (self.gpus_per_trial or 1.0) / _S_PER_HOUR


@dataclass
class _Running:
    proposal: Proposal
    trial: optuna.Trial
    started: float = field(default_factory=time.monotonic)
    reported: int = 0
    stopping: bool = False


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that used up a recommendation; one a crash interrupted is proposed again instead."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return [
        trial
        for trial in study.get_trials(deepcopy=False)
        if trial.state in done and trial.user_attrs.get(ATTR_REASON) != INTERRUPTED
    ]


class _Sweep:
    """The loop's state: the trials in flight, the parameters to propose again, the budget spent."""

    def __init__(
        self,
        study: optuna.Study,
        space: Sequence[SearchParam],
        budget: SweepBudget,
        submit: Callable[[Proposal], Any],
        watch: TrialWatch | None,
    ) -> None:
        self.study, self.space, self.budget, self.submit, self.watch = study, space, budget, submit, watch
        self.running: dict[Any, _Running] = {}
        self.retry: list[dict[str, Any]] = []
        finished = _finished(study)
        self.asked = len(finished)
        self.spent_s = sum(float(trial.user_attrs.get("duration_s") or 0.0) for trial in finished)

    def can_ask(self) -> bool:
        if self.budget.max_gpu_hours is None:
            return self.asked < (self.budget.recommendations or 0)
        in_flight_s = sum(time.monotonic() - entry.started for entry in self.running.values())
        used = self.budget.hours(self.spent_s + in_flight_s)
        return used < self.budget.max_gpu_hours and self.asked < MAX_TIME_BUDGET_TRIALS

    def start(self, proposal: Proposal, trial: optuna.Trial) -> None:
        self.running[self.submit(proposal)] = _Running(proposal, trial)
        self.asked += 1

    def ask(self) -> None:
        proposal, trial = ask_trial(self.study, self.space, self.retry.pop(0) if self.retry else None)
        self.start(proposal, trial)

    def finish(self, future: Any) -> None:
        entry = self.running[future]
        outcome: TrialOutcome = future.result()  # a trial that raised stays in `running` for `abandon`
        del self.running[future]
        self.spent_s += outcome.duration_s
        tell(self.study, entry.proposal.number, outcome)

    def poll(self) -> None:
        """Report each running trial's new validations and stop those its pruner gives up on."""
        if self.watch is None:
            return
        for entry in self.running.values():
            if entry.stopping:
                continue
            fresh = [
                (done, value) for done, value in self.watch.history(entry.proposal.number) if done > entry.reported
            ]
            for done, value in fresh:
                entry.trial.report(value, step=done)
                entry.reported = done
            if fresh and entry.trial.should_prune():
                done, value = fresh[-1]
                entry.stopping = self.watch.stop(entry.proposal.number, done, value)

    def abandon(self, reattachable: Callable[[int], bool] | None) -> None:
        """Fail the trials left running when the sweep ends by an error, except those a rerun re-attaches to."""
        for entry in self.running.values():
            number = entry.proposal.number
            frozen = self.study._storage.get_trial(entry.trial._trial_id)
            if frozen.state.is_finished() or (reattachable is not None and reattachable(number)):
                continue
            interrupt(self.study, frozen)


def _next_done(as_completed: Callable[..., Iterator[FutureT]], futures: list[FutureT], timeout: float | None) -> Any:
    """The first future to finish, or None when none did within `timeout` seconds."""
    completed = as_completed(futures, timeout=timeout)
    try:
        return next(iter(completed))
    except TimeoutError:
        return None
    finally:
        # Closing the generator ends its timeout scope now, not whenever it is collected.
        close = getattr(completed, "close", None)
        if close is not None:
            close()


def run_sweep(
    study: optuna.Study,
    space: Sequence[SearchParam],
    *,
    recommendations: int | None = None,
    parallel: int,
    submit: Callable[[Proposal], FutureT],
    as_completed: Callable[..., Iterator[FutureT]],
    on_progress: Callable[[list[dict[str, Any]]], None] = lambda table: None,
    finished: Callable[[int], TrialOutcome | None] | None = None,
    budget: SweepBudget | None = None,
    watch: TrialWatch | None = None,
    reattachable: Callable[[int], bool] | None = None,
) -> SweepSummary:
    """Run trials until the budget (`recommendations`, or `budget`) is spent; returns the best and the table.

    `finished(number)` reads a trial's recorded outcome, so a trial that finished before a crash but was
    never told is told now instead of being run again; `reattachable(number)` says whether a stale trial's
    job is still alive (work pools), so it is re-attached to rather than proposed again.
    """
    budget = budget or SweepBudget(recommendations=recommendations)
    interrupted = fail_stale(study, finished=finished, reattachable=reattachable)
    sweep = _Sweep(study, space, budget, submit, watch)
    sweep.retry = [dict(trial.params) for trial in study.get_trials(deepcopy=False) if trial.number in interrupted]
    for proposal, trial in stale_running(study):
        sweep.start(proposal, trial)
    timeout = None if watch is None else watch.poll_s
    try:
        while sweep.running or sweep.can_ask():
            while len(sweep.running) < parallel and sweep.can_ask():
                sweep.ask()
            done = _next_done(as_completed, list(sweep.running), timeout)
            if done is not None:
                sweep.finish(done)
                on_progress(trials_table(study))
            sweep.poll()
    except BaseException:
        sweep.abandon(reattachable)
        raise
    return SweepSummary(best=best_trial(study), table=trials_table(study), interrupted=interrupted)
