"""The calibrated per-target cut and the pool budget's limit, after k-NN mining."""

from __future__ import annotations

import numpy as np
import pytest

from aoi_pipeline.core.mining import KEPT, Candidate, Selection
from aoi_pipeline.core.mining_cut import (
    BELOW_TARGET_CUT,
    OVER_POOL_BUDGET,
    apply_cuts,
    pool_similarity_moments,
    target_floors,
)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_the_moments_are_exact_whatever_the_chunk_size():
    rng = np.random.default_rng(0)
    pool, targets = unit(rng.normal(size=(1000, 16))), unit(rng.normal(size=(7, 16)))
    sims = targets.astype(np.float64) @ pool.T.astype(np.float64)
    for chunk in (64, 1000, 4096):
        mean, std = pool_similarity_moments(targets, pool, chunk_rows=chunk)
        np.testing.assert_allclose(mean, sims.mean(axis=1), atol=1e-6)
        np.testing.assert_allclose(std, sims.std(axis=1), atol=1e-6)


def test_a_target_like_the_whole_pool_gets_a_high_floor_a_distinctive_one_a_low_floor():
    rng = np.random.default_rng(1)
    # A pool of one design: every row close to one direction, plus a few different ones.
    design = np.zeros(8)
    design[0] = 1.0
    pool = unit(design + 0.05 * rng.normal(size=(500, 8)))
    generic, distinctive = unit(design[None, :] + 0.01), unit(np.eye(8)[3:4] + 0.2 * design[None, :])
    mean, std = pool_similarity_moments(np.vstack([generic, distinctive]), pool)
    floors = target_floors(mean, std, 2.0)
    assert mean[0] > 0.9  # every row looks like the generic target: a fixed 0.9 cut removes nothing
    assert floors[0] > mean[0] and floors[1] < floors[0]


def selection(sims: list[float], targets: list[int]) -> Selection:
    kept = tuple(Candidate(index, target, sim) for index, (sim, target) in enumerate(zip(sims, targets, strict=True)))
    return Selection(kept, len(kept), 0, 0, 0, 0.0, tuple((candidate, KEPT) for candidate in kept))


def test_the_calibrated_cut_compares_each_candidate_with_its_own_target_floor():
    picked = selection([0.99, 0.97, 0.95, 0.60], [0, 0, 1, 1])
    cut, counts = apply_cuts(picked, floors=np.array([0.98, 0.5]), max_kept=None, min_z=2.0)
    assert [c.pool_index for c in cut.kept] == [0, 2, 3]
    assert counts.below_target_cut == 1 and cut.below_target_cut == 1
    assert dict((c.pool_index, outcome) for c, outcome in cut.decisions)[1] == BELOW_TARGET_CUT
    assert "removed 1" in counts.text()


def test_the_budget_keeps_the_best_candidates_only():
    picked = selection([0.99, 0.97, 0.95, 0.90], [0, 0, 1, 1])
    cut, counts = apply_cuts(picked, floors=None, max_kept=2)
    assert [c.pool_index for c in cut.kept] == [0, 1]
    assert counts.over_pool_budget == 2 and counts.min_z is None
    assert [outcome for _, outcome in cut.decisions].count(OVER_POOL_BUDGET) == 2


@pytest.mark.parametrize("max_kept", [0, None])
def test_no_budget_left_keeps_nothing_and_no_budget_keeps_everything(max_kept):
    cut, _ = apply_cuts(selection([0.9, 0.8], [0, 0]), floors=None, max_kept=max_kept)
    assert len(cut.kept) == (0 if max_kept == 0 else 2)
