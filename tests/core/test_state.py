"""The run state: init, the one commit writer, per-stage checks, resume (`next_stage`) and crash safety."""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.core import files
from aoi_pipeline.core.state import (
    STATE_FILE,
    NextStage,
    StageCommit,
    commit_stage,
    init_state,
    last_events,
    next_stage,
    preseed_baseline,
    read_state,
    stage_durations,
)
from aoi_pipeline.errors import StateError

FAR_CONTRACT = {
    "name": "far_pct",
    "display_name": "FAR",
    "operator": "<",
    "target": 5.0,
    "unit": "%",
    "evaluator": {"type": "builtin", "id": "far_at_recall", "parameters": {"recall_target_pct": 100.0}},
    "constraints": [{"name": "recall_pct", "display_name": "Recall", "operator": ">=", "target": 100.0, "unit": "%"}],
}
T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------------
# A small driver: artifacts on disk plus the commits a flow would make


class Run:
    def __init__(
        self, tmp_path: Path, *, max_iterations: int = 2, contract: dict | None = None, target: str = ""
    ) -> None:
        self.rd = tmp_path / "ws" / "results" / "run_20260301_080000"
        self.clock = T0
        self.state = init_state(
            self.rd,
            kpi_target=target or "FAR < 5% at Recall=100%",
            metric_contract=contract or FAR_CONTRACT,
            max_iterations=max_iterations,
            config={"num_epochs": 10, "batch_size": 16},
            now=self.clock,
        )

    @property
    def path(self) -> Path:
        return self.rd / STATE_FILE

    def file(self, relative: str, content: str | bytes = "x") -> str:
        path = self.rd / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def commit(self, label: str, stage: str, fields: dict[str, Any] | None = None, **kwargs: Any) -> dict:
        self.clock += timedelta(minutes=1)
        commit = StageCommit(
            iter_label=label,
            stage=stage,
            status=kwargs.pop("status", "ok"),
            summary=kwargs.pop("summary", f"{stage} done"),
            duration_sec=kwargs.pop("duration_sec", 12.5),
            fields=fields or {},
            **kwargs,
        )
        self.state = commit_stage(self.rd, commit, now=self.clock)
        return self.state

    # one helper per stage, with valid artifacts
    def train_fields(self, label: str) -> dict[str, Any]:
        return {
            "best_ckpt_path": self.file(f"{label}/train/model_epoch_010_step_00100.pth"),
            "training_spec": self.file(f"{label}/spec.yaml", "train: {}\n"),
            "best_ckpt_kind": "best_val",
            "val_loss": 0.12,
        }

    def evaluate_fields(self, label: str, far: float, *, recall: float = 100.0, **extra: Any) -> dict[str, Any]:
        result = {
            "name": "far_pct",
            "value": far,
            "unit": "%",
            "threshold": 0.31,
            "constraints": {"recall_pct": recall},
        }
        result.update(extra)
        return {
            "metric_result": self.file(f"{label}/inference/best_val/metric_result.json", json.dumps(result)),
            "best_ckpt_path": str(self.rd / label / "train" / "model_epoch_010_step_00100.pth"),
            "inference_csv": self.file(f"{label}/inference/best_val/inference.csv", "input_path,siamese_score\n"),
        }

    def rca_fields(self, label: str) -> dict[str, Any]:
        return {
            "rca_gaps_parquet": self.file(f"{label}/rca_results/2026-03-01_080000/kpi_gaps.parquet", b"PAR1"),
            "rca_threshold": 0.3,
            "rca_target_defects": ["missing", "short"],
        }

    def routing_fields(self, label: str) -> dict[str, Any]:
        return {
            "routing_mining_parquet": self.file(f"{label}/routing_results/t/mining_gaps.parquet", b"PAR1"),
            "routing_anomalygen_parquet": self.file(f"{label}/routing_results/t/anomalygen_gaps.parquet", b"PAR1"),
        }

    def anomalygen_fields(self, label: str, allocation: Any = None) -> dict[str, Any]:
        allocation = {"PCB+missing": 7, "PCB+bridge": 13} if allocation is None else allocation
        return {
            "anomalygen_sdg_csv": self.file(f"{label}/anomalygen/sdg/SDG_result.csv", "image\n"),
            "anomalygen_allocation_json": self.file(f"{label}/anomalygen/sdg/allocation.json", json.dumps(allocation)),
        }

    def mining_fields(self, label: str) -> dict[str, Any]:
        base = f"{label}/mining_results/t"
        return {
            "mining_mined_parquet": self.file(f"{base}/mined.parquet", b"PAR1"),
            "mining_candidate_parquet": self.file(f"{base}/mined_candidates.parquet", b"PAR1"),
            "mining_summary": self.file(f"{base}/knn_summary.csv", "candidate_count\n3\n"),
            "mining_history": self.file("mining_history.json", '{"version": 1}'),
            "mining_history_summary": self.file(f"{base}/mining_history_summary.json", "{}"),
            "mining_target_embeddings": self.file(f"{base}/target_embeddings.parquet", b"PAR1"),
            "mining_source_embeddings": self.file(f"{base}/source_embeddings.parquet", b"PAR1"),
            "mining_target_log": self.file(f"{base}/target_embeddings.log", "Execution status: PASS\n"),
            "mining_source_log": self.file(f"{base}/source_embeddings.log", "Execution status: PASS\n"),
            "mining_knn_log": self.file(f"{base}/nearest_neighbors.log", "Execution status: PASS\n"),
            "mining_mined_count": 3,
        }

    def merge_fields(self, label: str, report: dict | None = None) -> dict[str, Any]:
        report = report or {
            "rows_checked": 230,
            "missing_file_count": 0,
            "train_val_leakage_overlap_count": 0,
        }
        return {
            "combined_training_csv": self.file(f"{label}/dataset/train_combined_{label}.csv", "input_path\n"),
            "provenance_csv": self.file(f"{label}/dataset/train_combined_{label}_provenance.csv", "source\n"),
            "merge_validation_report": self.file(f"{label}/dataset/merge_validation.json", json.dumps(report)),
        }

    def stop_fields(self, reason: str) -> dict[str, Any]:
        return {
            "stop_reason": reason,
            "best_model_json": self.file("best_model.json", "{}"),
            "inference_spec": self.file("best_model_inference_spec.yaml", "inference: {}\n"),
        }

    # whole phases
    def baseline(self, far: float = 20.0, *, rca: bool = True) -> None:
        self.commit("baseline", "train", self.train_fields("baseline"))
        self.commit("baseline", "evaluate", self.evaluate_fields("baseline", far))
        if rca:
            self.commit("baseline", "rca", self.rca_fields("baseline"))

    def iteration_until_merge(self, label: str) -> None:
        self.commit(label, "routing", self.routing_fields(label))
        self.commit(label, "anomalygen", self.anomalygen_fields(label))
        self.commit(label, "data_mining", self.mining_fields(label))
        self.commit(label, "data_merge", self.merge_fields(label))

    def iteration(self, label: str, far: float) -> None:
        self.iteration_until_merge(label)
        self.commit(label, "train", self.train_fields(label))
        self.commit(label, "evaluate", self.evaluate_fields(label, far))


def _refused(run: Run, label: str, stage: str, fields: dict | None = None, **kwargs: Any) -> StateError:
    """Assert the commit is refused with a StateError and the state file is byte-for-byte unchanged."""
    before = run.path.read_bytes()
    listing = sorted(os.listdir(run.rd))
    with pytest.raises(StateError) as caught:
        run.commit(label, stage, fields, **kwargs)
    assert run.path.read_bytes() == before
    assert sorted(os.listdir(run.rd)) == listing
    assert str(run.path) in str(caught.value)
    return caught.value


# ---------------------------------------------------------------------------------------------------------
# init_state and read_state


def test_init_writes_a_version_4_document_with_the_run_inputs(tmp_path: Path) -> None:
    run = Run(tmp_path, max_iterations=3)
    on_disk = json.loads(run.path.read_text())
    assert on_disk == run.state
    assert on_disk["version"] == 4
    assert on_disk["status"] == "in_progress"
    assert on_disk["started_at"] == "2026-03-01T08:00:00+00:00"
    assert on_disk["results_dir"] == str(run.rd)
    assert (on_disk["max_iterations"], on_disk["current_iteration"]) == (3, 0)
    assert on_disk["metric_contract"] == FAR_CONTRACT
    assert on_disk["config"] == {"num_epochs": 10, "batch_size": 16}
    assert (on_disk["iterations"], on_disk["events"]) == ({}, [])
    assert run.path.read_text().endswith("}\n")
    assert next_stage(on_disk) == NextStage("baseline", "train")


def test_init_refuses_to_overwrite_an_existing_run(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.baseline()
    before = run.path.read_bytes()
    with pytest.raises(StateError) as caught:
        init_state(run.rd, kpi_target="x < 1", metric_contract=FAR_CONTRACT, max_iterations=1, config={})
    assert str(run.path) in str(caught.value)
    assert "resume that run" in str(caught.value)
    assert "new results directory" in str(caught.value)
    assert run.path.read_bytes() == before


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"max_iterations": -1}, "max_iterations"),
        ({"max_iterations": True}, "max_iterations"),
        ({"kpi_target": "  "}, "kpi_target"),
        ({"config": ["not", "a", "mapping"]}, "config"),
        ({"config": {"x": math.nan}}, "config"),
        ({"metric_contract": "FAR < 5%"}, "metric_contract"),
    ],
)
def test_init_with_bad_inputs_writes_nothing(tmp_path: Path, overrides: dict, named: str) -> None:
    rd = tmp_path / "results" / "run_x"
    arguments = {"kpi_target": "FAR < 5%", "metric_contract": FAR_CONTRACT, "max_iterations": 2, "config": {}}
    arguments.update(overrides)
    with pytest.raises(StateError) as caught:
        init_state(rd, **arguments)
    assert named in str(caught.value)
    assert not rd.exists()


def test_read_state_of_a_missing_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StateError) as caught:
        read_state(tmp_path)
    assert str(tmp_path / STATE_FILE) in str(caught.value)
    assert "start a new run" in str(caught.value)


def test_a_truncated_state_file_names_the_file_the_position_and_the_fix(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.baseline()
    text = run.path.read_text()
    run.path.write_text(text[: len(text) // 2])
    with pytest.raises(StateError) as caught:
        read_state(run.rd)
    message = str(caught.value)
    assert str(run.path) in message
    assert "truncated or invalid JSON at line" in message
    assert "restore deft_state.json from a backup" in message
    assert "or start a fresh run" in message


def test_an_empty_state_file_is_reported_as_empty(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.path.write_text("")
    with pytest.raises(StateError, match="the file is empty"):
        read_state(run.rd)


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda s: s.update(version=3), "version 3 is not supported"),
        (lambda s: s.pop("events"), "required key 'events' is missing"),
        (lambda s: s.pop("metric_contract"), "required key 'metric_contract' is missing"),
        (lambda s: s.update(status="paused"), "'paused' is not one of"),
        (lambda s: s.update(iterations=[]), "iterations: must be a dict"),
        (lambda s: s["events"].reverse(), "does not increase (previous event has seq 3)"),
        (lambda s: s["events"].append(dict(s["events"][-1])), "seq 3 does not increase"),
        (lambda s: s["iterations"].update(iter01={}), "iterations.iter01"),
    ],
)
def test_an_invalid_document_is_refused_with_what_is_wrong(tmp_path: Path, corrupt: Callable, expected: str) -> None:
    run = Run(tmp_path)
    run.baseline()
    state = json.loads(run.path.read_text())
    corrupt(state)
    run.path.write_text(json.dumps(state))
    with pytest.raises(StateError) as caught:
        read_state(run.rd)
    assert expected in str(caught.value)
    assert str(run.path) in str(caught.value)


def test_a_json_array_is_not_a_state(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("[]")
    with pytest.raises(StateError, match="top level is a JSON list"):
        read_state(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# next_stage: the resume walk of deft-spec §5.6, checked after every commit from a fresh read


def _walk(run: Run, steps: list[tuple[str, str, Callable[[], None]]]) -> None:
    for label, stage, do in steps:
        assert next_stage(read_state(run.rd)) == NextStage(label, stage), (label, stage)
        do()


def test_a_run_that_never_meets_the_kpi_walks_every_stage_and_stops_at_the_budget(tmp_path: Path) -> None:
    run = Run(tmp_path, max_iterations=2)
    c = run.commit
    steps = [
        ("baseline", "train", lambda: c("baseline", "train", run.train_fields("baseline"))),
        ("baseline", "evaluate", lambda: c("baseline", "evaluate", run.evaluate_fields("baseline", 30.0))),
        ("baseline", "rca", lambda: c("baseline", "rca", run.rca_fields("baseline"))),
        ("iter1", "routing", lambda: c("iter1", "routing", run.routing_fields("iter1"))),
        ("iter1", "anomalygen", lambda: c("iter1", "anomalygen", run.anomalygen_fields("iter1"))),
        ("iter1", "data_mining", lambda: c("iter1", "data_mining", run.mining_fields("iter1"))),
        ("iter1", "data_merge", lambda: c("iter1", "data_merge", run.merge_fields("iter1"))),
        ("iter1", "train", lambda: c("iter1", "train", run.train_fields("iter1"))),
        ("iter1", "evaluate", lambda: c("iter1", "evaluate", run.evaluate_fields("iter1", 12.0))),
        ("iter1", "rca", lambda: c("iter1", "rca", run.rca_fields("iter1"))),
        ("iter2", "routing", lambda: c("iter2", "routing", run.routing_fields("iter2"))),
        ("iter2", "anomalygen", lambda: c("iter2", "anomalygen", skipped=True)),
        ("iter2", "data_mining", lambda: c("iter2", "data_mining", run.mining_fields("iter2"))),
        ("iter2", "data_merge", lambda: c("iter2", "data_merge", run.merge_fields("iter2"))),
        ("iter2", "train", lambda: c("iter2", "train", run.train_fields("iter2"))),
        ("iter2", "evaluate", lambda: c("iter2", "evaluate", run.evaluate_fields("iter2", 8.0))),
        ("iter2", "finalize", lambda: c("iter2", "loop_stop", run.stop_fields("max_iterations"))),
        ("iter2", "complete", lambda: None),
    ]
    _walk(run, steps)
    state = read_state(run.rd)
    assert state["status"] == "complete"
    assert state["current_iteration"] == 2
    assert state["stop_reason"] == "max_iterations"
    assert state["final_artifacts"] == {
        "best_model_json": str(run.rd / "best_model.json"),
        "inference_spec": str(run.rd / "best_model_inference_spec.yaml"),
    }
    assert state["completed_at"] == state["events"][-1]["ts"]
    assert [e["seq"] for e in state["events"]] == list(range(1, 18))
    assert state["iterations"]["iter2"]["anomalygen_skipped"] is True
    # RCA of iter1 is recorded under iter1 and keeps it complete (label reuse of §5.3)
    assert state["iterations"]["iter1"]["stage_completed"] == "rca"
    assert state["iterations"]["iter1"]["status"] == "complete"


def test_current_iteration_moves_at_the_first_commit_of_an_iteration(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.baseline()
    assert run.state["current_iteration"] == 0
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    assert run.state["current_iteration"] == 1
    assert run.state["iterations"]["iter1"] == {
        **run.routing_fields("iter1"),
        "status": "in_progress",
        "stage_completed": "routing",
    }


def test_a_passing_baseline_goes_straight_to_finalize(tmp_path: Path) -> None:
    run = Run(tmp_path, max_iterations=3)
    run.baseline(far=2.0, rca=False)
    assert run.state["iterations"]["baseline"]["metric_result"]["passed"] is True
    assert next_stage(run.state) == NextStage("baseline", "finalize")
    _refused(run, "baseline", "rca", run.rca_fields("baseline"))
    _refused(run, "baseline", "loop_stop", run.stop_fields("max_iterations"))
    run.commit("baseline", "loop_stop", run.stop_fields("metric_met"))
    assert next_stage(run.state) == NextStage("baseline", "complete")


def test_a_zero_iteration_budget_finalizes_a_failing_baseline(tmp_path: Path) -> None:
    run = Run(tmp_path, max_iterations=0)
    run.baseline(far=50.0, rca=False)
    assert run.state["iterations"]["baseline"]["metric_result"]["passed"] is False
    assert next_stage(run.state) == NextStage("baseline", "finalize")
    _refused(run, "baseline", "loop_stop", run.stop_fields("metric_met"))
    run.commit("baseline", "loop_stop", run.stop_fields("max_iterations"))
    assert next_stage(run.state) == NextStage("baseline", "complete")


def test_a_passing_iteration_finalizes_before_the_budget_is_spent(tmp_path: Path) -> None:
    run = Run(tmp_path, max_iterations=5)
    run.baseline()
    run.iteration("iter1", far=4.0)
    assert next_stage(run.state) == NextStage("iter1", "finalize")
    err = _refused(run, "iter1", "loop_stop", run.stop_fields("max_iterations"))
    assert "iter1 passed" in str(err)
    run.commit("iter1", "loop_stop", run.stop_fields("metric_met"))
    assert run.state["status"] == "complete"


def test_a_failed_recall_constraint_is_not_a_pass_even_with_a_low_far(tmp_path: Path) -> None:
    run = Run(tmp_path, max_iterations=2)
    run.commit("baseline", "train", run.train_fields("baseline"))
    run.commit("baseline", "evaluate", run.evaluate_fields("baseline", 1.0, recall=98.0, passed=True))
    result = run.state["iterations"]["baseline"]["metric_result"]
    assert result["passed"] is False  # the evaluator's own 'passed' is ignored and recomputed
    assert next_stage(run.state) == NextStage("baseline", "rca")
    _refused(run, "baseline", "loop_stop", run.stop_fields("metric_met"))


def test_next_stage_of_an_iteration_whose_routing_never_completed_is_routing() -> None:
    state = {
        "status": "in_progress",
        "current_iteration": 2,
        "max_iterations": 3,
        "iterations": {"baseline": {"stage_completed": "rca"}, "iter2": {"status": "failed"}},
    }
    assert next_stage(state) == NextStage("iter2", "routing")


# ---------------------------------------------------------------------------------------------------------
# Events


def test_events_have_gap_free_seq_utc_seconds_and_ceiled_durations(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"), duration_sec=0.2)
    run.commit("baseline", "evaluate", run.evaluate_fields("baseline", 9.0), duration_sec=61.01)
    events = run.state["events"]
    assert [e["seq"] for e in events] == [1, 2]
    assert [e["ts"] for e in events] == ["2026-03-01T08:01:00+00:00", "2026-03-01T08:02:00+00:00"]
    assert [e["duration_sec"] for e in events] == [1, 62]
    assert [e["iter"] for e in events] == ["baseline", "baseline"]
    assert events[0]["summary"] == "train done"
    assert [d.seconds for d in stage_durations(run.state)] == [0.2, 61.01]
    assert [(d.seq, d.stage) for d in stage_durations(run.state)] == [(1, "train"), (2, "evaluate")]


def test_seq_is_recomputed_from_disk_and_ignores_bools(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    state = json.loads(run.path.read_text())
    state["events"][0]["seq"] = 41
    state["events"].append({"seq": True, "iter": "baseline", "stage": "note", "status": "ok"})
    run.path.write_text(json.dumps(state))
    run.commit("baseline", "evaluate", run.evaluate_fields("baseline", 9.0))
    assert run.state["events"][-1]["seq"] == 42


def test_last_events_are_the_newest_n_in_order(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.baseline()
    run.iteration_until_merge("iter1")
    stages = [e["stage"] for e in last_events(run.state)]
    assert stages == ["rca", "routing", "anomalygen", "data_mining", "data_merge"]
    assert [e["seq"] for e in last_events(run.state, 2)] == [6, 7]
    assert last_events(run.state, 0) == []


@pytest.mark.parametrize("duration", [0, -3, None, math.nan, math.inf, True, "12"])
def test_a_missing_zero_negative_or_non_numeric_duration_is_refused(tmp_path: Path, duration: Any) -> None:
    run = Run(tmp_path)
    err = _refused(run, "baseline", "train", run.train_fields("baseline"), duration_sec=duration)
    assert "duration_sec" in str(err)


@pytest.mark.parametrize("summary", ["", "   ", "two\nlines"])
def test_a_summary_must_be_one_non_empty_line(tmp_path: Path, summary: str) -> None:
    run = Run(tmp_path)
    _refused(run, "baseline", "train", run.train_fields("baseline"), summary=summary)


# ---------------------------------------------------------------------------------------------------------
# Stage order


def test_a_stage_out_of_order_is_refused_naming_the_expected_one(tmp_path: Path) -> None:
    run = Run(tmp_path)
    err = _refused(run, "baseline", "evaluate", run.evaluate_fields("baseline", 1.0))
    assert "expects baseline/train next" in str(err)
    run.commit("baseline", "train", run.train_fields("baseline"))
    err = _refused(run, "baseline", "train", run.train_fields("baseline"))  # never repeated
    assert "expects baseline/evaluate next" in str(err)
    _refused(run, "iter1", "routing", run.routing_fields("iter1"))


def test_training_cannot_start_while_the_last_stage_is_data_mining(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.baseline()
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    run.commit("iter1", "anomalygen", run.anomalygen_fields("iter1"))
    run.commit("iter1", "data_mining", skipped=True)
    err = _refused(run, "iter1", "train", run.train_fields("iter1"))
    assert "expects iter1/data_merge next" in str(err)


@pytest.mark.parametrize("label", ["iter0", "iter01", "Iter1", "final", "", "baseline "])
def test_an_invalid_label_is_refused(tmp_path: Path, label: str) -> None:
    run = Run(tmp_path)
    err = _refused(run, label, "train", run.train_fields("baseline"))
    assert "is not an iteration label" in str(err)


def test_an_unknown_stage_or_status_is_refused(tmp_path: Path) -> None:
    run = Run(tmp_path)
    assert "'inference' is unknown" in str(_refused(run, "baseline", "inference"))
    assert "'done' is unknown" in str(_refused(run, "baseline", "train", run.train_fields("baseline"), status="done"))


# ---------------------------------------------------------------------------------------------------------
# Errors, halt and retry


def test_an_error_commit_fails_the_run_and_next_stage_halts(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.baseline()
    run.commit("iter1", "routing", {"dropped_labels": ["short"]}, status="error", summary="both subsets empty")
    state = read_state(run.rd)
    assert state["status"] == "failed"
    assert state["completed_at"] == state["events"][-1]["ts"]
    assert state["iterations"]["iter1"] == {"status": "failed"}
    assert state["events"][-1]["details"] == {"dropped_labels": ["short"]}
    assert next_stage(state) == NextStage("iter1", "halt")
    err = _refused(run, "iter1", "anomalygen", run.anomalygen_fields("iter1"))
    assert "expects iter1/routing" in str(err)


def test_error_details_must_be_storable_in_json(tmp_path: Path) -> None:
    run = Run(tmp_path)
    err = _refused(run, "baseline", "train", {"loss": math.nan}, status="error", summary="diverged")
    assert "commit baseline/train: loss" in str(err)
    assert "cannot be stored in JSON" in str(err)


def test_a_failed_stage_can_be_retried_after_the_fix_and_the_run_resumes(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.commit("baseline", "train", status="error", summary="CUDA OOM at epoch 1")
    run.commit("baseline", "train", status="error", summary="still OOM")  # a failed retry stays failed
    assert run.state["status"] == "failed"
    run.commit("baseline", "train", run.train_fields("baseline"), summary="retrained with batch 8")
    state = read_state(run.rd)
    assert state["status"] == "in_progress"
    assert "completed_at" not in state
    assert state["iterations"]["baseline"]["status"] == "in_progress"
    assert [e["status"] for e in state["events"]] == ["error", "error", "ok"]
    assert next_stage(state) == NextStage("baseline", "evaluate")


def test_an_rca_retry_after_evaluate_restores_the_complete_iteration(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.baseline(rca=False)
    run.commit("baseline", "rca", status="error", summary="unreachable KPI")
    assert run.state["iterations"]["baseline"]["status"] == "failed"
    run.commit("baseline", "rca", run.rca_fields("baseline"))
    assert run.state["iterations"]["baseline"]["status"] == "complete"
    assert next_stage(run.state) == NextStage("iter1", "routing")


def test_a_failed_handoff_fails_the_run_but_not_the_iteration(tmp_path: Path) -> None:
    run = Run(tmp_path, max_iterations=1)
    run.baseline(far=1.0, rca=False)
    run.commit("baseline", "loop_stop", status="error", summary="prepare_inference_spec failed")
    assert run.state["status"] == "failed"
    assert run.state["iterations"]["baseline"]["status"] == "complete"
    run.commit("baseline", "loop_stop", run.stop_fields("metric_met"))
    assert run.state["status"] == "complete"


def test_a_failed_run_accepts_no_skip_and_no_skip_outside_mining_and_generation(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.baseline()
    assert "may be skipped" in str(_refused(run, "iter1", "routing", skipped=True))
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    err = _refused(run, "iter1", "anomalygen", run.anomalygen_fields("iter1"), skipped=True)
    assert "a skipped stage records no artifacts" in str(err)


# ---------------------------------------------------------------------------------------------------------
# Per-stage validation: every refusal leaves the file byte-for-byte unchanged (see _refused)


def test_train_artifacts_must_be_absolute_existing_and_non_empty(tmp_path: Path) -> None:
    run = Run(tmp_path)
    fields = run.train_fields("baseline")
    assert "is relative" in str(_refused(run, "baseline", "train", {**fields, "training_spec": "spec.yaml"}))
    missing = str(run.rd / "baseline" / "train" / "absent.pth")
    assert "does not exist" in str(_refused(run, "baseline", "train", {**fields, "best_ckpt_path": missing}))
    empty = run.file("baseline/train/empty.pth", b"")
    assert "is empty" in str(_refused(run, "baseline", "train", {**fields, "best_ckpt_path": empty}))
    folder = str(run.rd / "baseline" / "train")
    assert "is a directory" in str(_refused(run, "baseline", "train", {**fields, "best_ckpt_path": folder}))


def test_a_train_checkpoint_outside_the_iterations_train_dir_is_refused(tmp_path: Path) -> None:
    run = Run(tmp_path)
    elsewhere = run.file("other/model.pth")
    err = _refused(run, "baseline", "train", {**run.train_fields("baseline"), "best_ckpt_path": elsewhere})
    assert f"is outside {run.rd / 'baseline' / 'train'}/" in str(err)
    sneaky = str(run.rd / "baseline" / "train" / ".." / ".." / "other" / "model.pth")
    _refused(run, "baseline", "train", {**run.train_fields("baseline"), "best_ckpt_path": sneaky})


def test_train_field_types_and_unknown_or_missing_fields(tmp_path: Path) -> None:
    run = Run(tmp_path)
    fields = run.train_fields("baseline")
    assert "'newest' is not allowed" in str(_refused(run, "baseline", "train", {**fields, "best_ckpt_kind": "newest"}))
    assert "not a finite number" in str(_refused(run, "baseline", "train", {**fields, "val_loss": math.nan}))
    err = _refused(run, "baseline", "train", {**fields, "best_ckpt": fields["best_ckpt_path"]})
    assert "best_ckpt: unknown field for stage train" in str(err)
    err = _refused(run, "baseline", "train", {"best_ckpt_path": fields["best_ckpt_path"]})
    assert "training_spec: required field is missing" in str(err)


def test_all_problems_of_a_commit_are_reported_at_once(tmp_path: Path) -> None:
    run = Run(tmp_path)
    err = _refused(run, "baseline", "train", {"best_ckpt_path": "relative.pth", "val_loss": "low"})
    assert {p.where for p in err.problems} == {
        "commit baseline/train: training_spec",
        "commit baseline/train: best_ckpt_path",
        "commit baseline/train: val_loss",
    }


def test_path_objects_are_recorded_as_text(tmp_path: Path) -> None:
    run = Run(tmp_path)
    fields = {
        name: Path(value) if name != "val_loss" and name != "best_ckpt_kind" else value
        for name, value in run.train_fields("baseline").items()
    }
    run.commit("baseline", "train", fields)
    assert run.state["iterations"]["baseline"]["best_ckpt_path"] == str(fields["best_ckpt_path"])


def test_evaluate_records_the_result_with_evidence_pass_flag_threshold_and_far(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    fields = run.evaluate_fields("baseline", 7.5, diagnostics={"precision": 0.9})
    run.commit("baseline", "evaluate", fields)
    entry = run.state["iterations"]["baseline"]
    assert entry["status"] == "complete"
    assert entry["stage_completed"] == "evaluate"
    assert entry["far_pct"] == 7.5
    assert entry["threshold"] == 0.31
    assert entry["inference_csv"] == fields["inference_csv"]
    assert entry["metric_result"]["evidence_path"] == fields["metric_result"]
    assert entry["metric_result"]["passed"] is False  # 7.5 is not < 5
    assert entry["metric_result"]["diagnostics"] == {"precision": 0.9}
    assert entry["best_ckpt_kind"] == "best_val"  # kept from train


def test_an_explicit_threshold_wins_over_the_results(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    run.commit("baseline", "evaluate", {**run.evaluate_fields("baseline", 1.0), "threshold": 0.5})
    assert run.state["iterations"]["baseline"]["threshold"] == 0.5


def test_far_at_recall_without_any_threshold_is_refused(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    fields = run.evaluate_fields("baseline", 1.0)
    result = json.loads(Path(fields["metric_result"]).read_text())
    del result["threshold"]
    Path(fields["metric_result"]).write_text(json.dumps(result))
    assert "needs the operating threshold" in str(_refused(run, "baseline", "evaluate", fields))


@pytest.mark.parametrize(
    "change",
    [{"name": "accuracy"}, {"unit": "fraction"}, {"value": "low"}, {"value": None}],
)
def test_an_evaluator_result_that_does_not_match_the_contract_is_refused(tmp_path: Path, change: dict) -> None:
    run = Run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    fields = run.evaluate_fields("baseline", 1.0)
    result = {**json.loads(Path(fields["metric_result"]).read_text()), **change}
    Path(fields["metric_result"]).write_text(json.dumps(result))
    _refused(run, "baseline", "evaluate", fields)


def test_an_unreadable_result_json_is_refused(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    fields = run.evaluate_fields("baseline", 1.0)
    Path(fields["metric_result"]).write_text('{"name": "far_pct", "val')
    assert "is not valid JSON" in str(_refused(run, "baseline", "evaluate", fields))
    Path(fields["metric_result"]).write_text("[1]")
    assert "not an object" in str(_refused(run, "baseline", "evaluate", fields))


def test_rca_fields_are_recorded_and_checked(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.baseline(rca=False)
    fields = run.rca_fields("baseline")
    assert "not a list of labels" in str(_refused(run, "baseline", "rca", {**fields, "rca_target_defects": "short"}))
    run.commit("baseline", "rca", fields)
    assert run.state["iterations"]["baseline"]["rca_target_defects"] == ["missing", "short"]


@pytest.mark.parametrize(
    ("allocation", "expected"),
    [
        ({}, "sums to 0"),
        ({"PCB+missing": 0}, "sums to 0"),
        ({"PCB+missing": -1, "PCB+bridge": 3}, "not non-negative integers"),
        ({"PCB+missing": True}, "not non-negative integers"),
        ({"PCB+missing": 2.0}, "not non-negative integers"),
        ([3, 4], "not an object"),
    ],
)
def test_a_bad_anomalygen_allocation_is_refused(tmp_path: Path, allocation: Any, expected: str) -> None:
    run = Run(tmp_path)
    run.baseline()
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    assert expected in str(_refused(run, "iter1", "anomalygen", run.anomalygen_fields("iter1", allocation)))


def test_anomalygen_records_the_allocated_total(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.baseline()
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    run.commit("iter1", "anomalygen", run.anomalygen_fields("iter1", {"PCB+missing": 7, "PCB+bridge": 13}))
    assert run.state["iterations"]["iter1"]["anomalygen_amp_allocated"] == 20


def _until_mining(run: Run) -> None:
    run.baseline()
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    run.commit("iter1", "anomalygen", skipped=True)


def test_mining_artifacts_must_live_in_the_iteration_and_the_ledger_in_the_run(tmp_path: Path) -> None:
    run = Run(tmp_path)
    _until_mining(run)
    fields = run.mining_fields("iter1")
    outside = run.file("baseline/mined.parquet", b"PAR1")
    err = _refused(run, "iter1", "data_mining", {**fields, "mining_mined_parquet": outside})
    assert f"is outside {run.rd / 'iter1'}/" in str(err)
    foreign_ledger = str(tmp_path / "ledger.json")
    Path(foreign_ledger).write_text("{}")
    _refused(run, "iter1", "data_mining", {**fields, "mining_history": foreign_ledger})
    run.commit("iter1", "data_mining", fields)
    assert run.state["iterations"]["iter1"]["mining_mined_count"] == 3


@pytest.mark.parametrize("placeholder", ["ok", " TODO \n", "n/a", "Recorded"])
def test_a_placeholder_mining_log_is_refused(tmp_path: Path, placeholder: str) -> None:
    run = Run(tmp_path)
    _until_mining(run)
    fields = run.mining_fields("iter1")
    Path(fields["mining_knn_log"]).write_text(placeholder)
    assert "placeholder" in str(_refused(run, "iter1", "data_mining", fields))


@pytest.mark.parametrize("count", [-1, True, 2.5, "3"])
def test_a_bad_mined_count_is_refused(tmp_path: Path, count: Any) -> None:
    run = Run(tmp_path)
    _until_mining(run)
    assert "is not a row count" in str(
        _refused(run, "iter1", "data_mining", {**run.mining_fields("iter1"), "mining_mined_count": count})
    )


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ({"missing_file_count": 2, "train_val_leakage_overlap_count": 0}, "missing_file_count is 2"),
        (
            {"missing_file_count": 0, "train_val_leakage_overlap_count": 1},
            "train_val_leakage_overlap_count is 1",
        ),
        (
            {
                "missing_file_count": 0,
                "train_val_leakage_overlap_count": 0,
                "train_kpi_leakage_overlap_count": 4,
            },
            "train_kpi_leakage_overlap_count is 4",
        ),
        ({"rows_checked": 10}, "missing_file_count is None, not a count"),
        ({"missing_file_count": "0", "train_val_leakage_overlap_count": 0}, "missing_file_count is '0'"),
    ],
)
def test_the_merge_validation_report_is_parsed_not_just_checked_for_existence(
    tmp_path: Path, report: dict, expected: str
) -> None:
    run = Run(tmp_path)
    run.baseline()
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    run.commit("iter1", "anomalygen", skipped=True)
    run.commit("iter1", "data_mining", skipped=True)
    assert expected in str(_refused(run, "iter1", "data_merge", run.merge_fields("iter1", report)))


def test_loop_stop_artifacts_must_be_inside_the_run(tmp_path: Path) -> None:
    run = Run(tmp_path, max_iterations=1)
    run.baseline(far=1.0, rca=False)
    outside = tmp_path / "best_model.json"
    outside.write_text("{}")
    fields = {**run.stop_fields("metric_met"), "best_model_json": str(outside)}
    assert "is outside" in str(_refused(run, "baseline", "loop_stop", fields))
    assert "'budget' is not allowed" in str(_refused(run, "baseline", "loop_stop", {**fields, "stop_reason": "budget"}))


# ---------------------------------------------------------------------------------------------------------
# The Phase 1 pre-seed and Phase 3 registration


def test_preseed_records_phase1_winner_as_an_ordinary_baseline_train_commit(tmp_path: Path) -> None:
    run = Run(tmp_path)
    checkpoint = run.file("baseline/train/model_epoch_012_step_00480.pth")
    spec = run.file("baseline/spec.yaml", "train: {}\n")
    state = preseed_baseline(
        run.rd,
        best_ckpt_path=checkpoint,
        train_metric=0.043,
        training_spec=spec,
        summary="reused Phase 1 winner",
    )
    entry = state["iterations"]["baseline"]
    assert entry == {
        "best_ckpt_path": checkpoint,
        "training_spec": spec,
        "train_metric": 0.043,
        "source": "automl_phase1",
        "status": "in_progress",
        "stage_completed": "train",
    }
    event = state["events"][-1]
    assert (event["seq"], event["iter"], event["stage"], event["status"]) == (1, "baseline", "train", "ok")
    assert event["duration_sec"] >= 1
    assert next_stage(read_state(run.rd)) == NextStage("baseline", "evaluate")
    with pytest.raises(StateError, match="expects baseline/evaluate"):
        preseed_baseline(run.rd, best_ckpt_path=checkpoint, train_metric=None, training_spec=spec, summary="again")


def test_preseed_needs_the_checkpoint_copied_into_the_baseline_train_dir(tmp_path: Path) -> None:
    run = Run(tmp_path)
    phase1 = tmp_path / "automl" / "best.pth"
    phase1.parent.mkdir()
    phase1.write_bytes(b"weights")
    before = run.path.read_bytes()
    with pytest.raises(StateError, match="is outside"):
        preseed_baseline(
            run.rd, best_ckpt_path=str(phase1), train_metric=None, training_spec=str(phase1), summary="reuse"
        )
    assert run.path.read_bytes() == before


def test_source_is_reserved_for_the_baseline_preseed(tmp_path: Path) -> None:
    run = Run(tmp_path)
    err = _refused(run, "baseline", "train", {**run.train_fields("baseline"), "source": "manual"})
    assert "'manual' is not allowed" in str(err)
    assert "automl_phase1" in str(err)
    run.baseline()
    iteration_fields = {**run.train_fields("iter1"), "source": "automl_phase1"}
    run.iteration_until_merge("iter1")
    assert "only allowed on baseline" in str(_refused(run, "iter1", "train", iteration_fields))


def test_phase3_registers_under_final_automl_only_after_the_loop_completed(tmp_path: Path) -> None:
    run = Run(tmp_path, max_iterations=1)
    run.baseline(far=1.0, rca=False)
    err = _refused(run, "final_automl", "train", run.train_fields("final_automl"))
    assert "only after the loop is complete" in str(err)
    run.commit("baseline", "loop_stop", run.stop_fields("metric_met"))
    trial_ckpt = run.file("final_automl/trial_3/train/model_epoch_005_step_00050.pth")
    run.commit("final_automl", "train", {**run.train_fields("final_automl"), "best_ckpt_path": trial_ckpt})
    run.commit("final_automl", "evaluate", run.evaluate_fields("final_automl", 0.5))
    state = read_state(run.rd)
    assert state["status"] == "complete"
    assert state["iterations"]["final_automl"]["status"] == "complete"
    assert state["iterations"]["final_automl"]["metric_result"]["passed"] is True
    assert next_stage(state).stage == "complete"
    assert "already registered" in str(
        _refused(run, "final_automl", "evaluate", run.evaluate_fields("final_automl", 0.4))
    )
    assert "the run is complete" in str(_refused(run, "baseline", "rca", run.rca_fields("baseline")))


def test_a_failed_phase3_leaves_the_loops_result_standing_and_may_be_retried(tmp_path: Path) -> None:
    run = Run(tmp_path, max_iterations=1)
    run.baseline(far=1.0, rca=False)
    run.commit("baseline", "loop_stop", run.stop_fields("metric_met"))
    run.commit("final_automl", "train", status="error", summary="every trial diverged")
    assert run.state["status"] == "complete"
    assert "completed_at" in run.state
    assert run.state["iterations"]["final_automl"]["status"] == "failed"
    run.commit("final_automl", "train", run.train_fields("final_automl"))
    assert run.state["iterations"]["final_automl"]["stage_completed"] == "train"


# ---------------------------------------------------------------------------------------------------------
# Crash safety and concurrency


def test_a_crash_between_temp_write_and_replace_keeps_the_old_valid_state(tmp_path: Path, monkeypatch) -> None:
    run = Run(tmp_path)
    run.baseline()
    before = run.path.read_bytes()

    def power_cut(*_args, **_kwargs):
        raise OSError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(files.os, "replace", power_cut)
        with pytest.raises(OSError, match="power cut"):
            run.commit("iter1", "routing", run.routing_fields("iter1"))
    assert run.path.read_bytes() == before
    assert not [name for name in os.listdir(run.rd) if name.endswith(".tmp")]
    resumed = read_state(run.rd)
    assert next_stage(resumed) == NextStage("iter1", "routing")
    run.commit("iter1", "routing", run.routing_fields("iter1"))  # the resumed run simply commits again
    assert [e["seq"] for e in run.state["events"]] == [1, 2, 3, 4]


def test_concurrent_commits_of_the_same_stage_record_it_once(tmp_path: Path) -> None:
    run = Run(tmp_path)
    fields = run.train_fields("baseline")
    outcomes: list[str] = []
    start = threading.Barrier(4)

    def commit() -> None:
        start.wait()
        try:
            commit_stage(run.rd, StageCommit("baseline", "train", "ok", "trained", 3.0, fields))
            outcomes.append("ok")
        except StateError:
            outcomes.append("refused")

    threads = [threading.Thread(target=commit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]
    assert len(read_state(run.rd)["events"]) == 1


def test_the_commit_time_must_be_timezone_aware(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with pytest.raises(ValueError, match="timezone-aware"):
        commit_stage(
            run.rd,
            StageCommit("baseline", "train", "ok", "t", 1.0, run.train_fields("baseline")),
            now=datetime(2026, 1, 1),
        )


def test_an_artifact_evaluator_result_must_sit_at_its_templated_path(tmp_path: Path) -> None:
    template = str(tmp_path / "metrics" / "{iter_label}" / "quality.json")
    contract = {
        "name": "quality_score",
        "display_name": "Quality score",
        "operator": ">=",
        "target": 0.9,
        "unit": "",
        "evaluator": {"type": "artifact", "producer": "line QA", "path_template": template},
        "constraints": [],
    }
    run = Run(tmp_path, max_iterations=1, contract=contract, target="Quality score >= 0.9")
    run.commit("baseline", "train", run.train_fields("baseline"))
    fields = run.evaluate_fields("baseline", 0.0)
    result = {"name": "quality_score", "value": 0.93, "unit": "", "constraints": {}}
    Path(fields["metric_result"]).write_text(json.dumps(result))
    err = _refused(run, "baseline", "evaluate", fields)
    assert f"commit the result at '{template.format(iter_label='baseline')}'" in str(err)
    expected = Path(template.format(iter_label="baseline"))
    expected.parent.mkdir(parents=True)
    expected.write_text(json.dumps(result))
    run.commit("baseline", "evaluate", {**fields, "metric_result": str(expected)})
    entry = run.state["iterations"]["baseline"]
    assert entry["metric_result"]["passed"] is True  # no threshold needed outside far_at_recall
    assert "far_pct" not in entry
    assert "threshold" not in entry
    assert next_stage(run.state) == NextStage("baseline", "finalize")
