"""Evaluate one trained iteration on the KPI set: inference with two checkpoints, the contract picks one.

Every figure is taken on the KPI set's confirm part (`pipeline.kpi_parts`): the contract's result, the gate
and the winner; the steer part, which RCA and mining look at, is scored beside it and recorded as such.

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

from aoi_pipeline.core.kpi_split import WHOLE_SET_SOURCE, KpiSplit
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
from aoi_pipeline.pipeline.kpi_parts import kpi_eval_csv, run_kpi_split, write_parts
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_specs import inference_spec

METRIC_RESULT_FILE = "metric_result.json"
STEER_METRIC_RESULT_FILE = "metric_result_steer.json"
CHECKPOINT_KINDS = ("best_val", "latest")


@dataclass(frozen=True)
class EvaluatedCheckpoint:
    """One candidate checkpoint scored on the KPI set's confirm part (its steer part beside it)."""

    kind: str
    checkpoint: Path
    inference_csv: Path
    metric_json: Path
    result: MetricResult
    steer_csv: Path | None = None
    steer_json: Path | None = None
    steer_result: MetricResult | None = None


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
    """Infer every candidate checkpoint on the KPI set, score its confirm part (the contract's value) and its
    steer part (shown, labelled as such), and pick the contract's winner on the confirm part."""
    layout = ctx.layout
    return evaluate_checkpoints(
        ctx, label, train_spec, train_dir=layout.train_dir(label), inference_root=layout.iteration_dir(label)
    )


def evaluate_checkpoints(
    ctx: RunContext, label: str, train_spec: Spec, *, train_dir: Path, inference_root: Path, name: str | None = None
) -> Evaluation:
    """`evaluate_iteration` for any training folder (a control arm's, a seed retraining's): inference into
    `inference_root/inference/<kind>/`, jobs named after `name` (default `label`)."""
    started = time.monotonic()
    contract = ctx.contract
    split = run_kpi_split(ctx)
    eval_csv = kpi_eval_csv(ctx, split)
    scored: list[EvaluatedCheckpoint] = []
    for kind, checkpoint in candidate_checkpoints(train_dir):
        results_dir = inference_root / "inference" / kind
        set_aside(results_dir)  # a crash mid-inference left a partial folder; stages are redone fresh
        spec = inference_spec(
            train_spec,
            checkpoint=checkpoint,
            csv_path=eval_csv,
            images_dir=ctx.workspace.images_dir,
            results_dir=results_dir,
        )
        job_name = f"{name or label}-inference-{kind}"
        job = ctx.jobs.job(name=job_name, action="inference", spec=spec, results_dir=results_dir)
        require_success(ctx.runner.run(job))
        scored.append(score_parts(ctx, label, kind, checkpoint, results_dir / "inference.csv", split))
    best = pick_best(contract, [Candidate(item.kind, item.result) for item in scored])
    winner = next(item for item in scored if best is not None and item.kind == best.label)
    return Evaluation(label, winner, tuple(scored), time.monotonic() - started)


def score_parts(
    ctx: RunContext, label: str, kind: str, checkpoint: Path, inference_csv: Path, split: KpiSplit
) -> EvaluatedCheckpoint:
    """Score one inference CSV: the contract on its confirm rows; the builtin metric on its steer rows too."""
    contract = ctx.contract
    whole = split.source == WHOLE_SET_SOURCE
    steer_csv, confirm_csv = (inference_csv, inference_csv) if whole else write_parts(inference_csv, split)
    metric_json = inference_csv.parent / METRIC_RESULT_FILE
    result = evaluate_inference_csv(
        contract, confirm_csv, output_json=metric_json, iter_label=label, run_command=run_evaluator_command
    )
    if contract.evaluator.type != "builtin" or whole:
        return EvaluatedCheckpoint(kind, checkpoint, confirm_csv, metric_json, result)
    steer_json = inference_csv.parent / STEER_METRIC_RESULT_FILE
    steer = evaluate_inference_csv(contract, steer_csv, output_json=steer_json, iter_label=label)
    return EvaluatedCheckpoint(kind, checkpoint, confirm_csv, metric_json, result, steer_csv, steer_json, steer)


def evaluate_and_commit(ctx: RunContext, label: str) -> Evaluation:
    """Evaluate `label` with the training spec recorded for it and commit the winner as its `evaluate` stage."""
    spec_path = ctx.layout.iteration_spec(label)
    evaluation = evaluate_iteration(ctx, label, load_spec(spec_path))
    extra: dict[str, Any] = {}
    if ctx.deft.control == "random" and label.startswith("iter"):
        from aoi_pipeline.pipeline.control_arm import run_control_arm  # it scores with this module

        extra["control_metric_result"] = str(run_control_arm(ctx, label))
    commit_evaluation(ctx.layout, evaluation, contract=ctx.contract, training_spec=spec_path, extra_fields=extra)
    return evaluation


def commit_evaluation(
    layout: RunLayout,
    evaluation: Evaluation,
    *,
    contract: MetricContract,
    training_spec: Path,
    extra_fields: dict[str, Any] | None = None,
) -> dict:
    """Record the winner as the iteration's `evaluate` stage (with the control arm's result when there is one)."""
    winner = evaluation.winner
    fields: dict[str, Any] = {
        **(extra_fields or {}),
        "metric_result": str(winner.metric_json),
        "best_ckpt_path": str(winner.checkpoint),
        "inference_csv": str(winner.inference_csv),
        "training_spec": str(training_spec),
    }
    if winner.result.threshold is not None:
        fields["threshold"] = winner.result.threshold
    if winner.steer_csv is not None and winner.steer_json is not None:
        fields["steer_inference_csv"] = str(winner.steer_csv)
        fields["steer_metric_result"] = str(winner.steer_json)
    commit = StageCommit(
        evaluation.label, "evaluate", "ok", evaluation.summary(contract), evaluation.duration_s, fields
    )
    return commit_stage(layout.root, commit)
