"""The handoffs: Phase 1 -> Phase 2 (merged spec, copied checkpoint, pre-seeded state) and deployment.

Runs are built through the state's own commits: the Phase 1 handoff pre-seeds the baseline, the baseline's
evaluation result is written by hand with a chosen FAR, Phase 2 is closed with `finalize_phase2`, and Phase 3
registers `final_automl` with another chosen FAR, so the expected deliverable follows from the numbers.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.core.metric_target import parse_target
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.derive import ARCHITECTURE_KEYS
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.core.spec.yaml_io import dump_spec, load_spec
from aoi_pipeline.core.stages import BASELINE, FINAL_AUTOML
from aoi_pipeline.core.state import StageCommit, commit_stage, next_stage, read_state
from aoi_pipeline.errors import SpecError, StateError
from aoi_pipeline.pipeline.handoff import (
    DeploymentPaths,
    deployment_inference_spec,
    handoff_phase1_to_phase2,
    merged_spec,
    select_best_model,
    trajectory_lines,
    write_deployment_handoff,
    write_trajectory,
)
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_specs import training_spec
from aoi_pipeline.pipeline.run_steps import finalize_phase2
from aoi_pipeline.pipeline.trials import TrialOutcome

CONTRACT = parse_target("FAR < 10% at Recall=100%")
PARAMS = {
    "train.optim.lr": 3e-5,
    "train.optim.momentum": 0.95,
    "model.classify.learnable_difference_modules": 2,
}
IMAGES_DIR = "/data/ws/images"
PATHS = DeploymentPaths(
    checkpoint="/run/iter1/train/best.pth",
    csv_path="/ws/kpi/testing_set.csv",
    images_dir="/ws/images",
    results_dir="/run/deployment_inference",
)


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        found: dict[str, Any] = {}
        for key, child in node.items():
            found.update(_leaves(child, f"{prefix}.{key}" if prefix else str(key)))
        return found
    return {prefix: node}


def _changed_keys(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    old, new = _leaves(before), _leaves(after)
    return {key for key in old.keys() | new.keys() if old.get(key, KeyError) != new.get(key, KeyError)}


def phase1_winner(tmp_path: Path, layout: RunLayout, *, far_pct: float = 4.0, number: int = 2) -> TrialOutcome:
    """A finished Phase 1 trial: its checkpoint and the spec it was trained with."""
    train_dir = layout.trial_dir("phase1", number) / "train"
    train_dir.mkdir(parents=True)
    checkpoint = train_dir / "model_epoch_002_step_00020.pth"
    checkpoint.write_bytes(b"phase1 weights")
    spec = training_spec(baseline_spec(), results_dir=train_dir, num_epochs=2, batch_size=4, params=PARAMS)
    spec_path = train_dir / "spec.yaml"
    dump_spec(spec, spec_path)
    return TrialOutcome(
        number=number,
        params=dict(PARAMS),
        state="complete",
        far_pct=far_pct,
        recall_pct=100.0,
        threshold=0.4,
        val_loss=0.3,
        checkpoint=checkpoint,
        train_spec_path=spec_path,
        inference_csv=None,
        duration_s=3.0,
    )


def handoff(layout: RunLayout, base: dict[str, Any], winner: TrialOutcome, max_iterations: int = 0) -> Path:
    return handoff_phase1_to_phase2(
        layout=layout,
        base_spec=base,
        winner=winner,
        contract=CONTRACT,
        max_iterations=max_iterations,
        state_config={"specs_file": str(layout.base_spec), "images_dir": IMAGES_DIR},
    )


def metric_result(value: float, threshold: float, *, strict: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": "far_pct",
        "value": value,
        "unit": "%",
        "threshold": threshold,
        "constraints": {"recall_pct": 100.0},
    }
    if strict:
        result["diagnostics"] = {"strict_threshold": math.nextafter(threshold, -math.inf)}
    return result


def commit_evaluate(layout: RunLayout, label: str, checkpoint: Path, result: dict[str, Any]) -> None:
    out = layout.inference_dir(label, "latest")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metric_result.json").write_text(json.dumps(result), encoding="utf-8")
    (out / "inference.csv").write_text("label,siamese_score\nPASS,0.1\nopen,0.9\n", encoding="utf-8")
    fields = {
        "metric_result": str(out / "metric_result.json"),
        "best_ckpt_path": str(checkpoint),
        "inference_csv": str(out / "inference.csv"),
        "training_spec": str(layout.iteration_spec(label)),
        "threshold": result["threshold"],
    }
    commit_stage(layout.root, StageCommit(label, "evaluate", "ok", f"evaluated {label}", 1.0, fields))


def register_final_automl(layout: RunLayout, result: dict[str, Any], spec: dict[str, Any]) -> Path:
    train_dir = layout.train_dir(FINAL_AUTOML)
    train_dir.mkdir(parents=True)
    checkpoint = train_dir / "model_epoch_001_step_00010.pth"
    checkpoint.write_bytes(b"phase3 weights")
    dump_spec(spec, layout.iteration_spec(FINAL_AUTOML))
    fields = {"best_ckpt_path": str(checkpoint), "training_spec": str(layout.iteration_spec(FINAL_AUTOML))}
    commit_stage(layout.root, StageCommit(FINAL_AUTOML, "train", "ok", "phase 3 winner", 1.0, fields))
    commit_evaluate(layout, FINAL_AUTOML, checkpoint, result)
    return checkpoint


def finished_phase2(tmp_path: Path, baseline_far: float) -> tuple[RunLayout, Path]:
    """A run whose Phase 2 ended at the baseline (no iterations) with the given KPI FAR."""
    layout = RunLayout(tmp_path / "run")
    checkpoint = handoff(layout, baseline_spec(), phase1_winner(tmp_path, layout))
    commit_evaluate(layout, BASELINE, checkpoint, metric_result(baseline_far, 0.5))
    reason = "metric_met" if baseline_far < CONTRACT.target else "max_iterations"
    finalize_phase2(layout, label=BASELINE, stop_reason=reason)
    return layout, checkpoint


# ------------------------------------------------------------------------------------------ Phase 1 -> 2


def test_the_merged_spec_changes_only_the_tuned_keys():
    base = baseline_spec()
    params = {**PARAMS, "train.classify.cls_weight[1]": 25.0}
    merged = merged_spec(base, params)
    assert _changed_keys(base, merged) == {*PARAMS, "train.classify.cls_weight"}
    assert get_key(merged, "train.classify.cls_weight") == [1.0, 25.0]
    assert base == baseline_spec()


def test_the_phase1_handoff_copies_the_checkpoint_and_writes_the_merged_spec_in_the_run(tmp_path):
    workspace_spec = tmp_path / "ws" / "specs" / "baseline_spec.yaml"
    dump_spec(set_key(baseline_spec(), "train.optim.lr", 0.0123), workspace_spec)
    before = workspace_spec.read_bytes()
    layout = RunLayout(tmp_path / "ws" / "results" / "run_1")
    winner = phase1_winner(tmp_path, layout)
    base = load_spec(workspace_spec)

    copied = handoff(layout, base, winner)

    assert copied == layout.train_dir(BASELINE) / winner.checkpoint.name
    assert copied.read_bytes() == b"phase1 weights"
    assert winner.checkpoint.read_bytes() == b"phase1 weights"
    assert workspace_spec.read_bytes() == before
    assert layout.merged_spec.is_relative_to(layout.root)
    assert _changed_keys(base, load_spec(layout.merged_spec)) == set(PARAMS)
    # The baseline's spec is the exact one the checkpoint was trained with, not the merge.
    assert load_spec(layout.iteration_spec(BASELINE)) == load_spec(winner.train_spec_path)


def test_the_phase1_handoff_pre_seeds_the_state_so_phase2_starts_at_baseline_evaluate(tmp_path):
    layout = RunLayout(tmp_path / "run")
    winner = phase1_winner(tmp_path, layout, far_pct=4.0)
    copied = handoff(layout, baseline_spec(), winner, max_iterations=2)
    state = read_state(layout.root)
    step = next_stage(state)
    assert (step.label, step.stage) == (BASELINE, "evaluate")
    entry = state["iterations"][BASELINE]
    assert entry["best_ckpt_path"] == str(copied)
    assert entry["source"] == "automl_phase1"
    assert entry["train_metric"] == 4.0
    assert state["max_iterations"] == 2
    assert state["metric_contract"] == CONTRACT.to_dict()
    assert state["config"]["images_dir"] == IMAGES_DIR


@pytest.mark.parametrize("problem", ["no checkpoint", "missing file", "empty file", "no spec"])
def test_a_winner_that_cannot_be_handed_off_is_refused_before_anything_is_written(tmp_path, problem):
    layout = RunLayout(tmp_path / "run")
    winner = phase1_winner(tmp_path, layout)
    assert winner.checkpoint is not None
    if problem == "no checkpoint":
        winner = TrialOutcome(**{**winner.__dict__, "checkpoint": None})
    elif problem == "missing file":
        winner.checkpoint.unlink()
    elif problem == "empty file":
        winner.checkpoint.write_bytes(b"")
    else:
        winner = TrialOutcome(**{**winner.__dict__, "train_spec_path": None})
    with pytest.raises(StateError):
        handoff(layout, baseline_spec(), winner)
    assert sorted(path.name for path in layout.root.iterdir()) == ["phase1"]


def test_a_rerun_of_a_finished_phase1_handoff_resumes_instead_of_failing(tmp_path):
    layout = RunLayout(tmp_path / "run")
    winner = phase1_winner(tmp_path, layout)
    copied = handoff(layout, baseline_spec(), winner)
    assert handoff(layout, baseline_spec(), winner) == copied
    state = read_state(layout.root)
    assert [(event["iter"], event["stage"]) for event in state["events"]] == [(BASELINE, "train")]
    assert (next_stage(state).label, next_stage(state).stage) == (BASELINE, "evaluate")


# ------------------------------------------------------------------------------------------ deployment


def test_the_deployment_spec_keeps_the_model_and_drops_the_training_datasets():
    trained = set_key(baseline_spec(), "model.classify.learnable_difference_modules", 2)
    original = copy.deepcopy(trained)
    spec = deployment_inference_spec(trained, 0.4375, PATHS)
    classify = spec["dataset"]["classify"]
    assert not {"train_dataset", "validation_dataset", "test_dataset"} & set(classify)
    assert classify["infer_dataset"] == {"csv_path": "/ws/kpi/testing_set.csv", "images_dir": "/ws/images"}
    assert classify["batch_size"] == 1
    assert spec["inference"]["batch_size"] == 1
    assert classify["augmentation_config"]["augment"] is False
    assert spec["inference"]["checkpoint"] == "/run/iter1/train/best.pth"
    assert spec["results_dir"] == spec["inference"]["results_dir"] == "/run/deployment_inference"
    assert spec["model"]["classify"]["eval_margin"] == 0.4375
    for key in ARCHITECTURE_KEYS:
        try:
            expected = get_key(trained, key)
        except SpecError:
            continue
        assert get_key(spec, key) == expected, key
    assert _changed_keys(trained["model"], spec["model"]) == {"classify.eval_margin"}
    assert trained == original


def test_without_a_threshold_the_deployment_spec_keeps_the_trained_margin():
    trained = set_key(baseline_spec(), "model.classify.eval_margin", 0.27)
    assert deployment_inference_spec(trained, None, PATHS)["model"]["classify"]["eval_margin"] == 0.27


@pytest.mark.parametrize(("final_far", "winner"), [(7.0, BASELINE), (1.0, FINAL_AUTOML), (5.0, BASELINE)])
def test_the_deployment_handoff_picks_the_contracts_best(tmp_path, final_far, winner):
    # The baseline scores 5 % on the KPI set; a tie keeps the earlier candidate, the baseline.
    layout, baseline_checkpoint = finished_phase2(tmp_path, baseline_far=5.0)
    phase3_spec = set_key(baseline_spec(backbone_type="vit_small_dinov3"), "train.optim.lr", 7e-5)
    final_checkpoint = register_final_automl(layout, metric_result(final_far, 0.25), phase3_spec)

    best = write_deployment_handoff(layout)

    assert best.iteration == winner
    record = json.loads(layout.best_model.read_text(encoding="utf-8"))
    expected_checkpoint = final_checkpoint if winner == FINAL_AUTOML else baseline_checkpoint
    expected_far, threshold = (final_far, 0.25) if winner == FINAL_AUTOML else (5.0, 0.5)
    assert record["iteration"] == winner
    assert record["checkpoint"] == str(expected_checkpoint)
    assert record["far_pct"] == expected_far
    assert record["threshold"] == threshold
    assert record["metric_result"]["value"] == expected_far
    assert record["metric_contract"] == CONTRACT.to_dict()
    assert record["training_spec"] == str(layout.iteration_spec(winner))
    assert record["inference_spec"] == str(layout.best_model_inference_spec)
    assert record["images_dir"] == IMAGES_DIR
    expected_backbone = "vit_small_dinov3" if winner == FINAL_AUTOML else baseline_spec()["model"]["backbone"]["type"]
    assert record["backbone_type"] == expected_backbone
    deployed = load_spec(layout.best_model_inference_spec)
    # TAO flags `score > eval_margin`: the margin just below the threshold flags the same rows.
    assert deployed["model"]["classify"]["eval_margin"] == math.nextafter(threshold, -math.inf)
    assert deployed["model"]["backbone"]["type"] == expected_backbone


def test_the_written_inference_spec_is_filled_in_and_says_what_the_user_must_set(tmp_path):
    layout, checkpoint = finished_phase2(tmp_path, baseline_far=5.0)
    text = layout.best_model_inference_spec.read_text(encoding="utf-8")
    spec = load_spec(layout.best_model_inference_spec)
    assert spec["inference"]["checkpoint"] == str(checkpoint)
    assert spec["dataset"]["classify"]["infer_dataset"]["images_dir"] == IMAGES_DIR
    assert spec["results_dir"] == str(layout.root / "deployment_inference")
    assert "/model/best.pth" not in text
    assert text.startswith("# Inference spec of the run's deliverable (baseline)")
    commented = [line for line in text.splitlines() if "  # set:" in line]
    assert {line.strip().split(":")[0] for line in commented} == {"csv_path", "images_dir", "results_dir"}


def test_without_a_strict_threshold_the_margin_is_the_threshold(tmp_path):
    layout, _ = finished_phase2(tmp_path, baseline_far=5.0)
    register_final_automl(layout, metric_result(1.0, 0.25, strict=False), baseline_spec())
    write_deployment_handoff(layout)
    assert load_spec(layout.best_model_inference_spec)["model"]["classify"]["eval_margin"] == 0.25


def test_a_failed_constraint_loses_to_a_worse_value_that_meets_it(tmp_path):
    layout, _ = finished_phase2(tmp_path, baseline_far=8.0)
    low_recall = {**metric_result(0.0, 0.25), "constraints": {"recall_pct": 50.0}}
    register_final_automl(layout, low_recall, baseline_spec())
    assert select_best_model(layout).iteration == BASELINE


def test_a_run_without_an_evaluated_candidate_has_no_deliverable(tmp_path):
    layout = RunLayout(tmp_path / "run")
    handoff(layout, baseline_spec(), phase1_winner(tmp_path, layout))
    with pytest.raises(StateError) as raised:
        write_deployment_handoff(layout)
    assert "deft_state.json" in str(raised.value)
    assert not layout.best_model.exists()


# ------------------------------------------------------------------------------------------ trajectory


def test_the_trajectory_lists_every_phase_in_order():
    def evaluated(value: float, passed: bool) -> dict[str, Any]:
        return {"status": "complete", "metric_result": {"value": value, "passed": passed}}

    state = {
        "results_dir": "/results/run_1",
        # Insertion order deliberately scrambled; iter10 must follow iter2.
        "iterations": {
            FINAL_AUTOML: evaluated(1.5, True),
            "iter10": evaluated(3.0, True),
            BASELINE: evaluated(20.0, False),
            "iter2": {"status": "failed"},
            "iter1": evaluated(12.0, False),
        },
    }
    lines = trajectory_lines(state, 9.5, CONTRACT)
    entries = [line for line in lines if line.startswith("- ")]
    assert [line.split(":")[0] for line in entries] == [
        "- Phase 1 AutoML best",
        f"- {BASELINE}",
        "- iter1",
        "- iter2",
        "- iter10",
        f"- {FINAL_AUTOML}",
    ]
    assert "9.5%" in entries[0]
    assert "20%" in entries[1] and "fails" in entries[1]
    assert "not evaluated" in entries[3] and "failed" in entries[3]
    assert "1.5%" in entries[5] and "passes" in entries[5]
    assert any("FAR < 10%" in line for line in lines)


def test_without_phase1_and_phase3_the_trajectory_starts_and_ends_at_the_loop():
    state = {"results_dir": "/r", "iterations": {BASELINE: {"status": "in_progress"}}}
    entries = [line for line in trajectory_lines(state, None, CONTRACT) if line.startswith("- ")]
    assert entries == [f"- {BASELINE}: not evaluated (in_progress)"]


def test_the_written_trajectory_names_the_deliverable(tmp_path):
    layout, _ = finished_phase2(tmp_path, baseline_far=5.0)
    register_final_automl(layout, metric_result(1.0, 0.25), baseline_spec())
    best = write_deployment_handoff(layout)
    text = write_trajectory(layout, phase1_best=4.0, best=best).read_text(encoding="utf-8")
    order = [text.index(marker) for marker in ("Phase 1 AutoML best: 4%", f"- {BASELINE}: 5%", f"- {FINAL_AUTOML}: 1%")]
    assert order == sorted(order)
    assert f"Deliverable: {FINAL_AUTOML}" in text
    assert str(best.checkpoint) in text
    assert read_state(layout.root)["status"] == "complete"


def test_the_handoff_describes_the_reference_network_it_hands_over(tmp_path):
    layout, checkpoint = finished_phase2(tmp_path, baseline_far=5.0)
    card = {"runtime": "reference", "description": "reference runtime network: small early-fusion CNN"}
    (checkpoint.parent / "reference_model.json").write_text(json.dumps(card), encoding="utf-8")
    write_deployment_handoff(layout)
    assert json.loads(layout.best_model.read_text(encoding="utf-8"))["model"] == card


def test_without_a_reference_card_the_handoff_names_the_tao_backbone(tmp_path):
    layout, _ = finished_phase2(tmp_path, baseline_far=5.0)
    write_deployment_handoff(layout)
    model = json.loads(layout.best_model.read_text(encoding="utf-8"))["model"]
    assert model["runtime"] == "tao" and baseline_spec()["model"]["backbone"]["type"] in model["description"]
