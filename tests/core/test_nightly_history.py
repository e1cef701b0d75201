"""The nightly history file and the promotion rule (beat the deployed model by more than the spread)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoi_pipeline.core.nightly_history import (
    NightRecord,
    append_night,
    history_table,
    promotion,
    read_history,
    render_history,
)
from aoi_pipeline.errors import StateError


def test_nights_are_appended_and_read_back_in_order(tmp_path: Path) -> None:
    first = NightRecord("nightly_1", "2026-01-01T02:00:00+00:00", "trained", rows_added={"pool": 3}, kpi_before=4.0)
    second = NightRecord("nightly_2", "2026-01-02T02:00:00+00:00", "skipped: nothing new")
    append_night(tmp_path, first)
    append_night(tmp_path, second)
    assert read_history(tmp_path) == [first, second]
    table = history_table(read_history(tmp_path))
    assert [row["decision"] for row in table] == ["trained", "skipped: nothing new"]
    assert (table[0]["rows added"], table[1]["rows added"], table[0]["KPI after"]) == ("pool 3", "none", "-")
    assert "nightly_2" in render_history(read_history(tmp_path)).splitlines()[2]


def test_an_unknown_decision_and_a_broken_line_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="is not a decision"):
        NightRecord("n", "t", "maybe")
    (tmp_path / "history.jsonl").write_text("{not json\n")
    with pytest.raises(StateError, match="line 1"):
        read_history(tmp_path)


def test_no_history_reads_as_empty(tmp_path: Path) -> None:
    assert read_history(tmp_path) == []
    assert render_history([]) == "No night has run yet."


@pytest.mark.parametrize(
    ("candidate_value", "spread", "promote"),
    [(3.0, 0.5, True), (3.6, 0.5, False), (4.0, 0.0, False), (3.0, None, False)],
)
def test_promotion_needs_a_margin_larger_than_the_spread(
    candidate_value: float, spread: float | None, promote: bool
) -> None:
    verdict = promotion(
        candidate="iter1",
        deployed_value=4.0,
        candidate_value=candidate_value,
        spread=spread,
        lower_is_better=True,
        unit="%",
    )
    assert verdict.promote is promote
    assert "iter1" in verdict.reason and "4%" in verdict.reason


def test_higher_is_better_contracts_and_the_deployed_baseline() -> None:
    assert promotion(
        candidate="iter1", deployed_value=0.8, candidate_value=0.9, spread=0.05, lower_is_better=False
    ).promote
    kept = promotion(candidate="baseline", deployed_value=4.0, candidate_value=4.0, spread=0.0, lower_is_better=True)
    assert not kept.promote and "no candidate" in kept.reason
    unmeasured = promotion(
        candidate="iter2", deployed_value=4.0, candidate_value=1.0, spread=None, lower_is_better=True
    )
    assert "confirm_seeds" in unmeasured.reason
