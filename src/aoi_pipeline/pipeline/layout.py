"""Where everything of one pipeline run lives on disk, and the pipeline-level phase record.

The run directory `<results_root>/run_<YYYYMMDD_HHMMSS>/` is the unit of work: Phase 1 and Phase 3 trials,
the DEFT iterations (`baseline/`, `iter<N>/`, `final_automl/`), the Optuna studies, the approval record and
the handoff files. `PipelineRecord` (`pipeline_state.json`) records phase boundaries and handoffs so a rerun
on the same directory resumes after the last finished phase; `deft_state.json` stays the single source of
truth inside Phase 2. Nothing here creates a directory: paths are computed, and the approved flow creates
them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.errors import ConfigError, StateError

PIPELINE_STATE_FILE = "pipeline_state.json"
PHASES = ("phase1", "handoff_1_2", "phase2", "phase3", "handoff")
# A run name is one path component: it names a folder under the results root and nothing else.
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RUN_NAME_RULE = "1 to 100 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"


def check_run_name(name: str, *, where: str = "run name") -> str:
    """`name` itself when it is a safe run name (one path component, no `..`); else a `ConfigError`.

    A name like `../../x` or `/tmp/x` would put the run's approval, plan and specs outside the results root.
    """
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name) or ".." in name:
        shown = repr(name)[:120]
        raise ConfigError.at(
            where,
            f"{shown} is not a run name ({RUN_NAME_RULE}; no '/', no '..', no absolute path)",
            "give a plain name such as run_20260101_120000, or leave it out for a new timestamped name",
        )
    return name


def new_run_name(now: datetime | None = None) -> str:
    """`run_<YYYYMMDD_HHMMSS>` in UTC, the reference's run directory naming."""
    return f"run_{(now or datetime.now(UTC)).strftime('%Y%m%d_%H%M%S')}"


_TIMESTAMPED_RUN_NAME = re.compile(r"run_[0-9]{8}_[0-9]{6}")


def run_name_for(requested: str | None, flow_run_name: str | None = None) -> str:
    """The run directory's name: the one requested, else the flow run's own name when it is a run name (the
    flow names its runs that way, so the Prefect UI and the results folder agree), else a new one."""
    if requested:
        return requested
    if flow_run_name and _TIMESTAMPED_RUN_NAME.fullmatch(flow_run_name):
        return flow_run_name
    return new_run_name()


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run directory."""

    root: Path

    @classmethod
    def for_run(cls, results_root: Path, run_name: str, *, where: str = "run name") -> RunLayout:
        """The layout of run `run_name` under `results_root`, refusing a name that is not one safe component."""
        return cls(Path(results_root) / check_run_name(run_name, where=where))

    @property
    def approval(self) -> Path:
        return self.root / "approval.json"

    @property
    def preflight(self) -> Path:
        return self.root / "preflight.md"

    @property
    def pipeline_state(self) -> Path:
        return self.root / PIPELINE_STATE_FILE

    @property
    def specs_dir(self) -> Path:
        return self.root / "specs"

    @property
    def base_spec(self) -> Path:
        return self.specs_dir / "baseline_spec.yaml"

    @property
    def merged_spec(self) -> Path:
        """Phase 1's winner merged onto the base spec; the workspace's own spec is never overwritten."""
        return self.specs_dir / "baseline_spec_automl.yaml"

    def phase_dir(self, phase: str) -> Path:
        return self.root / phase

    def study_storage(self, phase: str) -> Path:
        return self.phase_dir(phase) / "optuna_study.db"

    def trial_dir(self, phase: str, number: int) -> Path:
        return self.phase_dir(phase) / f"trial_{number:03d}"

    def iteration_dir(self, label: str) -> Path:
        return self.root / label

    def train_dir(self, label: str) -> Path:
        return self.iteration_dir(label) / "train"

    def inference_dir(self, label: str, kind: str) -> Path:
        return self.iteration_dir(label) / "inference" / kind

    def iteration_spec(self, label: str) -> Path:
        return self.iteration_dir(label) / f"{label}_spec.yaml"

    @property
    def final_automl_dir(self) -> Path:
        return self.root / "final_automl"

    @property
    def best_model(self) -> Path:
        return self.root / "best_model.json"

    @property
    def best_model_inference_spec(self) -> Path:
        return self.root / "best_model_inference_spec.yaml"

    @property
    def trajectory(self) -> Path:
        return self.root / "trajectory.md"


class PipelineRecord:
    """`pipeline_state.json`: which phases finished, with what, so a rerun resumes after them."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout

    def read(self) -> dict[str, Any]:
        path = self.layout.pipeline_state
        if not path.exists():
            return {"phases": {}}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise StateError.at(
                str(path),
                f"cannot be read as JSON ({error})",
                "restore it from a backup or start a fresh run directory",
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("phases"), dict):
            raise StateError.at(str(path), "has no 'phases' mapping", "start a fresh run directory")
        return data

    def phase(self, name: str) -> dict[str, Any] | None:
        return self.read()["phases"].get(name)

    def done(self, name: str) -> bool:
        entry = self.phase(name)
        return bool(entry and entry.get("status") in ("complete", "skipped"))

    def mark(self, name: str, status: str, **fields: Any) -> dict[str, Any]:
        if name not in PHASES:
            raise StateError.at(f"pipeline phase {name!r}", "is not a pipeline phase", f"use one of {PHASES}")
        data = self.read()
        data["phases"][name] = {
            "status": status,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            **fields,
        }
        atomic_write_json(self.layout.pipeline_state, data)
        return data
