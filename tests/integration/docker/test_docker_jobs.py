"""Jobs on the Docker pool: one real training run, cancellation, and a parent killed with kill -9 and rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from aoi_pipeline.jobs.dispatch import read_dispatch
from aoi_pipeline.jobs.job import TaoJob
from aoi_pipeline.jobs.workpool import WorkPoolJobRunner
from aoi_pipeline.pipeline.run_specs import training_spec
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

from .conftest import JOB_IMAGE, job_containers, set_tao_job_env, wait_for_no_containers
from .test_docker_pipeline import docker_config

# Each job is a container start plus a Prefect engine start: minutes on a shared two-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
AOI = str(Path(sys.executable).parent / "aoi-pipeline")


def test_a_real_training_job_trains_in_the_job_image(docker_pool: dict[str, str], tmp_path: Path) -> None:
    from aoi_pipeline.config import config_from_mapping
    from aoi_pipeline.core.workspace import Workspace
    from aoi_pipeline.pipeline.run_specs import workspace_base_spec

    workspace = tmp_path / "workspace"
    write_workspace(workspace, SynthSpec(boards=4, size=32, seed=3))
    overrides = ["dataset.classify.image_width=32", "dataset.classify.image_height=32", "dataset.classify.workers=0"]
    config = config_from_mapping({"workspace": str(workspace), "spec_overrides": overrides})
    base = workspace_base_spec(config, Workspace.at(workspace))
    results = workspace / "results" / "real-train"
    spec = training_spec(base, results_dir=results, num_epochs=1, batch_size=8)
    set_tao_job_env({})
    job = TaoJob(name="real-train", action="train", image=JOB_IMAGE, spec=spec, results_dir=results)

    result = WorkPoolJobRunner("docker", shared_dirs=[workspace]).run(job)

    assert result.ok, (result.failure, (results / "job.log").read_text()[-3000:])
    assert list(results.glob("model_epoch_*.pth")), "the container trained nothing"
    assert result.external_id and result.external_id == read_dispatch(results).infrastructure_id


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _running_dispatch(run_dir: Path) -> list[dict]:
    records = [json.loads(path.read_text()) for path in run_dir.rglob("*.dispatch.json")]
    return [record for record in records if record["state"] == "running"]


def test_a_parent_killed_with_kill_9_and_rerun_reattaches_instead_of_launching_again(
    docker_pool: dict[str, str], fake_image: str, tmp_path: Path
) -> None:
    # Phase 1 off: the baseline's training job is the one caught running (a Phase 1 sweep proposes an
    # interrupted trial again as a new trial rather than resuming it).
    config = docker_config(tmp_path, fake_image, phase1={"enabled": False}, phase3={"enabled": False})
    calls = tmp_path / "workspace" / "calls.jsonl"
    set_tao_job_env({"FAKE_RUNTIME_CALLS": str(calls), "FAKE_RUNTIME_SLEEP": "train:12"})
    run_name = f"run_kill_{uuid.uuid4().hex[:6]}"
    run_dir = tmp_path / "workspace" / "results" / run_name
    command = [AOI, "run", "--config", str(config), "--yes", "--run-name", run_name]

    parent = subprocess.Popen(command, env=docker_pool, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: _running_dispatch(run_dir), 180, "the first training container")
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    [in_flight] = _running_dispatch(run_dir)

    rerun = subprocess.run(command, env=docker_pool, capture_output=True, text=True, timeout=480)

    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    launched = [json.loads(line) for line in calls.read_text().splitlines()]
    specs = [call["spec"] for call in launched]
    assert len(specs) == len(set(specs)), "a job ran twice"
    records = [json.loads(path.read_text()) for path in run_dir.rglob("*.dispatch.json")]
    same = [record for record in records if record["idempotency_key"] == in_flight["idempotency_key"]]
    assert [record["flow_run_id"] for record in same] == [in_flight["flow_run_id"]]
    assert same[0]["state"] == "success"
    assert "re-attaching to its child run" in rerun.stdout + rerun.stderr
    assert wait_for_no_containers() == []


def test_cancelling_the_parent_run_cancels_its_children_and_leaves_no_container(
    docker_pool: dict[str, str], fake_image: str, tmp_path: Path
) -> None:
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    from aoi_pipeline.config import load_config
    from aoi_pipeline.pipeline.preflight import run_preflight

    config_path = docker_config(tmp_path, fake_image, phase1={"enabled": False}, phase3={"enabled": False})
    set_tao_job_env({"FAKE_RUNTIME_SLEEP": "train:300"})
    run_name = f"run_cancel_{uuid.uuid4().hex[:6]}"
    run_dir = tmp_path / "workspace" / "results" / run_name
    config = load_config(config_path)
    plan = run_preflight(config, run_name=run_name).plan_hash
    env = {**docker_pool, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "local-process"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        params = {"config": config.model_dump(mode="json"), "run_name": run_name, "preapproved_plan_hash": plan}
        parent = run_deployment("aoi-pipeline/docker", parameters=params, timeout=0)
        _wait_for(lambda: _running_dispatch(run_dir) and job_containers(), 240, "a running job container")
        [record] = _running_dispatch(run_dir)
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(parent.id, Cancelling(message="cancelled by the test"), force=True)

            def ended(flow_run_id: uuid.UUID, expected: str) -> bool:
                state = client.read_flow_run(flow_run_id).state
                return state is not None and state.type.value == expected

            _wait_for(lambda: ended(parent.id, "CANCELLED"), 120, "the parent run to be cancelled")
            _wait_for(lambda: ended(uuid.UUID(record["flow_run_id"]), "CANCELLED"), 120, "the child to be cancelled")
        assert wait_for_no_containers(90) == []
    finally:
        os.killpg(worker.pid, signal.SIGINT)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
