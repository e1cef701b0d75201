"""The pool budget: mining never passes it, and the loop stops before an iteration that would."""

from __future__ import annotations

import pytest

from aoi_pipeline.core.pool_budget import PoolBudget, rows_left, rows_used, stops_loop
from aoi_pipeline.errors import StateError


def state(mined: list[int], *, share: float | None = 0.25, pool_rows: int = 400) -> dict:
    iterations = {f"iter{n}": {"mining_mined_count": count} for n, count in enumerate(mined, start=1)}
    document: dict = {"iterations": {"baseline": {}, **iterations}}
    if share is not None:
        document["pool_budget"] = {"max_pool_share": share, "pool_rows": pool_rows}
    return document


def test_the_budget_allows_the_share_of_the_pool_rounded_down():
    assert PoolBudget(0.25, 400).allowed_rows == 100
    assert PoolBudget(0.25, 401).allowed_rows == 100
    assert PoolBudget(0.1, 30).allowed_rows == 3


def test_rows_left_is_the_budget_minus_every_iteration_mined():
    assert rows_used(state([30, 20])) == 50
    assert rows_left(state([30, 20])) == 50
    assert rows_left(state([80, 40])) == 0


def test_the_loop_goes_on_while_the_last_take_still_fits():
    assert not stops_loop(state([]))
    assert not stops_loop(state([40]))  # 40 used, 40 more projected: 80 <= 100


def test_the_loop_stops_when_the_next_take_would_pass_the_budget():
    assert not stops_loop(state([40, 30]))  # 70 used, 30 more projected: exactly 100 is allowed
    assert not stops_loop(state([40, 20]))
    assert stops_loop(state([60, 30]))  # 90 used, 30 projected -> 120 > 100
    assert stops_loop(state([100]))  # used up


def test_a_state_without_a_budget_never_stops_the_loop_or_limits_mining():
    assert not stops_loop(state([5000], share=None))
    assert rows_left(state([5000], share=None)) is None


@pytest.mark.parametrize("raw", [{"max_pool_share": 0, "pool_rows": 10}, {"max_pool_share": 0.2}, "0.25"])
def test_a_broken_budget_in_the_state_is_refused(raw):
    with pytest.raises(StateError):
        PoolBudget.of({"pool_budget": raw})


def test_a_budget_of_the_whole_pool_never_stops_the_loop():
    assert not stops_loop(state([60], share=1.0, pool_rows=112))
    assert rows_left(state([60], share=1.0, pool_rows=112)) == 52
