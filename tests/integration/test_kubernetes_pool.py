"""The Kubernetes pool on a real Prefect server: `pools setup --platform kubernetes` and a job's child run.

No Kubernetes API server can run here, so no worker takes the child run: what is real is the Prefect side. The
setup creates the `aoi-kubernetes` pool with our base job template and both deployments, starts no worker and
prints the worker's command; a job dispatched by the pipeline's runner becomes a `tao-job/kubernetes` run whose
job variables the server checked against the pool's template (it refuses ones the template does not accept),
whose Job (`namespace:job-name`, as the worker reports it) the dispatch record carries, and a cancelled
pipeline cancels the child.
"""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.jobs.dispatch import read_dispatch
from aoi_pipeline.jobs.job import TaoJob
from aoi_pipeline.jobs.workpool import WorkPoolJobRunner
from aoi_pipeline.pipeline.job_preview import pool_job_variables
from aoi_pipeline.workers.kubernetes import find_base_job_template, job_variables

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]
AOI = str(Path(sys.executable).parent / "aoi-pipeline")


@pytest.fixture(scope="module")
def kubernetes_pool(prefect_server_url: str, tmp_path_factory: pytest.TempPathFactory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server_url,
        "AOI_PIPELINE_HOME": str(tmp_path_factory.mktemp("aoi-home")),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    setup = subprocess.run(
        [AOI, "pools", "setup", "--platform", "kubernetes"], env=env, capture_output=True, text=True, timeout=600
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    with temporary_settings({PREFECT_API_URL: prefect_server_url}):
        yield setup.stdout


def test_the_setup_creates_the_pool_with_our_template_and_both_deployments(
    kubernetes_pool: str, prefect_server_url: str
) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("aoi-kubernetes")
        jobs = client.read_deployment_by_name("tao-job/kubernetes")
        pipeline = client.read_deployment_by_name("aoi-pipeline/kubernetes")
        workers = client.read_workers_for_work_pool("aoi-kubernetes")

    assert pool.type == "kubernetes"
    assert pool.base_job_template == json.loads(find_base_job_template().read_text(encoding="utf-8"))
    assert jobs.work_pool_name == "aoi-kubernetes"
    assert pipeline.work_pool_name == "local-process" and pipeline.parameters == {"platform": "kubernetes"}
    assert workers == []  # nothing was started on this machine ...
    command = f"PREFECT_API_URL={prefect_server_url} prefect worker start --pool aoi-kubernetes --type kubernetes"
    assert command in kubernetes_pool  # ... the user is told how to start it
    assert "no worker of the pool is online yet" in kubernetes_pool


def test_a_job_becomes_a_child_run_with_its_kubernetes_job_variables_and_is_cancelled_with_the_run(
    kubernetes_pool: str, tmp_path: Path
) -> None:
    from prefect import get_client

    workspace = tmp_path / "ws"
    config = config_from_mapping(
        {
            "workspace": str(workspace),
            "platform": "kubernetes",
            "kubernetes": {"namespace": "aoi", "workspace_pvc": "aoi-data", "image_pull_secret": "ngc"},
        }
    )
    job = TaoJob(
        name=f"trial_{uuid.uuid4().hex[:6]}.train",
        action="train",
        image=config.images.train,
        spec={},
        results_dir=workspace / "results" / "trial",
        gpus=2,
    )
    cancel = threading.Event()
    lines: list[str] = []
    runner = WorkPoolJobRunner(
        "kubernetes", cancel=cancel, variables=pool_job_variables(config), log=lines.append, poll_s=0.2
    )
    results: list[Any] = []
    # The thread runs in a copy of this context, so it talks to the test's server (settings live in a context).
    context = contextvars.copy_context()
    waiting = threading.Thread(target=context.run, args=(lambda: results.append(runner.run(job)),))
    waiting.start()
    try:
        record = _wait_for(lambda: _recorded(job, "flow_run_id"))
        # What the prefect-kubernetes worker reports once it created the Job: `namespace:job-name`.
        job_name = f"{job_variables(job, config)['name']}-x7k2q"
        with get_client(sync_client=True) as client:
            client.update_flow_run(uuid.UUID(record.flow_run_id), infrastructure_pid=f"aoi:{job_name}")
        record = _wait_for(lambda: _recorded(job, "infrastructure_id"))
    finally:
        cancel.set()  # the pipeline is cancelled while its job waits
        waiting.join(timeout=120)

    with get_client(sync_client=True) as client:
        child = client.read_flow_run(uuid.UUID(record.flow_run_id))
    final = read_dispatch(job.results_dir)
    assert record.infrastructure_id == f"aoi:{job_name}" and f"running in aoi:{job_name}" in "\n".join(lines)
    assert results and results[0].status == "cancelled" and final is not None and final.state == "cancelled"
    assert child.state is not None and child.state.type.value == "CANCELLED"
    assert child.job_variables == job_variables(job, config)
    assert child.job_variables["gpu_limit"] == 2
    assert child.job_variables["workspace_volume"]["persistentVolumeClaim"] == {"claimName": "aoi-data"}


def _recorded(job: TaoJob, field: str) -> Any:
    record = read_dispatch(job.results_dir)
    return record if record is not None and getattr(record, field) else None


def _wait_for(found: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while (value := found()) is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return value


def test_the_server_refuses_job_variables_the_template_does_not_accept(kubernetes_pool: str) -> None:
    from prefect.deployments import run_deployment
    from prefect.exceptions import PrefectHTTPStatusError

    with pytest.raises(PrefectHTTPStatusError, match="gpu_limit"):
        run_deployment(
            "tao-job/kubernetes",
            parameters={"job": {}},
            job_variables={"gpu_limit": "two"},
            timeout=0,
        )
