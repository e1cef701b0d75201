"""Running TAO jobs from Prefect: each job is a task run whose log is the job's output.

`run_tao_job` runs one job on the platform the config names: on `local` the local launcher starts it as a
process and streams its output to the task's run logger; on a work-pool platform the `WorkPoolJobRunner`
makes it a child run of `tao-job/<platform>` and waits for it. Only infrastructure failures are retried (a
program failure would fail the same way again). Cancelling the pipeline run kills its local jobs and cancels
its child runs; a crash of the pipeline's process kills the local jobs only, so a rerun can re-attach to the
child runs still in flight.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import task_run as current_task_run

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.errors import InfrastructureJobError
from aoi_pipeline.jobs.job import JobResult, TaoJob
from aoi_pipeline.jobs.local import LocalLauncher
from aoi_pipeline.jobs.log_once import OnceWarnings
from aoi_pipeline.jobs.process_group import stop_leftover_jobs
from aoi_pipeline.jobs.workpool import WorkPoolJobRunner, cancel_children, parent_tag
from aoi_pipeline.pipeline.job_preview import pool_job_variables
from aoi_pipeline.pipeline.job_runner import JobRunner, require_success, stop_job

_LAUNCHER_LOCK = threading.Lock()
_LAUNCHER: LocalLauncher | None = None
CANCEL_ALL = threading.Event()
JOB_WARNINGS = OnceWarnings()


def launcher() -> LocalLauncher:
    """One launcher per process, so GPU slots are shared by every parallel job."""
    global _LAUNCHER
    with _LAUNCHER_LOCK:
        if _LAUNCHER is None:
            _LAUNCHER = LocalLauncher()
        return _LAUNCHER


def _infrastructure_only(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except InfrastructureJobError:
        return True
    except Exception:
        return False
    return False


@task(
    name="tao-job",
    task_run_name="{job.name}",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_infrastructure_only,
    cache_policy=NONE,
)
def run_tao_job(job: TaoJob, backend: JobRunner | None = None) -> JobResult:
    """Run one job to its end; an infrastructure failure raises (and is retried), anything else returns."""
    logger = get_run_logger()
    _set_aside_failed_attempt(job)
    logger.info("launching %s: %s %s", job.name, job.action, job.results_dir)
    if backend is None:
        log = JOB_WARNINGS.sink(logger.info)  # each warning once per run in the log; job.log keeps every line
        result = launcher().run(job, log=log, cancel=CANCEL_ALL)
        log.flush()
    else:
        result = backend.run(job)
    logger.info("%s %s in %.1f s", job.name, result.status, result.duration_s)
    if result.failure is not None and result.failure.kind == "infrastructure":
        require_success(result)
    return result


def _set_aside_failed_attempt(job: TaoJob) -> None:
    """A retry starts in a fresh directory; the failed attempt's files stay beside it as evidence."""
    attempt = current_task_run.run_count
    if attempt > 1 and job.results_dir.exists():
        stop_leftover_jobs(job.results_dir)
        job.results_dir.rename(job.results_dir.with_name(f"{job.results_dir.name}.attempt{attempt - 1}"))


class TaskJobRunner:
    """The `JobRunner` the pipeline steps use inside a flow: every job becomes a `tao-job` task run, run by
    `backend` (None: the local launcher)."""

    def __init__(self, backend: JobRunner | None = None) -> None:
        self.backend = backend

    def run(self, job: TaoJob) -> JobResult:
        return run_tao_job(job, self.backend)

    def stop(self, results_dir: Path, reason: str) -> bool:
        """Stop the job running in `results_dir` (a pruned trial's training) through its backend."""
        return stop_job(self.backend or launcher(), results_dir, reason)


def job_runner(config: PipelineConfig, pipeline_run_id: str | None) -> TaskJobRunner:
    """The runner for the config's platform: the local launcher, or a work-pool runner whose child runs carry
    the pipeline run's tag and mount the workspace and results root at the same paths (on Kubernetes: the
    workspace volume at the workspace's path, with the job variables `jobs render` shows)."""
    if config.platform == "local":
        return TaskJobRunner()
    return TaskJobRunner(
        WorkPoolJobRunner(
            config.platform,
            shared_dirs=dict.fromkeys([config.workspace, config.resolved_results_root]),
            tags=[parent_tag(pipeline_run_id)] if pipeline_run_id else [],
            cancel=CANCEL_ALL,
            log=_task_log,
            variables=pool_job_variables(config),
        )
    )


def _task_log(message: str) -> None:
    get_run_logger().info(message)


def stop_local_jobs(*_: Any, **__: Any) -> None:
    """Flow hook (crash): stop every local job this process still runs (Prefect alone would leave them
    running). Child runs on a work pool go on: a rerun re-attaches to them."""
    CANCEL_ALL.set()


def cancel_running_jobs(flow: Any = None, flow_run: Any = None, state: Any = None) -> None:
    """Flow hook (cancellation): stop the local jobs and cancel the run's child runs on work pools (their
    workers then remove the containers / jobs)."""
    CANCEL_ALL.set()
    if flow_run is not None and getattr(flow_run, "id", None) is not None:
        cancel_children(parent_tag(str(flow_run.id)))


def allow_jobs() -> None:
    """A new flow run in this process may launch jobs again after an earlier one was cancelled or crashed;
    the warnings its jobs print are shown once again."""
    CANCEL_ALL.clear()
    JOB_WARNINGS.clear()
