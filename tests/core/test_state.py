"""The run state's commit writer and resume walk: stage order, events, errors and retry, the Phase 1
pre-seed and Phase 3 registration, crash safety and concurrency.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.core import files
from aoi_pipeline.core.state import (
    NextStage,
    StageCommit,
    commit_stage,
    last_events,
    next_stage,
    preseed_baseline,
    read_state,
    record_run_fact,
    stage_durations,
)
from aoi_pipeline.errors import StateError

# ---------------------------------------------------------------------------------------------------------
# next_stage: the resume walk of deft-spec §5.6, checked after every commit from a fresh read


def _walk(run, steps: list[tuple[str, str, Callable[[], None]]]) -> None:
    for label, stage, do in steps:
        assert next_stage(read_state(run.rd)) == NextStage(label, stage), (label, stage)
        do()


def test_a_run_that_never_meets_the_kpi_walks_every_stage_and_stops_at_the_budget(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=2)
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


def test_current_iteration_moves_at_the_first_commit_of_an_iteration(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.baseline()
    assert run.state["current_iteration"] == 0
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    assert run.state["current_iteration"] == 1
    assert run.state["iterations"]["iter1"] == {
        **run.routing_fields("iter1"),
        "status": "in_progress",
        "stage_completed": "routing",
    }


def test_a_passing_baseline_goes_straight_to_finalize(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=3)
    run.baseline(far=2.0, rca=False)
    assert run.state["iterations"]["baseline"]["metric_result"]["passed"] is True
    assert next_stage(run.state) == NextStage("baseline", "finalize")
    run.refused("baseline", "rca", run.rca_fields("baseline"))
    run.refused("baseline", "loop_stop", run.stop_fields("max_iterations"))
    run.commit("baseline", "loop_stop", run.stop_fields("metric_met"))
    assert next_stage(run.state) == NextStage("baseline", "complete")


def test_a_zero_iteration_budget_finalizes_a_failing_baseline(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=0)
    run.baseline(far=50.0, rca=False)
    assert run.state["iterations"]["baseline"]["metric_result"]["passed"] is False
    assert next_stage(run.state) == NextStage("baseline", "finalize")
    run.refused("baseline", "loop_stop", run.stop_fields("metric_met"))
    run.commit("baseline", "loop_stop", run.stop_fields("max_iterations"))
    assert next_stage(run.state) == NextStage("baseline", "complete")


def test_a_passing_iteration_finalizes_before_the_budget_is_spent(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=5)
    run.baseline()
    run.iteration("iter1", far=4.0)
    assert next_stage(run.state) == NextStage("iter1", "finalize")
    err = run.refused("iter1", "loop_stop", run.stop_fields("max_iterations"))
    assert "iter1 passed" in str(err)
    run.commit("iter1", "loop_stop", run.stop_fields("metric_met"))
    assert run.state["status"] == "complete"


def test_a_failed_recall_constraint_is_not_a_pass_even_with_a_low_far(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=2)
    run.commit("baseline", "train", run.train_fields("baseline"))
    run.commit("baseline", "evaluate", run.evaluate_fields("baseline", 1.0, recall=98.0, passed=True))
    result = run.state["iterations"]["baseline"]["metric_result"]
    assert result["passed"] is False  # the evaluator's own 'passed' is ignored and recomputed
    assert next_stage(run.state) == NextStage("baseline", "rca")
    run.refused("baseline", "loop_stop", run.stop_fields("metric_met"))


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


def test_events_have_gap_free_seq_utc_seconds_and_ceiled_durations(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
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


def test_seq_is_recomputed_from_disk_and_ignores_bools(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.commit("baseline", "train", run.train_fields("baseline"))
    state = json.loads(run.path.read_text())
    state["events"][0]["seq"] = 41
    state["events"].append({"seq": True, "iter": "baseline", "stage": "note", "status": "ok"})
    run.path.write_text(json.dumps(state))
    run.commit("baseline", "evaluate", run.evaluate_fields("baseline", 9.0))
    assert run.state["events"][-1]["seq"] == 42


def test_last_events_are_the_newest_n_in_order(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.baseline()
    run.iteration_until_merge("iter1")
    stages = [e["stage"] for e in last_events(run.state)]
    assert stages == ["rca", "routing", "anomalygen", "data_mining", "data_merge"]
    assert [e["seq"] for e in last_events(run.state, 2)] == [6, 7]
    assert last_events(run.state, 0) == []


@pytest.mark.parametrize("duration", [0, -3, None, math.nan, math.inf, True, "12"])
def test_a_missing_zero_negative_or_non_numeric_duration_is_refused(make_run, tmp_path: Path, duration: Any) -> None:
    run = make_run(tmp_path)
    err = run.refused("baseline", "train", run.train_fields("baseline"), duration_sec=duration)
    assert "duration_sec" in str(err)


@pytest.mark.parametrize("summary", ["", "   ", "two\nlines"])
def test_a_summary_must_be_one_non_empty_line(make_run, tmp_path: Path, summary: str) -> None:
    run = make_run(tmp_path)
    run.refused("baseline", "train", run.train_fields("baseline"), summary=summary)


# ---------------------------------------------------------------------------------------------------------
# Stage order


def test_a_stage_out_of_order_is_refused_naming_the_expected_one(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    err = run.refused("baseline", "evaluate", run.evaluate_fields("baseline", 1.0))
    assert "expects baseline/train next" in str(err)
    run.commit("baseline", "train", run.train_fields("baseline"))
    err = run.refused("baseline", "train", run.train_fields("baseline"))  # never repeated
    assert "expects baseline/evaluate next" in str(err)
    run.refused("iter1", "routing", run.routing_fields("iter1"))


def test_training_cannot_start_while_the_last_stage_is_data_mining(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.baseline()
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    run.commit("iter1", "anomalygen", run.anomalygen_fields("iter1"))
    run.commit("iter1", "data_mining", skipped=True)
    err = run.refused("iter1", "train", run.train_fields("iter1"))
    assert "expects iter1/data_merge next" in str(err)


@pytest.mark.parametrize("label", ["iter0", "iter01", "Iter1", "final", "", "baseline "])
def test_an_invalid_label_is_refused(make_run, tmp_path: Path, label: str) -> None:
    run = make_run(tmp_path)
    err = run.refused(label, "train", run.train_fields("baseline"))
    assert "is not an iteration label" in str(err)


def test_an_unknown_stage_or_status_is_refused(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    assert "'inference' is unknown" in str(run.refused("baseline", "inference"))
    assert "'done' is unknown" in str(run.refused("baseline", "train", run.train_fields("baseline"), status="done"))


# ---------------------------------------------------------------------------------------------------------
# Errors, halt and retry


def test_an_error_commit_fails_the_run_and_next_stage_halts(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.baseline()
    run.commit("iter1", "routing", {"dropped_labels": ["short"]}, status="error", summary="both subsets empty")
    state = read_state(run.rd)
    assert state["status"] == "failed"
    assert state["completed_at"] == state["events"][-1]["ts"]
    assert state["iterations"]["iter1"] == {"status": "failed"}
    assert state["events"][-1]["details"] == {"dropped_labels": ["short"]}
    assert next_stage(state) == NextStage("iter1", "halt")
    err = run.refused("iter1", "anomalygen", run.anomalygen_fields("iter1"))
    assert "expects iter1/routing" in str(err)


def test_error_details_must_be_storable_in_json(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    err = run.refused("baseline", "train", {"loss": math.nan}, status="error", summary="diverged")
    assert "commit baseline/train: loss" in str(err)
    assert "cannot be stored in JSON" in str(err)


def test_a_failed_stage_can_be_retried_after_the_fix_and_the_run_resumes(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
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


def test_an_rca_retry_after_evaluate_restores_the_complete_iteration(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.baseline(rca=False)
    run.commit("baseline", "rca", status="error", summary="unreachable KPI")
    assert run.state["iterations"]["baseline"]["status"] == "failed"
    run.commit("baseline", "rca", run.rca_fields("baseline"))
    assert run.state["iterations"]["baseline"]["status"] == "complete"
    assert next_stage(run.state) == NextStage("iter1", "routing")


def test_a_failed_handoff_fails_the_run_but_not_the_iteration(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=1)
    run.baseline(far=1.0, rca=False)
    run.commit("baseline", "loop_stop", status="error", summary="prepare_inference_spec failed")
    assert run.state["status"] == "failed"
    assert run.state["iterations"]["baseline"]["status"] == "complete"
    run.commit("baseline", "loop_stop", run.stop_fields("metric_met"))
    assert run.state["status"] == "complete"


def test_a_failed_run_accepts_no_skip_and_no_skip_outside_mining_and_generation(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.baseline()
    assert "may be skipped" in str(run.refused("iter1", "routing", skipped=True))
    run.commit("iter1", "routing", run.routing_fields("iter1"))
    err = run.refused("iter1", "anomalygen", run.anomalygen_fields("iter1"), skipped=True)
    assert "a skipped stage records no artifacts" in str(err)


# ---------------------------------------------------------------------------------------------------------
# The Phase 1 pre-seed and Phase 3 registration


def test_preseed_records_phase1_winner_as_an_ordinary_baseline_train_commit(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
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


def test_preseed_needs_the_checkpoint_copied_into_the_baseline_train_dir(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    phase1 = tmp_path / "automl" / "best.pth"
    phase1.parent.mkdir()
    phase1.write_bytes(b"weights")
    before = run.path.read_bytes()
    with pytest.raises(StateError, match="is outside"):
        preseed_baseline(
            run.rd, best_ckpt_path=str(phase1), train_metric=None, training_spec=str(phase1), summary="reuse"
        )
    assert run.path.read_bytes() == before


def test_source_is_reserved_for_the_baseline_preseed(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    err = run.refused("baseline", "train", {**run.train_fields("baseline"), "source": "manual"})
    assert "'manual' is not allowed" in str(err)
    assert "automl_phase1" in str(err)
    run.baseline()
    iteration_fields = {**run.train_fields("iter1"), "source": "automl_phase1"}
    run.iteration_until_merge("iter1")
    assert "only allowed on baseline" in str(run.refused("iter1", "train", iteration_fields))


def test_phase3_registers_under_final_automl_only_after_the_loop_completed(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=1)
    run.baseline(far=1.0, rca=False)
    err = run.refused("final_automl", "train", run.train_fields("final_automl"))
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
        run.refused("final_automl", "evaluate", run.evaluate_fields("final_automl", 0.4))
    )
    assert "the run is complete" in str(run.refused("baseline", "rca", run.rca_fields("baseline")))


def test_a_failed_phase3_leaves_the_loops_result_standing_and_may_be_retried(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=1)
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


def test_a_crash_between_temp_write_and_replace_keeps_the_old_valid_state(
    make_run, tmp_path: Path, monkeypatch
) -> None:
    run = make_run(tmp_path)
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


def test_concurrent_commits_of_the_same_stage_record_it_once(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
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


def test_the_commit_time_must_be_timezone_aware(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(ValueError, match="timezone-aware"):
        commit_stage(
            run.rd,
            StageCommit("baseline", "train", "ok", "t", 1.0, run.train_fields("baseline")),
            now=datetime(2026, 1, 1),
        )


# ---------------------------------------------------------------------------------------------------------
# Run facts: recorded once, kept on resume


def test_a_run_fact_is_recorded_once_and_survives_a_reread(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    split = {"source": "board_hash", "steer_boards": ["b1"], "confirm_boards": ["b2"]}
    record_run_fact(run.rd, "kpi_split", split)
    assert read_state(run.rd)["kpi_split"] == split
    assert record_run_fact(run.rd, "kpi_split", dict(split))["kpi_split"] == split  # same value: no-op


def test_a_different_run_fact_is_refused_and_the_file_is_unchanged(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    record_run_fact(run.rd, "kpi_split", {"source": "board_hash", "steer_boards": ["b1"], "confirm_boards": ["b2"]})
    before = run.path.read_bytes()
    with pytest.raises(StateError) as raised:
        record_run_fact(run.rd, "kpi_split", {"source": "board_hash", "steer_boards": ["b2"], "confirm_boards": []})
    assert "kpi_split" in str(raised.value)
    assert run.path.read_bytes() == before


def test_an_unknown_run_fact_is_refused(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    with pytest.raises(ValueError):
        record_run_fact(run.rd, "anything", {"a": 1})


def test_a_state_without_run_facts_still_reads_and_commits(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    state = read_state(run.rd)
    assert "kpi_split" not in state and "pool_budget" not in state
    assert next_stage(state).stage == "train"


def test_the_pool_budget_stops_the_loop_before_an_iteration_that_would_pass_it(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=5)
    c = run.commit
    c("baseline", "train", run.train_fields("baseline"))
    c("baseline", "evaluate", run.evaluate_fields("baseline", 30.0))
    c("baseline", "rca", run.rca_fields("baseline"))
    # 3 rows mined per iteration (mining_fields); 25 % of a 20-row pool allows 5: 3 used + 3 projected > 5.
    record_run_fact(run.rd, "pool_budget", {"max_pool_share": 0.25, "pool_rows": 20})
    for stage, fields in (
        ("routing", run.routing_fields("iter1")),
        ("anomalygen", run.anomalygen_fields("iter1")),
        ("data_mining", run.mining_fields("iter1")),
        ("data_merge", run.merge_fields("iter1")),
        ("train", run.train_fields("iter1")),
        ("evaluate", run.evaluate_fields("iter1", 20.0)),
    ):
        c("iter1", stage, fields)
    assert next_stage(read_state(run.rd)) == NextStage("iter1", "finalize")
    assert "max_iterations at iter1" in str(run.refused("iter1", "loop_stop", run.stop_fields("max_iterations")))
    c("iter1", "loop_stop", run.stop_fields("pool_budget"))
    assert read_state(run.rd)["stop_reason"] == "pool_budget"


def test_a_pool_budget_stop_is_refused_while_the_next_iteration_fits(make_run, tmp_path: Path) -> None:
    run = make_run(tmp_path, max_iterations=0)
    run.baseline(far=30.0, rca=False)
    record_run_fact(run.rd, "pool_budget", {"max_pool_share": 1.0, "pool_rows": 20})
    refusal = str(run.refused("baseline", "loop_stop", run.stop_fields("pool_budget")))
    assert "the next iteration fits the pool budget" in refusal
