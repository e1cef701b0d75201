"""Task tests call each task's function (`.fn`) without a Prefect server.

What only Prefect provides is replaced by recorders: the run logger by a plain logger, artifacts by a list of
what would have been published. The context the tasks receive is a real `RunContext` whose runner is a fake.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.layout import RunLayout


class RecordingRunner:
    """A JobRunner that only records the jobs it is given (the pipeline functions are faked in these tests)."""

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def run(self, job: Any) -> Any:
        self.jobs.append(job)
        raise AssertionError("no task under test launches a job itself")


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    config = config_from_mapping({"workspace": str(tmp_path / "ws"), "gpus": 0, "deft": {"max_iterations": 3}})
    return RunContext.from_config(config, RunLayout(tmp_path / "run"), RecordingRunner(), visible_gpus=0)


@pytest.fixture
def task_log(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every task module's run logger is a plain logger whose records `caplog` holds."""
    import tasks.deft
    import tasks.gate
    import tasks.jobs
    import tasks.phases
    import tasks.preflight
    import tasks.progress

    logger = logging.getLogger("aoi-task-test")
    for module in (tasks.deft, tasks.gate, tasks.jobs, tasks.phases, tasks.preflight, tasks.progress):
        monkeypatch.setattr(module, "get_run_logger", lambda: logger)
    caplog.set_level(logging.INFO, logger="aoi-task-test")
    return caplog


@pytest.fixture
def artifacts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, dict[str, Any]]]:
    """(kind, content, options) of every artifact a task would publish."""
    import tasks.deft
    import tasks.phases
    import tasks.preflight
    import tasks.progress

    published: list[tuple[str, Any, dict[str, Any]]] = []

    def recorder(kind: str) -> Any:
        def record(content: Any, **options: Any) -> str:
            published.append((kind, content, options))
            return f"artifact-{len(published)}"

        return record

    for module in (tasks.deft, tasks.phases, tasks.preflight, tasks.progress):
        for name in (
            "create_markdown_artifact",
            "create_table_artifact",
            "create_progress_artifact",
            "create_link_artifact",
        ):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, recorder(name))
    return published
