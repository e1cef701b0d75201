"""Checks of section 1: config keys the chosen platform does not honour are refused, never silently ignored.

On Kubernetes a job sees only the workspace volume, mounted at the workspace's path, so the results root must
lie inside the workspace; the run's GPU total is the work pool's concurrency limit, not `gpus` (only `auto` or
0, CPU jobs, mean something there). The `kubernetes` section only shapes Jobs of platform kubernetes, the
`slurm` section only batch jobs of platform slurm. On Slurm, `images` mean something only with a container
runner (pyxis, apptainer), and the `slurm` section's values must be what sbatch accepts (the worker's own
checks, run here so a bad value stops the run before approval rather than at its first job).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from aoi_pipeline.config import Images, KubernetesSettings, PipelineConfig
from aoi_pipeline.errors import Problem


def kubernetes_environment_warnings(config: PipelineConfig, environ: Mapping[str, str]) -> list[str]:
    """TAO's own Kubernetes variable for the namespace is read by nothing here: say so instead of ignoring it."""
    if config.platform != "kubernetes" or not environ.get("TAO_K8S_NAMESPACE"):
        return []
    namespace = config.kubernetes.namespace or "default"
    return [
        f"TAO_K8S_NAMESPACE is set but not read: the Jobs go to namespace {namespace} "
        "(pipeline config key kubernetes.namespace)"
    ]


def check_platform_settings(config: PipelineConfig) -> list[Problem]:
    """Blockers for settings the config's platform would not honour."""
    problems = _other_platforms_sections(config)
    if config.platform == "kubernetes":
        problems += _kubernetes_problems(config)
    elif config.platform == "slurm":
        problems += _slurm_problems(config)
    return problems


def _other_platforms_sections(config: PipelineConfig) -> list[Problem]:
    problems = []
    if config.platform != "kubernetes" and config.kubernetes != KubernetesSettings():
        problems.append(
            Problem(
                "pipeline config key kubernetes",
                f"is set, but platform is {config.platform!r}: only Kubernetes Jobs use it",
                "remove the kubernetes section, or set platform: kubernetes",
            )
        )
    if config.platform != "slurm" and config.slurm is not None:
        problems.append(
            Problem(
                "pipeline config key slurm",
                f"is set, but platform is {config.platform!r}: only Slurm batch jobs use it",
                "remove the slurm section, or set platform: slurm",
            )
        )
    return problems


def _slurm_problems(config: PipelineConfig) -> list[Problem]:
    from aoi_pipeline.workers.slurm.variables import settings_problems

    problems = []
    runner = config.slurm.runner if config.slurm is not None else None
    if runner in (None, "none") and config.images != Images():
        problems.append(
            Problem(
                "pipeline config key images",
                "is set, but on Slurm with runner none the jobs run in the nodes' Python environment, in no image",
                "remove images, or set slurm.runner to pyxis or apptainer",
            )
        )
    return problems + settings_problems(config)


def _kubernetes_problems(config: PipelineConfig) -> list[Problem]:
    problems = []
    root = Path(os.path.abspath(config.resolved_results_root))
    workspace = Path(os.path.abspath(config.workspace))
    if not root.is_relative_to(workspace):
        problems.append(
            Problem(
                "pipeline config key results_root",
                f"{root} lies outside the workspace {workspace}; a Kubernetes Job mounts only the workspace volume",
                "leave results_root unset (it defaults to <workspace>/results) or point it inside the workspace",
            )
        )
    if isinstance(config.gpus, int) and config.gpus > 0:
        problems.append(
            Problem(
                "pipeline config key gpus",
                f"is {config.gpus}, but on Kubernetes the run's GPU total is set by the aoi-kubernetes work pool's "
                "concurrency limit (jobs at once, each with gpus_per_job GPUs)",
                "set gpus: auto (or 0 for CPU-only jobs) and limit the pool: "
                "aoi-pipeline pools setup --platform kubernetes --concurrency JOBS",
            )
        )
    return problems
