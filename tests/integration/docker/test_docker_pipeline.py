"""The pipeline end to end on the Docker pool: every job a child run in a container, and no secret anywhere.

A real Prefect server, the prefect-docker worker and dockerd; the jobs run the fake runtime inside the job
image. The sentinel NGC key reaches each job (the fake runtime prints it) and must appear nowhere: not in the
logs on the server, the artifacts, the run's files and report, nor in `docker inspect` of any container.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

from .conftest import (
    SENTINEL_NGC,
    SENTINEL_REGISTRY,
    ContainerInspector,
    set_tao_job_env,
    wait_for_no_containers,
)

# Each job is a container start plus a Prefect engine start: minutes on a shared two-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def docker_config(tmp_path: Path, image: str, **changes: object) -> Path:
    workspace = tmp_path / "workspace"
    write_workspace(workspace, SynthSpec(boards=8, size=32, seed=11))
    small = {"recommendations": 1, "num_epochs": 1, "batch_size": 8}
    config = {
        "workspace": str(workspace),
        "platform": "docker",
        "images": dict.fromkeys(("train", "inference", "embed", "sdg"), image),
        "gpus": 0,
        "kpi_target": "FAR < 50% at Recall=100%",
        "spec_overrides": ["dataset.classify.image_width=32", "dataset.classify.image_height=32"],
        "phase1": small,
        "deft": {"max_iterations": 0, "num_epochs": 1},
        "phase3": small,
        **changes,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_cli(env: dict[str, str], *args: str, timeout: float = 480) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "aoi-pipeline"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def server_text() -> str:
    """Every log line and artifact on the server, as one text."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter

    with get_client(sync_client=True) as client:
        logs = []
        offset = 0
        while batch := client.read_logs(LogFilter(), limit=200, offset=offset):
            logs += [log.message for log in batch]
            offset += len(batch)
        artifacts = client.read_artifacts()
        runs = client.read_flow_runs(limit=200)
    return "\n".join(
        [*logs, *(json.dumps(a.data, default=str) for a in artifacts), *(r.model_dump_json() for r in runs)]
    )


def test_every_job_runs_once_in_a_container_of_the_pool_and_no_secret_leaks(
    docker_pool: dict[str, str], fake_image: str, tmp_path: Path
) -> None:
    from prefect import get_client

    config = docker_config(tmp_path, fake_image, phase3={"enabled": False})
    calls = tmp_path / "workspace" / "calls.jsonl"
    set_tao_job_env({"FAKE_RUNTIME_CALLS": str(calls)})
    run_name = f"run_docker_{uuid.uuid4().hex[:6]}"

    with ContainerInspector() as inspector:
        done = run_cli(docker_pool, "run", "--config", str(config), "--yes", "--run-name", run_name)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run_dir = tmp_path / "workspace" / "results" / run_name
    records = [json.loads(path.read_text()) for path in sorted(run_dir.rglob("*.dispatch.json"))]
    launched = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(records) >= 3 and len(launched) == len(records)  # each job ran exactly once
    assert {call["action"] for call in launched} == {"train", "inference"}
    with get_client(sync_client=True) as client:
        for record in records:
            assert record["state"] == "success" and record["deployment"] == "tao-job/docker"
            child = client.read_flow_run(uuid.UUID(record["flow_run_id"]))
            assert child.state is not None and child.state.is_completed()
            assert child.infrastructure_pid == record["infrastructure_id"]
            container_id = record["infrastructure_id"].rsplit(":", 1)[1]
            assert container_id in inspector.inspected or any(
                c.startswith(container_id[:12]) for c in inspector.inspected
            )
    assert len(inspector.inspected) == len(records)
    assert wait_for_no_containers() == []

    # The key reached the jobs (the fake runtime printed it) but only its redaction was kept.
    job_logs = [path.read_text() for path in run_dir.rglob("job.log")]
    assert any("using NGC key <redacted>" in text for text in job_logs)
    files = [path.read_bytes().decode("utf-8", "replace") for path in run_dir.rglob("*") if path.is_file()]
    places = {
        "command output": done.stdout + done.stderr,
        "run files, state and report": "\n".join(files),
        "server logs, artifacts and runs": server_text(),
        "docker inspect": "\n".join(inspector.inspected.values()),
    }
    for where, text in places.items():
        for secret in (SENTINEL_NGC, SENTINEL_REGISTRY):
            assert secret not in text, f"a secret value appears in the {where}"
