"""Seed confirmation: mean and spread over retrainings, and a winner only when it beats the runner-up by more."""

from __future__ import annotations

import pytest

from aoi_pipeline.core.seed_confirmation import SeedConfirmation, from_dict, runner_up


def test_mean_and_spread_are_the_mean_and_the_sample_standard_deviation():
    confirmation = SeedConfirmation("iter2", (10.0, 12.0, 14.0), (1234, 1235, 1236), lower_is_better=True)
    assert confirmation.mean == pytest.approx(12.0)
    assert confirmation.spread == pytest.approx(2.0)  # sqrt(((-2)^2 + 0 + 2^2) / 2)


def test_a_single_training_has_no_spread():
    assert SeedConfirmation("iter1", (7.0,), (1234,), lower_is_better=True).spread == 0.0


def test_a_candidate_beating_the_runner_up_by_more_than_the_spread_is_the_winner():
    confirmation = SeedConfirmation("iter2", (10.0, 12.0, 14.0), (1, 2, 3), True, "iter1", 14.5)
    assert confirmation.margin == pytest.approx(2.5)
    assert confirmation.separated and confirmation.deliverable == "iter2"


def test_a_candidate_within_the_spread_of_the_runner_up_hands_off_the_earlier_one():
    confirmation = SeedConfirmation("iter2", (10.0, 12.0, 14.0), (1, 2, 3), True, "iter1", 13.0)
    assert not confirmation.separated
    assert confirmation.deliverable == "iter1"
    assert SeedConfirmation("iter1", (10.0, 12.0, 14.0), (1, 2, 3), True, "iter3", 13.0).deliverable == "iter1"
    assert SeedConfirmation("iter1", (10.0, 12.0, 14.0), (1, 2, 3), True, "baseline", 13.0).deliverable == "baseline"


def test_higher_is_better_contracts_turn_the_margin_around():
    confirmation = SeedConfirmation("iter2", (90.0, 92.0, 94.0), (1, 2, 3), False, "iter1", 80.0)
    assert confirmation.margin == pytest.approx(12.0) and confirmation.separated


def test_the_runner_up_is_the_best_other_candidate_and_the_record_round_trips():
    assert runner_up([("iter2", 5.0), ("iter1", 6.0), ("baseline", 30.0)], "iter2") == ("iter1", 6.0)
    assert runner_up([("iter2", 5.0)], "iter2") is None
    confirmation = SeedConfirmation("iter2", (10.0, 12.0), (1, 2), True, "iter1", 20.0)
    recorded = confirmation.to_dict()
    assert recorded["mean"] == pytest.approx(11.0) and recorded["separated"] is True
    assert from_dict(recorded, lower_is_better=True) == confirmation
