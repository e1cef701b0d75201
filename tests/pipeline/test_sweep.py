"""An AutoML sweep on a real Optuna study: the budget, the parallel slots, resuming, progress and the winner.

Trials run in a thread pool standing in for Prefect task futures. A fake trial scores a recommendation with a
FAR derived from its learning rate alone, so the best trial can be named without the code under test, and it
counts how many trials are in flight at once.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import optuna
import pytest

from aoi_pipeline.core.search_space import SearchParam
from aoi_pipeline.pipeline.study import ask, open_study
from aoi_pipeline.pipeline.sweep import SweepBudget, TrialWatch, run_sweep
from aoi_pipeline.pipeline.trials import TrialOutcome

SPACE = (
    SearchParam("train.optim.lr", "float", 5e-6, 5e-4, log=True),
    SearchParam("train.optim.momentum", "float", 0.85, 0.99),
)
LR = "train.optim.lr"
# Long enough for the sweep to fill every slot before the first trial ends; trials wait for that anyway.
SLOTS_FILLED_TIMEOUT_S = 10.0


def far_of(params: dict[str, Any]) -> float:
    """FAR in % that rises with the learning rate: 5e-6 -> 0.5 %, 5e-4 -> 50 %."""
    return params[LR] * 1e5


def outcome(number: int, params: dict[str, Any], far_pct: float | None = None) -> TrialOutcome:
    far = far_of(params) if far_pct is None else far_pct
    return TrialOutcome(
        number=number,
        params=dict(params),
        state="complete",
        far_pct=far,
        recall_pct=100.0,
        threshold=0.5,
        val_loss=0.3,
        checkpoint=None,
        train_spec_path=None,
        inference_csv=None,
        duration_s=0.01,
    )


class FakeTrials:
    """The trial function and its evidence: which trials ran, and the most that ran at once."""

    def __init__(self, parallel: int) -> None:
        self.parallel = parallel
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.ran: list[int] = []
        self.slots_filled = threading.Event()

    def __call__(self, number: int, params: dict[str, Any]) -> TrialOutcome:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.ran.append(number)
            if self.in_flight >= self.parallel:
                self.slots_filled.set()
        try:
            # The first trials wait until the sweep has filled every slot (never forever: a sweep that does
            # not fill them shows as a max_in_flight below `parallel`).
            self.slots_filled.wait(SLOTS_FILLED_TIMEOUT_S)
            return outcome(number, params)
        finally:
            with self.lock:
                self.in_flight -= 1


def sweep(
    study: optuna.Study, *, recommendations: int, parallel: int, trials: FakeTrials, **options: Any
) -> tuple[Any, list[list[dict[str, Any]]]]:
    progress: list[list[dict[str, Any]]] = []
    with ThreadPoolExecutor(max_workers=parallel + 2) as pool:
        summary = run_sweep(
            study,
            SPACE,
            recommendations=recommendations,
            parallel=parallel,
            submit=lambda proposal: pool.submit(trials, proposal.number, proposal.params),
            as_completed=as_completed,
            on_progress=progress.append,
            **options,
        )
    return summary, progress


def study_at(path: Path, recommendations: int = 6) -> optuna.Study:
    return open_study(path, study_name="phase1", seed=0, recommendations=recommendations)


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [trial for trial in study.get_trials(deepcopy=False) if trial.state.is_finished()]


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "phase1" / "optuna_study.db"


@pytest.fixture(autouse=True)
def _phase_dir(storage: Path) -> None:
    storage.parent.mkdir(parents=True)


@pytest.mark.parametrize(("recommendations", "parallel"), [(5, 2), (4, 1), (3, 4)])
def test_exactly_the_budget_runs_and_never_more_than_the_slots_at_once(storage, recommendations, parallel):
    trials = FakeTrials(min(parallel, recommendations))
    summary, _ = sweep(study_at(storage), recommendations=recommendations, parallel=parallel, trials=trials)
    assert len(trials.ran) == recommendations
    assert sorted(trials.ran) == list(range(recommendations))
    assert trials.max_in_flight == min(parallel, recommendations)
    study = study_at(storage)
    assert len(study.trials) == recommendations
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)
    assert summary.interrupted == []


def test_the_best_trial_has_the_lowest_far(storage):
    trials = FakeTrials(2)
    summary, _ = sweep(study_at(storage), recommendations=6, parallel=2, trials=trials)
    study = study_at(storage)
    expected = min(study.trials, key=lambda trial: far_of(trial.params))
    assert summary.best is not None and summary.best_number == expected.number
    assert summary.best.value == pytest.approx(far_of(expected.params))


def test_progress_is_reported_once_per_finished_trial(storage):
    trials = FakeTrials(2)
    summary, progress = sweep(study_at(storage), recommendations=5, parallel=2, trials=trials)
    assert len(progress) == 5
    finished_rows = [sum(row["state"] == "complete" for row in table) for table in progress]
    assert finished_rows == [1, 2, 3, 4, 5]
    assert [row["number"] for row in summary.table] == [0, 1, 2, 3, 4]
    assert all(row[LR] is not None and row["far_pct"] is not None for row in summary.table)


def test_a_resumed_study_runs_only_the_remaining_recommendations(storage):
    first = FakeTrials(2)
    sweep(study_at(storage), recommendations=2, parallel=2, trials=first)
    second = FakeTrials(2)
    _, progress = sweep(study_at(storage), recommendations=5, parallel=2, trials=second)
    assert sorted(second.ran) == [2, 3, 4]
    assert len(progress) == 3
    assert len(finished(study_at(storage))) == 5
    third = FakeTrials(1)
    sweep(study_at(storage), recommendations=5, parallel=2, trials=third)
    assert third.ran == []


def test_a_stale_trial_whose_outcome_was_recorded_is_told_not_rerun(storage):
    crashed = study_at(storage)
    stale = ask(crashed, SPACE)  # left RUNNING: the run died after the trial wrote its outcome
    recorded = {stale.number: outcome(stale.number, stale.params, far_pct=0.01)}
    trials = FakeTrials(2)
    summary, progress = sweep(study_at(storage), recommendations=3, parallel=2, trials=trials, finished=recorded.get)
    assert stale.number not in trials.ran
    assert len(trials.ran) == 2 and len(progress) == 2
    assert summary.interrupted == []
    study = study_at(storage)
    told = next(trial for trial in study.trials if trial.number == stale.number)
    assert told.state == optuna.trial.TrialState.COMPLETE and told.value == 0.01
    assert summary.best_number == stale.number


def test_a_stale_trial_without_an_outcome_is_failed_as_interrupted(storage):
    crashed = study_at(storage)
    stale = ask(crashed, SPACE)
    trials = FakeTrials(1)
    summary, _ = sweep(study_at(storage), recommendations=3, parallel=1, trials=trials, finished=lambda n: None)
    assert summary.interrupted == [stale.number]
    assert stale.number not in trials.ran
    interrupted = next(trial for trial in study_at(storage).trials if trial.number == stale.number)
    assert interrupted.state == optuna.trial.TrialState.FAIL
    assert interrupted.user_attrs["reason"] == "interrupted"


def test_an_interrupted_trial_does_not_use_up_a_recommendation(storage):
    crashed = study_at(storage)
    sweep(crashed, recommendations=1, parallel=1, trials=FakeTrials(1))
    ask(crashed, SPACE)  # the crash hit while this trial ran
    trials = FakeTrials(1)
    sweep(study_at(storage), recommendations=3, parallel=1, trials=trials, finished=lambda n: None)
    complete = [t for t in study_at(storage).trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    assert len(trials.ran) == 2


def test_failed_trials_count_against_the_budget_and_do_not_win(storage):
    def failing_every_other(number: int, params: dict[str, Any]) -> TrialOutcome:
        if number % 2:
            return TrialOutcome(number, dict(params), "failed", None, None, None, None, None, None, None, 0.1, "boom")
        return outcome(number, params, far_pct=40.0 - number)

    with ThreadPoolExecutor(max_workers=2) as pool:
        summary = run_sweep(
            study_at(storage),
            SPACE,
            recommendations=4,
            parallel=2,
            submit=lambda proposal: pool.submit(failing_every_other, proposal.number, proposal.params),
            as_completed=as_completed,
        )
    states = {row["number"]: row["state"] for row in summary.table}
    assert states == {0: "complete", 1: "failed", 2: "complete", 3: "failed"}
    assert summary.best_number == 2


# ------------------------------------------------------------------------ resume, pruning and a time budget


def test_an_interrupted_trial_is_proposed_again_with_its_parameters(storage):
    crashed = study_at(storage)
    stale = ask(crashed, SPACE)
    trials = FakeTrials(1)
    sweep(study_at(storage), recommendations=1, parallel=1, trials=trials, finished=lambda n: None)
    study = study_at(storage)
    [rerun] = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert rerun.number != stale.number
    assert rerun.params == pytest.approx(stale.params)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING))


def test_a_stale_trial_whose_job_is_alive_is_reattached_not_failed(storage):
    crashed = study_at(storage)
    stale = ask(crashed, SPACE)  # its work-pool job outlived the parent
    trials = FakeTrials(1)
    summary, _ = sweep(
        study_at(storage), recommendations=2, parallel=1, trials=trials, reattachable=lambda n: n == stale.number
    )
    assert summary.interrupted == []
    assert trials.ran[0] == stale.number and len(trials.ran) == 2
    study = study_at(storage)
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_a_sweep_ending_by_an_error_leaves_no_trial_running(storage):
    release = threading.Event()

    def trial(number: int, params: dict[str, Any]) -> TrialOutcome:
        if number == 0:
            raise RuntimeError("the flow run was cancelled")
        release.wait(10)
        return outcome(number, params)

    with ThreadPoolExecutor(max_workers=2) as pool, pytest.raises(RuntimeError):
        run_sweep(
            study_at(storage),
            SPACE,
            recommendations=3,
            parallel=2,
            submit=lambda proposal: pool.submit(trial, proposal.number, proposal.params),
            as_completed=as_completed,
        )
    release.set()
    study = study_at(storage)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert {trial.user_attrs.get("reason") for trial in study.trials} == {"interrupted"}


class EpochTrials:
    """Trials that train `epochs` epochs of `epoch_s` each; the FAR of every epoch is the trial's final FAR.

    `history` serves the sweep's watch; `stop` ends a trial's training early, as a stopped job would. A trial
    starts its next epoch only once the watch has read its last one (or 10 s passed), so what the pruner sees
    does not depend on how fast a loaded machine runs the watch."""

    def __init__(self, epochs: int, epoch_s: float) -> None:
        self.epochs, self.epoch_s = epochs, epoch_s
        self.done: dict[int, int] = {}
        self.read: dict[int, int] = {}
        self.far: dict[int, float] = {}
        self.stopped: dict[int, threading.Event] = {}
        self.progress = threading.Condition()

    def __call__(self, number: int, params: dict[str, Any]) -> TrialOutcome:
        self.far[number], self.done[number] = far_of(params), 0
        stop = self.stopped.setdefault(number, threading.Event())
        for _ in range(self.epochs):
            if stop.wait(self.epoch_s):
                pruned = dataclasses.replace(outcome(number, params), state="pruned", far_pct=None)
                return dataclasses.replace(pruned, pruned_epoch=self.done[number])
            with self.progress:
                self.done[number] += 1
                self.progress.wait_for(
                    lambda: self.read.get(number, 0) >= self.done[number] or stop.is_set(), timeout=10
                )
        return outcome(number, params)

    def history(self, number: int) -> list[tuple[int, float]]:
        with self.progress:
            self.read[number] = done = self.done.get(number, 0)
            self.progress.notify_all()
        return [(epoch, self.far[number]) for epoch in range(1, done + 1)]

    def stop(self, number: int, epochs_done: int, value: float) -> bool:
        with self.progress:
            self.stopped.setdefault(number, threading.Event()).set()
            self.progress.notify_all()
        return True


def test_the_median_pruner_stops_a_trial_worse_than_the_finished_ones(storage):
    study = open_study(storage, study_name="phase1", seed=0, recommendations=5, pruner=optuna.pruners.MedianPruner(3))
    for lr in (1e-5, 2e-5, 3e-5, 4e-4):  # FAR 1, 2, 3 % and a hopeless 40 %
        study.enqueue_trial({LR: lr, "train.optim.momentum": 0.9})
    trials = EpochTrials(epochs=6, epoch_s=0.05)
    watch = TrialWatch(history=trials.history, stop=trials.stop, poll_s=0.01)
    with ThreadPoolExecutor(max_workers=2) as pool:
        summary = run_sweep(
            study,
            SPACE,
            recommendations=4,
            parallel=1,
            submit=lambda proposal: pool.submit(trials, proposal.number, proposal.params),
            as_completed=as_completed,
            watch=watch,
        )
    states = [row["state"] for row in summary.table]
    assert states == ["complete", "complete", "complete", "pruned"]
    assert trials.done[3] < 6
    pruned = study_at(storage).trials[3]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert pruned.intermediate_values and list(pruned.intermediate_values.values()) == pytest.approx(
        [40.0] * len(pruned.intermediate_values)
    )
    assert pruned.value == pytest.approx(40.0)  # Optuna keeps the last reported FAR


def test_a_gpu_hour_budget_starts_trials_until_the_hours_are_used(storage):
    def timed(number: int, params: dict[str, Any]) -> TrialOutcome:
        return dataclasses.replace(outcome(number, params), duration_s=900.0)  # a quarter of an hour each

    with ThreadPoolExecutor(max_workers=2) as pool:
        summary = run_sweep(
            study_at(storage),
            SPACE,
            parallel=1,
            submit=lambda proposal: pool.submit(timed, proposal.number, proposal.params),
            as_completed=as_completed,
            budget=SweepBudget(max_gpu_hours=0.5, gpus_per_trial=0.5),  # 0.125 GPU-hours per trial
        )
    assert len(summary.table) == 4
