"""The steps of one approved run that are not a sweep or an evaluation: start, baseline, finish, Phase 3.

`start_run` is the first write of a run, and happens only after approval: the run directory, the approval
record, the plan that was approved and the base spec. `train_baseline` trains the baseline when Phase 1 is
off. `finalize_phase2` writes the deployment handoff and closes the DEFT state with `loop_stop`.
`register_phase3` copies Phase 3's winner into `final_automl/`, records it as a candidate and evaluates it on
the KPI set, so best-model selection weighs it against Phase 2's best under the same contract.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from aoi_pipeline.approval import ApprovalRecord
from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.files import atomic_write_json, atomic_write_text
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_target import render_target
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.yaml_io import dump_spec, load_spec
from aoi_pipeline.core.stages import BASELINE, FINAL_AUTOML
from aoi_pipeline.core.state import STATE_FILE, StageCommit, commit_stage, init_state, read_state
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import ProgramJobError
from aoi_pipeline.jobs.checkpoints import best_val_checkpoint, latest_checkpoint
from aoi_pipeline.jobs.gpu import GpuSlots
from aoi_pipeline.pipeline.evaluation import JobContext, evaluate_and_commit
from aoi_pipeline.pipeline.handoff import BestModel, write_deployment_handoff
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_specs import training_spec
from aoi_pipeline.pipeline.running import JobRunner, require_success, set_aside
from aoi_pipeline.pipeline.trials import TrialOutcome, min_val_loss


def state_config(config: PipelineConfig, workspace: Workspace, layout: RunLayout) -> dict[str, Any]:
    """The `config` block of deft_state.json (deft-spec §5.2), with the run's own paths."""
    return {
        "specs_file": str(layout.base_spec),
        "training_csv": str(workspace.training_csv),
        "validation_csv": str(workspace.validation_csv),
        "kpi_test_csv": str(workspace.kpi_csv),
        "images_dir": str(workspace.images_dir),
        "mining_pool_csv": str(workspace.mining_pool_csv),
        "resolved_mining_pool_csv": str(layout.root / "inputs" / "mining_pool.resolved.csv"),
        "train_container": config.images.train,
        "num_epochs": config.deft.num_epochs,
        "batch_size": config.phase1.batch_size,
        "lights": list(config.dataset.lights),
        "image_ext": config.dataset.image_ext,
        "anomalygen": {"container": config.images.sdg, "num_SDG": config.deft.num_sdg},
        "mining_filter": {
            "top_k_per_target": config.deft.top_k_per_target,
            "metric": "cosine",
            "min_similarity": config.deft.min_similarity,
            "history_aware": {"enabled": True, "identity": "filepath"},
        },
    }


def start_run(layout: RunLayout, *, approval: ApprovalRecord, plan_markdown: str, base_spec: Spec) -> None:
    """The run's first writes, after approval: directory, approval record, approved plan, base spec."""
    layout.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(layout.approval, approval.model_dump(mode="json"))
    atomic_write_text(layout.preflight, plan_markdown)
    dump_spec(base_spec, layout.base_spec)


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


def train_baseline(
    *, layout: RunLayout, base_spec: Spec, config: PipelineConfig, jobs: JobContext, runner: JobRunner
) -> Path:
    """Train the baseline from the base spec (Phase 1 off) and commit `baseline/train`."""
    started = time.monotonic()
    train_dir = layout.train_dir(BASELINE)
    set_aside(train_dir)
    spec = training_spec(
        base_spec,
        results_dir=train_dir,
        num_epochs=config.deft.num_epochs,
        batch_size=config.phase1.batch_size,
    )
    dump_spec(spec, layout.iteration_spec(BASELINE))
    require_success(runner.run(jobs.job(name="baseline-train", action="train", spec=spec, results_dir=train_dir)))
    fields = trained_checkpoint_fields(train_dir, layout.iteration_spec(BASELINE))
    checkpoint = Path(fields["best_ckpt_path"])
    summary = f"baseline trained {config.deft.num_epochs} epochs; checkpoint {checkpoint.name}"
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
    reason = "the metric contract was met" if stop_reason == "metric_met" else "the iteration limit was reached"
    summary = f"loop stopped: {reason}; best is {best.iteration}"
    commit_stage(layout.root, StageCommit(label, "loop_stop", "ok", summary, time.monotonic() - started, fields))
    return best


def phase2_best_checkpoint(layout: RunLayout) -> tuple[str, Path, Path]:
    """(label, checkpoint, training spec) of Phase 2's handed-off best, Phase 3's warm start."""
    state = read_state(layout.root)
    artifacts = state.get("final_artifacts") or {}
    best_json = artifacts.get("best_model_json") or str(layout.best_model)
    best = json.loads(Path(best_json).read_text(encoding="utf-8"))
    return best["iteration"], Path(best["checkpoint"]), Path(best["training_spec"])


def register_phase3(
    *,
    layout: RunLayout,
    winner: TrialOutcome,
    contract: MetricContract,
    kpi_csv: Path,
    images_dir: Path,
    jobs: JobContext,
    runner: JobRunner,
) -> None:
    """Record Phase 3's winner as `final_automl` (train + KPI evaluate) so the handoff weighs it."""
    if winner.checkpoint is None or winner.train_spec_path is None:
        raise ProgramJobError.at(
            f"phase3 trial {winner.number}", "has no checkpoint or training spec", "re-run Phase 3"
        )
    registered = read_state(layout.root)["iterations"].get(FINAL_AUTOML, {}).get("stage_completed")
    if registered == "evaluate":
        return  # a rerun after a crash between this step and the phase record
    started = time.monotonic()
    train_dir = layout.train_dir(FINAL_AUTOML)
    train_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = train_dir / winner.checkpoint.name
    shutil.copy2(winner.checkpoint, checkpoint)
    spec = load_spec(winner.train_spec_path)
    dump_spec(spec, layout.iteration_spec(FINAL_AUTOML))
    fields: dict[str, Any] = {
        "best_ckpt_path": str(checkpoint),
        "training_spec": str(layout.iteration_spec(FINAL_AUTOML)),
    }
    if winner.val_loss is not None:
        fields["val_loss"] = winner.val_loss
    summary = f"Phase 3 winner: trial {winner.number} (validation FAR {winner.far_pct:.4g}%)"
    if registered != "train":
        commit = StageCommit(FINAL_AUTOML, "train", "ok", summary, time.monotonic() - started, fields)
        commit_stage(layout.root, commit)
    evaluate_and_commit(
        layout=layout,
        label=FINAL_AUTOML,
        contract=contract,
        kpi_csv=kpi_csv,
        images_dir=images_dir,
        jobs=jobs,
        runner=runner,
    )


def ensure_run_state(
    layout: RunLayout, *, config: PipelineConfig, contract: MetricContract, workspace: Workspace
) -> None:
    """Start deft_state.json when no Phase 1 handoff did (Phase 1 off); a resumed run keeps its own."""
    if (layout.root / STATE_FILE).exists():
        return
    init_state(
        layout.root,
        kpi_target=render_target(contract),
        metric_contract=contract.to_dict(),
        max_iterations=config.deft.max_iterations,
        config=state_config(config, workspace, layout),
    )


def phase2_training_csv(layout: RunLayout, workspace: Workspace) -> tuple[Path, Path]:
    """(CSV, its images root) Phase 2 ended with: the last combined CSV, else the base training CSV."""
    state = read_state(layout.root)
    combined = [
        (int(label[4:]), entry["combined_training_csv"])
        for label, entry in state["iterations"].items()
        if label.startswith("iter") and entry.get("combined_training_csv")
    ]
    if combined:
        # Combined CSVs are workspace-relative (deft-spec §2.1).
        return Path(max(combined)[1]), workspace.root
    return workspace.training_csv, workspace.images_dir


def job_context(config: PipelineConfig, *, visible_gpus: int | None = None) -> JobContext:
    """What every job of the run shares; `gpus: auto` means one job's share when GPUs are visible, else CPU."""
    if visible_gpus is None:
        visible_gpus = GpuSlots.detect().capacity
    if config.gpus == "auto":
        gpus = config.gpus_per_job if visible_gpus else 0
    else:
        gpus = 0 if config.gpus == 0 else config.gpus_per_job
    minutes = config.job_timeout_minutes
    return JobContext(
        image=config.images.train,
        runtime=config.runtime,
        gpus=gpus,
        timeout_s=None if minutes is None else minutes * 60,
    )
