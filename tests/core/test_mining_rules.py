"""The selection rules after k-NN mining: per-target round robin, label balance, board cap, uncertainty, exploration."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from aoi_pipeline.core import mining
from aoi_pipeline.core.mining_rules import (
    NOT_PICKED,
    OVER_BOARD_CAP,
    RULE_EXPLORE,
    RULE_NEIGHBOUR,
    MiningRules,
    PoolFacts,
    apply_rules,
)
from aoi_pipeline.errors import ConfigError


def knn_selection(indices: list[list[int]], sims: list[list[float]], pool_rows: int) -> mining.Selection:
    keys = [f"b/test/T{i}.png" for i in range(pool_rows)]
    return mining.select(
        np.array(indices), np.array(sims), min_similarity=-1.0, excluded_pool_indices=(), history=(), pool_keys=keys
    )


def facts(labels: str, boards: list[str] | None = None, scores: list[float] | None = None) -> PoolFacts:
    """`labels` as a string of P (PASS) and d (defect), one character per pool row."""
    names = ["PASS" if c == "P" else "open" for c in labels]
    boards = boards or [f"board{i}" for i in range(len(labels))]
    return PoolFacts.of(names, boards, None if scores is None else np.array(scores), 0.5 if scores else None)


# Target 0 resembles rows 0-5 far more than target 1 resembles its rows 6-9: the old global order gives target 0
# the whole budget.
INDICES = [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 0, 1]]
SIMS = [[0.99, 0.98, 0.97, 0.96, 0.95, 0.94], [0.80, 0.79, 0.78, 0.77, 0.50, 0.49]]


def kept(selection: mining.Selection) -> list[int]:
    return [candidate.pool_index for candidate in selection.kept]


def test_similarity_order_lets_one_target_take_the_budget_and_per_target_shares_it():
    selection = knn_selection(INDICES, SIMS, 10)
    pool = facts("P" * 10)
    old, _ = apply_rules(selection, np.array(INDICES), rules=MiningRules(rank="similarity"), pool=pool, max_kept=4)
    new, counts = apply_rules(selection, np.array(INDICES), rules=MiningRules(rank="per_target"), pool=pool, max_kept=4)
    assert kept(old) == [0, 1, 2, 3]
    assert kept(new) == [0, 6, 1, 7]  # round robin, each target's nearest first
    assert counts.picked == {RULE_NEIGHBOUR: 4, RULE_EXPLORE: 0}
    assert all(candidate.rule == RULE_NEIGHBOUR for candidate in new.kept)
    outcomes = dict((c.pool_index, outcome) for c, outcome in new.decisions)
    assert outcomes[2] == NOT_PICKED and new.over_pool_budget == 6
    assert len(new.decisions) == new.candidate_count == 10


def test_uncertainty_takes_the_neighbours_the_model_gets_most_wrong_first():
    selection = knn_selection(INDICES, SIMS, 10)
    # PASS rows scoring high and defects scoring low are wrong at the threshold 0.5.
    scores = [0.1, 0.2, 0.9, 0.3, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1]
    pool = facts("PPPdPPPPPd", scores=scores)
    result, _ = apply_rules(selection, np.array(INDICES), rules=MiningRules(rank="uncertainty"), pool=pool, max_kept=4)
    # target 0: row 2 (PASS 0.9, weakness 0.4) then row 3 (defect 0.3, weakness 0.2); target 1: row 9 (defect
    # 0.1, weakness 0.4) then row 7 (PASS 0.8, weakness 0.3).
    assert kept(result) == [2, 9, 3, 7]


def test_uncertainty_without_scores_is_refused_with_the_fix():
    selection = knn_selection(INDICES, SIMS, 10)
    with pytest.raises(ConfigError, match=r"deft\.mining_rank.*siamese_score"):
        apply_rules(
            selection, np.array(INDICES), rules=MiningRules(rank="uncertainty"), pool=facts("P" * 10), max_kept=4
        )


def test_label_balance_keeps_the_pools_pass_share_and_moves_a_shortfall_over():
    selection = knn_selection(INDICES, SIMS, 10)
    pool = facts("PPPPPPdddd")  # 60 % PASS, the defects are target 1's far neighbours 6-9
    rules = MiningRules(rank="per_target", label_balance="pool")
    result, counts = apply_rules(selection, np.array(INDICES), rules=rules, pool=pool, max_kept=5)
    labels = Counter(bool(pool.is_pass[i]) for i in kept(result))
    assert labels == {True: 3, False: 2}
    assert counts.pass_share == pytest.approx(0.6)
    # A half-PASS pool but one defect candidate (row 4): the PASS rows fill the defects' share.
    few_indices = [[0, 1, 2, 3], [4, 5, 4, 5]]
    few = knn_selection(few_indices, [[0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.9, 0.8]], 10)
    result, _ = apply_rules(few, np.array(few_indices), rules=rules, pool=facts("PPPPdPdddd"), max_kept=4)
    assert len(result.kept) == 4 and 4 in kept(result)


def test_the_board_cap_spreads_the_picks_and_counts_what_it_removed():
    selection = knn_selection(INDICES, SIMS, 10)
    boards = ["A"] * 6 + ["B", "C", "D", "E"]
    rules = MiningRules(rank="per_target", max_per_board=2)
    result, counts = apply_rules(selection, np.array(INDICES), rules=rules, pool=facts("P" * 10, boards), max_kept=6)
    assert kept(result) == [0, 6, 1, 7, 8, 9]
    outcomes = dict((c.pool_index, o) for c, o in result.decisions)
    # Rows 2 and 3 of board A came up and were refused; the budget was full before rows 4 and 5 came up.
    assert counts.over_board_cap == 2 and outcomes[2] == outcomes[3] == OVER_BOARD_CAP
    assert outcomes[4] == outcomes[5] == NOT_PICKED
    assert "board cap removed 2" in counts.text()


def test_exploration_replaces_a_share_of_neighbours_with_stratified_random_rows_never_excluded_or_mined():
    indices = [[0, 1, 2, 3]]
    selection = knn_selection(indices, [[0.9, 0.8, 0.7, 0.6]], 40)
    pool = facts("PPPP" + "PPPPPPdddd" * 3 + "dddddd")
    rules = MiningRules(rank="per_target", explore_share=0.5, seed=3)
    asked: list[int] = []

    def leaks(rows):
        asked.extend(rows)
        return {10, 11, 12}

    result, counts = apply_rules(
        selection, np.array(indices), rules=rules, pool=pool, max_kept=4, explore_exclude=leaks, history=[13, 14]
    )
    explored = [c.pool_index for c in result.kept if c.rule == RULE_EXPLORE]
    assert counts.picked == {RULE_NEIGHBOUR: 2, RULE_EXPLORE: 2}
    assert kept(result)[:2] == [0, 1]
    assert len(explored) == 2 and not {0, 1, 10, 11, 12, 13, 14} & set(explored)
    assert set(explored) <= set(asked)
    again, _ = apply_rules(
        selection, np.array(indices), rules=rules, pool=pool, max_kept=4, explore_exclude=leaks, history=[13, 14]
    )
    assert kept(again) == kept(result)  # the iteration's fixed seed: a rerun explores the same rows
    assert len({c.pool_index for c, _ in result.decisions}) == len(result.decisions)


def test_exploration_records_each_rows_nearest_target():
    selection = knn_selection([[0]], [[0.9]], 4)
    targets = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    rules = MiningRules(rank="per_target", explore_share=0.5)
    result, _ = apply_rules(
        selection,
        np.array([[0]]),
        rules=rules,
        pool=facts("PPPP"),
        max_kept=None,
        targets=targets,
        pool_vectors=vectors,
    )
    # No budget: the one candidate is the whole take, so exploration replaces it (a half rounds up).
    assert len(result.kept) == 1 and result.kept[0].rule == RULE_EXPLORE
    assert result.kept[0].target_index == 1 and result.kept[0].similarity == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("rank", "nearest", "deft.mining_rank"),
        ("label_balance", "seed", "deft.mining_label_balance"),
        ("max_per_board", 0, "deft.mining_max_per_board"),
        ("explore_share", 1.0, "deft.mining_explore_share"),
    ],
)
def test_invalid_rules_are_refused_naming_the_key(field, value, key):
    with pytest.raises(ConfigError, match=key):
        MiningRules(**{field: value})


def test_only_the_old_settings_are_the_legacy_order():
    assert MiningRules().legacy
    assert not MiningRules(explore_share=0.1).legacy and not MiningRules(rank="uncertainty").legacy
