"""Checks of the GPU shape: how many GPUs the run may use, how many per job, and whether the batches fit.

The GPUs come in as the probe saw them (by `jobs.gpu`'s visibility rule), or as None on a platform whose
nodes are not probed from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.errors import Problem
from aoi_pipeline.jobs.gpu import GpuInfo
from aoi_pipeline.pipeline.preflight.checks.findings import Findings

# Batch-size rule of thumb of DEFT's pre-flight: <= 16 fits a 48 GB GPU, <= 8 a 24 GB one (64 OOMs on 48 GB).
# The bounds sit a little above the nominal sizes because nvidia-smi reports e.g. 49140 MiB for "48 GB".
BATCH_RULES_GIB: tuple[tuple[float, int], ...] = ((26.0, 8), (50.0, 16))
MIN_GPU_MEMORY_GIB = 15.5  # Visual ChangeNet needs a 16 GB GPU at least


@dataclass(frozen=True)
class GpuPlan:
    """The GPUs of the run: those detected (None: not probed), how many it uses ("auto": the platform's call)."""

    detected: tuple[GpuInfo, ...] | None
    count: int | str
    per_job: int | float  # a float is a share 1/k of one GPU: k jobs packed onto each GPU

    def slots(self, parallel: int) -> int:
        """How many of `parallel` trials can run at once with this many GPUs (or this share of one) per job."""
        if not isinstance(self.count, int) or self.count == 0 or self.per_job == 0:
            return parallel
        per_gpu = round(1 / self.per_job) if self.per_job < 1 else 0
        fit = self.count * per_gpu if per_gpu else self.count // int(self.per_job)
        return max(1, min(parallel, fit))


def check_gpus(
    config: PipelineConfig, detected: tuple[GpuInfo, ...] | None, batch_sizes: Mapping[str, int]
) -> tuple[GpuPlan, Findings]:
    """The run's GPU plan; more GPUs than visible blocks, fewer slots than parallel trials warns."""
    if detected is None:
        return GpuPlan(None, config.gpus, config.gpus_per_job), Findings()
    count = len(detected) if config.gpus == "auto" else config.gpus
    per_job = config.gpus_per_job if count else 0
    gpus = GpuPlan(detected, count, per_job)
    found = Findings.of(_count_problems(config, detected, count))
    if count == 0 and config.runtime == "tao":
        found += Findings.of(warnings=["no GPU for the run: TAO Visual ChangeNet needs a CUDA GPU"])
    for phase, settings in (("phase1", config.phase1), ("phase3", config.phase3)):
        if settings.enabled and settings.parallel > gpus.slots(settings.parallel):
            warning = (
                f"{phase}.parallel is {settings.parallel} but {count} GPU(s) at {per_job} per job give "
                f"{gpus.slots(settings.parallel)} slot(s): the other trials wait for a free slot"
            )
            found += Findings.of(warnings=[warning])
    if count:
        found += Findings.of(warnings=batch_memory_warnings(detected[: int(count)], batch_sizes))
    return gpus, found


def _count_problems(config: PipelineConfig, detected: Sequence[GpuInfo], count: int) -> list[Problem]:
    problems = []
    if isinstance(config.gpus, int) and config.gpus > len(detected):
        problems.append(
            Problem(
                "pipeline config key gpus",
                f"asks for {config.gpus} GPU(s) but {len(detected)} are visible on this machine"
                f"{': ' + ', '.join(g.describe() for g in detected) if detected else ''}",
                "lower gpus (or set gpus: auto), or run where that many GPUs are visible (nvidia-smi -L)",
            )
        )
    if count and config.gpus_per_job > count:
        problems.append(
            Problem(
                "pipeline config key gpus_per_job",
                f"one job asks for {config.gpus_per_job} GPU(s) but the run has {count}",
                f"set gpus_per_job to at most {count}",
            )
        )
    return problems


def batch_memory_warnings(gpus: Sequence[GpuInfo], batch_sizes: Mapping[str, int]) -> list[str]:
    """Warn when the smallest GPU is below Visual ChangeNet's minimum or a batch exceeds the rule of thumb."""
    memories = [gpu.memory_gib for gpu in gpus if gpu.memory_gib is not None]
    if not memories:
        return []
    smallest = min(memories)
    warnings = []
    if smallest < MIN_GPU_MEMORY_GIB:
        warnings.append(f"the smallest GPU has {smallest:.1f} GiB: Visual ChangeNet needs a 16 GB GPU at least")
    limit = next((batch for bound, batch in BATCH_RULES_GIB if smallest <= bound), None)
    if limit is None:
        return warnings
    for key, size in batch_sizes.items():
        if size > limit:
            warnings.append(
                f"{key} is {size}, above the rule of thumb for a {smallest:.0f} GiB GPU "
                f"(<= {limit}; 16 fits 48 GB, 8 fits 24 GB): lower it to {limit} to avoid running out "
                "of memory"
            )
    return warnings
