"""What the work-pool runner asks of a pool for one job, and how it stops one (no server needed for these:
a stand-in answers for the Prefect server)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aoi_pipeline.errors import ConfigError
from aoi_pipeline.jobs.dispatch import read_dispatch
from aoi_pipeline.jobs.job import Mount, TaoJob
from aoi_pipeline.jobs.workpool import WorkPoolJobRunner, deployment_name, job_variables, parent_tag


def make_job(tmp_path: Path, gpus: int, mounts: tuple[Mount, ...] = ()) -> TaoJob:
    return TaoJob(
        name="j",
        action="train",
        image="localhost/aoi-pipeline-job:latest",
        spec={},
        results_dir=tmp_path / "ws" / "results" / "j",
        gpus=gpus,
        mounts=mounts,
    )


def test_the_platform_names_the_deployment() -> None:
    assert deployment_name("docker") == "tao-job/docker"
    assert deployment_name("slurm") == "tao-job/slurm"
    assert parent_tag("1234") == "aoi-parent:1234"


def test_docker_gets_the_image_same_path_mounts_and_a_gpu_request_of_the_jobs_share(tmp_path: Path) -> None:
    extra = Mount(tmp_path / "models", "/models", read_only=True)
    ws = tmp_path / "ws"

    variables = job_variables("docker", make_job(tmp_path, 2, (extra,)), [ws, ws / "results", ws])

    assert variables["image"] == "localhost/aoi-pipeline-job:latest"
    assert variables["volumes"] == sorted(
        [f"{ws}:{ws}", f"{ws / 'results'}:{ws / 'results'}", f"{tmp_path / 'models'}:/models:ro"]
    )
    assert variables["device_requests"] == [{"driver": "nvidia", "count": 2, "capabilities": [["gpu"]]}]
    assert "env" not in variables  # secret values never travel in job variables


def test_a_cpu_job_requests_no_gpu_device_at_all(tmp_path: Path) -> None:
    assert job_variables("docker", make_job(tmp_path, 0), [])["device_requests"] == []


def test_other_platforms_get_a_plain_gpu_count(tmp_path: Path) -> None:
    variables = job_variables("slurm", make_job(tmp_path, 3), [tmp_path])

    assert variables["gpus"] == 3 and "device_requests" not in variables


class _State:
    def __init__(self, name: str, message: str | None = None) -> None:
        self.type = type("StateType", (), {"value": name})()
        self.message = message


class FakeServer:
    """Stands in for the Prefect server: one child run, RUNNING until a Cancelling state is set on it."""

    def __init__(self) -> None:
        self.cancel_requests: list[tuple[Any, str, Any]] = []
        self.dispatched = threading.Event()
        self.child = SimpleNamespace(
            id=uuid.uuid4(), name="child", infrastructure_pid="container-1", state=_State("RUNNING")
        )

    def run_deployment(self, name: str, **kwargs: Any) -> Any:
        self.dispatched.set()
        return self.child

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read_flow_run(self, flow_run_id: Any) -> Any:
        return self.child

    def set_flow_run_state(self, flow_run_id: Any, state: Any, force: bool = False) -> None:
        self.cancel_requests.append((flow_run_id, state.type.value, state.message))
        self.child.state = _State("CANCELLED", state.message)


def test_stop_cancels_that_jobs_child_run_and_the_job_ends_cancelled(tmp_path: Path, monkeypatch) -> None:
    import prefect
    import prefect.deployments

    server = FakeServer()
    monkeypatch.setattr(prefect.deployments, "run_deployment", server.run_deployment)
    monkeypatch.setattr(prefect, "get_client", lambda sync_client=True: server)
    runner = WorkPoolJobRunner("docker", log=lambda line: None, poll_s=0.01)
    job = make_job(tmp_path, 1)
    results: list[Any] = []
    waiter = threading.Thread(target=lambda: results.append(runner.run(job)))
    waiter.start()
    assert server.dispatched.wait(10)

    assert runner.stop(job.results_dir, "pruned after 3 epochs") is True
    waiter.join(10)

    [result] = results
    assert result.status == "cancelled" and result.external_id == "container-1"
    assert [(run_id, state) for run_id, state, _ in server.cancel_requests] == [(server.child.id, "CANCELLING")]
    assert read_dispatch(job.results_dir).state == "cancelled"  # type: ignore[union-attr]
    assert runner.stop(job.results_dir, "again") is False


def test_a_gpu_share_is_refused_by_the_work_pool_runner(tmp_path: Path) -> None:
    job = TaoJob(name="j", action="train", image="i", spec={}, results_dir=tmp_path / "j", gpus=0.25)
    with pytest.raises(ConfigError, match="lends whole GPUs"):
        WorkPoolJobRunner("docker", log=lambda line: None).run(job)
    assert not (tmp_path / "j.dispatch.json").exists()
