"""The demo's closing lines: the KPI FAR trajectory, what improved, and where the report is."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoi_pipeline import demo


def _state(values: dict[str, float | None]) -> dict:
    return {
        "iterations": {
            label: ({"metric_result": {"value": value}} if value is not None else {"status": "failed"})
            for label, value in values.items()
        }
    }


def test_the_story_names_every_stage_the_improvement_and_the_report(monkeypatch, tmp_path: Path) -> None:
    state = _state({"baseline": 60.0, "iter1": 30.0, "iter2": None, "final_automl": 12.0})
    monkeypatch.setattr(demo, "read_state", lambda run_dir: state)
    lines = demo.demo_story(tmp_path, "final_automl")
    assert lines[0] == "KPI FAR at 100 % defect recall: baseline 60.0 % -> iter1 30.0 % -> final_automl 12.0 %"
    assert "12.0 %" in lines[1] and "60.0 %" in lines[1] and "5.0x lower" in lines[1]
    assert lines[-1] == f"Report: {tmp_path / 'run_report.html'}"


@pytest.mark.parametrize(("after", "expected"), [(0.0, "down to zero"), (70.0, "did not improve")])
def test_the_story_says_so_when_nothing_is_left_or_nothing_improved(monkeypatch, tmp_path, after, expected) -> None:
    monkeypatch.setattr(demo, "read_state", lambda run_dir: _state({"baseline": 60.0, "iter1": after}))
    assert expected in demo.demo_story(tmp_path, "iter1")[1]


def test_the_story_labels_the_confirm_figure_and_shows_the_steer_one(monkeypatch, tmp_path: Path) -> None:
    state = {
        "kpi_split": {"source": "board_hash", "steer_boards": ["b1"], "confirm_boards": ["b2"]},
        "iterations": {
            "baseline": {"metric_result": {"value": 40.0}, "steer_metric_result": {"value": 50.0}},
            "iter1": {"metric_result": {"value": 20.0}, "steer_metric_result": {"value": 5.0}},
        },
    }
    monkeypatch.setattr(demo, "read_state", lambda run_dir: state)
    lines = demo.demo_story(tmp_path, "iter1")
    assert lines[0] == (
        "KPI FAR at 100 % defect recall on the confirm boards (never steered on): baseline 40.0 % -> iter1 20.0 %"
    )
    assert lines[1] == "Steer boards (what RCA and mining looked at): baseline 50.0 % -> iter1 5.0 %"
