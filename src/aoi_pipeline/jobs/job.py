"""The TAO job contract: what one job is, the command it runs, and the record it leaves.

A `TaoJob` is plain data that any launcher (local subprocess today; Docker, Kubernetes and Slurm work pools
later) can run: the action, the container image, the full experiment spec, the host directory the job owns,
the mounts, the GPU count and the names of the environment variables it needs. Secret values never enter a
job: only their names, so a job record can be written, logged and shown without leaking credentials. A
`JobResult` is what a launcher hands back once the job has ended.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

from aoi_pipeline.errors import ConfigError, Problem
from aoi_pipeline.jobs.failures import Failure
from aoi_pipeline.jobs.gpu import is_gpu_share

Runtime = Literal["reference", "tao"]
JobStatus = Literal["success", "failed", "cancelled", "timed_out"]

ACTIONS: tuple[str, ...] = ("train", "evaluate", "inference", "embed", "sdg", "export")
ENTRYPOINTS: dict[str, str] = {"reference": "aoi-changenet", "tao": "visual_changenet"}

# The same shape as the job-record ids of the reference, so a name can name a container, a Kubernetes Job
# or an sbatch job unchanged.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Mount:
    """A host path made visible to the job at a container path."""

    host: Path
    container: str
    read_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", Path(self.host))

    def to_record(self) -> dict[str, Any]:
        return {"host": str(self.host), "container": self.container, "read_only": self.read_only}


@dataclass(frozen=True)
class TaoJob:
    """One TAO action to run: data only, no behaviour beyond building its command and record."""

    name: str
    action: str
    image: str
    spec: Mapping[str, Any]
    results_dir: Path
    runtime: Runtime = "reference"
    overrides: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    # Whole GPUs, or a share 1/k of one GPU (local launcher only: k jobs packed onto one GPU).
    gpus: int | float = 0
    env_names: tuple[str, ...] = ()
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        # Normalise what callers commonly pass (lists, strings) and take a private copy of the spec, so a
        # caller mutating its dict afterwards cannot change a job that is already queued or recorded.
        object.__setattr__(self, "results_dir", Path(self.results_dir))
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "mounts", tuple(self.mounts))
        object.__setattr__(self, "env_names", tuple(self.env_names))
        object.__setattr__(
            self, "spec", copy.deepcopy(dict(self.spec)) if isinstance(self.spec, Mapping) else self.spec
        )
        problems = _job_problems(self)
        if problems:
            raise ConfigError(problems, summary=f"TAO job {self.name!r} is invalid")

    def entrypoint(self) -> list[str]:
        """The program and action: `aoi-changenet <action>` or `visual_changenet <action>`."""
        return [ENTRYPOINTS[self.runtime], self.action]

    def command(self, spec_path: str) -> list[str]:
        """The full command line, given where the spec file is as the job sees it."""
        return [*self.entrypoint(), "-e", str(spec_path), *self.overrides]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TaoJob:
        """The job `to_record` described (what a `tao-job` deployment run receives as its parameter)."""
        mounts = tuple(
            Mount(Path(m["host"]), m["container"], bool(m.get("read_only", False))) for m in record.get("mounts", ())
        )
        return cls(
            name=record["name"],
            action=record["action"],
            image=record["image"],
            spec=record["spec"],
            results_dir=Path(record["results_dir"]),
            runtime=record.get("runtime", "reference"),
            overrides=tuple(record.get("overrides", ())),
            mounts=mounts,
            gpus=int(record.get("gpus", 0)),
            env_names=tuple(record.get("env_names", ())),
            timeout_s=record.get("timeout_s"),
        )

    def to_record(self) -> dict[str, Any]:
        """A JSON-able description of the job. It holds environment variable names, never their values."""
        return {
            "name": self.name,
            "action": self.action,
            "image": self.image,
            "runtime": self.runtime,
            "entrypoint": self.entrypoint(),
            "spec": to_jsonable(self.spec),
            "results_dir": str(self.results_dir),
            "overrides": list(self.overrides),
            "mounts": [mount.to_record() for mount in self.mounts],
            "gpus": self.gpus,
            "env_names": list(self.env_names),
            "timeout_s": self.timeout_s,
        }


@dataclass(frozen=True)
class JobResult:
    """How one run of a job ended."""

    job: TaoJob
    exit_code: int | None
    status: JobStatus
    failure: Failure | None
    started_at: datetime
    finished_at: datetime
    duration_s: float
    log_path: Path
    spec_path: Path
    external_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def to_record(self) -> dict[str, Any]:
        """A JSON-able summary of the run (the job itself is recorded separately by `TaoJob.to_record`)."""
        return {
            "name": self.job.name,
            "status": self.status,
            "exit_code": self.exit_code,
            "failure": None
            if self.failure is None
            else {
                "kind": self.failure.kind,
                "reason": self.failure.reason,
                "evidence": self.failure.evidence,
            },
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "log_path": str(self.log_path),
            "spec_path": str(self.spec_path),
            "external_id": self.external_id,
        }


def to_jsonable(value: Any) -> Any:
    """Plain JSON/YAML types: mappings become dicts (order kept), sequences lists, paths strings."""
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _job_problems(job: TaoJob) -> list[Problem]:
    where = f"job {job.name!r}"
    problems: list[Problem] = []
    if not isinstance(job.name, str) or not _NAME_RE.fullmatch(job.name):
        problems.append(
            Problem(
                f"{where}.name",
                f"name {job.name!r} is not usable as a job id",
                "use letters, digits, '.', '_' and '-', starting with a letter or digit",
            )
        )
    if job.action not in ACTIONS:
        problems.append(
            Problem(f"{where}.action", f"unknown action {job.action!r}", f"use one of {', '.join(ACTIONS)}")
        )
    if job.runtime not in get_args(Runtime):
        problems.append(
            Problem(
                f"{where}.runtime",
                f"unknown runtime {job.runtime!r}",
                "use 'reference' (aoi-changenet) or 'tao' (visual_changenet)",
            )
        )
    if not isinstance(job.image, str) or not job.image.strip():
        problems.append(Problem(f"{where}.image", "the image is empty", "name the container image of the action"))
    if not isinstance(job.spec, Mapping):
        problems.append(
            Problem(f"{where}.spec", f"the spec is a {type(job.spec).__name__}", "pass the spec as a mapping")
        )
    whole = isinstance(job.gpus, int) and not isinstance(job.gpus, bool) and job.gpus >= 0
    if not whole and not is_gpu_share(job.gpus):
        problems.append(
            Problem(f"{where}.gpus", f"gpus is {job.gpus!r}", "use a whole number >= 0 or a share 1/k of one GPU")
        )
    if job.timeout_s is not None and not job.timeout_s > 0:
        problems.append(
            Problem(f"{where}.timeout_s", f"timeout_s is {job.timeout_s!r}", "use a positive number or None")
        )
    problems.extend(_override_problems(job, where))
    problems.extend(_env_name_problems(job, where))
    problems.extend(_mount_problems(job, where))
    return problems


def _override_problems(job: TaoJob, where: str) -> list[Problem]:
    return [
        Problem(
            f"{where}.overrides[{index}]",
            f"override {override!r} is not of the form dotted.key=value",
            "write overrides as key=value, e.g. train.num_epochs=10",
        )
        for index, override in enumerate(job.overrides)
        if not isinstance(override, str) or "=" not in override or override.startswith("=")
    ]


def _env_name_problems(job: TaoJob, where: str) -> list[Problem]:
    problems = []
    for index, name in enumerate(job.env_names):
        if isinstance(name, str) and _ENV_NAME_RE.fullmatch(name):
            continue
        # Never echo the offending entry: a "NAME=value" mistake would put the secret into the message.
        shown = name.split("=", 1)[0] + "=<value hidden>" if isinstance(name, str) and "=" in name else repr(name)
        problems.append(
            Problem(
                f"{where}.env_names[{index}]",
                f"{shown} is not an environment variable name",
                "list names only (e.g. NGC_API_KEY); the values are read from the launcher's environment",
            )
        )
    return problems


def _mount_problems(job: TaoJob, where: str) -> list[Problem]:
    problems = []
    for index, mount in enumerate(job.mounts):
        if not isinstance(mount, Mount):
            problems.append(
                Problem(f"{where}.mounts[{index}]", f"{mount!r} is not a Mount", "build mounts with jobs.Mount")
            )
        elif not PurePosixPath(mount.container).is_absolute():
            problems.append(
                Problem(
                    f"{where}.mounts[{index}].container",
                    f"container path {mount.container!r} is relative",
                    "use an absolute container path, e.g. /results",
                )
            )
    return problems
