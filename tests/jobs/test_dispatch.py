"""The dispatch record of a work-pool job and how a child run's end becomes a JobResult."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aoi_pipeline.jobs.dispatch import (
    DispatchRecord,
    child_result,
    dispatch_path,
    in_flight,
    read_dispatch,
    set_aside_attempt,
    write_dispatch,
)
from aoi_pipeline.jobs.job import TaoJob

START = datetime(2025, 1, 1, tzinfo=UTC)


def make_job(results_dir: Path) -> TaoJob:
    return TaoJob(name="t-train", action="train", image="img:1", spec={"train": {}}, results_dir=results_dir)


def write_job_record(results_dir: Path, result: dict | None) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "job.json").write_text(json.dumps({"state": "x", "result": result}), encoding="utf-8")


def end(job: TaoJob, state: str, message: str | None = None):
    return child_result(
        job,
        final_state=state,
        state_message=message,
        infrastructure_id="unix://docker.sock:abc123",
        started_at=START,
        finished_at=START + timedelta(seconds=7),
    )


def test_the_record_lies_beside_the_job_folder_and_round_trips(tmp_path: Path) -> None:
    results = tmp_path / "trial_001" / "train"
    record = write_dispatch(results, DispatchRecord("t-train", "docker", "tao-job/docker", "key-1"))

    assert dispatch_path(results) == tmp_path / "trial_001" / "train.dispatch.json"
    assert not results.exists()  # the child's launcher needs an empty (or absent) results dir
    assert read_dispatch(results) == record
    assert in_flight(results)


@pytest.mark.parametrize(("state", "flying"), [("submitted", True), ("running", True), ("success", False)])
def test_only_a_job_whose_end_was_not_seen_is_in_flight(tmp_path: Path, state: str, flying: bool) -> None:
    write_dispatch(tmp_path / "job", DispatchRecord("j", "docker", "tao-job/docker", "k", state=state))

    assert in_flight(tmp_path / "job") is flying


def test_no_or_an_unreadable_record_is_not_in_flight(tmp_path: Path) -> None:
    assert not in_flight(tmp_path / "job")
    dispatch_path(tmp_path / "job").write_text("{broken", encoding="utf-8")
    assert read_dispatch(tmp_path / "job") is None and not in_flight(tmp_path / "job")


def test_set_aside_keeps_every_attempt(tmp_path: Path) -> None:
    job_dir = tmp_path / "train"
    for _ in range(2):
        job_dir.mkdir()
        (job_dir / "f").write_text("x")
        set_aside_attempt(job_dir, "lost")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.lost1", "train.lost2"]
    assert set_aside_attempt(job_dir) is None


def test_the_childs_job_record_decides_how_the_job_ended(tmp_path: Path) -> None:
    job = make_job(tmp_path / "train")
    failure = {"kind": "program", "reason": "the spec is invalid", "evidence": "ConfigKeyError"}
    write_job_record(job.results_dir, {"status": "failed", "exit_code": 1, "failure": failure})

    result = end(job, "FAILED", "ProgramJobError: ...")

    assert (result.status, result.exit_code) == ("failed", 1)
    assert result.failure is not None and result.failure.kind == "program"
    assert result.failure.reason == "the spec is invalid"
    assert result.external_id == "unix://docker.sock:abc123"
    assert result.duration_s == 7.0
    assert result.log_path == job.results_dir.absolute() / "job.log"


def test_a_recorded_infrastructure_failure_stays_retriable(tmp_path: Path) -> None:
    job = make_job(tmp_path / "train")
    failure = {"kind": "infrastructure", "reason": "killed by SIGKILL", "evidence": ""}
    write_job_record(job.results_dir, {"status": "failed", "exit_code": -9, "failure": failure})

    result = end(job, "FAILED")

    assert result.failure is not None and result.failure.kind == "infrastructure"


def test_a_crashed_child_without_a_result_is_an_infrastructure_failure(tmp_path: Path) -> None:
    job = make_job(tmp_path / "train")
    write_job_record(job.results_dir, None)  # the launcher started, then the container was lost

    result = end(job, "CRASHED", "Flow run infrastructure exited with non-zero status code 137.")

    assert result.status == "failed"
    assert result.failure is not None and result.failure.kind == "infrastructure"
    assert "status code 137" in result.failure.reason


def test_a_failed_child_that_never_ran_the_job_is_a_program_failure(tmp_path: Path) -> None:
    result = end(make_job(tmp_path / "train"), "FAILED", "ConfigError: environment variable NGC_API_KEY is not set")

    assert result.failure is not None and result.failure.kind == "program"
    assert "NGC_API_KEY is not set" in result.failure.reason


def test_a_cancelled_child_is_a_cancelled_job_even_after_writing_a_result(tmp_path: Path) -> None:
    job = make_job(tmp_path / "train")
    write_job_record(job.results_dir, {"status": "failed", "exit_code": -15, "failure": None})

    result = end(job, "CANCELLED")

    assert (result.status, result.failure) == ("cancelled", None)


def test_a_completed_child_with_its_success_recorded_is_a_success(tmp_path: Path) -> None:
    job = make_job(tmp_path / "train")
    write_job_record(job.results_dir, {"status": "success", "exit_code": 0, "failure": None})

    assert end(job, "COMPLETED").ok
