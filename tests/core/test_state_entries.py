"""Iteration entries read as typed, frozen views, and run directories written under the old `*_parquet` keys."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from aoi_pipeline.core.stages import Stage
from aoi_pipeline.core.state import STATE_FILE, NextStage, StageCommit, commit_stage, next_stage, read_state
from aoi_pipeline.core.state_entries import (
    LEGACY_ENTRY_KEYS,
    IterationEntry,
    iteration_entries,
    iteration_entry,
    normalise_legacy_keys,
)
from aoi_pipeline.errors import StateError

CONTRACT = {
    "name": "far_pct",
    "display_name": "FAR",
    "operator": "<",
    "target": 5.0,
    "unit": "%",
    "evaluator": {"type": "builtin", "id": "far_at_recall", "parameters": {"recall_target_pct": 100.0}},
    "constraints": [{"name": "recall_pct", "display_name": "Recall", "operator": ">=", "target": 100.0, "unit": "%"}],
}


def _file(root: Path, relative: str, content: str) -> str:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return str(path)


def _event(seq: int, label: str, stage: str) -> dict:
    return {
        "seq": seq,
        "ts": f"2026-03-01T08:0{seq}:00+00:00",
        "iter": label,
        "stage": stage,
        "status": "ok",
        "summary": f"{stage} done",
        "duration_sec": 12,
        "duration_measured_sec": 11.5,
    }


def _old_run(rd: Path) -> dict:
    """A run paused after iter1/routing, as a release before the key rename wrote it (by hand, old keys)."""
    result = {
        "name": "far_pct",
        "value": 20.0,
        "unit": "%",
        "threshold": 0.31,
        "constraints": {"recall_pct": 100.0},
        "evidence_path": _file(rd, "baseline/inference/best_val/metric_result.json", "{}"),
        "passed": False,
        "failed_constraints": [],
    }
    state = {
        "version": 4,
        "started_at": "2026-03-01T08:00:00+00:00",
        "status": "in_progress",
        "kpi_target": "FAR < 5% at Recall=100%",
        "metric_contract": CONTRACT,
        "results_dir": str(rd),
        "max_iterations": 2,
        "current_iteration": 1,
        "config": {"num_epochs": 10},
        "iterations": {
            "baseline": {
                "best_ckpt_path": _file(rd, "baseline/train/model.pth", "w"),
                "training_spec": _file(rd, "baseline/spec.yaml", "train: {}\n"),
                "metric_result": result,
                "inference_csv": _file(rd, "baseline/inference/best_val/inference.csv", "input_path\n"),
                "threshold": 0.31,
                "far_pct": 20.0,
                "rca_gaps_parquet": _file(rd, "baseline/rca_results/t/kpi_gaps.csv", "label,missed\nshort,2\n"),
                "rca_threshold": 0.3,
                "rca_target_defects": ["short"],
                "status": "complete",
                "stage_completed": "rca",
            },
            "iter1": {
                "routing_mining_parquet": _file(rd, "iter1/routing_results/t/mining_gaps.csv", "input_path\n"),
                "routing_anomalygen_parquet": _file(rd, "iter1/routing_results/t/anomalygen_gaps.csv", "input_path\n"),
                "status": "in_progress",
                "stage_completed": "routing",
            },
        },
        "events": [
            _event(1, "baseline", "train"),
            _event(2, "baseline", "evaluate"),
            _event(3, "baseline", "rca"),
            _event(4, "iter1", "routing"),
        ],
    }
    (rd / STATE_FILE).write_text(json.dumps(state, indent=2))
    return state


def test_a_state_written_with_the_old_parquet_keys_reads_under_the_new_names(tmp_path: Path) -> None:
    old = _old_run(tmp_path)
    state = read_state(tmp_path)
    baseline, iter1 = state["iterations"]["baseline"], state["iterations"]["iter1"]
    assert baseline["rca_gaps_csv"] == old["iterations"]["baseline"]["rca_gaps_parquet"]
    assert iter1["routing_mining_csv"] == old["iterations"]["iter1"]["routing_mining_parquet"]
    assert iter1["routing_anomalygen_csv"] == old["iterations"]["iter1"]["routing_anomalygen_parquet"]
    assert not [key for entry in state["iterations"].values() for key in entry if key.endswith("_parquet")]
    assert iteration_entry(state, "iter1").artifact("routing_mining_csv").read_text() == "input_path\n"
    assert iteration_entry(state, "baseline").rca_target_defects == ("short",)


def test_a_state_written_with_the_old_keys_resumes_and_new_writes_use_the_new_names(tmp_path: Path) -> None:
    _old_run(tmp_path)
    assert next_stage(read_state(tmp_path)) == NextStage("iter1", "anomalygen")
    fields = {
        "anomalygen_sdg_csv": _file(tmp_path, "iter1/anomalygen/sdg/SDG_result.csv", "image\n"),
        "anomalygen_allocation_json": _file(tmp_path, "iter1/anomalygen/sdg/allocation.json", '{"PCB+short": 2}'),
    }
    commit_stage(tmp_path, StageCommit("iter1", Stage.ANOMALYGEN, "ok", "SDG done", 4.0, fields))
    on_disk = json.loads((tmp_path / STATE_FILE).read_text())
    assert "_parquet" not in json.dumps(on_disk)
    assert on_disk["iterations"]["iter1"]["routing_mining_csv"].endswith("mining_gaps.csv")
    assert on_disk["iterations"]["baseline"]["rca_gaps_csv"].endswith("kpi_gaps.csv")
    assert on_disk["iterations"]["iter1"]["stage_completed"] == "anomalygen"
    assert on_disk["events"][-1]["stage"] == "anomalygen"
    assert next_stage(read_state(tmp_path)) == NextStage("iter1", "data_mining")


def test_normalising_renames_every_old_key_and_a_current_key_wins() -> None:
    entry = {old: f"/rd/{old}.csv" for old in LEGACY_ENTRY_KEYS}
    entry["rca_gaps_csv"] = "/rd/current.csv"
    state = normalise_legacy_keys({"iterations": {"iter2": entry}})
    renamed = state["iterations"]["iter2"]
    assert renamed["rca_gaps_csv"] == "/rd/current.csv"
    assert renamed["mining_mined_csv"] == "/rd/mining_mined_parquet.csv"
    assert renamed["mining_candidate_csv"] == "/rd/mining_candidate_parquet.csv"
    assert not [key for key in renamed if key.endswith("_parquet")]


def test_an_entry_view_is_frozen_and_reads_wrongly_typed_values_as_not_recorded() -> None:
    raw = {
        "status": "complete",
        "best_ckpt_path": 7,
        "mining_mined_count": True,
        "rca_target_defects": ["short", 3],
        "anomalygen_skipped": "yes",
        "metric_result": {"value": 3.5, "passed": True, "failed_constraints": ["recall_pct"]},
    }
    entry = IterationEntry.of("iter1", raw)
    assert entry.status == "complete"
    assert entry.best_ckpt_path is None
    assert entry.mining_mined_count is None
    assert entry.rca_target_defects == ("short",)
    assert entry.anomalygen_skipped is False
    assert entry.passed is True
    assert entry.metric_result is not None and entry.metric_result.failed_constraints == ("recall_pct",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.status = "failed"  # type: ignore[misc]
    assert raw["best_ckpt_path"] == 7  # the view never changes the document it reads


def test_a_missing_artifact_names_the_label_the_key_and_the_fix() -> None:
    state = {"iterations": {"iter2": {"status": "in_progress"}}}
    with pytest.raises(StateError) as caught:
        iteration_entry(state, "iter2").artifact("combined_training_csv")
    message = str(caught.value)
    assert "iterations.iter2.combined_training_csv" in message
    assert "is not recorded" in message
    assert iteration_entry(state, "iter9") == IterationEntry("iter9")


def test_entries_leave_out_labels_whose_entry_is_not_a_mapping() -> None:
    state = {"iterations": {"baseline": {"status": "complete"}, "iter1": ["not", "an", "entry"]}}
    assert list(iteration_entries(state)) == ["baseline"]
    assert iteration_entry(state, "baseline").passed is False
