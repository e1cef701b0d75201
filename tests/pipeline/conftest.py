"""Fixtures of the pipeline tests: a small workspace and a run layout inside it. The shared builders
(`run_support`) live beside this file; test modules import them by module name."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from run_support import LABELS

from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.pipeline.layout import RunLayout


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    (root / "images").mkdir(parents=True)
    ws = Workspace.at(root)
    for path in (ws.training_csv, ws.validation_csv, ws.kpi_csv):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["input_path", "golden_path", "label", "object_name"])
            for index, label in enumerate(LABELS):
                writer.writerow([f"b{index}/test", f"b{index}/golden", label, f"c{index}"])
    return ws


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    return RunLayout(tmp_path / "ws" / "results" / "run_20250101_000000")
