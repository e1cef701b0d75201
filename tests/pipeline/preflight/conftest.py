"""Fixtures of the pre-flight tests: a valid synthetic workspace, a config factory and a pre-flight runner.

The runner answers every outside question from a `StaticProbe` (no GPU, every runtime command present, every
platform reachable) unless a test passes its own. The pre-flight's rules for platforms whose job dispatch is
not built yet (the config refuses them) are checked by letting the config accept them here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aoi_pipeline import config as config_module
from aoi_pipeline.config import PipelineConfig, config_from_mapping
from aoi_pipeline.errors import Problem
from aoi_pipeline.pipeline.preflight import PreflightReport, StaticProbe, run_preflight
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

RUN_NAME = "run_20250101_000000"


@pytest.fixture(autouse=True)
def planned_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configs may name the planned platforms (slurm), so their pre-flight rules are tested."""
    extended = tuple(dict.fromkeys([*config_module.PLATFORMS, *config_module.PLANNED_PLATFORMS]))
    monkeypatch.setattr(config_module, "PLATFORMS", extended)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A valid synthetic workspace: 4 rows per set (3 PASS + 1 defect), mining pool included."""
    root = tmp_path / "ws"
    write_workspace(root, SynthSpec(boards=4, size=32, tiles_per_board=4))
    return root


def _config(ws: Path, **changes: Any) -> PipelineConfig:
    data: dict[str, Any] = {
        "workspace": str(ws),
        "results_root": str(ws / "results"),
        "phase1": {"batch_size": 2},
        "phase3": {"batch_size": 2},
    }
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_mapping(data)


@pytest.fixture
def make_config() -> Callable[..., PipelineConfig]:
    """`make_config(ws, **changes)`: the test config (batch size 2) with top-level keys merged in."""
    return _config


@pytest.fixture
def preflight() -> Callable[..., PreflightReport]:
    """`preflight(ws, probe=..., environ=..., **config changes)`: run the pre-flight on a static probe."""

    def run(
        ws: Path, *, probe: StaticProbe | None = None, environ: Mapping[str, str] | None = None, **changes: Any
    ) -> PreflightReport:
        return run_preflight(
            _config(ws, **changes), run_name=RUN_NAME, environ=environ or {}, probe=probe or StaticProbe()
        )

    return run


def blockers_at(report: PreflightReport, fragment: str) -> list[Problem]:
    return [problem for problem in report.blockers if fragment in problem.where]


def section(report: PreflightReport, number: int) -> str:
    return "\n".join(report.sections[number - 1].lines)


def assert_actionable(problems: Iterable[Problem]) -> None:
    for problem in problems:
        assert problem.where.strip() and problem.what.strip() and problem.fix.strip(), problem


@pytest.fixture
def read() -> SimpleNamespace:
    """The helpers that read a report: `blockers_at`, `section` and `assert_actionable`."""
    return SimpleNamespace(blockers_at=blockers_at, section=section, assert_actionable=assert_actionable)
