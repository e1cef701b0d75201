"""The demo: a small synthetic AOI workspace and a pipeline config sized to finish in minutes on a laptop CPU.

`prepare_demo` writes the workspace (procedural boards with the six DeepPCB defect types) and a
`pipeline.yaml` beside it: 64 px tiles, the reference runtime's small registered early-fusion CNN, a small
budget (two Phase 1 recommendations of ten short epochs on the seed set, one DEFT iteration of five epochs, one
Phase 3 recommendation of four epochs on the grown training set), learning rates in the range a from-scratch
small model needs, and the local launcher. The baseline misses the defect types the seed set hardly holds (pin
holes, spurs), the loop adds them, and `demo_story` closes the run with the KPI FAR of every stage and the
report's path. The config is an ordinary file: edit it and run it with `aoi-pipeline run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from aoi_pipeline.config import PipelineConfig, load_config
from aoi_pipeline.core.run_report import RUN_REPORT_FILE
from aoi_pipeline.core.stages import BASELINE, FINAL_AUTOML
from aoi_pipeline.core.state import read_state
from aoi_pipeline.synth.workspace import SynthSpec, SynthSummary, write_workspace

DEMO_SIZE = 64
DEMO_BOARDS = 80

# A from-scratch small CNN needs larger steps than the reference's fine-tuning range for C-RADIO.
_DEMO_SEARCH_SPACE = {
    "train.optim.lr": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True},
    "model.classify.learnable_difference_modules": None,
}
_DEMO_SPEC_OVERRIDES = [
    f"dataset.classify.image_width={DEMO_SIZE}",
    f"dataset.classify.image_height={DEMO_SIZE}",
    "dataset.classify.workers=0",
    "model.classify.difference_module=learnable",
    "model.classify.embed_dec=8",
    "train.optim.lr=1e-3",
]


@dataclass(frozen=True)
class Demo:
    """Where the demo's workspace and config are."""

    root: Path
    workspace: SynthSummary
    config_path: Path
    config: PipelineConfig


def demo_config(workspace: Path, *, seed: int = 0, platform: str = "local", image: str | None = None) -> dict[str, Any]:
    """The demo's pipeline config as plain data (what pipeline.yaml holds); on a container platform every
    job runs in `image` (the job image of deployments/docker); on Slurm in the pool's Python environment."""
    phase = {
        "recommendations": 2,
        "parallel": 1,
        "num_epochs": 10,
        "batch_size": 8,
        "seed": seed,
        "search_space": _DEMO_SEARCH_SPACE,
    }
    images = {"images": dict.fromkeys(("train", "inference", "embed", "sdg"), image)} if image else {}
    return {
        "workspace": str(workspace),
        "platform": platform,
        **images,
        "runtime": "reference",
        "kpi_target": "FAR < 5% at Recall=100%",
        # On Slurm `auto` asks every job for a GPU of the nodes; the demo's small model trains on their CPUs.
        "gpus": 0 if platform == "slurm" else "auto",
        "spec_overrides": _DEMO_SPEC_OVERRIDES,
        "dataset": {"lights": ["SolderLight"], "image_ext": ".png"},
        "phase1": phase,
        "deft": {"max_iterations": 1, "num_epochs": 5, "num_sdg": 24, "min_similarity": 0.5},
        # Phase 3 trains on the seed set plus what the loop added, several times the baseline's rows.
        "phase3": {**phase, "recommendations": 1, "num_epochs": 4},
    }


def prepare_demo(
    root: Path, *, boards: int = DEMO_BOARDS, seed: int = 0, platform: str = "local", image: str | None = None
) -> Demo:
    """Write the synthetic workspace and `pipeline.yaml` under a new folder `root`."""
    summary = write_workspace(root / "workspace", SynthSpec(boards=boards, size=DEMO_SIZE, seed=seed))
    config_path = root / "pipeline.yaml"
    header = "# aoi-pipeline demo config: edit and run with `aoi-pipeline run --config pipeline.yaml`\n"
    body = yaml.safe_dump(demo_config(Path("workspace"), seed=seed, platform=platform, image=image), sort_keys=False)
    config_path.write_text(header + body, encoding="utf-8")
    return Demo(root, summary, config_path, load_config(config_path))


def default_demo_root(base: Path) -> Path:
    """A fresh timestamped folder for one demo under `base`."""
    return base / f"demo_{datetime.now(UTC).strftime('%Y%m%d_%H%M%S')}"


def _kpi(state: dict[str, Any], label: str, key: str = "metric_result") -> float | None:
    result = state["iterations"].get(label, {}).get(key)
    return float(result["value"]) if isinstance(result, dict) else None


def demo_story(run_dir: Path, deliverable: str) -> list[str]:
    """The demo's closing lines: the KPI FAR of every stage, what improved from baseline to deliverable, and
    where the report is. Stages without a KPI evaluation are left out."""
    state = read_state(run_dir)
    iterations = sorted((label for label in state["iterations"] if label.startswith("iter")), key=lambda x: int(x[4:]))
    stages = [(label, _kpi(state, label)) for label in (BASELINE, *iterations, FINAL_AUTOML)]
    measured = [(label, value) for label, value in stages if value is not None]
    split = state.get("kpi_split", {}).get("source") if isinstance(state.get("kpi_split"), dict) else None
    confirmed = split is not None and split != "whole_kpi_set"
    part = " on the confirm boards (never steered on)" if confirmed else ""
    trajectory = " -> ".join(f"{label} {value:.1f} %" for label, value in measured)
    lines = [f"KPI FAR at 100 % defect recall{part}: {trajectory}"]
    steer = [(label, _kpi(state, label, "steer_metric_result")) for label, _ in measured]
    if confirmed and all(value is not None for _, value in steer):
        lines.append(
            "Steer boards (what RCA and mining looked at): " + " -> ".join(f"{lab} {v:.1f} %" for lab, v in steer)
        )
    before, after = _kpi(state, BASELINE), _kpi(state, deliverable)
    if before is not None and after is not None:
        if after < before:
            factor = f"{before / after:.1f}x lower" if after > 0 else "down to zero"
            lines.append(
                f"What improved: the deliverable ({deliverable}) raises false alarms on {after:.1f} % of good "
                f"boards' tiles instead of {before:.1f} % for the baseline ({factor}), catching every defect."
            )
        else:
            lines.append(f"The deliverable ({deliverable}) did not improve on the baseline ({before:.1f} %).")
    lines.append(f"Report: {run_dir / RUN_REPORT_FILE}")
    return lines
