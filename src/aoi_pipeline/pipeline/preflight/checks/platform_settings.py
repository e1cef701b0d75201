"""Checks of section 1: config keys the chosen platform does not honour are refused, never silently ignored.

On Kubernetes a job sees only the workspace volume, mounted at the workspace's path, so the results root must
lie inside the workspace; the run's GPU total is the work pool's concurrency limit, not `gpus` (only `auto` or
0, CPU jobs, mean something there). The `kubernetes` section only shapes Jobs of platform kubernetes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from aoi_pipeline.config import KubernetesSettings, PipelineConfig
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
    if config.platform != "kubernetes":
        if config.kubernetes != KubernetesSettings():
            return [
                Problem(
                    "pipeline config key kubernetes",
                    f"is set, but platform is {config.platform!r}: only Kubernetes Jobs use it",
                    "remove the kubernetes section, or set platform: kubernetes",
                )
            ]
        return []
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
