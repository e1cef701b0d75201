"""The local launcher: runs a `TaoJob` as a subprocess on this machine and reports how it ended.

The command is the reference runtime `aoi-changenet` (or `visual_changenet` where TAO is installed), found
next to the running interpreter or on PATH. Each job runs in its own process group with the GPUs lent to it
by `GpuSlots` through `CUDA_VISIBLE_DEVICES`; its output is streamed line by line to the caller's `log`
(the Prefect run logger in a flow) and to `job.log`, with secrets redacted. Cancellation, a timeout, an
interrupt or any exception in the caller kill the whole process group (SIGTERM, a grace period, SIGKILL),
so no trainer outlives the pipeline step that started it. Afterwards the job's `status.json` and new
checkpoints decide success, and a failure is classified as infrastructure (retriable) or program (stop).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import yaml

from aoi_pipeline.errors import ConfigError, Problem, StateError
from aoi_pipeline.jobs.checkpoints import STATUS_FILE, discover_checkpoints, new_checkpoints
from aoi_pipeline.jobs.failures import Failure, classify_failure, is_credential_name, redact
from aoi_pipeline.jobs.gpu import GpuSlots, cuda_visible_devices
from aoi_pipeline.jobs.job import ENTRYPOINTS, JobResult, JobStatus, TaoJob, to_jsonable
from aoi_pipeline.jobs.process_group import RECORD_FILE, group_alive, terminate_group
from aoi_pipeline.jobs.status_json import StatusLine, parse_status_lines

__all__ = ["CommandResolver", "GpuSlots", "LocalLauncher"]

CommandResolver = Callable[[TaoJob], Sequence[str]]
"""Returns the argv that stands for `job.entrypoint()`; the launcher appends `-e <spec> <overrides>`.
Raises FileNotFoundError (with a message saying how to install it) when the runtime is missing."""

SPEC_FILE = "spec.yaml"
LOG_FILE = "job.log"
DEFAULT_KILL_GRACE_S = 10.0
# How long a job whose run died gets between SIGTERM and SIGKILL: the whole of it stays within 5 s.
ORPHAN_GRACE_S = 3.0
WATCHDOG = Path(__file__).with_name("watchdog.py")
_TAIL_LINES = 200
_POLL_S = 0.1
_READER_JOIN_S = 5.0
_INSTALL_HINTS = {
    "reference": "install the reference runtime in this environment: pip install 'aoi-pipeline[reference]'",
    "tao": "run where TAO PyTorch (visual_changenet) is installed, or use runtime 'reference'",
}

_Outcome = Literal["exited", "cancelled", "timed_out"]


class LocalLauncher:
    """Runs TAO jobs as local subprocesses, one process group per job."""

    def __init__(
        self,
        *,
        gpu_slots: GpuSlots | None = None,
        python_bin_dir: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        command_resolver: CommandResolver | None = None,
        kill_grace_s: float = DEFAULT_KILL_GRACE_S,
    ) -> None:
        self.gpu_slots = gpu_slots if gpu_slots is not None else GpuSlots.detect()
        self.python_bin_dir = Path(python_bin_dir) if python_bin_dir is not None else Path(sys.executable).parent
        self.extra_env = dict(extra_env or {})
        self.command_resolver = command_resolver or self.find_runtime
        self.kill_grace_s = kill_grace_s
        # One stop event per job running now, by results dir: `stop` ends one job without cancelling others.
        self._stops: dict[Path, threading.Event] = {}
        self._stops_lock = threading.Lock()

    def find_runtime(self, job: TaoJob) -> list[str]:
        """`<python bin dir>/<program> <action>`, else the program on PATH; FileNotFoundError if neither."""
        program = ENTRYPOINTS[job.runtime]
        beside = self.python_bin_dir / program
        if beside.is_file() and os.access(beside, os.X_OK):
            return [str(beside), job.action]
        if found := shutil.which(program):
            return [found, job.action]
        raise FileNotFoundError(
            f"the {job.runtime} runtime '{program}' was found neither in {self.python_bin_dir} nor on PATH; "
            f"{_INSTALL_HINTS[job.runtime]}"
        )

    def run(
        self,
        job: TaoJob,
        *,
        log: Callable[[str], None] = print,
        cancel: threading.Event | None = None,
        resume: bool = False,
    ) -> JobResult:
        """Run `job` to its end and return how it ended.

        Refuses (StateError) a non-empty results dir unless `resume`: old checkpoints there make TAO's
        trainer auto-resume or fail, and would be mistaken for this run's output. Raises ConfigError before
        touching the disk when a listed environment variable is unset or the job needs more GPUs than exist.
        An interrupt or exception while the job runs kills its process group and is re-raised.
        """
        self._check_can_run(job, resume=resume)
        secrets = self._secret_values(job)
        # Absolute: the process runs inside the results dir, so a relative spec path would not resolve.
        results_dir = job.results_dir.absolute()
        results_dir.mkdir(parents=True, exist_ok=True)
        spec_path = results_dir / SPEC_FILE
        checkpoints_before = {c.path for c in discover_checkpoints(results_dir)}
        status_before = _read_text(results_dir / STATUS_FILE)
        spec_path.write_text(
            yaml.safe_dump(to_jsonable(job.spec), sort_keys=False, default_flow_style=False), encoding="utf-8"
        )
        run = _Run(job, results_dir, log, secrets, resume)

        try:
            prefix = list(self.command_resolver(job))
        except FileNotFoundError as missing:
            return run.not_started(str(missing), command=job.command(str(spec_path)))
        command = [*prefix, "-e", str(spec_path), *job.overrides]
        run.write_record(command, state="pending")

        stop = self._stop_event(results_dir)
        try:
            if not self.gpu_slots.fits_now(job.gpus):
                run.say(f"waiting for {job.gpus:g} free GPU(s) of {list(self.gpu_slots.gpu_ids)}")
            gpu_ids = self.gpu_slots.take(job.gpus, cancel=_either(cancel, stop))
            if gpu_ids is None:
                run.append_log("cancelled while waiting for GPUs; the job never started")
                return run.finish(command, exit_code=None, status="cancelled", failure=None, external_id=None)
            try:
                env = {
                    **os.environ,
                    **self.extra_env,
                    "CUDA_VISIBLE_DEVICES": cuda_visible_devices(gpu_ids),
                    "PYTHONUNBUFFERED": "1",
                }
                return self._execute(run, command, env, _either(cancel, stop), checkpoints_before, status_before)
            finally:
                self.gpu_slots.release(gpu_ids, job.gpus)
        finally:
            with self._stops_lock:
                self._stops.pop(results_dir, None)

    def stop(self, results_dir: Path, reason: str = "stopped") -> bool:
        """Stop the job running in `results_dir` (its process group: SIGTERM, grace, SIGKILL); it then ends
        `cancelled`. False when no job of this launcher runs there (it ended already, or never started)."""
        with self._stops_lock:
            event = self._stops.get(Path(results_dir).absolute())
        if event is None:
            return False
        event.set()
        return True

    def _stop_event(self, results_dir: Path) -> threading.Event:
        with self._stops_lock:
            event = self._stops[results_dir] = threading.Event()
        return event

    def _execute(
        self,
        run: _Run,
        command: list[str],
        env: dict[str, str],
        cancel: threading.Event | None,
        checkpoints_before: set[Path],
        status_before: str,
    ) -> JobResult:
        run.say(f"starting on GPUs [{env['CUDA_VISIBLE_DEVICES']}]: {shlex.join(command)}")
        with run.open_log() as log_file:
            run.mark_started()
            started = _start_under_watchdog(run, command, env)
            if isinstance(started, JobResult):
                return started
            process, lifeline_write = started
            tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
            try:
                outcome = self._supervise(run, command, process, log_file, tail, cancel)
            finally:
                os.close(lifeline_write)
        return _conclude(run, command, process, outcome, tail, checkpoints_before, status_before)

    def _supervise(
        self,
        run: _Run,
        command: list[str],
        process: subprocess.Popen[bytes],
        log_file: IO[str],
        tail: collections.deque[str],
        cancel: threading.Event | None,
    ) -> str:
        """Pump the job's output into its log while waiting for it to exit, be cancelled or time out; kill its
        process group on the way out, whatever interrupted the wait."""
        external_id = f"pid:{process.pid}"
        reader = threading.Thread(
            target=_pump_output,
            args=(process.stdout, log_file, run.log, run.secrets, tail),
            name=f"job-output-{run.job.name}",
            daemon=True,
        )
        try:
            reader.start()
            run.write_record(command, state="running", external_id=external_id)
            outcome = _wait(process, cancel, run.job.timeout_s)
        except BaseException:
            run.say("interrupted: killing the job's process group")
            terminate_group(process, self.kill_grace_s)
            if reader.is_alive():
                reader.join(_READER_JOIN_S)
            run.write_record(command, state="interrupted", external_id=external_id)
            raise
        if outcome != "exited":
            run.say("cancelled: killing the job" if outcome == "cancelled" else "timed out: killing the job")
            terminate_group(process, self.kill_grace_s)
        elif group_alive(process.pid):
            run.say("the job left processes behind: killing them")
            terminate_group(process, self.kill_grace_s)
        reader.join(_READER_JOIN_S)
        return outcome

    def _check_can_run(self, job: TaoJob, *, resume: bool) -> None:
        problems: list[Problem] = []
        results_dir = job.results_dir
        if results_dir.exists() and not results_dir.is_dir():
            problems.append(Problem(str(results_dir), "the results dir is a file", "give the job a directory path"))
        elif results_dir.is_dir() and not resume and (entries := sorted(p.name for p in results_dir.iterdir())):
            raise StateError.at(
                str(results_dir),
                f"the results dir of job {job.name!r} is not empty ({', '.join(entries[:5])}"
                f"{', ...' if len(entries) > 5 else ''}); old checkpoints there make TAO auto-resume or "
                "refuse to train, and old outputs would be mistaken for this run's",
                "give the job a fresh results dir, or pass resume=True to continue the job that wrote them",
            )
        # No container here: a mount that maps a host path elsewhere would leave the spec's paths dangling.
        problems.extend(
            Problem(
                f"job {job.name!r}.mounts[{index}]",
                f"{mount.host} is mounted at {mount.container}, but local jobs run without a container",
                "build local jobs with host paths in the spec and no mounts (or mount a path at itself)",
            )
            for index, mount in enumerate(job.mounts)
            if str(mount.host.absolute()) != mount.container
        )
        available = {**os.environ, **self.extra_env}
        problems.extend(
            Problem(
                f"job {job.name!r}.env_names",
                f"environment variable {name} is not set",
                f"export {name} in the environment that starts the pipeline (its value is never stored)",
            )
            for name in job.env_names
            if name not in available
        )
        if problems:
            raise ConfigError(problems, summary=f"job {job.name!r} cannot run")
        self.gpu_slots.check_fits(job.gpus)

    def _secret_values(self, job: TaoJob) -> tuple[str, ...]:
        available = {**os.environ, **self.extra_env}
        named = [available[name] for name in job.env_names if name in available]
        credential_like = [value for name, value in self.extra_env.items() if is_credential_name(name)]
        return tuple(value for value in (*named, *credential_like) if value)


class _Run:
    """The bookkeeping of one run: its record file, its log file and the caller's log."""

    def __init__(
        self,
        job: TaoJob,
        results_dir: Path,
        log: Callable[[str], None],
        secrets: tuple[str, ...],
        resume: bool,
    ) -> None:
        self.job, self.results_dir, self.caller_log, self.secrets, self.resume = (
            job,
            results_dir,
            log,
            secrets,
            resume,
        )
        self.spec_path = results_dir / SPEC_FILE
        self.log_path = results_dir / LOG_FILE
        self.record_path = results_dir / RECORD_FILE
        self.started_at = datetime.now(UTC)
        self.started = time.monotonic()

    def log(self, line: str) -> None:
        # A broken log sink must not kill the job nor the thread streaming its output.
        with contextlib.suppress(Exception):
            self.caller_log(line)

    def say(self, message: str) -> None:
        self.log(redact(f"[{self.job.name}] {message}", self.secrets))

    def open_log(self) -> IO[str]:
        log_file = self.log_path.open("a" if self.resume else "w", encoding="utf-8")
        if self.resume:
            log_file.write(f"--- resumed at {datetime.now(UTC).isoformat()} ---\n")
        return log_file

    def write_record(
        self,
        command: Sequence[str],
        *,
        state: str,
        external_id: str | None = None,
        result: JobResult | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "launcher": "local",
            "state": state,
            "job": self.job.to_record(),
            "command": [redact(part, self.secrets) for part in command],
            "external_id": external_id,
            "started_at": self.started_at.isoformat(),
            "result": None if result is None else result.to_record(),
        }
        temporary = self.record_path.with_name(self.record_path.name + ".tmp")
        temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, self.record_path)

    def mark_started(self) -> None:
        """Start the clock when the process starts, so time spent waiting for GPUs is not job time."""
        self.started_at = datetime.now(UTC)
        self.started = time.monotonic()

    def append_log(self, message: str) -> None:
        text = redact(message, self.secrets)
        with self.log_path.open("a", encoding="utf-8") as log_file:
            log_file.write(text + "\n")
        self.say(text)

    def not_started(self, message: str, *, command: Sequence[str]) -> JobResult:
        """The result of a job whose runtime could not be started: an infrastructure failure."""
        text = redact(message, self.secrets)
        self.append_log(text)
        failure = Failure("infrastructure", text, text)
        return self.finish(command, exit_code=None, status="failed", failure=failure, external_id=None)

    def finish(
        self,
        command: Sequence[str],
        *,
        exit_code: int | None,
        status: JobStatus,
        failure: Failure | None,
        external_id: str | None,
    ) -> JobResult:
        result = JobResult(
            job=self.job,
            exit_code=exit_code,
            status=status,
            failure=failure,
            started_at=self.started_at,
            finished_at=datetime.now(UTC),
            duration_s=time.monotonic() - self.started,
            log_path=self.log_path,
            spec_path=self.spec_path,
            external_id=external_id,
        )
        self.write_record(command, state=status, external_id=external_id, result=result)
        summary = f"{status} in {result.duration_s:.1f} s (exit code {exit_code})"
        if failure is not None:
            summary += f": {failure.kind} failure: {failure.reason}"
        self.say(summary)
        return result


def _pump_output(
    stream: IO[bytes],
    log_file: IO[str],
    log: Callable[[str], None],
    secrets: tuple[str, ...],
    tail: collections.deque[str],
) -> None:
    """Copy the job's output line by line to job.log, the tail and the caller's log, secrets redacted."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        # Progress bars redraw with carriage returns; their final state is the line worth keeping.
        text = redact(text.rsplit("\r", 1)[-1], secrets)
        tail.append(text)
        log(text)
        try:
            log_file.write(text + "\n")
            log_file.flush()
        except (ValueError, OSError):  # job.log closed after an interrupt: the caller's log still gets it
            pass
    stream.close()


class _AnyEvent:
    """Set when any of its events is set: the run-wide cancel event or one job's stop event."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)


def _either(cancel: threading.Event | None, stop: threading.Event) -> Any:
    return stop if cancel is None else _AnyEvent(cancel, stop)


def _wait(process: subprocess.Popen[bytes], cancel: threading.Event | None, timeout_s: float | None) -> _Outcome:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            process.wait(timeout=_POLL_S)
            return "exited"
        except subprocess.TimeoutExpired:
            pass
        if cancel is not None and cancel.is_set():
            return "cancelled"
        if deadline is not None and time.monotonic() >= deadline:
            return "timed_out"


def _not_executable(program: str) -> str | None:
    """Why `program` cannot be started, or None: checked here, since the watchdog would start it."""
    if os.sep in program:
        return None if os.path.isfile(program) and os.access(program, os.X_OK) else "no such executable file"
    return None if shutil.which(program) else "not found on PATH"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _new_status_lines(before: str, after: str) -> list[StatusLine]:
    """The status lines this run wrote: the appended part when the file grew, else the whole file."""
    fresh = after[len(before) :] if before and after.startswith(before) else after
    return parse_status_lines(fresh.splitlines())


def _start_under_watchdog(
    run: _Run, command: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int] | JobResult:
    """Start the job in its own process group under the watchdog; the process and the lifeline's write end
    (close it once the job is over), or the result of a job that could not start."""
    if (missing := _not_executable(command[0])) is not None:
        return run.not_started(f"could not start {command[0]}: {missing}", command=command)
    # The job runs under a watchdog that holds the read end of this pipe: when this process dies,
    # however it dies, the write end closes and the watchdog kills the job's process group.
    lifeline_read, lifeline_write = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-S", str(WATCHDOG), str(lifeline_read), f"{ORPHAN_GRACE_S:g}", "--", *command],
            cwd=run.results_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(lifeline_read,),
            start_new_session=True,  # its own process group, so the whole tree can be killed
        )
    except OSError as error:
        os.close(lifeline_write)
        return run.not_started(f"could not start {command[0]}: {error}", command=command)
    finally:
        os.close(lifeline_read)
    return process, lifeline_write


def _conclude(
    run: _Run,
    command: list[str],
    process: subprocess.Popen[bytes],
    outcome: str,
    tail: collections.deque[str],
    checkpoints_before: set[Path],
    status_before: str,
) -> JobResult:
    """The job's result from how it ended: cancelled, timed out, or exited and classified from its exit code,
    log tail, new status lines and (for training) whether it wrote a checkpoint."""
    # The watchdog leads the group, so its pid names the group the job and its children run in.
    external_id, exit_code, job = f"pid:{process.pid}", process.returncode, run.job
    if outcome == "cancelled":
        return run.finish(command, exit_code=exit_code, status="cancelled", failure=None, external_id=external_id)
    failure: Failure | None
    if outcome == "timed_out":
        failure = Failure(
            "program",
            f"the job ran past its timeout of {job.timeout_s:g} s; raise timeout_s or shrink the job",
            redact("\n".join(list(tail)[-15:]), run.secrets),
        )
        return run.finish(command, exit_code=exit_code, status="timed_out", failure=failure, external_id=external_id)
    status_lines = _new_status_lines(status_before, _read_text(run.results_dir / STATUS_FILE))
    wrote_checkpoint = bool(new_checkpoints(run.results_dir, checkpoints_before)) if job.action == "train" else None
    failure = classify_failure(
        exit_code=exit_code, log_tail="\n".join(tail), status_lines=status_lines, wrote_checkpoint=wrote_checkpoint
    )
    status: JobStatus = "success" if failure is None else "failed"
    return run.finish(command, exit_code=exit_code, status=status, failure=failure, external_id=external_id)
