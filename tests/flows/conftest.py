"""Flow tests: a tiny synthetic workspace and a fake TAO runtime (the session's Prefect test server, `prefect_server`,
lives in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

    root = tmp_path_factory.mktemp("aoi") / "workspace"
    write_workspace(root, SynthSpec(boards=12, size=32, seed=3))
    return root


def _pipeline_config(workspace: Path, results_root: Path, **changes: Any) -> Any:
    from aoi_pipeline.config import config_from_mapping

    phase = {"recommendations": 2, "parallel": 2, "num_epochs": 2, "batch_size": 4, "seed": 0}
    data = {
        "workspace": str(workspace),
        "results_root": str(results_root),
        "kpi_target": "FAR < 50% at Recall=100%",
        "gpus": 0,
        "dataset": {"image_ext": ".png"},
        "spec_overrides": ["dataset.classify.image_width=32", "dataset.classify.image_height=32"],
        "phase1": phase,
        "deft": {"max_iterations": 0, "num_epochs": 2},
        "phase3": {**phase, "recommendations": 1, "parallel": 1},
    }
    data.update(changes)
    return config_from_mapping(data)


@pytest.fixture
def pipeline_config() -> Any:
    """Factory: a small, valid pipeline config for a workspace and results root, with changes on top."""
    return _pipeline_config
