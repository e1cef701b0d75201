"""What every step of one approved run shares: the `RunContext`, and the `JobDefaults` of its jobs.

A run's steps (trials, baseline, evaluations, DEFT stages, Phase 3 registration, the state's config block)
all need the same few things: where the run directory is, the metric contract, the workspace's inputs, how
a job is built (image, runtime, GPUs, time limit) and how it is launched (the `JobRunner`), plus the resolved
settings of the phases. The flow builds one `RunContext` from the pipeline config after approval and hands
it down; nothing below the flow reads the raw config. The runner decides where a job runs: the local
launcher wrapped by a Prefect task today, a work-pool deployment on another platform.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from aoi_pipeline.config import (
    REMOTE_GPU_PLATFORMS,
    AutomlSettings,
    DatasetSettings,
    DeftSettings,
    Images,
    PipelineConfig,
)
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_target import parse_target
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import ConfigError
from aoi_pipeline.jobs.gpu import GpuSlots
from aoi_pipeline.jobs.job import TaoJob
from aoi_pipeline.pipeline.job_runner import JobRunner
from aoi_pipeline.pipeline.layout import RunLayout

AUTOML_PHASES = ("phase1", "phase3")


@dataclass(frozen=True)
class JobDefaults:
    """What every job of a run shares: the image, the runtime, the GPUs per job and the time limit."""

    image: str
    runtime: str
    gpus: int | float = 0  # a float is a share 1/k of one GPU (trials packed onto GPUs, local platform)
    timeout_s: float | None = None

    @classmethod
    def from_config(cls, config: PipelineConfig, *, visible_gpus: int | None = None) -> JobDefaults:
        """`gpus: auto` means one job's share when GPUs are visible (detected unless given), else CPU.

        On a platform whose GPUs are its nodes' (Kubernetes, Slurm), this machine's GPUs say nothing: the
        pool's nodes have them, so `auto` gives each job its share.
        """
        if visible_gpus is None:
            remote = config.platform in REMOTE_GPU_PLATFORMS
            visible_gpus = math.ceil(config.gpus_per_job) if remote else GpuSlots.detect().capacity
        if config.gpus == "auto":
            gpus = config.gpus_per_job if visible_gpus else 0
        else:
            gpus = 0 if config.gpus == 0 else config.gpus_per_job
        minutes = config.job_timeout_minutes
        return cls(
            image=config.images.train,
            runtime=config.runtime,
            gpus=gpus,
            timeout_s=None if minutes is None else minutes * 60,
        )

    def job(
        self, *, name: str, action: str, spec: Spec, results_dir: Path, image: str | None = None, uses_gpu: bool = True
    ) -> TaoJob:
        """A job of this run: its image (unless the action has its own), runtime, GPU share and time limit."""
        return TaoJob(
            name=name,
            action=action,
            image=image or self.image,
            spec=spec,
            results_dir=results_dir,
            runtime=self.runtime,  # type: ignore[arg-type]  # TaoJob validates it
            gpus=self.gpus if uses_gpu else 0,
            timeout_s=self.timeout_s,
        )


@dataclass(frozen=True)
class RunContext:
    """One approved run: its directory, contract, inputs, jobs, runner and the phases' resolved settings."""

    layout: RunLayout
    contract: MetricContract
    workspace: Workspace
    jobs: JobDefaults
    runner: JobRunner
    dataset: DatasetSettings
    images: Images
    deft: DeftSettings
    phase1: AutomlSettings
    phase3: AutomlSettings

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig,
        layout: RunLayout,
        runner: JobRunner,
        *,
        visible_gpus: int | None = None,
    ) -> RunContext:
        """The context of the run in `layout`, resolved once from the validated pipeline config."""
        return cls(
            layout=layout,
            contract=parse_target(config.kpi_target),
            workspace=Workspace.at(config.workspace),
            jobs=JobDefaults.from_config(config, visible_gpus=visible_gpus),
            runner=runner,
            dataset=config.dataset,
            images=config.images,
            deft=config.deft,
            phase1=config.phase1,
            phase3=config.phase3,
        )

    def with_runner(self, runner: JobRunner) -> RunContext:
        """The same run, its jobs launched by `runner` (a benchmark's quiet runner, a test's fake)."""
        return dataclasses.replace(self, runner=runner)

    def automl(self, phase: str) -> AutomlSettings:
        """The settings of an AutoML phase (`phase1` or `phase3`)."""
        if phase not in AUTOML_PHASES:
            raise ConfigError.at(f"AutoML phase {phase!r}", "is not an AutoML phase", f"use one of {AUTOML_PHASES}")
        return self.phase1 if phase == "phase1" else self.phase3

    @property
    def train_batch_size(self) -> int:
        """The batch size of the baseline and every DEFT retraining: Phase 1's, so the budgets compare."""
        return self.phase1.batch_size

    @property
    def light(self) -> str:
        """The lighting whose images SDG, mining and the pool use."""
        return self.dataset.lights[0]

    @property
    def image_ext(self) -> str:
        return self.dataset.image_ext

    @property
    def recall_pct(self) -> float:
        """The recall the contract's value is taken at (100 % when the contract names none)."""
        return self.contract.recall_target_pct or 100.0
