"""The steps of an approved run: first writes, the shared job context, the run state, baseline, Phase 3.

A fake runner writes what jobs write (train: periodic checkpoints and status.json with chosen validation
losses; inference: inference.csv with chosen scores), so checkpoints, losses and FARs are known in advance.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from aoi_pipeline.approval import record_from_preapproval
from aoi_pipeline.config import PipelineConfig, config_from_mapping
from aoi_pipeline.core.files import json_text
from aoi_pipeline.core.metric_target import parse_target, render_target
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.stages import BASELINE, FINAL_AUTOML
from aoi_pipeline.core.state import STATE_FILE, init_state, next_stage, read_state
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import ProgramJobError
from aoi_pipeline.jobs.job import JobResult, TaoJob
from aoi_pipeline.pipeline.context import JobDefaults, RunContext
from aoi_pipeline.pipeline.evaluation import commit_evaluation, evaluate_iteration
from aoi_pipeline.pipeline.handoff import select_best_model
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.phases import phase2_best_checkpoint, phase2_training_csv, register_phase3
from aoi_pipeline.pipeline.run_steps import (
    ensure_run_state,
    finalize_phase2,
    start_run,
    state_config,
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


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    return RunLayout(tmp_path / "ws" / "results" / "run_20250101_000000")


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


# ------------------------------------------------------------------------------------------ state config


def test_the_state_config_names_the_runs_inputs(workspace, layout):
    block = state_config(make_context(workspace, layout))
    assert block["specs_file"] == str(layout.base_spec)
    assert block["training_csv"] == str(workspace.training_csv)
    assert block["validation_csv"] == str(workspace.validation_csv)
    assert block["kpi_test_csv"] == str(workspace.kpi_csv)
    assert block["images_dir"] == str(workspace.images_dir)
    assert block["mining_pool_csv"] == str(workspace.mining_pool_csv)
    assert block["resolved_mining_pool_csv"] == str(layout.root / "inputs" / "mining_pool.resolved.csv")
    assert block["train_container"] == "registry.example/tao:pyt"
    assert (block["num_epochs"], block["batch_size"]) == (3, 6)
    assert block["lights"] == ["SolderLight", "LowAngleLight"]
    assert block["image_ext"] == ".bmp"
    assert block["anomalygen"] == {"container": "registry.example/ag:1", "num_SDG": 7}
    mining = block["mining_filter"]
    assert (mining["top_k_per_target"], mining["metric"], mining["min_similarity"]) == (4, "cosine", 0.8)
    assert mining["history_aware"]["enabled"] is True
    assert json.loads(json.dumps(block)) == block


# ------------------------------------------------------------------------------------------ start_run


def test_start_run_writes_only_the_approval_the_plan_and_the_base_spec(workspace, layout):
    approval = record_from_preapproval("a" * 16, "a" * 16, reviewer="cli --yes")
    base = set_key(baseline_spec(), "train.optim.lr", 2e-5)
    before = _files(workspace.root)
    start_run(layout, approval=approval, plan_markdown="# Plan\n\nnine sections\n", base_spec=base)
    assert _files(layout.root) == {"approval.json", "preflight.md", "specs/baseline_spec.yaml"}
    written = {layout.approval, layout.preflight, layout.base_spec}
    assert _files(workspace.root) - before == {str(path.relative_to(workspace.root)) for path in written}
    stored = json.loads(layout.approval.read_text(encoding="utf-8"))
    assert stored["plan_hash"] == "a" * 16 and stored["decision"] == "approve"
    assert stored["source"] == "pre-approval" and stored["reviewer"] == "cli --yes"
    assert layout.preflight.read_text(encoding="utf-8") == "# Plan\n\nnine sections\n"
    assert load_spec(layout.base_spec) == base


# ------------------------------------------------------------------------------------------ job context


@pytest.mark.parametrize(
    ("gpus", "per_job", "visible", "expected"),
    [
        ("auto", 2, 0, 0),
        ("auto", 2, 4, 2),
        ("auto", 1, 1, 1),
        (0, 1, 4, 0),
        (0, 3, 0, 0),
        (4, 2, 4, 2),
    ],
)
def test_the_gpus_of_each_job(workspace, gpus, per_job, visible, expected):
    config = make_config(workspace, gpus=gpus, gpus_per_job=per_job)
    assert JobDefaults.from_config(config, visible_gpus=visible).gpus == expected


def test_the_job_defaults_carry_the_image_runtime_and_timeout(workspace):
    context = make_context(workspace, RunLayout(workspace.root / "run"), job_timeout_minutes=1.5, runtime="tao")
    assert context.jobs == JobDefaults(image="registry.example/tao:pyt", runtime="tao", gpus=0, timeout_s=90.0)
    assert make_context(workspace, RunLayout(workspace.root / "run")).jobs.timeout_s is None


# ------------------------------------------------------------------------------------------ run state


def test_ensure_run_state_creates_the_state_once_and_keeps_it(workspace, layout):
    ctx = make_context(workspace, layout, deft={"max_iterations": 2}, kpi_target=render_target(CONTRACT))
    ensure_run_state(ctx)
    state = read_state(layout.root)
    assert state["max_iterations"] == 2
    assert state["kpi_target"] == render_target(CONTRACT)
    assert state["config"] == state_config(ctx)
    assert (next_stage(state).label, next_stage(state).stage) == (BASELINE, "train")
    first = (layout.root / STATE_FILE).read_bytes()
    ensure_run_state(make_context(workspace, layout, deft={"max_iterations": 5}))
    assert (layout.root / STATE_FILE).read_bytes() == first


def test_phase2_training_csv_falls_back_to_the_base_csv(workspace, layout):
    ensure_run_state(make_context(workspace, layout))
    assert phase2_training_csv(layout, workspace) == (workspace.training_csv, workspace.images_dir)


def test_phase2_training_csv_is_the_last_iterations_combined_csv(workspace, layout):
    state = init_state(
        layout.root,
        kpi_target=render_target(CONTRACT),
        metric_contract=CONTRACT.to_dict(),
        max_iterations=10,
        config={},
    )
    state["iterations"] = {
        "iter10": {"status": "complete", "combined_training_csv": "/ws/iter10/combined.csv"},
        "iter2": {"status": "complete", "combined_training_csv": "/ws/iter2/combined.csv"},
        "iter11": {"status": "in_progress"},
    }
    (layout.root / STATE_FILE).write_text(json_text(state), encoding="utf-8")
    # Combined CSVs hold workspace-relative image paths.
    assert phase2_training_csv(layout, workspace) == (Path("/ws/iter10/combined.csv"), workspace.root)


# ------------------------------------------------------------------------------------------ baseline, Phase 3


def test_train_baseline_commits_the_best_validation_checkpoint(workspace, layout):
    runner = FakeRunner(val_losses={1: 0.7, 2: 0.3, 3: 0.5}, scores={})
    ctx = make_context(workspace, layout, runner, kpi_target=render_target(CONTRACT))
    ensure_run_state(ctx)
    checkpoint = train_baseline(ctx, baseline_spec())
    assert checkpoint == layout.train_dir(BASELINE) / "model_epoch_002_step_00020.pth"
    (job,) = runner.jobs
    assert job.action == "train" and job.results_dir == layout.train_dir(BASELINE)
    assert get_key(dict(job.spec), "train.num_epochs") == 3
    assert get_key(dict(job.spec), "dataset.classify.batch_size") == 6
    assert load_spec(layout.iteration_spec(BASELINE)) == dict(job.spec)
    state = read_state(layout.root)
    entry = state["iterations"][BASELINE]
    assert entry["best_ckpt_path"] == str(checkpoint) and entry["best_ckpt_kind"] == "best_val"
    assert entry["val_loss"] == 0.3
    assert (next_stage(state).label, next_stage(state).stage) == (BASELINE, "evaluate")


def _phase2_done(workspace: Workspace, layout: RunLayout, baseline_scores: Sequence[float]) -> RunContext:
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


def test_finalize_phase2_hands_off_the_baseline_and_phase3_warm_starts_from_it(workspace, layout):
    _phase2_done(workspace, layout, FAR_50)
    state = read_state(layout.root)
    assert state["status"] == "complete" and state["stop_reason"] == "max_iterations"
    label, checkpoint, spec_path = phase2_best_checkpoint(layout)
    assert label == BASELINE
    assert checkpoint == layout.train_dir(BASELINE) / "model_epoch_001_step_00010.pth"
    assert spec_path == layout.iteration_spec(BASELINE)


@pytest.mark.parametrize(("phase3_scores", "deliverable"), [(FAR_0, FINAL_AUTOML), (FAR_50, BASELINE)])
def test_register_phase3_lets_the_contract_weigh_it_against_phase2(
    tmp_path, workspace, layout, phase3_scores, deliverable
):
    ctx = _phase2_done(workspace, layout, FAR_25)
    ctx.runner.scores["final_automl-inference-latest"] = phase3_scores
    winner = phase3_winner(tmp_path, layout)
    register_phase3(ctx, winner)
    state = read_state(layout.root)
    entry = state["iterations"][FINAL_AUTOML]
    copied = layout.train_dir(FINAL_AUTOML) / winner.checkpoint.name
    assert copied.read_bytes() == b"phase3" and entry["best_ckpt_path"] == str(copied)
    assert entry["status"] == "complete" and entry["val_loss"] == 0.2
    assert state["status"] == "complete"
    assert select_best_model(layout).iteration == deliverable


def test_register_phase3_refuses_a_winner_without_a_checkpoint(tmp_path, workspace, layout):
    ctx = _phase2_done(workspace, layout, FAR_25)
    winner = phase3_winner(tmp_path, layout)
    winner = TrialOutcome(**{**winner.__dict__, "checkpoint": None})
    with pytest.raises(ProgramJobError):
        register_phase3(ctx, winner)
    assert FINAL_AUTOML not in read_state(layout.root)["iterations"]


def test_a_rerun_of_a_finished_phase3_registration_resumes_instead_of_failing(tmp_path, workspace, layout):
    ctx = _phase2_done(workspace, layout, FAR_25)
    ctx.runner.scores["final_automl-inference-latest"] = FAR_0
    winner = phase3_winner(tmp_path, layout)
    register_phase3(ctx, winner)
    register_phase3(ctx, winner)
    state = read_state(layout.root)
    assert [event["stage"] for event in state["events"] if event["iter"] == FINAL_AUTOML] == ["train", "evaluate"]
    assert select_best_model(layout).iteration == FINAL_AUTOML
