"""The Prefect worker of type `slurm`: each flow run of a `slurm` work pool becomes one sbatch job.

`prefect worker start --pool gpu-slurm --type slurm` polls the pool like every Prefect worker (the base
class does the polling, heartbeats, templating and concurrency limit). For each flow run this worker renders
the batch script (`sbatch.py`), submits it with `sbatch --parsable` on the login node (locally or over ssh,
`shell.py`), records the Slurm job id as the run's infrastructure id and as a `slurm.job-id` label (both
shown in the Prefect UI), and watches the job with `scontrol show job` (`sacct` once scontrol has forgotten
it). When the job ends, the flow run's state says why (`states.py`): a program error is Failed (a hard stop),
an infrastructure fault Crashed (its caller retries), a cancellation Cancelled. A requeued job is cancelled
rather than let the flow run execute twice; a flow run cancelled in Prefect is `scancel`led.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.abc
from prefect.client.schemas.objects import StateType
from prefect.exceptions import Abort, InfrastructureNotAvailable, InfrastructureNotFound, ObjectNotFound
from prefect.states import Cancelled, Crashed, Failed
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult
from pydantic import Field

from aoi_pipeline.errors import ConfigError
from aoi_pipeline.workers.slurm.login import SlurmLogin, login_from_environment
from aoi_pipeline.workers.slurm.sbatch import SbatchRequest, describe, render_script, request_problems
from aoi_pipeline.workers.slurm.shell import SSH_FAILURE, SlurmShell, SshLogin, open_shell
from aoi_pipeline.workers.slurm.states import (
    PENDING_STATES,
    REQUEUE_STATES,
    SACCT_FIELDS,
    SlurmJobRecord,
    SlurmOutcome,
    classify,
    record_from_sacct,
    record_from_scontrol,
)

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

RunnerName = Literal["none", "pyxis", "apptainer"]
# How long the job may stay unreadable (slurmctld restarting, ssh dropping) before the run is given up.
UNREADABLE_LIMIT_S = 300.0
_DESCRIPTIONS = {
    "partition": "Slurm partition (--partition); empty: the cluster's default partition.",
    "account": "Account to charge (--account), where the site requires one.",
    "qos": "Quality of service (--qos).",
    "time_limit": "Time limit (--time), e.g. 04:00:00; a job stopped at this limit is a hard stop.",
    "gpus": "GPUs per node (--gres=gpu:N).",
    "gpu_type": "GPU type in the GRES request (--gres=gpu:TYPE:N), e.g. a100.",
    "cpus_per_task": "CPUs for the job (--cpus-per-task).",
    "memory": "Host memory per node (--mem), e.g. 64G.",
    "nodes": "Nodes to allocate (--nodes); the flow run itself executes on the first.",
    "extra_options": "More sbatch options, e.g. ['--exclusive', '--constraint=h100'].",
    "runner": "How the flow run starts: none (a Python environment on the nodes), pyxis or apptainer.",
    "image": "Container image for pyxis (e.g. /lustre/images/aoi.sqsh) or apptainer (a .sif file).",
    "mounts": "Container mounts HOST:CONTAINER[:ro] (pyxis --container-mounts, apptainer --bind).",
    "env_names": "Names of variables copied from the worker's environment into the job (e.g. NGC_KEY).",
    "python_env": "Runner none: a virtual environment or conda prefix on the nodes with aoi-pipeline.",
    "setup_commands": "Shell lines run before the flow run, e.g. 'module load cuda'.",
    "working_dir": "Working directory of the job (--chdir) on the cluster.",
    "log_dir": "Directory on the cluster for the job's output file (%x-%j.out); empty: Slurm's default.",
    "requeue": "Let Slurm requeue the job (--requeue); a requeued job is cancelled and reported as crashed.",
    "login": "A slurm-login block for ssh to a login node; empty: SLURM_HOSTNAME or this machine.",
    "poll_interval_seconds": "Seconds between two looks at the job.",
}


def _field(default: Any, name: str, **extra: Any) -> Any:
    return Field(default=default, description=_DESCRIPTIONS[name], **extra)


class SlurmJobConfiguration(BaseJobConfiguration):
    """The job of one flow run, rendered from the pool's base job template and the run's variables."""

    partition: str | None = _field(None, "partition")
    account: str | None = _field(None, "account")
    qos: str | None = _field(None, "qos")
    time_limit: str | None = _field(None, "time_limit")
    gpus: int = _field(0, "gpus", ge=0)
    gpu_type: str | None = _field(None, "gpu_type")
    cpus_per_task: int | None = _field(None, "cpus_per_task", ge=1)
    memory: str | None = _field(None, "memory")
    nodes: int = _field(1, "nodes", ge=1)
    extra_options: list[str] = _field([], "extra_options")
    runner: RunnerName = _field("none", "runner")
    image: str | None = _field(None, "image")
    mounts: list[str] = _field([], "mounts")
    env_names: list[str] = _field([], "env_names")
    python_env: str | None = _field(None, "python_env")
    setup_commands: list[str] = _field([], "setup_commands")
    working_dir: str | None = _field(None, "working_dir")
    log_dir: str | None = _field(None, "log_dir")
    requeue: bool = _field(False, "requeue")
    login: SlurmLogin | None = _field(None, "login")
    poll_interval_seconds: float = _field(10.0, "poll_interval_seconds", gt=0)

    def sbatch_request(self, environ: dict[str, str] | os._Environ[str]) -> SbatchRequest:
        """The request this configuration describes; refuses values Slurm would misread or ignore."""
        env = {key: value for key, value in self.env.items() if value is not None}
        missing = [name for name in self.env_names if name not in environ]
        env.update({name: environ[name] for name in self.env_names if name in environ})
        request = SbatchRequest(
            job_name=self.name or "prefect-flow-run",
            command=self.command or "prefect flow-run execute",
            partition=self.partition or None,
            account=self.account or None,
            qos=self.qos or None,
            time_limit=self.time_limit or None,
            gpus=self.gpus,
            gpu_type=self.gpu_type or None,
            cpus_per_task=self.cpus_per_task,
            memory=self.memory or None,
            nodes=self.nodes,
            working_dir=self.working_dir or None,
            log_dir=self.log_dir or None,
            requeue=self.requeue,
            extra_options=tuple(self.extra_options),
            runner=self.runner,
            image=self.image or None,
            mounts=tuple(self.mounts),
            python_env=self.python_env or None,
            setup_commands=tuple(self.setup_commands),
            env=env,
        )
        problems = request_problems(request)
        if missing:
            problems.append(_missing_env_problem(missing))
        if problems:
            raise ConfigError(problems, summary="the Slurm job of this flow run is invalid")
        return request

    def ssh_login(self, environ: dict[str, str] | os._Environ[str]) -> SshLogin | None:
        return self.login.ssh_login() if self.login is not None else login_from_environment(environ)


def _missing_env_problem(missing: list[str]) -> Any:
    from aoi_pipeline.errors import Problem

    return Problem(
        "slurm job variables.env_names",
        f"{', '.join(missing)} not set in the worker's environment",
        "export them where `prefect worker start` runs, or remove them from env_names",
    )


class SlurmVariables(BaseVariables):
    """The job variables a `slurm` pool offers (the UI's form, deployments' `job_variables`)."""

    partition: str | None = _field(None, "partition")
    account: str | None = _field(None, "account")
    qos: str | None = _field(None, "qos")
    time_limit: str | None = _field(None, "time_limit")
    gpus: int = _field(0, "gpus", ge=0)
    gpu_type: str | None = _field(None, "gpu_type")
    cpus_per_task: int | None = _field(None, "cpus_per_task", ge=1)
    memory: str | None = _field(None, "memory")
    nodes: int = _field(1, "nodes", ge=1)
    extra_options: list[str] = _field([], "extra_options")
    runner: RunnerName = _field("none", "runner")
    image: str | None = _field(None, "image")
    mounts: list[str] = _field([], "mounts")
    env_names: list[str] = _field([], "env_names")
    python_env: str | None = _field(None, "python_env")
    setup_commands: list[str] = _field([], "setup_commands")
    working_dir: str | None = _field(None, "working_dir")
    log_dir: str | None = _field(None, "log_dir")
    requeue: bool = _field(False, "requeue")
    login: SlurmLogin | None = _field(None, "login")
    poll_interval_seconds: float = _field(10.0, "poll_interval_seconds", gt=0)


class SlurmWorkerResult(BaseWorkerResult):
    """How the job ended: `identifier` is `<login>:<job id>`, `status_code` 0 for success."""


class SlurmWorker(BaseWorker[SlurmJobConfiguration, SlurmVariables, SlurmWorkerResult]):
    """Runs each flow run as a Slurm batch job (sbatch), watches it and reports how it ended."""

    type = "slurm"
    job_configuration = SlurmJobConfiguration
    job_configuration_variables = SlurmVariables
    _description = "Run flow runs as Slurm batch jobs (sbatch) with GPUs, optionally in Pyxis or Apptainer containers."
    _display_name = "Slurm"
    _documentation_url = "https://slurm.schedmd.com/sbatch.html"

    async def run(
        self,
        flow_run: FlowRun,
        configuration: SlurmJobConfiguration,
        # BaseWorker types the status as TaskStatus[int], yet workers report their infrastructure id (text) on it.
        task_status: anyio.abc.TaskStatus[str] | None = None,  # type: ignore[override]
    ) -> SlurmWorkerResult:
        logger = self.get_flow_run_logger(flow_run)
        try:
            request = configuration.sbatch_request(os.environ)
        except ConfigError as error:
            await self._set_state(flow_run, Failed(message=str(error)))
            raise
        shell_context = open_shell(configuration.ssh_login(os.environ))
        shell = await anyio.to_thread.run_sync(shell_context.__enter__)
        try:
            job_id = await self._submit(shell, request)
            identifier = f"{shell.where}:{job_id}"
            if task_status is not None:
                task_status.started(identifier)
            logger.info(f"Submitted Slurm job {job_id} via {shell.where}: {describe(request)}")
            await self._label(flow_run, job_id, shell.where)
            outcome = await self._watch(shell, job_id, configuration, flow_run)
        finally:
            await anyio.to_thread.run_sync(shell_context.__exit__, None, None, None)
        logger.info(outcome.reason)
        await self._report(flow_run, outcome)
        status = 0 if outcome.kind == "success" else (outcome.exit_code or 1)
        return SlurmWorkerResult(identifier=identifier, status_code=status)

    async def kill_infrastructure(
        self, infrastructure_pid: str, configuration: SlurmJobConfiguration, grace_seconds: int = 30
    ) -> None:
        """`scancel` the job (Slurm sends SIGTERM, then SIGKILL after the cluster's KillWait)."""
        where, _, job_id = infrastructure_pid.rpartition(":")
        with open_shell(configuration.ssh_login(os.environ)) as shell:
            if shell.where != where:
                raise InfrastructureNotAvailable(f"Slurm job {job_id} was submitted via {where}, not {shell.where}")
            done = await anyio.to_thread.run_sync(lambda: shell.run(["scancel", job_id]))
        if done.returncode != 0:
            if "invalid job id" in done.stderr.lower():
                raise InfrastructureNotFound(f"Slurm job {job_id} is unknown to the cluster")
            raise InfrastructureNotAvailable(f"scancel {job_id} failed: {done.stderr.strip()[:300]}")

    # ------------------------------------------------------------------------------------------- steps

    async def _submit(self, shell: SlurmShell, request: SbatchRequest) -> str:
        script = render_script(request)
        if request.log_dir:  # Slurm opens the output file but does not create its directory
            await anyio.to_thread.run_sync(lambda: shell.run(["mkdir", "-p", str(request.log_dir)]))
        done = await anyio.to_thread.run_sync(lambda: shell.run(["sbatch", "--parsable"], stdin=script))
        first = done.stdout.strip().split(";")[0]
        if done.returncode != 0 or not first.isdigit():
            reason = (done.stderr.strip() or done.stdout.strip() or "no output")[-500:]
            raise RuntimeError(f"sbatch via {shell.where} failed (exit code {done.returncode}): {reason}")
        return first

    async def _label(self, flow_run: FlowRun, job_id: str, where: str) -> None:
        try:
            await self.client.update_flow_run_labels(flow_run.id, {"slurm.job-id": job_id, "slurm.login": where})
        except Exception:  # labels are a convenience; the infrastructure id is already recorded
            self._logger.debug("could not label flow run %s", flow_run.id, exc_info=True)

    async def _watch(
        self, shell: SlurmShell, job_id: str, configuration: SlurmJobConfiguration, flow_run: FlowRun
    ) -> SlurmOutcome:
        interval = configuration.poll_interval_seconds
        seen_running, cancelled, unreadable_s = False, False, 0.0
        while True:
            record = await self._read_record(shell, job_id)
            if record is None:
                unreadable_s += interval
                if unreadable_s > max(UNREADABLE_LIMIT_S, 3 * interval):
                    return SlurmOutcome(
                        "infrastructure",
                        "UNKNOWN",
                        f"Slurm job {job_id} could not be read for {unreadable_s:.0f} s (scontrol and sacct): "
                        "the cluster or the login node is unreachable; an infrastructure fault",
                    )
            else:
                unreadable_s = 0.0
                outcome = classify(
                    record,
                    requested_time_limit=configuration.time_limit or None,
                    requested_memory=configuration.memory or None,
                    seen_running=seen_running,
                )
                seen_running = seen_running or outcome.kind == "running"
                if outcome.finished:
                    if record.state in PENDING_STATES | REQUEUE_STATES:
                        # The requeued copy would execute the same flow run again: stop it.
                        await anyio.to_thread.run_sync(lambda: shell.run(["scancel", job_id]))
                    return outcome
            if not cancelled and await self._cancel_requested(flow_run):
                cancelled = True
                self.get_flow_run_logger(flow_run).info(f"Flow run cancelled: scancel {job_id}")
                await anyio.to_thread.run_sync(lambda: shell.run(["scancel", job_id]))
            await anyio.sleep(interval)

    async def _read_record(self, shell: SlurmShell, job_id: str) -> SlurmJobRecord | None:
        done = await anyio.to_thread.run_sync(lambda: shell.run(["scontrol", "show", "job", "-o", job_id]))
        if done.returncode == 0:
            try:
                return record_from_scontrol(done.stdout)
            except ValueError:
                return None
        if done.returncode == SSH_FAILURE or "invalid job id" not in done.stderr.lower():
            return None
        # scontrol forgets a job MinJobAge seconds after its end; accounting (where it exists) keeps it.
        argv = ["sacct", "-X", "-n", "-P", "-o", ",".join(SACCT_FIELDS), "-j", job_id]
        accounted = await anyio.to_thread.run_sync(lambda: shell.run(argv))
        return record_from_sacct(accounted.stdout, job_id) if accounted.returncode == 0 else None

    async def _cancel_requested(self, flow_run: FlowRun) -> bool:
        try:
            current = await self.client.read_flow_run(flow_run.id)
        except ObjectNotFound:
            return True  # the run was deleted: nothing may keep running for it
        except Exception:
            return False
        return current.state is not None and current.state.type in (StateType.CANCELLING, StateType.CANCELLED)

    async def _report(self, flow_run: FlowRun, outcome: SlurmOutcome) -> None:
        """Give the flow run the state the job's end means, unless the engine in the job already did."""
        try:
            state = (await self.client.read_flow_run(flow_run.id)).state
        except ObjectNotFound:
            return
        if state is not None and state.type in (StateType.CANCELLING, StateType.CANCELLED):
            if state.type == StateType.CANCELLING:
                await self._set_state(flow_run, Cancelled(message=outcome.reason), force=True)
            return
        if state is not None and state.is_completed():
            return  # the flow finished; a job state after that (e.g. the epilog's) does not change its result
        if outcome.kind == "success":
            if state is None or not state.is_final():
                await self._set_state(flow_run, Crashed(message=f"{outcome.reason}, but the flow run never finished"))
            return
        if outcome.kind == "cancelled":
            await self._set_state(flow_run, Cancelled(message=outcome.reason), force=True)
        elif outcome.kind == "infrastructure":
            await self._set_state(flow_run, Crashed(message=outcome.reason), force=True)
        elif not (outcome.state == "FAILED" and state is not None and state.is_failed()):
            name = "TimedOut" if outcome.kind == "timed_out" else "Failed"
            await self._set_state(flow_run, Failed(message=outcome.reason, name=name), force=True)

    async def _set_state(self, flow_run: FlowRun, state: Any, *, force: bool = False) -> None:
        try:
            await self.client.set_flow_run_state(flow_run.id, state, force=force)
        except (Abort, ObjectNotFound):
            pass
        except Exception:
            self.get_flow_run_logger(flow_run).exception(f"could not set the state of flow run {flow_run.id}")
