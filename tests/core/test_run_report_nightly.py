"""The run report's nightly history section: shown for a nightly run only, this night highlighted."""

from __future__ import annotations

from aoi_pipeline.core.nightly_history import NightRecord, history_table
from aoi_pipeline.core.run_report import RunFacts, render_run_report


def _facts(**changes: object) -> RunFacts:
    return RunFacts(run_name="nightly_2", run_dir="/r/nightly_2", objective="FAR", **changes)  # type: ignore[arg-type]


def test_a_manual_run_has_no_nightly_section() -> None:
    assert 'id="nightly"' not in render_run_report(_facts())


def test_a_nightly_run_shows_every_night_and_its_own_verdict() -> None:
    nights = [
        NightRecord("nightly_1", "t1", "skipped: nothing new"),
        NightRecord("nightly_2", "t2", "trained", kpi_before=4.0, kpi_after=3.0, promotion_reason="kept <spread>"),
    ]
    handoff = {"nightly": {"promoted": False, "reason": "kept <spread>"}}
    page = render_run_report(_facts(nightly_history=history_table(nights), handoff=handoff))
    section = page[page.index('<section id="nightly">') :]
    assert "nightly_1" in section and "skipped: nothing new" in section
    assert '<tr class="best"><td>nightly_2</td>' in section
    assert "This night kept the deployed model: kept &lt;spread&gt;" in section
