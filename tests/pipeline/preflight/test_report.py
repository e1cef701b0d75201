"""The pre-flight report: nine sections in order, rendered as markdown and as plain text."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.errors import Problem
from aoi_pipeline.pipeline.preflight.report import PreflightReport, PreflightSection, plain


def test_a_valid_workspace_gives_the_nine_sections_in_order_and_no_blocker(ws: Path, preflight, read) -> None:
    report = preflight(ws)

    assert report.ok, report.blockers
    assert [s.number for s in report.sections] == list(range(1, 10))
    expected = (
        "Workspace",
        "Credentials",
        "images",
        "Datasets",
        "Phase 1",
        "Phase 2",
        "Phase 3",
        "Compute",
        "Confirm",
    )
    for section_, word in zip(report.sections, expected, strict=True):
        assert word in section_.title
    markdown, text = report.markdown(), report.text()
    positions = [markdown.index(f"## {n}. {s.title}") for n, s in enumerate(report.sections, start=1)]
    assert positions == sorted(positions)
    text_positions = [text.index(f"{n}. {s.title}") for n, s in enumerate(report.sections, start=1)]
    assert text_positions == sorted(text_positions)
    assert "Approve all three phases?" in read.section(report, 9)


def test_the_text_rendering_is_plain(ws: Path, preflight) -> None:
    text = preflight(ws).text()

    assert "**" not in text and "`" not in text
    assert not any(line.lstrip().startswith("|") for line in text.splitlines())
    assert "training / validation" in text


def test_plain_aligns_table_columns_and_keeps_an_escaped_bar() -> None:
    lines = ["| set | rows |", "| --- | ---: |", "| a\\|b | 4 |", "| training | 12 |", "", "`code` **bold**"]

    assert plain(lines) == ["  set       rows", "  a|b       4", "  training  12", "", "code bold"]


def test_blockers_and_warnings_lead_both_renderings() -> None:
    report = PreflightReport(
        sections=(PreflightSection(1, "Only", ("- a line",)),),
        blockers=(Problem("where | here", "what", "the fix"),),
        warnings=("careful",),
        plan={},
        plan_hash="0123456789abcdef",
        run_name="run_x",
    )

    assert not report.ok
    assert report.status_line() == "BLOCKED: 1 problem(s) to fix before the run can be approved"
    assert "- **where \\| here**: what. Fix: the fix" in report.markdown()
    assert "  - where | here: what\n    Fix: the fix" in report.text()
    assert report.text().index("careful") < report.text().index("1. Only")


def test_the_summary_is_one_line_naming_target_workspace_phases_and_platform() -> None:
    plan = {
        "config": {
            "workspace": "/data/ws",
            "phase1": {"enabled": True, "recommendations": 4},
            "deft": {"max_iterations": 1},
            "phase3": {"enabled": False, "recommendations": 2},
        },
        "kpi_target": "FAR < 5% at Recall=100%",
        "platform": "docker",
        "runtime": "tao",
        "gpus": {"count": 2, "per_job": 1},
    }
    report = PreflightReport(sections=(), blockers=(), warnings=(), plan=plan, plan_hash="0" * 16, run_name="run_x")

    assert report.summary() == (
        "FAR < 5% at Recall=100% on /data/ws; Phase 1 4 trials, DEFT up to 1 iteration, Phase 3 off; "
        "docker platform, tao runtime, 2 GPUs"
    )
