"""TAO jobs on the Slurm work pool: the job variables of one job's `tao-job/slurm` flow run.

`job_variables` turns a `TaoJob` and the pipeline config's `slurm` section into the variables the pool's base
job template takes (`deployments/slurm/base-job-template.json`): the job's GPUs as `--gres=gpu:N`, the
runner, and for a container runner the job's image with the shared folders mounted at the same paths; every
`slurm` key the config leaves unset keeps the pool's default. `settings_problems` checks the section the way
the worker checks a job before `sbatch` (time limit, memory, extra options, runner and image), so a value
Slurm would reject is refused before the run is approved rather than at its first job. Only environment
variable names travel; the worker copies their values from its own environment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aoi_pipeline.config import PipelineConfig, SlurmSettings
from aoi_pipeline.errors import ConfigError, Problem
from aoi_pipeline.jobs.job import TaoJob
from aoi_pipeline.workers.slurm.sbatch import SbatchRequest, request_problems

CONFIG_PLACE = "pipeline config key slurm"
# Config keys passed on as they are when set (the template's variable of the same name).
_PASSED_ON = (
    "partition",
    "account",
    "qos",
    "time_limit",
    "cpus_per_task",
    "memory",
    "python_env",
    "log_dir",
    "requeue",
)


def _mounts(job: TaoJob, shared_dirs: Iterable[Path]) -> list[str]:
    """`host:container[:ro]` for the shared folders (same path inside) and the job's own mounts."""
    mounts = {str(Path(d).absolute()): f"{Path(d).absolute()}:{Path(d).absolute()}" for d in shared_dirs}
    for mount in job.mounts:
        mounts[str(mount.host)] = f"{mount.host.absolute()}:{mount.container}{':ro' if mount.read_only else ''}"
    return sorted(mounts.values())


def job_variables(job: TaoJob, config: PipelineConfig) -> dict[str, Any]:
    """The job variables of the job's `tao-job/slurm` flow run; unset `slurm` keys keep the pool's defaults. A
    container runner mounts the workspace and the results root at the same paths (the specs name them)."""
    shared_dirs = dict.fromkeys([config.workspace, config.resolved_results_root])
    slurm = config.slurm or SlurmSettings()
    values: dict[str, Any] = {"gpus": job.gpus}
    for key in _PASSED_ON:
        if (value := getattr(slurm, key)) is not None:
            values[key] = value
    if slurm.gpu_type is not None and job.gpus > 0:
        values["gpu_type"] = slurm.gpu_type
    if slurm.runner is not None:
        values["runner"] = slurm.runner
    if slurm.runner in ("pyxis", "apptainer"):
        values["image"] = job.image
        values["mounts"] = _mounts(job, shared_dirs)
    if slurm.setup_commands is not None:
        values["setup_commands"] = list(slurm.setup_commands)
    if slurm.extra_options is not None:
        values["extra_options"] = list(slurm.extra_options)
    if slurm.env_names:
        values["env_names"] = list(slurm.env_names)
    return values


def settings_problems(config: PipelineConfig) -> list[Problem]:
    """What the worker would refuse in the config's `slurm` section, named by the config key."""
    if config.platform != "slurm" or config.slurm is None:
        return []
    slurm = config.slurm
    container = slurm.runner in ("pyxis", "apptainer")
    request = SbatchRequest(
        job_name="aoi-preflight",
        command="true",
        partition=slurm.partition,
        account=slurm.account,
        qos=slurm.qos,
        time_limit=slurm.time_limit,
        # The GPU type is checked against the jobs that ask for GPUs only.
        gpus=max(1, math.ceil(config.gpus_per_job)) if slurm.gpu_type else 0,
        gpu_type=slurm.gpu_type,
        cpus_per_task=slurm.cpus_per_task,
        memory=slurm.memory,
        log_dir=slurm.log_dir,
        extra_options=slurm.extra_options or (),
        runner=slurm.runner or "none",
        image=config.images.train if container else None,
        python_env=slurm.python_env,
        setup_commands=slurm.setup_commands or (),
    )
    return request_problems(request, where=CONFIG_PLACE)


def require_valid_settings(config: PipelineConfig) -> None:
    """Raise the config's `slurm` problems as one error (before any job is sent)."""
    if problems := settings_problems(config):
        raise ConfigError(problems, summary="the pipeline config's slurm section is invalid")


__all__ = ["job_variables", "require_valid_settings", "settings_problems"]
