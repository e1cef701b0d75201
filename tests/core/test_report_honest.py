"""The report's confirm-split section: which boards judge, steer against confirm, the control arm, the seeds."""

from __future__ import annotations

from aoi_pipeline.core.report_honest import honest_section


def state(**extra) -> dict:
    return {
        "iterations": {
            "baseline": {"metric_result": {"value": 40.0}, "steer_metric_result": {"value": 45.0}},
            "iter1": {
                "metric_result": {"value": 20.0},
                "steer_metric_result": {"value": 5.0},
                "control_metric_result": {"value": 22.5},
            },
            "iter2": {"status": "in_progress"},
        },
        **extra,
    }


def test_nothing_is_shown_before_an_evaluation():
    assert honest_section({"iterations": {"baseline": {"status": "in_progress"}}}) == ""


def test_the_confirm_figure_stands_beside_the_steer_figure_and_the_control():
    split = {"source": "board_hash", "steer_boards": ["b1", "b2"], "confirm_boards": ["b3"]}
    html = honest_section(state(kpi_split=split, pool_budget={"max_pool_share": 0.25, "pool_rows": 400}))
    assert "1 confirm boards" in html and "2 steer boards" in html and "a hash of the board name" in html
    assert "<td>iter1</td><td>20</td><td>5</td><td>22.5</td>" in html.replace("\n", "")
    assert "<td>baseline</td><td>40</td><td>45</td><td>–</td>" in html.replace("\n", "")
    assert "iter2" not in html
    assert "25% of 400 pool rows" in html


def test_a_run_without_a_split_says_its_figures_are_on_the_whole_set():
    assert "every figure is on the whole KPI set" in honest_section(state())
    assert "flatter" in honest_section(state(kpi_split={"source": "whole_kpi_set"}))


def test_the_seed_confirmation_names_the_spread_and_the_verdict():
    seeds = {
        "candidate": "iter1",
        "values": [20.0, 24.0],
        "mean": 22.0,
        "spread": 2.83,
        "spread_kind": "sample standard deviation",
        "runner_up": "baseline",
        "runner_up_value": 40.0,
        "separated": True,
        "deliverable": "iter1",
    }
    html = honest_section(state(confirm_seeds=seeds))
    assert "mean 22 ± 2.83" in html and "beats it by more than the spread" in html
