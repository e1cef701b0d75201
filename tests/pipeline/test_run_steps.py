"""The steps of an approved run: first writes, the state config, the run state, the baseline and the Phase 2
handoff (fakes and builders in run_support)."""

from __future__ import annotations

import json

from run_support import (
    CONTRACT,
    FAR_50,
    FakeRunner,
    files_below,
    make_context,
    phase2_done,
)

from aoi_pipeline.approval import record_from_preapproval
from aoi_pipeline.core.metric_target import render_target
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.stages import BASELINE
from aoi_pipeline.core.state import STATE_FILE, next_stage, read_state
from aoi_pipeline.pipeline.phases import phase2_best_checkpoint
from aoi_pipeline.pipeline.run_steps import (
    ensure_run_state,
    start_run,
    state_config,
    train_baseline,
)


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


def test_the_state_config_records_the_mining_rules(workspace, layout):
    deft = {"kpi_split": "whole_set", "mining_rank": "per_target", "mining_max_per_board": 2}
    mining = state_config(make_context(workspace, layout, deft={**deft, "mining_explore_share": 0.1}))["mining_filter"]
    assert (mining["rank"], mining["label_balance"], mining["max_per_board"], mining["explore_share"]) == (
        "per_target",
        "pool",
        2,
        0.1,
    )


def test_start_run_writes_only_the_approval_the_plan_and_the_base_spec(workspace, layout):
    approval = record_from_preapproval("a" * 16, "a" * 16, reviewer="cli --yes")
    base = set_key(baseline_spec(), "train.optim.lr", 2e-5)
    before = files_below(workspace.root)
    start_run(layout, approval=approval, plan_markdown="# Plan\n\nnine sections\n", base_spec=base)
    assert files_below(layout.root) == {"approval.json", "preflight.md", "specs/baseline_spec.yaml"}
    written = {layout.approval, layout.preflight, layout.base_spec}
    assert files_below(workspace.root) - before == {str(path.relative_to(workspace.root)) for path in written}
    stored = json.loads(layout.approval.read_text(encoding="utf-8"))
    assert stored["plan_hash"] == "a" * 16 and stored["decision"] == "approve"
    assert stored["source"] == "pre-approval" and stored["reviewer"] == "cli --yes"
    assert layout.preflight.read_text(encoding="utf-8") == "# Plan\n\nnine sections\n"
    assert load_spec(layout.base_spec) == base


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


def test_finalize_phase2_hands_off_the_baseline_and_phase3_warm_starts_from_it(workspace, layout):
    phase2_done(workspace, layout, FAR_50)
    state = read_state(layout.root)
    assert state["status"] == "complete" and state["stop_reason"] == "max_iterations"
    label, checkpoint, spec_path = phase2_best_checkpoint(layout)
    assert label == BASELINE
    assert checkpoint == layout.train_dir(BASELINE) / "model_epoch_001_step_00010.pth"
    assert spec_path == layout.iteration_spec(BASELINE)


def test_a_resume_stops_a_live_leftover_job_at_any_depth_of_the_run_directory(layout, tmp_path):
    """The mining stage redoes its work in a fresh folder, so only a sweep of the whole run finds its old job."""
    import json
    import subprocess
    import sys

    from aoi_pipeline.jobs.process_group import group_alive
    from aoi_pipeline.pipeline.run_steps import stop_leftover_run_jobs

    job_dir = layout.root / "iter1" / "mining_results" / "2026-01-01_000000" / "target_embeddings"
    job_dir.mkdir(parents=True)
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], cwd=job_dir, start_new_session=True
    )
    try:
        (job_dir / "job.json").write_text(json.dumps({"state": "running", "external_id": f"pid:{process.pid}"}))
        finished = layout.root / "baseline" / "train"
        finished.mkdir(parents=True)
        (finished / "job.json").write_text(json.dumps({"state": "success", "external_id": "pid:1"}))

        assert stop_leftover_run_jobs(layout) == ["target_embeddings"]
        process.wait(timeout=10)
        assert not group_alive(process.pid)
    finally:
        process.kill()
        process.wait()
