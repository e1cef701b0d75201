"""The Phase 2 part of the run report: its sections and values, the state alone, hard stops and bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from report_run import BEST_MODEL, EXTRAS, HOSTILE, SECTIONS, Run, _Page, _section, _table_rows, _visible

from aoi_pipeline.core.report import NOT_RECORDED, phase2_parts, render_report
from aoi_pipeline.errors import ConfigError, StateError


def test_every_section_is_present_and_the_page_parses_cleanly(complete_run: Run) -> None:
    text = render_report(complete_run.state, extras={**EXTRAS, "handoff": BEST_MODEL})
    page = _Page(text)
    assert page.errors == []
    assert page.stack == []
    assert text.startswith("<!DOCTYPE html>")
    assert page.section_ids() == list(SECTIONS)  # no hard stop on a complete run
    assert NOT_RECORDED not in text


def test_the_header_names_the_run_its_status_target_and_stop_reason(complete_run: Run) -> None:
    header = _visible(_section(render_report(complete_run.state, extras=EXTRAS), "run"))
    assert str(complete_run.rd) in header
    assert "complete" in header
    assert "FAR < 5% at Recall=99%" in header
    assert "the KPI target was met at iter2" in header
    assert "2 of 2" in header


def test_rca_shows_the_gap_table_and_the_target_defects_from_the_state(complete_run: Run) -> None:
    fragment = _section(render_report(complete_run.state, extras=EXTRAS), "rca")
    rows = _table_rows(fragment)
    head = ["Defect type", "Missed", "Forced FAR (%)", "Lowest score"]
    assert rows == [
        head,
        ["short", "7", "31.25", "0.0625"],
        ["open", "2", "—", "0.5"],
        head,
        ["open", "1", "14.5", "0.125"],
    ]
    text = _visible(fragment)
    assert "Target defect types: short, open" in text
    assert "Target defect types: open" in text  # iter1's RCA, recorded in the state only
    assert "0.4375" in text


def test_sdg_and_mining_counts_combine_state_and_extras(complete_run: Run) -> None:
    fragment = _section(render_report(complete_run.state, extras=EXTRAS), "augmentation")
    rows = _table_rows(fragment)
    assert rows[0] == ["Phase", "SDG allocated", "Mined rows", "mining_below_min_similarity", "mining_candidates"]
    assert rows[1:] == [["iter1", "20", "35", "55", "90"], ["iter2", "20", "25", "—", "—"]]
    assert "Share of the mining pool used: 6.0% (60 rows mined in total)" in _visible(fragment)


def test_the_handoff_shows_best_model_json(complete_run: Run) -> None:
    text = _visible(_section(render_report(complete_run.state, extras={"handoff": BEST_MODEL}), "handoff"))
    assert BEST_MODEL["checkpoint"] in text
    assert "iteration iter2" in text
    assert "threshold 0.1875" in text
    assert "FAR 4%" in text
    assert str(complete_run.rd / "best_model.json") in text


def test_without_extras_every_section_renders_and_says_what_is_not_recorded(complete_run: Run) -> None:
    text = render_report(complete_run.state)
    assert _Page(text).errors == []
    assert _Page(text).section_ids() == list(SECTIONS)
    assert NOT_RECORDED in _visible(_section(text, "growth"))
    assert "Gaps table: not recorded" in _visible(_section(text, "rca"))
    augmentation = _visible(_section(text, "augmentation"))
    assert "Detailed SDG and mining counts: not recorded" in augmentation
    assert "Share of the mining pool used: not recorded (60 rows mined in total)" in augmentation
    assert "best_model.json content not recorded" in _visible(_section(text, "handoff"))
    # the state still gives the KPI chart and the table
    assert len(_Page(text).all("circle", **{"class": "kpi-point"})) == 3


def test_a_new_run_renders_with_nothing_committed(tmp_path: Path) -> None:
    state = Run(tmp_path).state
    text = render_report(state)
    page = _Page(text)
    assert page.errors == []
    assert page.all("circle", **{"class": "kpi-point"}) == []
    assert "No evaluated iteration yet" in _visible(_section(text, "kpi"))
    assert "running; next stage baseline/train" in _visible(_section(text, "run"))


def test_a_failed_run_shows_the_hard_stop_first_and_escaped(failed_run: Run) -> None:
    text = render_report(failed_run.state)
    page = _Page(text)
    assert page.errors == []
    assert page.section_ids()[:2] == ["run", "hard-stop"]
    stop = _section(text, "hard-stop")
    visible = _visible(stop)
    assert HOSTILE in visible  # shown to the reader as text
    assert "iter1/anomalygen" in visible
    assert "job_rc" in visible
    assert "hard stop at iter1/anomalygen" in _visible(_section(text, "run"))
    assert "failed" in _visible(_section(text, "run"))
    assert len(page.all("circle", **{"class": "kpi-point"})) == 1
    error_bars = [b for b in page.all("rect", **{"class": "duration-bar"}) if b["data-seq"] == "5"]
    assert error_bars and error_bars[0]["fill"] != page.all("rect", **{"class": "duration-bar"})[0]["fill"]


@pytest.mark.parametrize(
    ("extras", "named"),
    [
        ({"training_rows": {}}, "extras.training_rows"),
        ({"training_rows_by_source": {"iter_1": {"base": 3}}}, "extras.training_rows_by_source.iter_1"),
        ({"training_rows_by_source": {"iter1": {"base": -3}}}, "extras.training_rows_by_source.iter1.base"),
        ({"rca_gaps": {"baseline": [{"missed": 2}]}}, "extras.rca_gaps.baseline[0]"),
        ({"rca_gaps": {"baseline": [{"label": "open", "lowest": float("nan")}]}}, "extras.rca_gaps.baseline[0].lowest"),
        ({"sdg_and_mining": {"iter1": {"mined": "many"}}}, "extras.sdg_and_mining.iter1.mined"),
        ({"pool_share_used_pct": 140.0}, "extras.pool_share_used_pct"),
        ({"handoff": ["x"]}, "extras.handoff"),
    ],
)
def test_bad_extras_are_refused_naming_the_key(complete_run: Run, extras: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        render_report(complete_run.state, extras=extras)
    assert named in str(caught.value)
    assert "Fix:" in str(caught.value)


def test_every_bad_extra_is_reported_at_once(complete_run: Run) -> None:
    with pytest.raises(ConfigError) as caught:
        render_report(
            complete_run.state,
            extras={"x": 1, "pool_share_used_pct": -1, "training_rows_by_source": {"iter1": {"sdg": 1.5}}},
        )
    assert len(caught.value.problems) == 3


def test_the_phase2_parts_are_the_pages_sections_without_its_header_and_handoff(complete_run: Run) -> None:
    parts = phase2_parts(complete_run.state, extras=EXTRAS)
    ids = [_Page(part).section_ids()[0] for part in parts]
    assert ids == [name for name in SECTIONS if name not in ("run", "handoff")]


def test_a_document_that_is_not_a_state_is_refused(complete_run: Run) -> None:
    state = complete_run.state
    del state["events"]
    with pytest.raises(StateError, match=r"state\.events"):
        render_report(state)


def test_the_automl_trials_show_by_phase_with_the_pruned_ones(complete_run: Run) -> None:
    trials = {"phase1": {"complete": 6, "pruned": 5, "failed": 1}, "phase3": {"complete": 2}}
    text = render_report(complete_run.state, extras={"automl_trials": trials})
    page = _Page(text)
    assert page.errors == []
    assert "automl" in page.section_ids()
    section = _visible(_section(text, "automl"))
    assert "pruned" in section
    rows = _table_rows(_section(text, "automl"))
    assert ["phase1", "6", "1", "5", "12"] in rows and ["phase3", "2", "0", "0", "2"] in rows
    assert "automl" not in _Page(render_report(complete_run.state)).section_ids()  # no AutoML phase ran


def test_a_negative_trial_count_is_refused_naming_the_phase(complete_run: Run) -> None:
    with pytest.raises(ConfigError) as caught:
        render_report(complete_run.state, extras={"automl_trials": {"phase1": {"pruned": -1}}})
    assert "extras.automl_trials.phase1.pruned" in str(caught.value)
