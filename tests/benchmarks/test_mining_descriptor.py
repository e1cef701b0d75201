"""The mining-descriptor benchmark (`benchmarks/mining_descriptor.py`): its neighbour statistics on made-up rows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import mining_descriptor

POOL = [
    {"input_path": "b00041001/test", "label": "PASS"},
    {"input_path": "b00041002/test", "label": "open"},
    {"input_path": "b20085001/test", "label": "short"},
    {"input_path": "b20085002/test", "label": "PASS"},
]
TARGETS = [{"input_path": "b00041999/test", "label": "open"}, {"input_path": "b20085999/test", "label": "PASS"}]


def test_the_design_is_the_first_five_digits_of_the_board() -> None:
    assert mining_descriptor.design_of("b20085180/test") == "20085"


def test_shares_count_each_targets_nearest_pool_rows() -> None:
    similarity = np.array([[0.9, 0.8, 0.1, 0.2], [0.0, 0.1, 0.7, 0.95]])
    wrong = np.array([True, False, False, True])
    shares = mining_descriptor.neighbour_shares(similarity, TARGETS, POOL, wrong, k=2)
    # Target 1 (open, 00041) gets pool rows 0 and 1: class 1/2, label 1/2, design 2/2, wrong 1/2.
    # Target 2 (PASS, 20085) gets pool rows 3 and 2: class 1/2, label 1/2, design 2/2, wrong 1/2.
    assert (shares["same_class"], shares["same_label"], shares["same_design"], shares["wrong"]) == (
        0.5,
        0.5,
        1.0,
        0.5,
    )
    assert shares["z"] > 0.5 and shares["below_z2"] == 1.0  # four rows: nothing stands 2 deviations out


def test_random_rows_score_the_pools_own_shares() -> None:
    shares = mining_descriptor.random_shares(TARGETS, POOL, np.array([True, False, False, False]))
    assert shares["same_class"] == pytest.approx(0.5) and shares["same_design"] == pytest.approx(0.5)
    assert shares["same_label"] == pytest.approx(0.375) and shares["wrong"] == pytest.approx(0.25)
