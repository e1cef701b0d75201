"""The pre-flight task: the report comes back unchanged, and the plan is published and logged."""

from __future__ import annotations

from types import SimpleNamespace

import tasks.preflight as preflight_tasks


def test_the_preflight_returns_the_report_and_publishes_the_plan(tmp_path, task_log, artifacts, monkeypatch):
    report = SimpleNamespace(plan_hash="0123abcd", markdown=lambda: "# Plan\n", text=lambda: "PLAN TEXT")
    calls: list[tuple] = []

    def run_preflight(config: object, *, run_name: str) -> SimpleNamespace:
        calls.append((config, run_name))
        return report

    monkeypatch.setattr(preflight_tasks, "run_preflight", run_preflight)
    config = object()
    assert preflight_tasks.preflight.fn(config, "run_20250101_000000") is report
    assert calls == [(config, "run_20250101_000000")]
    assert artifacts == [
        (
            "create_markdown_artifact",
            "# Plan\n",
            {"key": "aoi-preflight", "description": "Pre-flight of run_20250101_000000 (plan 0123abcd)"},
        )
    ]
    assert "PLAN TEXT" in task_log.text
