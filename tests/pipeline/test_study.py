"""The Optuna study of an AutoML phase: distributions, ask/tell, resume from the SQLite file, best trial."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from aoi_pipeline.core.search_space import DEFAULT_SEARCH_SPACE, SearchParam
from aoi_pipeline.errors import ConfigError, StateError
from aoi_pipeline.pipeline.study import (
    ask,
    best_trial,
    distributions,
    fail_stale,
    objective_name,
    open_study,
    startup_trials,
    tell,
    trials_table,
)
from aoi_pipeline.pipeline.trials import TrialOutcome

SPACE = (
    SearchParam("train.optim.lr", "float", 5e-6, 5e-4, log=True),
    SearchParam("model.classify.learnable_difference_modules", "int", 1, 4),
    SearchParam("train.optim.optim", "categorical", choices=("adamw", "sgd")),
)


def outcome(
    number: int,
    state: str = "complete",
    far_pct: float | None = 10.0,
    val_loss: float | None = 0.5,
    reason: str = "",
) -> TrialOutcome:
    return TrialOutcome(
        number=number,
        params={},
        state=state,  # type: ignore[arg-type]
        far_pct=far_pct,
        recall_pct=100.0 if far_pct is not None else None,
        threshold=0.4 if far_pct is not None else None,
        val_loss=val_loss,
        checkpoint=Path(f"/run/phase1/trial_{number:03d}/train/model_epoch_001_step_00010.pth"),
        train_spec_path=None,
        inference_csv=None,
        duration_s=12.5,
        reason=reason,
    )


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "optuna_study.db"


def study_at(storage: Path, seed: int = 0, recommendations: int | None = 6):
    return open_study(storage, study_name="phase1", seed=seed, recommendations=recommendations)


def test_the_learning_rate_is_log_scaled_and_each_kind_maps_to_its_distribution():
    found = distributions(SPACE)
    assert found["train.optim.lr"] == FloatDistribution(5e-6, 5e-4, log=True)
    assert found["model.classify.learnable_difference_modules"] == IntDistribution(1, 4)
    assert found["train.optim.optim"] == CategoricalDistribution(("adamw", "sgd"))
    default = distributions(DEFAULT_SEARCH_SPACE)
    assert isinstance(default["train.optim.lr"], FloatDistribution) and default["train.optim.lr"].log


def test_every_invalid_range_is_named_at_once():
    bad = (
        SearchParam("train.optim.lr", "float", 0.0, 1e-3, log=True),
        SearchParam("train.optim.momentum", "float", 0.9, 0.5),
        SearchParam("train.optim.weight_decay", "float", 1e-4, 0.1),
    )
    with pytest.raises(ConfigError) as raised:
        distributions(bad)
    where = [problem.where for problem in raised.value.problems]
    assert where == ["search_space key train.optim.lr", "search_space key train.optim.momentum"]


def test_startup_trials_are_half_the_budget_within_2_and_10():
    assert [startup_trials(n) for n in (1, 3, 5, 8, 10, 40)] == [2, 2, 2, 4, 5, 10]


def test_parallel_asks_give_distinct_recommendations_within_the_ranges(storage):
    study = study_at(storage)
    for _ in range(3):  # past the random start-up trials, so TPE (with its constant liar) proposes
        proposal = ask(study, SPACE)
        far_pct = proposal.params["train.optim.lr"] * 1e5
        tell(study, proposal.number, outcome(proposal.number, far_pct=far_pct))
    parallel = [ask(study, SPACE) for _ in range(4)]
    assert [p.number for p in parallel] == [3, 4, 5, 6]
    assert len({tuple(sorted(p.params.items())) for p in parallel}) == 4
    for proposal in parallel:
        assert 5e-6 <= proposal.params["train.optim.lr"] <= 5e-4
        assert proposal.params["model.classify.learnable_difference_modules"] in (1, 2, 3, 4)
        assert proposal.params["train.optim.optim"] in ("adamw", "sgd")


def test_a_complete_trial_is_told_its_far_and_keeps_val_loss(storage):
    study = study_at(storage)
    number = ask(study, SPACE).number
    tell(study, number, outcome(number, far_pct=12.5, val_loss=0.31))
    told = study.trials[number]
    assert told.state == TrialState.COMPLETE
    assert told.value == 12.5
    assert told.user_attrs["val_loss"] == 0.31
    assert told.user_attrs["checkpoint"].endswith("model_epoch_001_step_00010.pth")


@pytest.mark.parametrize("state", ["failed", "collapsed"])
def test_failed_and_collapsed_trials_fail_with_their_reason(storage, state):
    study = study_at(storage)
    number = ask(study, SPACE).number
    tell(study, number, outcome(number, state=state, far_pct=100.0, reason=f"{state}: why"))
    told = study.trials[number]
    assert told.state == TrialState.FAIL
    assert told.value is None
    assert told.user_attrs["reason"] == f"{state}: why"
    assert best_trial(study) is None


def test_telling_a_finished_trial_again_changes_nothing(storage):
    study = study_at(storage)
    number = ask(study, SPACE).number
    tell(study, number, outcome(number, far_pct=5.0))
    tell(study, number, outcome(number, far_pct=1.0))
    assert study.trials[number].value == 5.0


def test_a_complete_outcome_without_far_and_a_wrong_number_are_refused(storage):
    study = study_at(storage)
    number = ask(study, SPACE).number
    with pytest.raises(StateError, match="far_pct"):
        tell(study, number, outcome(number, far_pct=None))
    with pytest.raises(StateError, match="belongs to trial"):
        tell(study, number, outcome(number + 1))
    assert study.trials[number].state == TrialState.RUNNING


def test_a_reopened_study_keeps_its_trials_and_fails_the_stale_running_ones(storage):
    study = study_at(storage)
    first, second, third = (ask(study, SPACE) for _ in range(3))
    tell(study, first.number, outcome(first.number, far_pct=20.0))
    del study  # the run crashed with two trials in flight

    resumed = study_at(storage)
    assert len(resumed.trials) == 3
    assert resumed.trials[0].params == first.params
    assert fail_stale(resumed) == [second.number, third.number]
    assert [t.state for t in resumed.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]
    assert resumed.trials[1].user_attrs["reason"] == "interrupted"
    assert fail_stale(resumed) == []
    assert ask(resumed, SPACE).number == 3


def test_a_stale_trial_whose_outcome_was_recorded_is_told_it(storage):
    study = study_at(storage)
    numbers = [ask(study, SPACE).number for _ in range(2)]
    recorded = {numbers[0]: outcome(numbers[0], far_pct=7.0)}
    assert fail_stale(study_at(storage), finished=recorded.get) == [numbers[1]]
    reopened = study_at(storage)
    assert reopened.trials[0].state == TrialState.COMPLETE and reopened.trials[0].value == 7.0


def test_a_resumed_study_does_not_repeat_the_first_recommendations(storage, tmp_path):
    fresh = ask(study_at(storage, seed=3), SPACE)
    same_seed_elsewhere = ask(study_at(tmp_path / "other.db", seed=3), SPACE)
    assert same_seed_elsewhere.params == fresh.params  # a seed alone reproduces its proposals...
    resumed = ask(study_at(storage, seed=3), SPACE)
    assert resumed.params != fresh.params  # ...so the reopened study must not restart from it


def test_the_best_trial_has_the_lowest_far_then_val_loss_then_number(storage):
    study = study_at(storage)
    # An unknown val_loss ranks after any known one; equal FAR and val_loss go to the earlier trial.
    results = [(5.0, None), (5.0, 0.3), (10.0, 0.1), (5.0, 0.2), (5.0, 0.2)]
    for far_pct, val_loss in results:
        number = ask(study, SPACE).number
        tell(study, number, outcome(number, far_pct=far_pct, val_loss=val_loss))
    best = best_trial(study)
    assert best is not None and best.number == 3


def test_without_complete_trials_there_is_no_best(storage):
    study = study_at(storage)
    assert best_trial(study) is None
    ask(study, SPACE)
    assert best_trial(study) is None


def test_the_trials_table_lists_every_trial_with_the_same_columns(storage):
    study = study_at(storage)
    done = ask(study, SPACE)
    tell(study, done.number, outcome(done.number, far_pct=12.3456789, val_loss=0.25))
    collapsed = ask(study, SPACE)
    tell(study, collapsed.number, outcome(collapsed.number, "collapsed", 100.0, 0.7, "mode collapse: ..."))
    running = ask(study, [SPACE[0]])

    table = trials_table(study)
    columns = [
        "number",
        "state",
        "far_pct",
        "val_loss",
        "duration_s",
        "pruned_epoch",
        *(p.key for p in SPACE),
        "reason",
    ]
    assert [list(row) for row in table] == [columns] * 3
    assert [row["state"] for row in table] == ["complete", "collapsed", "running"]
    assert table[0]["far_pct"] == 12.3457
    assert table[0]["val_loss"] == 0.25
    assert table[0]["duration_s"] == 12.5
    assert table[1]["reason"] == "mode collapse: ..."
    assert table[2]["number"] == running.number
    assert table[2]["far_pct"] is None
    assert table[2]["train.optim.optim"] is None
    assert math.isclose(table[2]["train.optim.lr"], running.params["train.optim.lr"], rel_tol=1e-5)


def test_the_study_directory_is_never_created_here(tmp_path):
    with pytest.raises(StateError, match="does not exist"):
        open_study(tmp_path / "phase1" / "optuna_study.db", study_name="phase1", seed=0)
    assert not (tmp_path / "phase1").exists()


def test_the_study_names_its_objective_so_the_dashboard_shows_what_is_minimised(storage):
    assert objective_name(100.0) == "FAR@100% recall on validation"
    assert objective_name(99.5) == "FAR@99.5% recall on validation"
    open_study(storage, study_name="phase1", seed=0, objective=objective_name(None))
    reopened = optuna.load_study(study_name="phase1", storage=f"sqlite:///{storage}")
    assert reopened.metric_names == ["FAR@100% recall on validation"]
