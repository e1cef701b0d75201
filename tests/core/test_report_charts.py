"""The report's inline SVG charts: the KPI per phase, training rows by source, stage durations."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from report_run import EXTRAS, Run, _Page, _section, _table_rows, _visible

from aoi_pipeline.core.report import render_report


def test_the_kpi_chart_has_one_point_per_evaluated_phase_placed_by_value(complete_run: Run) -> None:
    page = _Page(_section(render_report(complete_run.state), "kpi"))
    points = page.all("circle", **{"class": "kpi-point"})
    assert [p["data-label"] for p in points] == ["baseline", "iter1", "iter2"]
    values = [20.0, 12.0, 4.0]
    assert [float(str(p["data-value"])) for p in points] == values
    # SVG y grows downwards: a lower FAR sits lower on the chart, i.e. at a larger y.
    ys = [float(str(p["cy"])) for p in points]
    assert ys[0] < ys[1] < ys[2]
    # equal value steps (8 pp) are equal distances
    assert ys[1] - ys[0] == pytest.approx(ys[2] - ys[1], abs=0.11)
    target = page.all("line", **{"class": "target"})
    assert len(target) == 1
    assert target[0]["stroke-dasharray"]
    target_y = float(str(target[0]["y1"]))
    # 5% lies between 12% and 4%, at 1/8 of the distance from 4% to 12%
    assert ys[1] < target_y < ys[2]
    assert (ys[2] - target_y) / (ys[2] - ys[1]) == pytest.approx(1 / 8, abs=0.01)
    # the best (lowest) point is the highlighted one
    fills = {p["data-label"]: p["fill"] for p in points}
    assert fills["iter2"] != fills["baseline"]
    assert fills["iter1"] == fills["baseline"]
    # the y axis is labelled in the metric's unit, on round, evenly spaced ticks that sit on the points' scale
    fragment = _section(render_report(complete_run.state), "kpi")
    ticks = re.findall(r'<text class="tick" x="[^"]+" y="([^"]+)"[^>]*>([^<]*)</text>', fragment)
    assert len(ticks) >= 3
    assert all(label.endswith("%") for _, label in ticks)
    tick_values = [float(label[:-1]) for _, label in ticks]
    steps = {round(b - a, 9) for a, b in itertools.pairwise(tick_values)}
    assert len(steps) == 1
    assert min(tick_values) <= 4.0 and max(tick_values) >= 20.0
    pixels_per_pp = (ys[2] - ys[0]) / (4.0 - 20.0)
    for y_text, value in zip((float(y) for y, _ in ticks), tick_values, strict=True):
        assert y_text - 4 == pytest.approx(ys[0] + (value - 20.0) * pixels_per_pp, abs=0.2)
    assert "FAR (%)" in _visible(fragment)


def test_training_growth_stacks_each_source_in_proportion(complete_run: Run) -> None:
    fragment = _section(render_report(complete_run.state, extras=EXTRAS), "growth")
    segments = _Page(fragment).all("rect", **{"class": "bar-segment"})
    heights = {(s["data-label"], s["data-source"]): float(str(s["height"])) for s in segments}
    assert set(heights) == {
        ("baseline", "base"),
        ("iter1", "base"),
        ("iter1", "sdg"),
        ("iter1", "mined"),
        ("iter2", "base"),
        ("iter2", "sdg"),
        ("iter2", "mined"),
    }
    unit = heights[("baseline", "base")] / 480
    for (label, source), height in heights.items():
        assert height == pytest.approx(EXTRAS["training_rows_by_source"][label][source] * unit, rel=1e-3)
    # segments of one bar stack on each other: each starts where the one below ends
    iter1 = [s for s in segments if s["data-label"] == "iter1"]
    for below, above in itertools.pairwise(iter1):
        assert float(str(above["y"])) + float(str(above["height"])) == pytest.approx(float(str(below["y"])), abs=0.11)
    rows = _table_rows(fragment)
    assert rows[0] == ["Phase", "base", "sdg", "mined", "Total", "Δ"]
    assert rows[1:] == [
        ["baseline", "480", "—", "—", "480", "—"],
        ["iter1", "480", "20", "35", "535", "+55"],
        ["iter2", "480", "40", "60", "580", "+45"],
    ]


def test_stage_durations_list_every_event_with_bars_in_proportion(complete_run: Run) -> None:
    state = complete_run.state
    fragment = _section(render_report(state), "durations")
    bars = _Page(fragment).all("rect", **{"class": "duration-bar"})
    assert [int(str(b["data-seq"])) for b in bars] == [e["seq"] for e in state["events"]]
    widths = [float(str(b["width"])) for b in bars]
    longest = max(complete_run.durations)
    for width, seconds in zip(widths, complete_run.durations, strict=True):
        assert width / max(widths) == pytest.approx(seconds / longest, rel=1e-3)
    rows = _table_rows(fragment)
    assert len(rows) == 1 + len(state["events"]) + 1  # head, one per event, the total
    assert rows[1][:5] == ["1", "baseline", "train", "ok", "10.0 s"]
    total = sum(complete_run.durations)
    minutes, seconds = divmod(round(total), 60)
    assert rows[-1][2:5] == ["all stages", "", f"{minutes}m {seconds:02d}s"]


def test_a_single_evaluated_phase_is_one_point_inside_the_chart(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.train("baseline")
    run.evaluate("baseline", 5.0)  # equal to the target: a flat range still gets a visible band
    page = _Page(_section(render_report(run.state), "kpi"))
    (point,) = page.all("circle", **{"class": "kpi-point"})
    svg = page.all("svg")[0]
    assert 0 < float(str(point["cy"])) < float(str(svg["height"]))
    assert 0 < float(str(point["cx"])) < float(str(svg["width"]))
