"""The work-pool job runner: each `TaoJob` becomes a flow run of `tao-job/<platform>` on a Prefect work pool.

`WorkPoolJobRunner.run(job)` creates the child run with `run_deployment` (no waiting inside Prefect, an
idempotency key of its own), passes the job as the run's parameter and what the pool's infrastructure needs as
`job_variables` (image, GPU count, the shared folders mounted at the same paths; never a secret value: the
child resolves `env_names` itself), then polls the child without holding a GPU. The dispatch record beside
the job's folder (`jobs.dispatch`) gets the child's flow-run id and infrastructure id as soon as they are
known, so a parent killed and rerun waits for the child it had launched instead of launching a copy. The
child's end becomes the same `JobResult` and failure classes the local launcher gives. This is the one
module of `jobs` that talks to a Prefect server; the platform only names the deployment and the pool's base
job template (deployments/) turns the job variables into a container, a Kubernetes Job or an sbatch script.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aoi_pipeline.errors import ConfigError
from aoi_pipeline.jobs.dispatch import (
    DispatchRecord,
    child_result,
    read_dispatch,
    set_aside_attempt,
    write_dispatch,
)
from aoi_pipeline.jobs.job import JobResult, TaoJob

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun, State

JOB_FLOW = "tao-job"
CHILD_TAG = "aoi-tao-job"
PARENT_TAG_PREFIX = "aoi-parent:"
DEFAULT_POLL_S = 1.0
_CANCEL_WAIT_S = 120.0
_UNCLAIMED_WARNING_S = 60.0
_NOT_FINAL = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")


def deployment_name(platform: str) -> str:
    """`tao-job/<platform>`: the deployment whose runs execute jobs on that platform's work pool."""
    return f"{JOB_FLOW}/{platform}"


def parent_tag(root_flow_run_id: str) -> str:
    """The tag every child of one pipeline run carries, so cancelling the run finds its children."""
    return f"{PARENT_TAG_PREFIX}{root_flow_run_id}"


def docker_device_requests(gpus: int) -> list[dict[str, Any]]:
    """Docker's GPU request for `gpus` GPUs; none at all for a CPU job (a GPU-less host refuses any)."""
    return [{"driver": "nvidia", "count": gpus, "capabilities": [["gpu"]]}] if gpus > 0 else []


def job_variables(platform: str, job: TaoJob, shared_dirs: Iterable[Path]) -> dict[str, Any]:
    """The pool's job variables for one job: image, GPUs and the shared folders mounted at the same path.

    Every pool's base job template declares `image`, `gpus` and `volumes` (`host:container[:ro]`); Docker
    has no GPU count of its own and takes `device_requests` instead.
    """
    volumes = {str(Path(d).absolute()): f"{Path(d).absolute()}:{Path(d).absolute()}" for d in shared_dirs}
    for mount in job.mounts:
        volumes[str(mount.host)] = f"{mount.host.absolute()}:{mount.container}{':ro' if mount.read_only else ''}"
    variables: dict[str, Any] = {"image": job.image, "volumes": sorted(volumes.values())}
    if platform == "docker":
        variables["device_requests"] = docker_device_requests(int(job.gpus))
    else:
        variables["gpus"] = int(job.gpus)  # whole GPUs: `WorkPoolJobRunner.run` refuses a share
    return variables


class WorkPoolJobRunner:
    """Runs each job as a child flow run of `tao-job/<platform>` and waits for it without holding a GPU."""

    def __init__(
        self,
        platform: str,
        *,
        shared_dirs: Iterable[Path] = (),
        tags: Iterable[str] = (),
        cancel: threading.Event | None = None,
        log: Callable[[str], None] = print,
        poll_s: float = DEFAULT_POLL_S,
        variables: Callable[[TaoJob], dict[str, Any]] | None = None,
    ) -> None:
        """`variables` builds a job's job variables where the platform's template needs its own (default:
        `job_variables`: image, GPUs and the shared folders)."""
        self.platform = platform
        self.deployment = deployment_name(platform)
        self.shared_dirs = tuple(Path(d) for d in shared_dirs)
        self.tags = (CHILD_TAG, *tags)
        self.cancel = cancel
        self.log = log
        self.poll_s = poll_s
        self.variables = variables or (lambda job: job_variables(platform, job, self.shared_dirs))
        # One stop event per job waited on now, by results dir: `stop` cancels that job's child run only.
        self._stops: dict[Path, threading.Event] = {}
        self._stops_lock = threading.Lock()

    def stop(self, results_dir: Path, reason: str = "stopped") -> bool:
        """Cancel the child run of the job in `results_dir` (the pool's worker then kills the container,
        deletes the Kubernetes Job or scancels the Slurm job); it ends `cancelled`. False when this runner
        waits on no job there."""
        with self._stops_lock:
            event = self._stops.get(Path(results_dir).absolute())
        if event is None:
            return False
        self.log(f"[{Path(results_dir).name}] stopping its child run: {reason}")
        event.set()
        return True

    def run(self, job: TaoJob) -> JobResult:
        """Dispatch the job (or re-attach to its child still in flight) and return how it ended."""
        if not float(job.gpus).is_integer():
            raise ConfigError.at(
                f"job {job.name!r}.gpus",
                f"asks for a share ({job.gpus:g}) of a GPU, but the {self.platform} work pool lends whole GPUs",
                "set gpus_per_job to a whole number; shares pack trials onto GPUs on the local platform only",
            )
        started_at = datetime.now(UTC)
        stop = threading.Event()
        with self._stops_lock:
            self._stops[job.results_dir.absolute()] = stop
        try:
            record = self._attach_or_create(job)
            if record.flow_run_id is None:
                record = self._dispatch(job, record)
            record, final_state, message = self._wait(job, record, stop)
        finally:
            with self._stops_lock:
                self._stops.pop(job.results_dir.absolute(), None)
        result = child_result(
            job,
            final_state=final_state,
            state_message=message,
            infrastructure_id=record.infrastructure_id,
            started_at=started_at,
            finished_at=datetime.now(UTC),
        )
        write_dispatch(job.results_dir, record.with_(state=result.status))
        summary = f"[{job.name}] {result.status} on {self.deployment} (child run {record.flow_run_id}"
        summary += f", {record.infrastructure_id})" if record.infrastructure_id else ")"
        if result.failure is not None:
            summary += f": {result.failure.kind} failure: {result.failure.reason}"
        self.log(summary)
        return result

    # ------------------------------------------------------------------------------------------ dispatch

    def _attach_or_create(self, job: TaoJob) -> DispatchRecord:
        """The record of a child still in flight (its parent died), else a fresh one with a new key."""
        record = read_dispatch(job.results_dir)
        if record is not None and record.in_flight and record.deployment == self.deployment:
            if record.flow_run_id is None or self._child_exists(record.flow_run_id):
                self.log(f"[{job.name}] re-attaching to its child run {record.flow_run_id or record.idempotency_key}")
                return record
            self.log(f"[{job.name}] its child run {record.flow_run_id} is gone from the server: launching again")
            set_aside_attempt(job.results_dir, "lost")
        key = f"{job.name}-{uuid.uuid4().hex}"
        return write_dispatch(job.results_dir, DispatchRecord(job.name, self.platform, self.deployment, key))

    def _dispatch(self, job: TaoJob, record: DispatchRecord) -> DispatchRecord:
        from prefect.deployments import run_deployment
        from prefect.exceptions import ObjectNotFound

        try:
            # Called from synchronous code, run_deployment returns the flow run itself, not a coroutine.
            flow_run = cast(
                "FlowRun",
                run_deployment(
                    self.deployment,
                    parameters={"job": job.to_record()},
                    job_variables=self.variables(job),
                    idempotency_key=record.idempotency_key,
                    flow_run_name=job.name,
                    tags=list(self.tags),
                    timeout=0,
                ),
            )
        except ObjectNotFound:
            raise ConfigError.at(
                f"Prefect deployment {self.deployment}",
                "does not exist on the Prefect server, so the job cannot be sent to the work pool",
                f"create the pool and deployments: aoi-pipeline pools setup --platform {self.platform}",
            ) from None
        self.log(f"[{job.name}] dispatched to {self.deployment} as child run {flow_run.name} ({flow_run.id})")
        return write_dispatch(job.results_dir, record.with_(flow_run_id=str(flow_run.id), state="submitted"))

    def _child_exists(self, flow_run_id: str) -> bool:
        from prefect import get_client
        from prefect.exceptions import ObjectNotFound

        with get_client(sync_client=True) as client:
            try:
                client.read_flow_run(uuid.UUID(flow_run_id))
            except ObjectNotFound:
                return False
        return True

    # ------------------------------------------------------------------------------------------ waiting

    def _wait(
        self, job: TaoJob, record: DispatchRecord, stop: threading.Event
    ) -> tuple[DispatchRecord, str, str | None]:
        """Poll the child until it ends: (updated record, final state type, state message)."""
        from prefect import get_client

        assert record.flow_run_id is not None
        child_id = uuid.UUID(record.flow_run_id)
        since = time.monotonic()
        warned_at = since
        cancel_sent = None
        with get_client(sync_client=True) as client:
            while True:
                flow_run = client.read_flow_run(child_id)
                state = flow_run.state
                state_type = state.type.value if state is not None else "SCHEDULED"
                if flow_run.infrastructure_pid and flow_run.infrastructure_pid != record.infrastructure_id:
                    record = write_dispatch(
                        job.results_dir, record.with_(infrastructure_id=flow_run.infrastructure_pid, state="running")
                    )
                    self.log(f"[{job.name}] running in {flow_run.infrastructure_pid}")
                if state_type not in _NOT_FINAL:
                    return record, state_type, state.message if state is not None else None
                now = time.monotonic()
                cancelled = self.cancel is not None and self.cancel.is_set()
                if (cancelled or stop.is_set()) and cancel_sent is None:
                    reason = (
                        "the pipeline run was cancelled" if cancelled else "the job was stopped by its pipeline run"
                    )
                    cancel_flow_runs(client, [flow_run], reason)
                    cancel_sent = now
                elif cancel_sent is not None and now - cancel_sent > _CANCEL_WAIT_S:
                    return record, "CANCELLED", "the child did not confirm its cancellation in time"
                if state_type == "SCHEDULED" and now - warned_at > _UNCLAIMED_WARNING_S:
                    warned_at = now
                    self.log(
                        f"[{job.name}] no worker has picked up child run {flow_run.name} for {now - since:.0f} s: "
                        f"is a worker of the {self.platform} pool running? (aoi-pipeline pools setup "
                        f"--platform {self.platform} starts one)"
                    )
                time.sleep(self.poll_s)


def cancel_flow_runs(client: Any, flow_runs: Iterable[Any], reason: str) -> int:
    """Cancel child runs: those no worker took yet at once, the others through Cancelling (the worker or
    the engine in the container stops the infrastructure). Returns how many were asked."""
    from prefect.states import Cancelled, Cancelling

    count = 0
    for flow_run in flow_runs:
        state_type = flow_run.state.type.value if flow_run.state is not None else "SCHEDULED"
        new_state: State[Any] = Cancelled(message=reason) if state_type == "SCHEDULED" else Cancelling(message=reason)
        client.set_flow_run_state(flow_run.id, new_state, force=True)
        count += 1
    return count


def cancel_children(tag: str, reason: str = "the parent run was cancelled") -> int:
    """Cancel every unfinished child run carrying `tag` (a parent's `parent_tag`); returns how many."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    unfinished = [StateType(name) for name in _NOT_FINAL if name != "CANCELLING"]
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[tag]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished)),
            )
        )
        return cancel_flow_runs(client, children, reason)


__all__ = [
    "CHILD_TAG",
    "JOB_FLOW",
    "WorkPoolJobRunner",
    "cancel_children",
    "deployment_name",
    "docker_device_requests",
    "job_variables",
    "parent_tag",
]
