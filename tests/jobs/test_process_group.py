"""Stopping the jobs a dead run left running, before their folders are redone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aoi_pipeline.jobs.process_group import group_alive, stop_leftover_jobs
from aoi_pipeline.pipeline.job_runner import set_aside

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def leftover_job(folder: Path, sleepers: list, *, state: str = "running", cwd: Path | None = None) -> int:
    """A job process of a dead run: its own group, working in its folder, recorded as `state`."""
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(SLEEP, cwd=cwd or folder, start_new_session=True)
    sleepers.append(process)
    record = {"launcher": "local", "state": state, "external_id": f"pid:{process.pid}"}
    (folder / "job.json").write_text(json.dumps(record))
    return process.pid


def gone_soon(group: int) -> bool:
    deadline = time.monotonic() + 5
    while group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not group_alive(group)


def test_setting_an_interrupted_folder_aside_stops_the_job_still_running_in_it(tmp_path, sleepers):
    stage = tmp_path / "iter1" / "train"
    group = leftover_job(stage / "job", sleepers)

    set_aside(stage)

    assert gone_soon(group), "the leftover job survived the resume of its stage"
    assert (tmp_path / "iter1" / "train.interrupted1" / "job" / "job.json").is_file()


def test_finished_records_and_processes_working_elsewhere_are_left_alone(tmp_path, sleepers):
    finished = leftover_job(tmp_path / "a", sleepers, state="success")
    elsewhere = leftover_job(tmp_path / "b", sleepers, cwd=tmp_path)  # a recycled pid: not this job

    assert stop_leftover_jobs(tmp_path) == []

    assert group_alive(finished) and group_alive(elsewhere)


def test_a_job_ignoring_sigterm_is_killed(tmp_path, sleepers):
    folder = tmp_path / "job"
    folder.mkdir()
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(120)",
    ]
    process = subprocess.Popen(stubborn, cwd=folder, start_new_session=True, stdout=subprocess.PIPE, text=True)
    sleepers.append(process)
    (folder / "job.json").write_text(json.dumps({"state": "pending", "external_id": f"pid:{process.pid}"}))
    # Only once it ignores SIGTERM does stopping it exercise the SIGKILL after the grace period.
    assert process.stdout is not None and process.stdout.readline() == "ready\n"

    assert stop_leftover_jobs(tmp_path, grace_s=0.5) == ["job"]

    assert gone_soon(process.pid)
