"""TAO jobs as task runs: the launcher gets the job, only infrastructure failures raise (and are retried)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import tasks.jobs as job_tasks
from aoi_pipeline.errors import InfrastructureJobError
from aoi_pipeline.jobs.failures import Failure
from aoi_pipeline.jobs.job import JobResult, TaoJob


def make_job(tmp_path: Path) -> TaoJob:
    return TaoJob(name="phase1-trial000-train", action="train", image="tao:pyt", spec={}, results_dir=tmp_path / "t")


class FakeLauncher:
    """Records what it is asked to run and returns the result it was given."""

    def __init__(self, status: str = "success", failure: Failure | None = None) -> None:
        self.status, self.failure = status, failure
        self.calls: list[tuple[TaoJob, Any]] = []

    def run(self, job: TaoJob, *, log: Any, cancel: Any) -> JobResult:
        self.calls.append((job, cancel))
        log(f"{job.name}: epoch 1/1")
        now = datetime.now(UTC)
        code = 0 if self.status == "success" else 1
        return JobResult(job, code, self.status, self.failure, now, now, 0.5, job.results_dir / "job.log", Path("s"))


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> FakeLauncher:
    fake = FakeLauncher()
    monkeypatch.setattr(job_tasks, "_LAUNCHER", fake)
    return fake


def test_a_job_runs_on_the_shared_launcher_with_the_cancel_switch_and_its_output_in_the_log(
    tmp_path, launcher, task_log
):
    job = make_job(tmp_path)
    result = job_tasks.run_tao_job.fn(job)
    assert result.ok and result.job is job
    assert launcher.calls == [(job, job_tasks.CANCEL_ALL)]
    assert "phase1-trial000-train: epoch 1/1" in task_log.text
    assert "phase1-trial000-train success in 0.5 s" in task_log.text


def test_a_program_failure_is_returned_for_the_pipeline_to_judge(tmp_path, monkeypatch, task_log):
    monkeypatch.setattr(job_tasks, "_LAUNCHER", FakeLauncher("failed", Failure("program", "bad spec key", "")))
    result = job_tasks.run_tao_job.fn(make_job(tmp_path))
    assert result.status == "failed" and result.failure.kind == "program"


def test_an_infrastructure_failure_raises_so_the_task_retries_it(tmp_path, monkeypatch, task_log):
    monkeypatch.setattr(job_tasks, "_LAUNCHER", FakeLauncher("failed", Failure("infrastructure", "node lost", "")))
    with pytest.raises(InfrastructureJobError, match="node lost"):
        job_tasks.run_tao_job.fn(make_job(tmp_path))


def test_only_infrastructure_failures_are_retried():
    def state(error: Exception | None) -> Any:
        def result() -> None:
            if error is not None:
                raise error

        return SimpleNamespace(result=result)

    infrastructure = InfrastructureJobError.at("job x", "node lost", "retry")
    assert job_tasks._infrastructure_only(None, None, state(infrastructure)) is True
    assert job_tasks._infrastructure_only(None, None, state(ValueError("bad spec"))) is False
    assert job_tasks._infrastructure_only(None, None, state(None)) is False


def test_the_task_runner_hands_each_job_to_the_task(tmp_path, monkeypatch):
    ran: list[tuple[TaoJob, object]] = []
    monkeypatch.setattr(job_tasks, "run_tao_job", lambda job, backend: ran.append((job, backend)) or "result")
    job = make_job(tmp_path)
    backend = object()
    assert job_tasks.TaskJobRunner().run(job) == "result"
    assert job_tasks.TaskJobRunner(backend).run(job) == "result"  # type: ignore[arg-type]
    assert ran == [(job, None), (job, backend)]


def test_cancelling_stops_every_job_until_a_new_flow_run_allows_them_again():
    try:
        job_tasks.cancel_running_jobs(object(), object(), object())
        assert job_tasks.CANCEL_ALL.is_set()
        job_tasks.allow_jobs()
        assert not job_tasks.CANCEL_ALL.is_set()
    finally:
        job_tasks.CANCEL_ALL.clear()


def test_a_kubernetes_run_sends_each_job_with_the_job_variables_jobs_render_shows(tmp_path):
    from aoi_pipeline.config import config_from_mapping
    from aoi_pipeline.jobs.workpool import WorkPoolJobRunner
    from aoi_pipeline.workers.kubernetes import job_variables

    settings = {"namespace": "aoi", "workspace_pvc": "aoi-data", "env_secrets": ["aoi-credentials"]}
    config = config_from_mapping({"workspace": str(tmp_path), "platform": "kubernetes", "kubernetes": settings})
    job = TaoJob(name="t.train", action="train", image="tao:pyt", spec={}, results_dir=tmp_path / "t", gpus=2)

    backend = job_tasks.job_runner(config, "parent-id").backend

    assert isinstance(backend, WorkPoolJobRunner) and backend.deployment == "tao-job/kubernetes"
    assert "aoi-parent:parent-id" in backend.tags
    assert backend.variables(job) == job_variables(job, config)
    assert backend.variables(job)["gpu_limit"] == 2 and "volumes" not in backend.variables(job)


def test_a_docker_run_keeps_the_pools_common_job_variables(tmp_path):
    from aoi_pipeline.config import config_from_mapping

    config = config_from_mapping({"workspace": str(tmp_path), "platform": "docker"})
    job = TaoJob(name="t.train", action="train", image="tao:pyt", spec={}, results_dir=tmp_path / "t", gpus=1)

    variables = job_tasks.job_runner(config, None).backend.variables(job)

    assert variables["device_requests"][0]["count"] == 1 and f"{tmp_path}:{tmp_path}" in variables["volumes"]


def test_on_slurm_the_work_pool_runner_sends_each_job_with_the_configs_slurm_variables(tmp_path):
    from aoi_pipeline.config import config_from_mapping
    from aoi_pipeline.jobs.workpool import WorkPoolJobRunner

    workspace = tmp_path / "ws"
    config = config_from_mapping({"workspace": str(workspace), "platform": "slurm", "slurm": {"partition": "gpu"}})

    runner = job_tasks.job_runner(config, "parent-id").backend

    assert isinstance(runner, WorkPoolJobRunner) and runner.deployment == "tao-job/slurm"
    assert runner.tags == ("aoi-tao-job", "aoi-parent:parent-id")
    assert runner.variables(make_job(tmp_path)) == {"gpus": 0, "partition": "gpu"}


def test_an_invalid_slurm_section_is_refused_before_any_job_is_sent(tmp_path):
    from aoi_pipeline.config import config_from_mapping
    from aoi_pipeline.errors import ConfigError

    data = {"workspace": str(tmp_path), "platform": "slurm", "slurm": {"extra_options": ["--gres=gpu:8"]}}

    with pytest.raises(ConfigError, match="--gres is set by the job variable gpus"):
        job_tasks.job_runner(config_from_mapping(data), "parent-id")
