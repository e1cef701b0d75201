"""The sbatch script of one flow run, rendered by pure functions (no Slurm needed to test them).

An `SbatchRequest` holds what the Slurm worker's job configuration asks for: partition, account, QOS, time
limit, GPUs (`--gres=gpu:N`), CPUs and memory per job, nodes, extra sbatch options, and how the command runs
on the node: `none` (a Python environment on the nodes, its `bin/` first on PATH), `pyxis` (`srun
--container-image --container-mounts`) or `apptainer` (`srun apptainer exec --nv --bind`). `render_script`
turns it into the batch script; `request_problems` lists every value Slurm would misread or the script would
silently ignore, so the worker refuses it before submitting. The environment values exported by the script
may be secret (the Prefect API key): the script is handed to `sbatch` on stdin and never logged; only
`describe` (the directives, no values of the environment) is shown.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from aoi_pipeline.errors import Problem

Runner = Literal["none", "pyxis", "apptainer"]
RUNNERS: tuple[str, ...] = get_args(Runner)

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MEMORY_RE = re.compile(r"[0-9]+[KMGT]?")
# Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME_RE = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
# Options the request sets from its own fields; an extra option naming one of them would fight it.
_MANAGED_OPTIONS = {
    "--job-name": "name",
    "-J": "name",
    "--partition": "partition",
    "-p": "partition",
    "--account": "account",
    "-A": "account",
    "--qos": "qos",
    "-q": "qos",
    "--time": "time_limit",
    "-t": "time_limit",
    "--gres": "gpus",
    "--gpus": "gpus",
    "-G": "gpus",
    "--gpus-per-node": "gpus",
    "--cpus-per-task": "cpus_per_task",
    "-c": "cpus_per_task",
    "--mem": "memory",
    "--nodes": "nodes",
    "-N": "nodes",
    "--chdir": "working_dir",
    "-D": "working_dir",
    "--output": "log_dir",
    "-o": "log_dir",
    "--error": "log_dir",
    "-e": "log_dir",
    "--requeue": "requeue",
    "--no-requeue": "requeue",
}


@dataclass(frozen=True)
class SbatchRequest:
    """One batch job: the sbatch options and what runs on the node."""

    job_name: str
    command: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: str | None = None
    gpus: int = 0
    gpu_type: str | None = None
    cpus_per_task: int | None = None
    memory: str | None = None
    nodes: int = 1
    working_dir: str | None = None
    log_dir: str | None = None
    requeue: bool = False
    extra_options: tuple[str, ...] = ()
    runner: str = "none"
    image: str | None = None
    mounts: tuple[str, ...] = ()
    python_env: str | None = None
    setup_commands: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def parse_time_limit(text: str) -> int | None:
    """Minutes of a Slurm time limit (`90`, `1:30:00`, `2-00:00:00`), rounded up; None for UNLIMITED."""
    value = text.strip()
    if value.upper() in ("UNLIMITED", "INFINITE"):
        return None
    match = _TIME_RE.fullmatch(value)
    if match is None:
        raise ValueError(f"{text!r} is not a Slurm time limit")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(first) * 3600 + int(second or 0) * 60 + int(third or 0)
    elif third is not None:  # HH:MM:SS
        seconds = int(first) * 3600 + int(second) * 60 + int(third)
    elif second is not None:  # MM:SS
        seconds = int(first) * 60 + int(second)
    else:  # minutes
        seconds = int(first) * 60
    return -(-seconds // 60)


def job_name(name: str) -> str:
    """A Slurm job name: no whitespace, no characters the shell or `%` patterns would interpret."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
    return cleaned[:100] or "prefect-flow-run"


def request_problems(request: SbatchRequest, where: str = "slurm job variables") -> list[Problem]:
    """Every value Slurm would reject or misread, and every value the script would ignore."""
    problems = _value_problems(request, where)
    problems.extend(_runner_problems(request, where))
    problems.extend(_extra_option_problems(request, where))
    for name in request.env:
        if not _ENV_NAME_RE.fullmatch(name):
            problems.append(
                Problem(f"{where}.env", f"{name.split('=')[0]!r} is not an environment variable name", "use A-Z0-9_")
            )
    return problems


def _value_problems(request: SbatchRequest, where: str) -> list[Problem]:
    problems: list[Problem] = []
    for key in ("partition", "account", "qos", "gpu_type", "working_dir", "log_dir", "python_env"):
        value = getattr(request, key)
        if value is not None and (not value.strip() or re.search(r"\s", value)):
            problems.append(Problem(f"{where}.{key}", f"{value!r} is empty or holds whitespace", "give one word"))
    if request.time_limit is not None:
        try:
            parse_time_limit(request.time_limit)
        except ValueError:
            problems.append(
                Problem(
                    f"{where}.time_limit",
                    f"{request.time_limit!r} is not a Slurm time limit",
                    "use minutes, HH:MM:SS or D-HH:MM:SS (e.g. 04:00:00)",
                )
            )
    if request.memory is not None and not _MEMORY_RE.fullmatch(request.memory):
        problems.append(
            Problem(f"{where}.memory", f"{request.memory!r} is not a Slurm memory size", "use e.g. 32G or 16000M")
        )
    if request.gpus < 0 or request.nodes < 1 or (request.cpus_per_task is not None and request.cpus_per_task < 1):
        problems.append(
            Problem(where, "gpus must be >= 0, nodes and cpus_per_task >= 1", "correct gpus, nodes or cpus_per_task")
        )
    if request.gpu_type is not None and request.gpus == 0:
        problems.append(Problem(f"{where}.gpu_type", "a GPU type is set but no GPUs are asked for", "set gpus >= 1"))
    return problems


def _runner_problems(request: SbatchRequest, where: str) -> list[Problem]:
    if request.runner not in RUNNERS:
        return [Problem(f"{where}.runner", f"unknown runner {request.runner!r}", f"use one of {', '.join(RUNNERS)}")]
    problems = []
    if request.runner == "none":
        if request.image:
            problems.append(
                Problem(
                    f"{where}.image",
                    f"image {request.image!r} is set but runner is none, which runs no container",
                    "set runner to pyxis or apptainer, or remove the image",
                )
            )
        if request.mounts:
            problems.append(
                Problem(f"{where}.mounts", "mounts are set but runner none mounts nothing", "remove the mounts")
            )
    else:
        if not request.image:
            problems.append(Problem(f"{where}.image", f"runner {request.runner} needs an image", "set image"))
        if request.python_env:
            problems.append(
                Problem(
                    f"{where}.python_env",
                    f"python_env is set but runner {request.runner} runs the image's Python",
                    "remove python_env or set runner: none",
                )
            )
    for index, mount in enumerate(request.mounts):
        parts = mount.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            problems.append(
                Problem(f"{where}.mounts[{index}]", f"{mount!r} is not HOST:CONTAINER[:ro]", "e.g. /lustre/ws:/ws:ro")
            )
    return problems


def _extra_option_problems(request: SbatchRequest, where: str) -> list[Problem]:
    problems = []
    for index, option in enumerate(request.extra_options):
        name = option.split("=", 1)[0]
        if not option.startswith("-") or "\n" in option:
            problems.append(
                Problem(f"{where}.extra_options[{index}]", f"{option!r} is not an sbatch option", "e.g. --exclusive")
            )
        elif name in _MANAGED_OPTIONS:
            problems.append(
                Problem(
                    f"{where}.extra_options[{index}]",
                    f"{name} is set by the job variable {_MANAGED_OPTIONS[name]}",
                    f"set {_MANAGED_OPTIONS[name]} instead",
                )
            )
    return problems


def gres(request: SbatchRequest) -> str | None:
    """The `--gres` value: `gpu:N` or `gpu:TYPE:N`; None without GPUs."""
    if request.gpus == 0:
        return None
    return f"gpu:{request.gpu_type}:{request.gpus}" if request.gpu_type else f"gpu:{request.gpus}"


def directives(request: SbatchRequest) -> list[str]:
    """The sbatch options, in the order they are written as `#SBATCH` lines."""
    options = [f"--job-name={job_name(request.job_name)}", f"--nodes={request.nodes}", "--ntasks-per-node=1"]
    named = (
        ("--partition", request.partition),
        ("--account", request.account),
        ("--qos", request.qos),
        ("--time", request.time_limit),
        ("--gres", gres(request)),
        ("--cpus-per-task", request.cpus_per_task),
        ("--mem", request.memory),
        ("--chdir", request.working_dir),
    )
    options.extend(f"{option}={value}" for option, value in named if value is not None)
    if request.log_dir is not None:
        log = f"{request.log_dir.rstrip('/')}/%x-%j.out"
        options.extend([f"--output={log}", f"--error={log}", "--open-mode=append"])
    options.append("--requeue" if request.requeue else "--no-requeue")
    options.extend(request.extra_options)
    return options


def run_line(request: SbatchRequest) -> str:
    """The line that starts the flow run's command on the node, through the request's runner."""
    if request.runner == "none":
        return f"exec {request.command}"
    # One task on the first node: the flow engine runs once, whatever the allocation's size.
    step = ["srun", "--nodes=1", "--ntasks=1"]
    if request.runner == "pyxis":
        step.append(f"--container-image={request.image}")
        if request.mounts:
            step.append(f"--container-mounts={','.join(request.mounts)}")
        return f"exec {shlex.join(step)} {request.command}"
    binds = [part for mount in request.mounts for part in ("--bind", mount)]
    apptainer = ["apptainer", "exec", "--nv", *binds, str(request.image)]
    return f"exec {shlex.join([*step, *apptainer])} {request.command}"


def render_script(request: SbatchRequest) -> str:
    """The whole batch script. It may hold secret environment values: hand it to sbatch, never log it."""
    lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in directives(request))]
    lines.append("set -e")
    lines.extend(f"export {name}={shlex.quote(value)}" for name, value in sorted(request.env.items()))
    if request.python_env is not None:
        lines.append(f'export PATH={shlex.quote(request.python_env.rstrip("/") + "/bin")}:"$PATH"')
    lines.extend(request.setup_commands)
    lines.append(run_line(request))
    return "\n".join(lines) + "\n"


def describe(request: SbatchRequest) -> str:
    """What may be shown: the options and the run line, with the environment's names but not its values."""
    names = ", ".join(sorted(request.env)) or "none"
    return f"sbatch {' '.join(directives(request))}; environment: {names}; runs: {run_line(request)}"
