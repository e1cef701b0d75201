"""What a work-pool dispatch leaves on disk, and how a child run's end becomes a `JobResult`.

A job sent to a Docker, Kubernetes or Slurm work pool runs as a child flow run of `tao-job/<platform>`. Its
dispatch record, `<results_dir>.dispatch.json` beside the job's folder, holds the idempotency key, the child
flow-run id and the infrastructure id (container id, Kubernetes Job name, Slurm job id) as soon as each is
known. A parent that was killed reads it on its rerun and waits for that child instead of launching a
second copy; the pipeline leaves a folder whose job is still in flight where it is (`in_flight`). When the
child ends, the job record the child's launcher wrote (`job.json`, on the shared file system) says how the
job ended; without one, the child's final state decides: Crashed (container, node or worker lost, image not
pulled) is an infrastructure failure, Failed a program failure. Nothing here talks to Prefect.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aoi_pipeline.jobs.failures import Failure, redact
from aoi_pipeline.jobs.job import JobResult, JobStatus, TaoJob
from aoi_pipeline.jobs.local import LOG_FILE, SPEC_FILE
from aoi_pipeline.jobs.process_group import RECORD_FILE

DISPATCH_SUFFIX = ".dispatch.json"
# Dispatch states before the child's end is known; a record in one of them marks a job still in flight.
IN_FLIGHT = ("dispatching", "submitted", "running")
_EVIDENCE_CHARS = 2000


@dataclass(frozen=True)
class DispatchRecord:
    """One job's dispatch to a work pool: where it went and what identifies it there."""

    job_name: str
    platform: str
    deployment: str
    idempotency_key: str
    state: str = "dispatching"
    flow_run_id: str | None = None
    infrastructure_id: str | None = None
    updated_at: str = ""

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT

    def with_(self, **changes: Any) -> DispatchRecord:
        return replace(self, **changes)


def dispatch_path(results_dir: Path) -> Path:
    """`<results_dir>.dispatch.json`: beside the job's folder, so the child's launcher finds it empty."""
    results_dir = Path(results_dir)
    return results_dir.with_name(results_dir.name + DISPATCH_SUFFIX)


def read_dispatch(results_dir: Path) -> DispatchRecord | None:
    """The job's dispatch record, or None when it was never dispatched (or the record is unreadable)."""
    try:
        data = json.loads(dispatch_path(results_dir).read_text(encoding="utf-8"))
        return DispatchRecord(**{key: data[key] for key in DispatchRecord.__dataclass_fields__ if key in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_dispatch(results_dir: Path, record: DispatchRecord) -> DispatchRecord:
    """Atomically replace the dispatch record; returns it with its update time."""
    record = record.with_(updated_at=datetime.now(UTC).isoformat())
    path = dispatch_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return record


def in_flight(results_dir: Path) -> bool:
    """Whether a work-pool child may still be writing into `results_dir` (its parent never saw it end)."""
    record = read_dispatch(results_dir)
    return record is not None and record.in_flight


def set_aside_attempt(results_dir: Path, label: str = "attempt") -> Path | None:
    """Move a finished child's folder to `<name>.<label>N` (kept as evidence); None when there was none."""
    results_dir = Path(results_dir)
    if not results_dir.exists():
        return None
    number = 1
    while (target := results_dir.with_name(f"{results_dir.name}.{label}{number}")).exists():
        number += 1
    results_dir.rename(target)
    return target


def child_result(
    job: TaoJob,
    *,
    final_state: str,
    state_message: str | None,
    infrastructure_id: str | None,
    started_at: datetime,
    finished_at: datetime,
) -> JobResult:
    """How the job ended, from the job record its child wrote, else from the child run's final state.

    `final_state` is the child's state type name (COMPLETED, FAILED, CRASHED, CANCELLED, ...).
    """
    results_dir = job.results_dir.absolute()
    recorded = _recorded_result(results_dir / RECORD_FILE)
    final_state = final_state.upper()
    status: JobStatus
    failure: Failure | None
    exit_code: int | None = None
    if final_state in ("CANCELLED", "CANCELLING"):
        status, failure = "cancelled", None
    elif recorded is not None:
        status, exit_code, failure = recorded
    elif final_state == "COMPLETED":
        status, failure = "failed", _failure("program", "the child run completed but wrote no job record", "")
    elif final_state == "CRASHED":
        status = "failed"
        failure = _failure(
            "infrastructure",
            "the child run crashed before the job ended (container or node lost, image not pulled, worker gone)",
            state_message,
        )
    else:
        status = "failed"
        failure = _failure("program", f"the child run ended {final_state.lower()} before the job ran", state_message)
    return JobResult(
        job=job,
        exit_code=exit_code,
        status=status,
        failure=failure,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=max(0.0, (finished_at - started_at).total_seconds()),
        log_path=results_dir / LOG_FILE,
        spec_path=results_dir / SPEC_FILE,
        external_id=infrastructure_id,
    )


def _failure(kind: str, reason: str, message: str | None) -> Failure:
    evidence = redact((message or "").strip(), ())[-_EVIDENCE_CHARS:]
    detail = f": {evidence.splitlines()[-1][:200]}" if evidence else ""
    return Failure(kind, reason + detail, evidence)  # type: ignore[arg-type]


def _recorded_result(path: Path) -> tuple[JobStatus, int | None, Failure | None] | None:
    """(status, exit code, failure) from the child's job.json, when it recorded an end."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    result = record.get("result") if isinstance(record, dict) else None
    if not isinstance(result, dict) or result.get("status") not in ("success", "failed", "cancelled", "timed_out"):
        return None
    found = result.get("failure")
    failure = (
        Failure(found["kind"], found["reason"], found.get("evidence", ""))
        if isinstance(found, dict) and found.get("kind") in ("infrastructure", "program")
        else None
    )
    return result["status"], result.get("exit_code"), failure


__all__ = [
    "DISPATCH_SUFFIX",
    "IN_FLIGHT",
    "DispatchRecord",
    "child_result",
    "dispatch_path",
    "in_flight",
    "read_dispatch",
    "set_aside_attempt",
    "write_dispatch",
]
