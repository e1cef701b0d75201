"""How the pipeline runs jobs: the `JobRunner` seam and the rule for a job that did not succeed.

Pipeline steps never start processes themselves; they hand a `TaoJob` to a `JobRunner` (the local launcher
wrapped by a Prefect task, or a work-pool deployment) and get a `JobResult` back; a runner that can also stop
one job (`stop_job`) lets the AutoML sweep end a pruned trial's training early. A failed job becomes
an error of the hierarchy: infrastructure failures may be retried by the task layer, program failures are
hard stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from aoi_pipeline.errors import InfrastructureJobError, ProgramJobError
from aoi_pipeline.jobs.dispatch import in_flight
from aoi_pipeline.jobs.job import JobResult, TaoJob
from aoi_pipeline.jobs.process_group import stop_leftover_jobs


# Runtime-checkable so Prefect can build the parameter schema of a flow or task that receives one.
@runtime_checkable
class JobRunner(Protocol):
    """Runs one job to its end and reports how it went."""

    def run(self, job: TaoJob) -> JobResult: ...


@runtime_checkable
class StoppableJobRunner(JobRunner, Protocol):
    """A runner that can also stop one job it runs (a pruned trial's training), leaving the others be."""

    def stop(self, results_dir: Path, reason: str) -> bool: ...


def stop_job(runner: JobRunner, results_dir: Path, reason: str) -> bool:
    """Ask `runner` to stop the job running in `results_dir`: a local process group is killed, a work-pool
    child run is cancelled (its worker removes the container, Kubernetes Job or Slurm job). The job then
    ends `cancelled`. False when the runner cannot stop jobs or runs none there (it ended already)."""
    if not isinstance(runner, StoppableJobRunner):
        return False
    return runner.stop(Path(results_dir), reason)


def set_aside(results_dir: Path) -> None:
    """Move an interrupted attempt's folder out of the way (kept as evidence) so a job starts fresh.

    A job a killed run left running there is stopped first, so it cannot write into its successor's folder.
    A folder whose job is still in flight on a work pool (its parent died before the child ended) stays:
    the runner re-attaches to that child instead of launching a second copy.
    """
    if not results_dir.exists() or in_flight(results_dir):
        return
    stop_leftover_jobs(results_dir)
    attempt = 1
    while (target := results_dir.with_name(f"{results_dir.name}.interrupted{attempt}")).exists():
        attempt += 1
    results_dir.rename(target)


def require_success(result: JobResult) -> JobResult:
    """The result itself when the job succeeded; else the matching JobError with the job's evidence."""
    if result.ok:
        return result
    failure = result.failure
    reason = failure.reason if failure else f"ended {result.status} (exit code {result.exit_code})"
    evidence = f"; last log lines: {failure.evidence}" if failure and failure.evidence else ""
    error = InfrastructureJobError if failure and failure.kind == "infrastructure" else ProgramJobError
    raise error.at(
        f"job {result.job.name} (log {result.log_path})",
        f"{result.job.action} {reason}{evidence}",
        "read the job log; fix the cause (spec, data or machine), then re-run the flow to resume",
    )
