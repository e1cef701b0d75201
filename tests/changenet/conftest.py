"""Fixtures of the reference runtime's tests: a tiny synthetic workspace in tmp_path, one trained once per
session, and the `aoi-changenet` command run in-process."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# The workspace builders live beside this file; test modules import them as `changenet_workspace`.
sys.path.insert(0, str(Path(__file__).parent))

from changenet_workspace import Workspace, build_workspace


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return build_workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """One workspace trained once (2 epochs) for the tests that only read its outputs."""
    from aoi_pipeline.changenet.cli import main

    ws = build_workspace(tmp_path_factory.mktemp("trained"))
    assert main(["train", "-e", str(ws.spec_path)]) == 0
    return ws


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `aoi-changenet` in-process: (exit code, stdout, stderr)."""
    from aoi_pipeline.changenet.cli import main

    def run(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
