"""Running TAO jobs from Prefect: each job is a task run whose log is the job's output.

`run_tao_job` launches one job with the local launcher and streams its output to the task's run logger.
Only infrastructure failures are retried (a program failure would fail the same way again). Live jobs are
tracked so the flow's cancellation and crash hooks can kill what is still running.
"""

from __future__ import annotations

import threading
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import task_run as current_task_run

from aoi_pipeline.errors import InfrastructureJobError
from aoi_pipeline.jobs.job import JobResult, TaoJob
from aoi_pipeline.jobs.local import LocalLauncher
from aoi_pipeline.jobs.process_group import stop_leftover_jobs
from aoi_pipeline.pipeline.job_runner import require_success

_LAUNCHER_LOCK = threading.Lock()
_LAUNCHER: LocalLauncher | None = None
CANCEL_ALL = threading.Event()


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
def run_tao_job(job: TaoJob) -> JobResult:
    """Run one job to its end; an infrastructure failure raises (and is retried), anything else returns."""
    logger = get_run_logger()
    _set_aside_failed_attempt(job)
    logger.info("launching %s: %s %s", job.name, job.action, job.results_dir)
    result = launcher().run(job, log=logger.info, cancel=CANCEL_ALL)
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
    """The `JobRunner` the pipeline steps use inside a flow: every job becomes a `tao-job` task run."""

    def run(self, job: TaoJob) -> JobResult:
        return run_tao_job(job)


def cancel_running_jobs(*_: Any) -> None:
    """Flow hook: stop every job this process still runs (Prefect alone would leave them running)."""
    CANCEL_ALL.set()


def allow_jobs() -> None:
    """A new flow run in this process may launch jobs again after an earlier one was cancelled or crashed."""
    CANCEL_ALL.clear()
