"""What the run-step, context and phase tests share: a fake runner that writes what jobs write (train:
periodic checkpoints and status.json with chosen validation losses; inference: inference.csv with chosen
scores), so checkpoints, losses and FARs are known in advance; configs and contexts; a finished Phase 2."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from aoi_pipeline.config import PipelineConfig, config_from_mapping
from aoi_pipeline.core.metric_target import parse_target, render_target
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.stages import BASELINE
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.jobs.job import JobResult, TaoJob
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.evaluation import commit_evaluation, evaluate_iteration
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_steps import (
    ensure_run_state,
    finalize_phase2,
    train_baseline,
)
from aoi_pipeline.pipeline.trials import TrialOutcome

CONTRACT = parse_target("FAR < 30% at Recall=100%")
LABELS = ("PASS", "PASS", "PASS", "PASS", "open", "short")
# Weakest defect 0.5; PASS rows at or above it: 0.6, 0.7 -> FAR 2/4 = 50 %.
FAR_50 = (0.1, 0.2, 0.6, 0.7, 0.5, 0.9)
# Weakest defect 0.65; PASS rows at or above it: 0.7 -> FAR 1/4 = 25 %.
FAR_25 = (0.1, 0.2, 0.6, 0.7, 0.65, 0.9)
# Weakest defect 0.8; no PASS row reaches it -> FAR 0 %.
FAR_0 = (0.1, 0.2, 0.6, 0.7, 0.8, 0.9)


class FakeRunner:
    """train writes checkpoints and status.json; inference writes inference.csv with scores per job name."""

    def __init__(self, *, val_losses: dict[int, float], scores: dict[str, Sequence[float]]) -> None:
        self.val_losses = val_losses
        self.scores = scores
        self.jobs: list[TaoJob] = []

    def run(self, job: TaoJob) -> JobResult:
        self.jobs.append(job)
        out = job.results_dir
        out.mkdir(parents=True, exist_ok=True)
        spec_path, log_path = out / "spec.yaml", out / "job.log"
        spec_path.write_text(yaml.safe_dump(dict(job.spec)), encoding="utf-8")
        log_path.write_text("log\n", encoding="utf-8")
        if job.action == "train":
            lines = []
            for epoch, loss in self.val_losses.items():
                (out / f"model_epoch_{epoch:03d}_step_{epoch * 10:05d}.pth").write_bytes(b"w%d" % epoch)
                lines.append({"status": "RUNNING", "epoch": epoch, "max_epoch": 3, "kpi": {"val_loss": loss}})
            lines.append({"status": "SUCCESS", "message": "done"})
            (out / "status.json").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        else:
            source = Path(get_key(dict(job.spec), "dataset.classify.infer_dataset.csv_path"))
            with source.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            with (out / "inference.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, [*rows[0], "siamese_score"])
                writer.writeheader()
                for row, score in zip(rows, self.scores[job.name], strict=True):
                    writer.writerow({**row, "siamese_score": repr(score)})
        now = datetime.now(UTC)
        return JobResult(job, 0, "success", None, now, now, 0.0, log_path, spec_path)


def make_config(workspace: Workspace, **changes: Any) -> PipelineConfig:
    data: dict[str, Any] = {
        "workspace": str(workspace.root),
        "gpus": 0,
        "deft": {
            "max_iterations": 0,
            "num_epochs": 3,
            "num_sdg": 7,
            "top_k_per_target": 4,
            "min_similarity": 0.8,
            # These workspaces hold a handful of KPI boards; the split has tests of its own.
            "kpi_split": "whole_set",
        },
        "phase1": {"batch_size": 6},
        "dataset": {"lights": ["SolderLight", "LowAngleLight"], "image_ext": ".bmp"},
        "images": {"train": "registry.example/tao:pyt", "sdg": "registry.example/ag:1"},
    }
    data.update(changes)
    return config_from_mapping(data)


def make_context(workspace: Workspace, layout: RunLayout, runner: Any = None, **changes: Any) -> RunContext:
    """The run's context from `make_config(workspace, **changes)`, its jobs given to `runner`, no GPU visible."""
    return RunContext.from_config(make_config(workspace, **changes), layout, runner, visible_gpus=0)


def files_below(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def phase2_done(workspace: Workspace, layout: RunLayout, baseline_scores: Sequence[float]) -> RunContext:
    """Phase 1 off: baseline train + KPI evaluation + loop_stop, as the flow runs them; the run's context."""
    runner = FakeRunner(
        val_losses={1: 0.5},
        scores={"baseline-inference-best_val": baseline_scores},
    )
    ctx = make_context(workspace, layout, runner, kpi_target=render_target(CONTRACT))
    ensure_run_state(ctx)
    train_baseline(ctx, baseline_spec())
    spec = load_spec(layout.iteration_spec(BASELINE))
    evaluation = evaluate_iteration(ctx, BASELINE, spec)
    commit_evaluation(layout, evaluation, contract=CONTRACT, training_spec=layout.iteration_spec(BASELINE))
    reason = "metric_met" if evaluation.winner.result.passed else "max_iterations"
    finalize_phase2(layout, label=BASELINE, stop_reason=reason)
    return ctx


def phase3_winner(tmp_path: Path, layout: RunLayout, number: int = 1) -> TrialOutcome:
    train_dir = layout.trial_dir("phase3", number) / "train"
    train_dir.mkdir(parents=True)
    checkpoint = train_dir / "model_epoch_002_step_00020.pth"
    checkpoint.write_bytes(b"phase3")
    spec_path = train_dir / "spec.yaml"
    spec = set_key(baseline_spec(), "train.optim.lr", 9e-5)
    spec_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return TrialOutcome(
        number, {"train.optim.lr": 9e-5}, "complete", 2.0, 100.0, 0.5, 0.2, checkpoint, spec_path, None, 1.0
    )
