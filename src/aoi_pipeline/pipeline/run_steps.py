"""The steps of one approved run that are not a sweep, an evaluation or a DEFT stage.

`start_run` is the first write of a run, and happens only after approval: the run directory, the approval
record, the plan that was approved and the base spec. `ensure_run_state` starts deft_state.json when no
Phase 1 handoff did. `stop_leftover_run_jobs` stops, on a resume, every local job a killed run left running
anywhere in the run directory, before any stage runs again. `train_baseline` trains the baseline when Phase 1
is off. `finalize_phase2` writes the deployment handoff and closes the DEFT state with `loop_stop`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aoi_pipeline.approval import ApprovalRecord
from aoi_pipeline.core.files import atomic_write_json, atomic_write_text
from aoi_pipeline.core.metric_target import render_target
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.yaml_io import dump_spec
from aoi_pipeline.core.stages import BASELINE
from aoi_pipeline.core.state import STATE_FILE, StageCommit, commit_stage, init_state
from aoi_pipeline.errors import ProgramJobError
from aoi_pipeline.jobs.checkpoints import best_val_checkpoint, latest_checkpoint
from aoi_pipeline.jobs.process_group import stop_leftover_jobs
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.handoff import BestModel, write_deployment_handoff
from aoi_pipeline.pipeline.job_runner import require_success, set_aside
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_specs import training_spec
from aoi_pipeline.pipeline.trials import min_val_loss


def state_config(ctx: RunContext) -> dict[str, Any]:
    """The `config` block of deft_state.json (deft-spec §5.2), with the run's own paths."""
    workspace, layout = ctx.workspace, ctx.layout
    return {
        "specs_file": str(layout.base_spec),
        "training_csv": str(workspace.training_csv),
        "validation_csv": str(workspace.validation_csv),
        "kpi_test_csv": str(workspace.kpi_csv),
        "images_dir": str(workspace.images_dir),
        "mining_pool_csv": str(workspace.mining_pool_csv),
        "resolved_mining_pool_csv": str(layout.root / "inputs" / "mining_pool.resolved.csv"),
        "train_container": ctx.images.train,
        "num_epochs": ctx.deft.num_epochs,
        "batch_size": ctx.train_batch_size,
        "lights": list(ctx.dataset.lights),
        "image_ext": ctx.dataset.image_ext,
        "anomalygen": {"container": ctx.images.sdg, "num_SDG": ctx.deft.num_sdg},
        "mining_filter": {
            "top_k_per_target": ctx.deft.top_k_per_target,
            "metric": "cosine",
            "min_similarity": ctx.deft.min_similarity,
            "history_aware": {"enabled": True, "identity": "filepath"},
            "rank": ctx.deft.mining_rank,
            "label_balance": ctx.deft.mining_label_balance,
            "max_per_board": ctx.deft.mining_max_per_board,
            "explore_share": ctx.deft.mining_explore_share,
        },
    }


def start_run(layout: RunLayout, *, approval: ApprovalRecord, plan_markdown: str, base_spec: Spec) -> None:
    """The run's first writes, after approval: directory, approval record, approved plan, base spec."""
    layout.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(layout.approval, approval.model_dump(mode="json"))
    atomic_write_text(layout.preflight, plan_markdown)
    dump_spec(base_spec, layout.base_spec)


def stop_leftover_run_jobs(layout: RunLayout) -> list[str]:
    """Stop every local job recorded as pending/running whose process group still works in its folder, at
    any depth of the run directory; returns their folder names.

    The jobs' watchdogs end them soon after a killed run, but a resume must not rely on that: a stage that
    starts a fresh folder (mining) would otherwise run beside its predecessor's job.
    """
    return stop_leftover_jobs(layout.root, max_depth=None)


def trained_checkpoint_fields(train_dir: Path, training_spec_path: Path) -> dict[str, Any]:
    """The `train` commit fields of a finished training job: its best-validation (else latest) checkpoint,
    which kind that is, the spec it was trained with and its lowest validation loss.

    A job that succeeded without writing a checkpoint is a program failure (a zero-step "success").
    """
    best = best_val_checkpoint(train_dir) or latest_checkpoint(train_dir)
    if best is None:
        raise ProgramJobError.at(str(train_dir), "training reported success but wrote no checkpoint", "read job.log")
    fields: dict[str, Any] = {
        "best_ckpt_path": str(best.path),
        "best_ckpt_kind": "latest" if best.kind == "latest" else "best_val",
        "training_spec": str(training_spec_path),
    }
    val_loss = min_val_loss(train_dir)
    if val_loss is not None:
        fields["val_loss"] = val_loss
    return fields


def train_baseline(ctx: RunContext, base_spec: Spec) -> Path:
    """Train the baseline from the base spec (Phase 1 off) and commit `baseline/train`."""
    started = time.monotonic()
    layout = ctx.layout
    train_dir = layout.train_dir(BASELINE)
    set_aside(train_dir)
    spec = training_spec(
        base_spec,
        results_dir=train_dir,
        num_epochs=ctx.deft.num_epochs,
        batch_size=ctx.train_batch_size,
    )
    dump_spec(spec, layout.iteration_spec(BASELINE))
    job = ctx.jobs.job(name="baseline-train", action="train", spec=spec, results_dir=train_dir)
    require_success(ctx.runner.run(job))
    fields = trained_checkpoint_fields(train_dir, layout.iteration_spec(BASELINE))
    checkpoint = Path(fields["best_ckpt_path"])
    summary = f"baseline trained {ctx.deft.num_epochs} epochs; checkpoint {checkpoint.name}"
    commit_stage(layout.root, StageCommit(BASELINE, "train", "ok", summary, time.monotonic() - started, fields))
    return checkpoint


def finalize_phase2(layout: RunLayout, *, label: str, stop_reason: str) -> BestModel:
    """Write the deployment handoff for Phase 2's best and commit `loop_stop`."""
    started = time.monotonic()
    best = write_deployment_handoff(layout)
    fields = {
        "stop_reason": stop_reason,
        "best_model_json": str(layout.best_model),
        "inference_spec": str(layout.best_model_inference_spec),
    }
    reason = {
        "metric_met": "the metric contract was met",
        "pool_budget": "the next iteration would pass the pool budget",
    }.get(stop_reason, "the iteration limit was reached")
    summary = f"loop stopped: {reason}; best is {best.iteration}"
    commit_stage(layout.root, StageCommit(label, "loop_stop", "ok", summary, time.monotonic() - started, fields))
    return best


def ensure_run_state(ctx: RunContext) -> None:
    """Start deft_state.json when no Phase 1 handoff did (Phase 1 off); a resumed run keeps its own."""
    if (ctx.layout.root / STATE_FILE).exists():
        return
    init_state(
        ctx.layout.root,
        kpi_target=render_target(ctx.contract),
        metric_contract=ctx.contract.to_dict(),
        max_iterations=ctx.deft.max_iterations,
        config=state_config(ctx),
    )
