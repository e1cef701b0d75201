"""Tests of weak-sample routing: mining by pool label, SDG by type (never PASS), the allocation SDG must
generate (exact sum, proportional, top target first), the hard stop when everything is dropped, the files."""

from __future__ import annotations

import csv
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoi_pipeline.core.routing import DEFAULT_SDG_TYPES, allocate, route_gaps, sdg_costs, write_routing
from aoi_pipeline.errors import ConfigError, DatasetError
from aoi_pipeline.synth.defects import DEFECT_TYPES

COLUMNS = ("input_path", "golden_path", "label", "object_name", "siamese_score", "weakness", "outcome")


def gap(label: str, number: int) -> dict[str, str]:
    return {
        "input_path": f"b{number}/test",
        "golden_path": f"b{number}/golden",
        "label": label,
        "object_name": f"T{number:02d}",
        "siamese_score": "0.5",
        "weakness": "0.1",
        "outcome": "missed" if label != "PASS" else "false_alarm",
    }


def gaps(**counts: int) -> list[dict[str, str]]:
    rows, number = [], 0
    for label, count in counts.items():
        for _ in range(count):
            rows.append(gap(label, number))
            number += 1
    return rows


def test_default_sdg_types_are_what_the_synthesizer_paints() -> None:
    assert set(DEFAULT_SDG_TYPES) == set(DEFECT_TYPES)


def test_labels_missing_from_the_pool_are_not_mined_and_pass_never_goes_to_sdg() -> None:
    rows = gaps(PASS=2, Open=3, spur=1, tombstone=1)
    result = route_gaps(rows, pool_labels=["open", "pass", "short"], sdg_types=[*DEFAULT_SDG_TYPES, "PASS"], num_sdg=4)
    assert [row["label"] for row in result.mining_targets] == ["PASS", "PASS", "Open", "Open", "Open"]
    assert [row["label"] for row in result.sdg_targets] == ["Open", "Open", "Open", "spur"]
    routes = {route.label: route for route in result.routes}
    assert (routes["PASS"].to_mining, routes["PASS"].to_sdg) == (True, False)
    assert (routes["open"].to_mining, routes["open"].to_sdg) == (True, True)
    assert (routes["spur"].to_mining, routes["spur"].to_sdg) == (False, True)
    assert (routes["tombstone"].to_mining, routes["tombstone"].to_sdg) == (False, False)
    assert result.dropped == ("tombstone",)
    assert routes["open"].weak_rows == 3 and routes["open"].routed_to == "mining+SDG"
    assert routes["tombstone"].routed_to == "neither (DROPPED)"


def test_routed_rows_are_unchanged_copies() -> None:
    rows = gaps(Open=1)
    result = route_gaps(rows, pool_labels=["OPEN"], num_sdg=0)
    assert result.mining_targets == (rows[0],) and result.sdg_targets == (rows[0],)
    assert result.mining_targets[0] is not rows[0]
    assert result.columns == COLUMNS


def test_allocation_by_largest_remainder_with_ties_to_the_earlier_target() -> None:
    # 10 over open 3 : spur 1 -> quotas 7.5 and 2.5; the tied half goes to spur, the first target.
    result = route_gaps(gaps(open=3, spur=1), pool_labels=[], num_sdg=10, target_defects=["spur", "open"])
    assert result.allocation == {"spur": 3, "open": 7}
    assert {route.label: route.sdg_count for route in result.routes} == {"spur": 3, "open": 7}
    # Without targets the tie goes to the heavier type.
    assert route_gaps(gaps(open=3, spur=1), pool_labels=[], num_sdg=10).allocation == {"open": 8, "spur": 2}


def test_the_top_target_gets_at_least_one_sample() -> None:
    # 5 over open 99 : spur 1 -> quotas 4.95 and 0.05 give spur nothing; the top target takes one from open.
    result = route_gaps(gaps(open=99, spur=1), pool_labels=[], num_sdg=5, target_defects=["tombstone", "spur"])
    assert result.allocation == {"spur": 1, "open": 4}


def test_zero_budget_allocates_nothing_but_still_routes() -> None:
    result = route_gaps(gaps(open=2), pool_labels=[], num_sdg=0, target_defects=["open"])
    assert result.allocation == {}
    assert result.routes[0].sdg_count == 0 and len(result.sdg_targets) == 2


def test_types_whose_share_rounds_to_zero_are_left_out_of_the_allocation() -> None:
    result = route_gaps(gaps(open=10, short=10, spur=1), pool_labels=[], num_sdg=2)
    assert result.allocation == {"open": 1, "short": 1}
    assert {route.label: route.sdg_count for route in result.routes}["spur"] == 0


def test_everything_dropped_is_a_hard_stop_naming_the_labels() -> None:
    with pytest.raises(DatasetError) as error:
        route_gaps(gaps(tombstone=2, Bridge=1), pool_labels=["open"], num_sdg=5, source="/rd/iter1/kpi_gaps.csv")
    message = str(error.value)
    assert "routing dropped every weak sample" in message
    assert "bridge" in message and "tombstone" in message and "/rd/iter1/kpi_gaps.csv" in message


def test_empty_gaps_are_a_hard_stop() -> None:
    with pytest.raises(DatasetError, match="routing dropped every weak sample"):
        route_gaps([], pool_labels=["open"], num_sdg=5)


@pytest.mark.parametrize("num_sdg", [-1, 2.0, True])
def test_num_sdg_must_be_a_whole_number(num_sdg: object) -> None:
    with pytest.raises(ConfigError, match="num_sdg"):
        route_gaps(gaps(open=1), pool_labels=["open"], num_sdg=num_sdg)  # type: ignore[arg-type]


weights = st.dictionaries(st.sampled_from(DEFAULT_SDG_TYPES), st.integers(1, 200), min_size=1)


@settings(max_examples=300, deadline=None)
@given(weights, st.integers(0, 500), st.data())
def test_allocation_sums_exactly_and_is_proportional(weights: dict[str, int], total: int, data: st.DataObject) -> None:
    priority = data.draw(st.lists(st.sampled_from(DEFAULT_SDG_TYPES), unique=True))
    counts = allocate(total, weights, priority=priority)
    assert sum(counts.values()) == total
    assert set(counts) == set(weights)
    whole = sum(weights.values())
    quota = {key: Fraction(total * weight, whole) for key, weight in weights.items()}
    top = next((key for key in priority if key in weights), None)
    bumped = top is not None and total >= 1 and quota[top] < 1 and math.floor(quota[top]) == 0
    for key, count in counts.items():
        # Largest remainder keeps every count within one of its exact quota; the top-target bump may move
        # one more sample between two types.
        assert abs(count - quota[key]) < (2 if bumped else 1)
    if top is not None and total >= 1:
        assert counts[top] >= 1
    # Proportional: a heavier type never gets fewer samples than a lighter one, bar one for ties and the bump.
    for a in weights:
        for b in weights:
            if weights[a] > weights[b]:
                assert counts[a] >= counts[b] - 1


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["open", "Short", "SPUR", "PASS", "bridge"]), st.integers(1, 20), min_size=1))
def test_route_allocation_sums_to_the_budget_whenever_a_type_is_routed(counts: dict[str, int]) -> None:
    rows = gaps(**counts)
    try:
        result = route_gaps(rows, pool_labels=["pass", "bridge"], num_sdg=17)
    except DatasetError:
        return
    routed_sdg = {label.lower() for label in counts if label.lower() in DEFAULT_SDG_TYPES}
    assert sum(result.allocation.values()) == (17 if routed_sdg else 0)
    assert set(result.allocation) <= routed_sdg
    assert all(row["label"] != "PASS" for row in result.sdg_targets)


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_files_are_written_with_headers_when_a_subset_is_empty(tmp_path: Path) -> None:
    result = route_gaps(gaps(spur=2), pool_labels=["open"], num_sdg=3, target_defects=["spur"])
    artifacts = write_routing(result, tmp_path / "routing")
    header, rows = read(artifacts.mining_gaps_csv)
    assert header == list(COLUMNS) and rows == []
    header, rows = read(artifacts.sdg_gaps_csv)
    assert header == list(COLUMNS) and [row["label"] for row in rows] == ["spur", "spur"]
    assert json.loads(artifacts.allocation_json.read_text()) == {"spur": 3}
    summary = artifacts.summary_txt.read_text()
    assert "Mining subset:      0 -> mining_gaps.csv" in summary
    assert "SDG allocation (num_sdg=3): spur=3" in summary
    assert "  spur: 2 (mining=no, sdg=yes, sdg_count=3)" in summary


def test_report_lists_decisions_allocation_and_dropped_labels(tmp_path: Path) -> None:
    result = route_gaps(gaps(open=2, PASS=1, tombstone=1), pool_labels=["open", "PASS"], num_sdg=4)
    report = write_routing(result, tmp_path).report_md.read_text()
    assert "| open | 2 | mining+SDG | 4 |" in report
    assert "| PASS | 1 | mining only | 0 |" in report
    assert "| tombstone | 1 | neither (DROPPED) | 0 |" in report
    assert "- open: 4" in report
    assert "- tombstone: not in the mining pool and not an SDG type" in report
    assert json.loads((tmp_path / "allocation.json").read_text()) == {"open": 4}


def test_empty_allocation_is_written_as_an_empty_object(tmp_path: Path) -> None:
    result = route_gaps(gaps(PASS=2), pool_labels=["PASS"], num_sdg=5)
    artifacts = write_routing(result, tmp_path)
    assert json.loads(artifacts.allocation_json.read_text()) == {}
    header, rows = read(artifacts.sdg_gaps_csv)
    assert header == list(COLUMNS) and rows == []


# ---------------------------------------------------------------------------------------------------------
# The allocation from the RCA's costs


def test_a_type_costs_the_far_it_forces_plus_the_recall_it_loses():
    per_label = {
        "open": {"total": 50, "missed": 0, "forced_far_pct": 12.0},
        "spur": {"total": 30, "missed": 2, "forced_far_pct": 0.0},
        "short": {"total": 20, "missed": 0, "forced_far_pct": 0.0},
    }
    # 100 defect rows: two missed spurs lose 2 points of recall.
    assert sdg_costs(per_label) == {"open": 12.0, "spur": 2.0, "short": 0.0}


def test_sdg_goes_to_costly_types_in_proportion_not_to_every_type_with_weak_rows():
    result = route_gaps(
        gaps(open=20, spur=20, short=20, PASS=5),
        pool_labels={"PASS", "open", "spur", "short"},
        num_sdg=70,
        type_costs={"open": 12.0, "spur": 2.0, "short": 0.0},
    )
    # 12 : 2 of 70 -> 60 : 10; short costs nothing however many weak rows it has.
    assert result.allocation == {"open": 60, "spur": 10}


def test_the_costliest_type_gets_at_least_one_sample():
    result = route_gaps(
        gaps(open=5, spur=5),
        pool_labels={"open", "spur"},
        num_sdg=1,
        type_costs={"open": 0.5, "spur": 9.5},
        target_defects=("open",),
    )
    assert result.allocation == {"spur": 1}


def test_without_costs_the_allocation_follows_the_weak_rows_as_before():
    result = route_gaps(gaps(open=30, spur=10), pool_labels={"open", "spur"}, num_sdg=8)
    assert result.allocation == {"open": 6, "spur": 2}
