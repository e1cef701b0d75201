"""`aoi-pipeline status` on a real Prefect server: a run of any age by name, a --limit the server refuses as an
argument error, and a non-zero exit for a run that does not exist."""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = [pytest.mark.integration]


def _create_runs(api_url: str, names: list[str]) -> None:
    from prefect import flow, get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    @flow(name="aoi-pipeline")
    def stand_in() -> None:
        """Only its name matters: runs of the pipeline's flow, created (not executed) in order."""

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        for name in names:
            client.create_flow_run(stand_in, name=name)


def test_status_finds_an_old_run_by_name_refuses_a_huge_limit_and_fails_for_an_unknown_run(
    prefect_server_url: str, aoi_command: list[str]
) -> None:
    _create_runs(prefect_server_url, ["run_status_oldest", *(f"run_status_newer_{index}" for index in range(12))])
    env = {**os.environ, "PREFECT_API_URL": prefect_server_url}

    def status(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*aoi_command, "status", *argv], env=env, capture_output=True, text=True, timeout=120)

    newest = status()
    assert newest.returncode == 0, newest.stderr
    assert "run_status_oldest" not in newest.stdout, "the default listing should show only the newest runs"
    found = status("run_status_oldest")
    assert found.returncode == 0, found.stderr
    assert [line.split()[0] for line in found.stdout.splitlines()[1:]] == ["run_status_oldest"]

    huge = status("--limit", "100000")
    assert huge.returncode == 2, huge.stdout + huge.stderr
    assert "--limit 100000" in huge.stderr and "usage: aoi-pipeline" in huge.stderr
    assert "Traceback" not in huge.stderr

    absent = status("run_that_never_was")
    assert absent.returncode == 1 and "run_that_never_was" in absent.stderr
