"""The prefect-kubernetes worker's API calls and our Job reading, against a Kubernetes API stand-in on 127.0.0.1.

No real API server can run here, so a small aiohttp application (`kubernetes_stand_in`) answers the few
endpoints involved: create a Job, read a Job's status, list its pods by the `job-name` label, delete a Job. It
stores objects verbatim and records every request; the tests set the Job's and pods' status to drive it through
Running, Succeeded and Failed. What this cannot show is anything a real cluster adds: scheduling, GPU
accounting, kubelet evictions, the Job controller.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from kubernetes_stand_in import KubernetesStandIn, kubeconfig

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.jobs.job import TaoJob
from aoi_pipeline.workers.kubernetes import read_job_outcome, render_job_configuration


async def _with_stand_in(tmp_path: Path, scenario: Callable[..., Awaitable[None]]) -> KubernetesStandIn:
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.credentials import KubernetesClusterConfig
    from prefect_kubernetes.worker import KubernetesWorker

    stand_in = KubernetesStandIn()
    server = TestServer(stand_in.app, host="127.0.0.1")
    await server.start_server()
    try:
        config = config_from_mapping({"workspace": str(tmp_path / "ws")})
        job = TaoJob(
            name="trial_001.train", action="train", image=config.images.train, spec={}, results_dir=tmp_path, gpus=1
        )
        configuration = await render_job_configuration(job, config)
        configuration.cluster_config = KubernetesClusterConfig(
            config=kubeconfig(str(server.make_url(""))), context_name="stand-in"
        )
        flow_run = FlowRun(id=uuid.uuid4(), name=job.name, flow_id=uuid.uuid4())
        configuration.prepare_for_flow_run(flow_run)
        worker = KubernetesWorker(work_pool_name="aoi-kubernetes", create_pool_if_not_found=False)
        await scenario(stand_in, worker, configuration, flow_run)
    finally:
        await server.close()
    return stand_in


def run_scenario(tmp_path: Path, scenario: Callable[..., Awaitable[None]]) -> KubernetesStandIn:
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    # The worker's flow-run logger would otherwise start a Prefect server only to ship its log lines.
    with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: False}):
        return asyncio.run(_with_stand_in(tmp_path, scenario))


async def submit(worker: Any, configuration: Any, flow_run: Any) -> tuple[str, str]:
    result = await worker.run(flow_run, configuration)
    namespace, name = result.identifier.split(":")
    return namespace, name


async def outcome_of(worker: Any, configuration: Any, namespace: str, name: str):
    async with worker._get_configured_kubernetes_client(configuration) as client:
        return await read_job_outcome(client, namespace, name)


def test_the_worker_creates_the_rendered_job_with_its_gpu_limit_and_volumes(tmp_path: Path) -> None:
    created: dict[str, Any] = {}

    async def scenario(stand_in, worker, configuration, flow_run) -> None:
        namespace, name = await submit(worker, configuration, flow_run)
        created.update(stand_in.jobs[(namespace, name)], identifier=f"{namespace}:{name}")

    stand_in = run_scenario(tmp_path, scenario)
    posts = [request for request in stand_in.requests if request[0] == "POST"]
    assert [path for _, path, _, _ in posts] == ["/apis/batch/v1/namespaces/default/jobs"]
    body = posts[0][3]
    pod_spec = body["spec"]["template"]["spec"]
    assert body["metadata"]["generateName"] == "trial-001-train-"
    assert created["identifier"].startswith("default:trial-001-train-")
    assert pod_spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert pod_spec["volumes"][0] == {"name": "workspace", "persistentVolumeClaim": {"claimName": "aoi-workspace"}}
    assert pod_spec["containers"][0]["volumeMounts"][0] == {"name": "workspace", "mountPath": str(tmp_path / "ws")}


RUNNING = ({"active": 1}, [{"status": {"phase": "Running"}}])
SUCCEEDED = (
    {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
    [{"status": {"phase": "Succeeded"}}],
)
FAILED_JOB = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
EXIT_1 = {"terminated": {"exitCode": 1, "reason": "Error", "message": "ERROR: dataset CSV has no rows"}}
UNSCHEDULABLE = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
}


@pytest.mark.parametrize(
    ("final", "phase", "kind"),
    [
        (
            (FAILED_JOB, [{"status": {"phase": "Failed", "containerStatuses": [{"name": "c", "state": EXIT_1}]}}]),
            "failed",
            "program",
        ),
        (
            (FAILED_JOB, [{"status": {"phase": "Failed", "reason": "Evicted", "message": "DiskPressure"}}]),
            "failed",
            "infrastructure",
        ),
        (
            ({"active": 1}, [{"status": {"phase": "Pending", "conditions": [UNSCHEDULABLE]}}]),
            "pending",
            "infrastructure",
        ),
        (SUCCEEDED, "succeeded", None),
    ],
    ids=["exit-code-1", "evicted", "unschedulable", "succeeded"],
)
def test_a_job_driven_through_its_states_is_read_and_classified(tmp_path: Path, final, phase, kind) -> None:
    seen: list[Any] = []

    async def scenario(stand_in, worker, configuration, flow_run) -> None:
        namespace, name = await submit(worker, configuration, flow_run)
        seen.append(await outcome_of(worker, configuration, namespace, name))
        for status, pods in (RUNNING, final):
            stand_in.set_state(namespace, name, status, pods)
            seen.append(await outcome_of(worker, configuration, namespace, name))

    stand_in = run_scenario(tmp_path, scenario)
    assert [outcome.phase for outcome in seen] == ["pending", "running", phase]
    assert (seen[-1].failure.kind if seen[-1].failure else None) == kind
    assert seen[-1].retryable == (kind == "infrastructure")
    pod_lists = [query for method, path, query, _ in stand_in.requests if path.endswith("/pods")]
    assert all(query["labelSelector"].startswith("job-name=trial-001-train-") for query in pod_lists)


def test_cancellation_deletes_the_job_with_propagation(tmp_path: Path) -> None:
    from prefect.exceptions import InfrastructureNotFound

    async def scenario(stand_in, worker, configuration, flow_run) -> None:
        namespace, name = await submit(worker, configuration, flow_run)
        stand_in.set_state(namespace, name, *RUNNING)
        await worker.kill_infrastructure(f"{namespace}:{name}", configuration, grace_seconds=5)
        assert (namespace, name) not in stand_in.jobs
        with pytest.raises(InfrastructureNotFound):
            await worker.kill_infrastructure(f"{namespace}:{name}", configuration)

    stand_in = run_scenario(tmp_path, scenario)
    deletes = [(path, query, body) for method, path, query, body in stand_in.requests if method == "DELETE"]
    assert len(deletes) == 2
    path, query, body = deletes[0]
    assert path.startswith("/apis/batch/v1/namespaces/default/jobs/trial-001-train-")
    options = {**query, **(body or {})}
    assert options.get("propagationPolicy") == "Foreground"
    assert str(options.get("gracePeriodSeconds")) == "5"


def test_a_job_that_is_gone_is_read_as_lost_not_pending(tmp_path: Path) -> None:
    seen: list[Any] = []

    async def scenario(stand_in, worker, configuration, flow_run) -> None:
        namespace, name = await submit(worker, configuration, flow_run)
        stand_in.jobs.pop((namespace, name))  # deleted by someone, or by its TTL
        seen.append(await outcome_of(worker, configuration, namespace, name))

    run_scenario(tmp_path, scenario)
    assert seen[0].phase == "failed" and seen[0].failure is not None
    assert seen[0].failure.kind == "infrastructure" and "no longer exists" in seen[0].failure.reason
