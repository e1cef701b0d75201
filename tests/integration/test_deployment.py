"""`prefect deployment run aoi-pipeline/local` on a real server with a process worker, as the README shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.pipeline.preflight import run_preflight
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

# A whole pipeline run through a real server and worker: minutes on a loaded two-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def _prefect(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "prefect"), *args]
    return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def deployed_env(prefect_server_url: str) -> dict[str, str]:
    """The environment of a user whose server has the local pool and the aoi-pipeline/local deployments."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server_url, "PWD": str(REPO), "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    created = _prefect("work-pool", "create", "local-process", "--type", "process", env=env)
    assert created.returncode == 0 or "already exists" in created.stdout + created.stderr, created.stderr
    # Only the local pair: the other deployments name pools whose worker types need their own services.
    deployed = _prefect("--no-prompt", "deploy", "--name", "aoi-pipeline/local", "--name", "tao-job/local", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    return env


def test_a_deployment_run_without_its_config_fails_with_a_non_zero_exit_and_names_the_parameter(
    deployed_env: dict[str, str],
) -> None:
    # The server checks parameters against the flow's signature, so no run is created that would fail later.
    run = _prefect(
        "deployment", "run", "aoi-pipeline/local", "--params", json.dumps({"run_name": "r"}), env=deployed_env
    )
    assert run.returncode != 0, run.stdout + run.stderr
    assert "config" in run.stdout + run.stderr
    assert "Created flow run" not in run.stdout


def test_the_local_deployment_runs_a_preapproved_plan_on_a_process_worker(
    deployed_env: dict[str, str], tmp_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    write_workspace(workspace, SynthSpec(boards=8, size=32, seed=11))
    small = {"recommendations": 1, "num_epochs": 1, "batch_size": 8}
    config = {
        "workspace": str(workspace),
        "gpus": 0,
        "kpi_target": "FAR < 50% at Recall=100%",
        "spec_overrides": ["dataset.classify.image_width=32", "dataset.classify.image_height=32"],
        "phase1": small,
        "deft": {"max_iterations": 0, "num_epochs": 1},
        "phase3": small,
    }
    plan = run_preflight(config_from_mapping(config), run_name="run_deployed").plan_hash
    env = deployed_env
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", "local-process", "--run-once"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        params = {"config": config, "run_name": "run_deployed", "preapproved_plan_hash": plan}
        run = _prefect(
            "deployment",
            "run",
            "aoi-pipeline/local",
            "--params",
            json.dumps(params),
            "--watch",
            "--watch-timeout",
            "600",
            env=env,
            timeout=660,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        worker.kill()
        worker_output = worker.communicate()[0]
    best = json.loads((workspace / "results" / "run_deployed" / "best_model.json").read_text())
    assert Path(best["checkpoint"]).is_file(), worker_output[-3000:]
