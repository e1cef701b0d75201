"""Phase bookkeeping: the training CSV Phase 3 sweeps on, and Phase 3's registration against Phase 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_support import (
    CONTRACT,
    FAR_0,
    FAR_25,
    FAR_50,
    make_context,
    phase2_done,
    phase3_winner,
)

from aoi_pipeline.core.files import json_text
from aoi_pipeline.core.metric_target import render_target
from aoi_pipeline.core.stages import BASELINE, FINAL_AUTOML
from aoi_pipeline.core.state import STATE_FILE, init_state, read_state
from aoi_pipeline.errors import ProgramJobError
from aoi_pipeline.pipeline.handoff import select_best_model
from aoi_pipeline.pipeline.phases import phase2_training_csv, register_phase3
from aoi_pipeline.pipeline.run_steps import (
    ensure_run_state,
)
from aoi_pipeline.pipeline.trials import TrialOutcome


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


@pytest.mark.parametrize(("phase3_scores", "deliverable"), [(FAR_0, FINAL_AUTOML), (FAR_50, BASELINE)])
def test_register_phase3_lets_the_contract_weigh_it_against_phase2(
    tmp_path, workspace, layout, phase3_scores, deliverable
):
    ctx = phase2_done(workspace, layout, FAR_25)
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
    ctx = phase2_done(workspace, layout, FAR_25)
    winner = phase3_winner(tmp_path, layout)
    winner = TrialOutcome(**{**winner.__dict__, "checkpoint": None})
    with pytest.raises(ProgramJobError):
        register_phase3(ctx, winner)
    assert FINAL_AUTOML not in read_state(layout.root)["iterations"]


def test_a_rerun_of_a_finished_phase3_registration_resumes_instead_of_failing(tmp_path, workspace, layout):
    ctx = phase2_done(workspace, layout, FAR_25)
    ctx.runner.scores["final_automl-inference-latest"] = FAR_0
    winner = phase3_winner(tmp_path, layout)
    register_phase3(ctx, winner)
    register_phase3(ctx, winner)
    state = read_state(layout.root)
    assert [event["stage"] for event in state["events"] if event["iter"] == FINAL_AUTOML] == ["train", "evaluate"]
    assert select_best_model(layout).iteration == FINAL_AUTOML
