"""Slurm's job states map to the outcomes the pipeline acts on, tested on recorded scontrol and sacct output."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoi_pipeline.workers.slurm.states import (
    SlurmJobRecord,
    classify,
    parse_key_values,
    record_from_sacct,
    record_from_scontrol,
)

RECORDED = Path(__file__).parent / "recorded"


def _scontrol(name: str) -> SlurmJobRecord:
    return record_from_scontrol((RECORDED / f"scontrol-{name}.txt").read_text())


def _sacct(name: str, job_id: str) -> SlurmJobRecord:
    record = record_from_sacct((RECORDED / f"sacct-{name}.txt").read_text(), job_id)
    assert record is not None
    return record


def test_scontrol_pairs_keep_keys_with_colons_and_slashes_and_empty_values() -> None:
    pairs = parse_key_values(
        "JobId=7 JobName=a b AllocNode:Sid=localhost:5686 Socks/Node=* Power= TresPerNode=gres:gpu:1"
    )
    assert pairs["JobName"] == "a b"
    assert pairs["AllocNode:Sid"] == "localhost:5686"
    assert pairs["Socks/Node"] == "*"
    assert pairs["Power"] == ""
    assert pairs["TresPerNode"] == "gres:gpu:1"


def test_a_recorded_completed_job_is_read_and_is_a_success() -> None:
    record = _scontrol("completed")
    assert (record.job_id, record.state, record.exit_code, record.memory) == ("1", "COMPLETED", 0, "500M")
    outcome = classify(record, requested_time_limit=None, requested_memory="500M")
    assert (outcome.kind, outcome.exit_code) == ("success", 0)


def test_a_failed_job_is_a_program_error_with_the_programs_exit_code() -> None:
    outcome = classify(_scontrol("failed-exit3"), requested_time_limit=None, requested_memory=None)
    assert (outcome.kind, outcome.state, outcome.exit_code) == ("program", "FAILED", 3)
    assert "exited with code 3" in outcome.reason
    accounted = classify(_sacct("failed", "4111"), requested_time_limit="01:00:00", requested_memory="8G")
    assert (accounted.kind, accounted.exit_code) == ("program", 2)


def test_a_failed_job_killed_by_a_signal_reports_the_signal() -> None:
    record = SlurmJobRecord(job_id="9", state="FAILED", exit_code=0, signal=11)
    outcome = classify(record, requested_time_limit=None, requested_memory=None)
    assert (outcome.kind, outcome.exit_code) == ("program", 139)
    assert "signal 11" in outcome.reason


def test_a_timeout_at_the_limit_the_job_asked_for_is_a_timed_out_hard_stop() -> None:
    record = _scontrol("timeout")
    assert (record.state, record.time_limit, record.signal) == ("TIMEOUT", "00:01:00", 15)
    outcome = classify(record, requested_time_limit="1", requested_memory=None)
    assert outcome.kind == "timed_out"
    assert "asked for (1" in outcome.reason


def test_a_timeout_at_a_limit_the_cluster_imposed_is_an_infrastructure_fault() -> None:
    record = _scontrol("timeout")
    assert classify(record, requested_time_limit=None, requested_memory=None).kind == "infrastructure"
    shortened = classify(record, requested_time_limit="04:00:00", requested_memory=None)
    assert shortened.kind == "infrastructure"
    assert "cluster's time limit 00:01:00" in shortened.reason
    assert "asked for 04:00:00" in shortened.reason


def test_a_node_set_down_under_a_running_job_is_an_infrastructure_fault() -> None:
    record = _scontrol("node-fail")
    assert (record.state, record.reason, record.nodes) == ("NODE_FAIL", "NodeDown", "localhost")
    outcome = classify(record, requested_time_limit=None, requested_memory=None, seen_running=True)
    assert outcome.kind == "infrastructure"
    assert "NODE_FAIL on localhost" in outcome.reason


def test_a_requeued_job_is_an_infrastructure_fault() -> None:
    record = _scontrol("requeued")
    assert (record.state, record.restarts) == ("PENDING", 1)
    assert classify(record, requested_time_limit=None, requested_memory=None).kind == "infrastructure"


def test_a_pending_job_seen_running_before_was_requeued_even_without_a_restart_count() -> None:
    record = SlurmJobRecord(job_id="5", state="PENDING", reason="BeginTime")
    assert classify(record, requested_time_limit=None, requested_memory=None).kind == "pending"
    assert classify(record, requested_time_limit=None, requested_memory=None, seen_running=True).kind == (
        "infrastructure"
    )


@pytest.mark.parametrize(
    ("name", "job_id", "state"), [("preempted", "4108", "PREEMPTED"), ("boot-fail", "4109", "BOOT_FAIL")]
)
def test_preemption_and_boot_failure_are_infrastructure_faults(name: str, job_id: str, state: str) -> None:
    outcome = classify(_sacct(name, job_id), requested_time_limit="04:00:00", requested_memory="64G")
    assert (outcome.kind, outcome.state) == ("infrastructure", state)


def test_out_of_memory_is_reported_as_such_with_the_memory_asked_for() -> None:
    record = _sacct("out-of-memory", "4107")
    outcome = classify(record, requested_time_limit="04:00:00", requested_memory="16G")
    assert (outcome.kind, outcome.state) == ("program", "OUT_OF_MEMORY")
    assert "ran out of host memory on gpu-node07" in outcome.reason
    assert "asked for 16G" in outcome.reason
    unasked = classify(record, requested_time_limit=None, requested_memory=None)
    assert "asked for 16G" in unasked.reason  # sacct's ReqMem when the job variable was not set


def test_cancelled_jobs_are_cancellations_in_both_formats() -> None:
    assert classify(_scontrol("cancelled"), requested_time_limit=None, requested_memory=None).kind == "cancelled"
    record = _sacct("cancelled", "4110")
    assert record.state == "CANCELLED"
    assert classify(record, requested_time_limit=None, requested_memory=None).kind == "cancelled"


def test_an_unknown_terminal_state_stops_rather_than_retries() -> None:
    outcome = classify(SlurmJobRecord("3", "SOMETHING_NEW"), requested_time_limit=None, requested_memory=None)
    assert outcome.kind == "program"
    assert outcome.finished


def test_running_and_pending_are_not_finished() -> None:
    running = classify(SlurmJobRecord("3", "RUNNING"), requested_time_limit=None, requested_memory=None)
    pending = classify(SlurmJobRecord("3", "PENDING"), requested_time_limit=None, requested_memory=None)
    assert (running.finished, pending.finished) == (False, False)


def test_sacct_output_without_the_job_and_text_that_is_not_scontrol_are_refused() -> None:
    assert record_from_sacct("4111|FAILED|2:0|01:00:00|8G|n1\n", "4112") is None
    with pytest.raises(ValueError):
        record_from_scontrol("slurm_load_jobs error: Invalid job id specified")


def test_a_job_that_could_not_launch_says_so_instead_of_a_bogus_signal() -> None:
    record = SlurmJobRecord(job_id="7", state="FAILED", reason="JobLaunchFailure", exit_code=0, signal=53)
    outcome = classify(record, requested_time_limit=None, requested_memory=None)
    assert outcome.kind == "program"
    assert "JobLaunchFailure" in outcome.reason
    assert "signal" not in outcome.reason
