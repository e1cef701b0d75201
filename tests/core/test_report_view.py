"""What the report reads from the run state: each evaluated phase, its checkpoint, the best, the order."""

from __future__ import annotations

import copy
import re
from pathlib import Path

from report_run import EXTRAS, Run, _Page, _section, _table_rows, _visible

from aoi_pipeline.core.report import render_report


def test_the_iterations_table_shows_metric_delta_threshold_verdict_and_checkpoint(complete_run: Run) -> None:
    rows = _table_rows(_section(render_report(complete_run.state), "iterations"))
    assert rows[0] == [
        "Phase",
        "FAR (%)",
        "Δ vs baseline",
        "Threshold",
        "Constraints",
        "Passed",
        "Checkpoint",
        "Status",
    ]
    by_phase = {row[0]: row for row in rows[1:]}
    assert by_phase["baseline"][1:7] == ["20%", "—", "0.5", "recall_pct 99.5", "no", "best_val"]
    # iter1's winner was the latest checkpoint although train recorded best_val
    assert by_phase["iter1"][1:7] == ["12%", "-8 pp", "0.375", "recall_pct 99.5", "no", "latest"]
    assert by_phase["iter2 ★ best"][1:7] == ["4%", "-16 pp", "0.1875", "recall_pct 99.5", "yes", "best_val"]


def test_a_run_in_progress_plots_only_what_was_evaluated(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.train("baseline")
    run.evaluate("baseline", 20.0)
    run.rca("baseline", ["short"])
    run.until_merge("iter1", mined=3)
    text = render_report(run.state)
    assert len(_Page(text).all("circle", **{"class": "kpi-point"})) == 1
    assert "running; next stage iter1/train" in _visible(_section(text, "run"))
    rows = _table_rows(_section(text, "iterations"))
    assert rows[2] == ["iter1", "—", "—", "—", "—", "—", "—", "in_progress (data_merge)"]


def test_a_higher_is_better_metric_without_unit_is_drawn_and_ranked_the_other_way(tmp_path: Path) -> None:
    contract = {
        "name": "quality_score",
        "display_name": "Quality score",
        "operator": ">=",
        "target": 0.9,
        "unit": "",
        "evaluator": {"type": "command", "path": "/opt/metrics/evaluate_quality.py", "args": []},
        "constraints": [],
    }
    run = Run(tmp_path, contract=contract)
    run.train("baseline")
    run.evaluate("baseline", 0.8)
    run.rca("baseline", ["short"])
    run.until_merge("iter1", mined=4)
    run.train("iter1")
    run.evaluate("iter1", 0.85)
    text = render_report(run.state)
    page = _Page(_section(text, "kpi"))
    points = page.all("circle", **{"class": "kpi-point"})
    baseline, iter1 = (float(str(p["cy"])) for p in points)
    assert iter1 < baseline  # the higher score is drawn higher
    assert points[1]["fill"] != points[0]["fill"]  # and is the best
    target_y = float(str(page.all("line", **{"class": "target"})[0]["y1"]))
    assert target_y < iter1
    assert "Higher is better" in _visible(_section(text, "kpi"))
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]*)</text>', _section(text, "kpi"))
    assert ticks and all(re.fullmatch(r"-?[0-9.]+", tick) for tick in ticks)
    rows = _table_rows(_section(text, "iterations"))
    assert rows[0][1] == "Quality score"
    assert rows[2][:3] == ["iter1 ★ best", "0.85", "+0.05"]


def test_rendering_is_deterministic_and_independent_of_dict_order(complete_run: Run) -> None:
    state = complete_run.state
    first = render_report(state, extras=EXTRAS)
    shuffled = copy.deepcopy(state)
    shuffled["iterations"] = dict(reversed(list(state["iterations"].items())))
    extras = copy.deepcopy(EXTRAS)
    extras["training_rows_by_source"] = dict(reversed(list(EXTRAS["training_rows_by_source"].items())))
    assert render_report(shuffled, extras=extras) == first
    assert render_report(state, extras=EXTRAS) == first
