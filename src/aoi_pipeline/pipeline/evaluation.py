"""Evaluate one trained iteration on the KPI set: inference with two checkpoints, the contract picks one.

A DEFT iteration (and the baseline) has two candidate checkpoints: the best on validation loss and the
latest. Each is run through inference on the KPI CSV and scored by the metric contract's evaluator; the
contract's selection rule (constraints first, then value, ties to the earlier candidate) picks the winner,
which is what the run state records. When both candidates are the same file (a pre-seeded baseline holds a
single checkpoint) inference runs once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_result import Candidate, MetricResult, evaluate_inference_csv, pick_best
from aoi_pipeline.core.metric_target import render_target
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.state import StageCommit, commit_stage
from aoi_pipeline.errors import AoiPipelineError
from aoi_pipeline.jobs.checkpoints import best_val_checkpoint, latest_checkpoint
from aoi_pipeline.jobs.metric_command import run_evaluator_command
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.job_runner import require_success, set_aside
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_specs import inference_spec

METRIC_RESULT_FILE = "metric_result.json"
CHECKPOINT_KINDS = ("best_val", "latest")


@dataclass(frozen=True)
class EvaluatedCheckpoint:
    """One candidate checkpoint scored on the KPI set."""

    kind: str
    checkpoint: Path
    inference_csv: Path
    metric_json: Path
    result: MetricResult


@dataclass(frozen=True)
class Evaluation:
    """The winner and every candidate of one iteration."""

    label: str
    winner: EvaluatedCheckpoint
    candidates: tuple[EvaluatedCheckpoint, ...]
    duration_s: float

    def summary(self, contract: MetricContract) -> str:
        result = self.winner.result
        verdict = "met" if result.passed else "not met"
        threshold = "n/a" if result.threshold is None else f"{result.threshold:.6g}"
        return (
            f"Evaluate: {contract.display_name}={result.value:.4g}{contract.unit} ({self.winner.kind}), "
            f"target {render_target(contract)} {verdict}; threshold={threshold}"
        )


def candidate_checkpoints(train_dir: Path) -> list[tuple[str, Path]]:
    """(kind, checkpoint) pairs, without scoring the same file twice."""
    found: list[tuple[str, Path]] = []
    for kind, checkpoint in (
        ("best_val", best_val_checkpoint(train_dir)),
        ("latest", latest_checkpoint(train_dir)),
    ):
        if checkpoint is not None and all(checkpoint.path != path for _, path in found):
            found.append((kind, checkpoint.path))
    if not found:
        raise AoiPipelineError.at(
            str(train_dir),
            "holds no checkpoint to evaluate",
            "train this iteration first (a training job must write model_epoch_*.pth)",
        )
    return found


def evaluate_iteration(ctx: RunContext, label: str, train_spec: Spec) -> Evaluation:
    """Infer every candidate checkpoint on the KPI CSV, score each, and pick the contract's winner."""
    started = time.monotonic()
    layout, contract = ctx.layout, ctx.contract
    scored: list[EvaluatedCheckpoint] = []
    for kind, checkpoint in candidate_checkpoints(layout.train_dir(label)):
        results_dir = layout.inference_dir(label, kind)
        set_aside(results_dir)  # a crash mid-inference left a partial folder; stages are redone fresh
        spec = inference_spec(
            train_spec,
            checkpoint=checkpoint,
            csv_path=ctx.workspace.kpi_csv,
            images_dir=ctx.workspace.images_dir,
            results_dir=results_dir,
        )
        job = ctx.jobs.job(name=f"{label}-inference-{kind}", action="inference", spec=spec, results_dir=results_dir)
        require_success(ctx.runner.run(job))
        inference_csv = results_dir / "inference.csv"
        metric_json = results_dir / METRIC_RESULT_FILE
        result = evaluate_inference_csv(
            contract, inference_csv, output_json=metric_json, iter_label=label, run_command=run_evaluator_command
        )
        scored.append(EvaluatedCheckpoint(kind, checkpoint, inference_csv, metric_json, result))
    best = pick_best(contract, [Candidate(item.kind, item.result) for item in scored])
    winner = next(item for item in scored if best is not None and item.kind == best.label)
    return Evaluation(label, winner, tuple(scored), time.monotonic() - started)


def evaluate_and_commit(ctx: RunContext, label: str) -> Evaluation:
    """Evaluate `label` with the training spec recorded for it and commit the winner as its `evaluate` stage."""
    spec_path = ctx.layout.iteration_spec(label)
    evaluation = evaluate_iteration(ctx, label, load_spec(spec_path))
    commit_evaluation(ctx.layout, evaluation, contract=ctx.contract, training_spec=spec_path)
    return evaluation


def commit_evaluation(
    layout: RunLayout, evaluation: Evaluation, *, contract: MetricContract, training_spec: Path
) -> dict:
    """Record the winner as the iteration's `evaluate` stage."""
    winner = evaluation.winner
    fields: dict[str, Any] = {
        "metric_result": str(winner.metric_json),
        "best_ckpt_path": str(winner.checkpoint),
        "inference_csv": str(winner.inference_csv),
        "training_spec": str(training_spec),
    }
    if winner.result.threshold is not None:
        fields["threshold"] = winner.result.threshold
    commit = StageCommit(
        evaluation.label, "evaluate", "ok", evaluation.summary(contract), evaluation.duration_s, fields
    )
    return commit_stage(layout.root, commit)
