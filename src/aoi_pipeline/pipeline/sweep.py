"""One AutoML sweep: keep up to `parallel` trials running until the recommendation budget is spent.

The loop asks the Optuna study for a recommendation whenever a slot is free, submits the trial through the
caller's `submit` (a Prefect task's `.submit` in the flow, a thread pool in tests), tells the study each
outcome as soon as it arrives, and reports progress after every trial. Trials already finished in the study
(a resumed run) count against the budget; trials left RUNNING by a crashed run are failed first, so they are
proposed again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import optuna

from aoi_pipeline.core.search_space import SearchParam
from aoi_pipeline.pipeline.study import (
    ATTR_REASON,
    INTERRUPTED,
    Proposal,
    ask,
    best_trial,
    fail_stale,
    tell,
    trials_table,
)
from aoi_pipeline.pipeline.trials import TrialOutcome

FutureT = TypeVar("FutureT", bound="ResultFuture")


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


def _finished(study: optuna.Study) -> int:
    """Trials that used up a recommendation; one a crash interrupted is proposed again instead."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return sum(
        1
        for trial in study.get_trials(deepcopy=False)
        if trial.state in done and trial.user_attrs.get(ATTR_REASON) != INTERRUPTED
    )


def run_sweep(
    study: optuna.Study,
    space: Sequence[SearchParam],
    *,
    recommendations: int,
    parallel: int,
    submit: Callable[[Proposal], FutureT],
    as_completed: Callable[[list[FutureT]], Iterator[FutureT]],
    on_progress: Callable[[list[dict[str, Any]]], None] = lambda table: None,
    finished: Callable[[int], TrialOutcome | None] | None = None,
) -> SweepSummary:
    """Run trials until `recommendations` have finished; returns the best trial and the trials table.

    `finished(number)` reads a trial's recorded outcome, so a trial that finished before a crash but was
    never told is told now instead of being run again.
    """
    interrupted = fail_stale(study, finished=finished)
    remaining = max(0, recommendations - _finished(study))
    running: dict[FutureT, Proposal] = {}
    while remaining or running:
        while remaining and len(running) < parallel:
            proposal = ask(study, space)
            running[submit(proposal)] = proposal
            remaining -= 1
        done = next(iter(as_completed(list(running))))
        proposal = running.pop(done)
        outcome: TrialOutcome = done.result()
        tell(study, proposal.number, outcome)
        on_progress(trials_table(study))
    return SweepSummary(best=best_trial(study), table=trials_table(study), interrupted=interrupted)
