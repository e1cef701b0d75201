"""What a run would hand a work pool for one action, for a user to review before anything runs.

`preview_job` builds the `TaoJob` a run makes for an action (its image, the run's GPU share per job, the results
root on the workspace), exactly as the run's `JobDefaults` do; `render_job` turns it into what the platform's
worker submits: for Kubernetes, the Job manifest rendered by the worker's own code from our base job template.
On a work pool the GPUs are the pool's nodes', not this machine's, so `gpus: auto` counts as GPUs present.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.errors import ConfigError
from aoi_pipeline.jobs.job import ACTIONS, TaoJob
from aoi_pipeline.pipeline.context import JobDefaults

RENDERABLE_PLATFORMS = ("kubernetes",)
# Synthetic data generation needs no GPU of its own (the DEFT loop runs it with uses_gpu=False).
_CPU_ACTIONS = frozenset({"sdg"})


def action_image(config: PipelineConfig, action: str) -> str:
    """The container image the config gives an action."""
    images = config.images
    return {"inference": images.inference, "embed": images.embed, "sdg": images.sdg}.get(action, images.train)


def preview_job(config: PipelineConfig, action: str) -> TaoJob:
    """The job a run of `config` would launch for `action` on a work pool (an empty spec: it is a parameter)."""
    if action not in ACTIONS:
        raise ConfigError.at("--action", f"unknown action {action!r}", f"use one of {', '.join(ACTIONS)}")
    # The job is previewed for a work pool, whose nodes hold the GPUs: `gpus: auto` means GPUs are there.
    defaults = JobDefaults.from_config(config, visible_gpus=math.ceil(config.gpus_per_job))
    return defaults.job(
        name=f"preview.{action}",
        action=action,
        spec={},
        results_dir=config.resolved_results_root / "preview" / action,
        image=action_image(config, action),
        uses_gpu=action not in _CPU_ACTIONS,
    )


def pool_job_variables(config: PipelineConfig) -> Callable[[TaoJob], dict[str, Any]] | None:
    """How a run's jobs become job variables where the platform's template has its own (Kubernetes: the same
    function `render_job` renders with; Slurm: the config's `slurm` section, refused here when sbatch would
    reject it); None: the work pools' common ones (image, GPUs, same-path volumes)."""
    if config.platform == "slurm":
        from aoi_pipeline.workers.slurm.variables import job_variables as slurm_job_variables
        from aoi_pipeline.workers.slurm.variables import require_valid_settings

        require_valid_settings(config)
        return functools.partial(slurm_job_variables, config=config)
    if config.platform != "kubernetes":
        return None
    from aoi_pipeline.workers.kubernetes import job_variables

    return functools.partial(job_variables, config=config)


def render_job(config: PipelineConfig, action: str, platform: str, template: Path | None = None) -> dict[str, Any]:
    """What the platform's worker would submit for the action's job."""
    if platform not in RENDERABLE_PLATFORMS:
        raise ConfigError.at(
            "--platform", f"rendering for {platform!r} is not available", f"use {', '.join(RENDERABLE_PLATFORMS)}"
        )
    from aoi_pipeline.workers.kubernetes import load_base_job_template, render_job_manifest

    loaded = load_base_job_template(template) if template is not None else None
    return render_job_manifest(preview_job(config, action), config, template=loaded)
