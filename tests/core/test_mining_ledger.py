"""Tests of the run-level mining ledger: history across iterations, skips and gaps, reruns, tampering."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aoi_pipeline.core.mining import select
from aoi_pipeline.core.mining_ledger import MiningLedger
from aoi_pipeline.errors import StateError

KEYS = [f"b{i}/test/T00_SolderLight.png" for i in range(8)]


def test_the_ledger_keeps_an_earlier_iteration_s_picks_out_of_the_next(tmp_path):
    ledger = MiningLedger(tmp_path / "mining_history.json")
    assert ledger.mined_keys() == set()
    ledger.record(1, [KEYS[0], KEYS[1]], summary={"selected_count": 2})
    indices = np.array([[0, 1, 2]])
    sims = np.ones((1, 3), dtype=np.float32)
    selection = select(
        indices, sims, min_similarity=0.9, excluded_pool_indices=set(), history=ledger.mined_keys(), pool_keys=KEYS
    )
    assert [c.pool_index for c in selection.kept] == [2]
    assert selection.already_mined == 2
    ledger.record(2, [KEYS[2]], summary={})
    assert ledger.mined_keys() == {KEYS[0], KEYS[1], KEYS[2]}
    assert ledger.mined_keys(before_iteration=2) == {KEYS[0], KEYS[1]}
    data = json.loads(ledger.path.read_text())
    assert data["cumulative_unique_count"] == 3
    assert [entry["iteration"] for entry in data["iterations"]] == [1, 2]


def test_a_skipped_iteration_or_a_gap_does_not_break_later_iterations(tmp_path):
    skipped = MiningLedger(tmp_path / "a.json")
    skipped.record(1, [KEYS[0]], summary={})
    skipped.record(2, [], skipped=True, summary={"reason": "no routed mining rows"})
    skipped.record(3, [KEYS[1]], summary={})
    assert [(e["iteration"], e["skipped"]) for e in skipped.entries()] == [(1, False), (2, True), (3, False)]
    gap = MiningLedger(tmp_path / "b.json")
    gap.record(3, [KEYS[1]], summary={})  # iterations 1 and 2 never mined and were never recorded
    assert gap.mined_keys() == {KEYS[1]}


def test_re_recording_the_same_iteration_is_a_no_op(tmp_path):
    ledger = MiningLedger(tmp_path / "mining_history.json")
    ledger.record(1, [KEYS[0], KEYS[1]], summary={"took_s": 1.0})
    before = ledger.path.read_bytes()
    ledger.record(1, [KEYS[1], KEYS[0].replace("/", "\\")], summary={"took_s": 2.0})
    assert ledger.path.read_bytes() == before
    # A resumed stage selects against the history before its own iteration, so it selects the same rows.
    assert ledger.mined_keys(before_iteration=1) == set()


def test_conflicting_or_repeated_selections_raise_and_leave_the_ledger_unchanged(tmp_path):
    ledger = MiningLedger(tmp_path / "mining_history.json")
    ledger.record(1, [KEYS[0]], summary={})
    ledger.record(3, [KEYS[1]], summary={})
    before = ledger.path.read_bytes()
    with pytest.raises(StateError, match="already recorded with 1 files"):
        ledger.record(3, [KEYS[2]], summary={})
    with pytest.raises(StateError, match="already mined in iteration 1"):
        ledger.record(4, [KEYS[3], KEYS[0]], summary={})
    with pytest.raises(StateError, match="comes after iteration 3"):
        ledger.record(2, [KEYS[5]], summary={})
    with pytest.raises(StateError, match="marked skipped"):
        ledger.record(4, [KEYS[4]], skipped=True, summary={})
    with pytest.raises(StateError, match="more than once"):
        ledger.record(4, [KEYS[4], KEYS[4]], summary={})
    assert ledger.path.read_bytes() == before


def test_a_tampered_ledger_is_a_state_error(tmp_path):
    ledger = MiningLedger(tmp_path / "mining_history.json")
    ledger.record(1, [KEYS[0]], summary={})
    data = json.loads(ledger.path.read_text())
    data["iterations"].append({**data["iterations"][0], "iteration": 2})
    data["cumulative_unique_count"] = 2
    ledger.path.write_text(json.dumps(data))
    with pytest.raises(StateError, match="already selected by iteration 1"):
        ledger.mined_keys()
    ledger.path.write_text("{not json")
    with pytest.raises(StateError, match="not a readable JSON ledger"):
        ledger.mined_keys()
