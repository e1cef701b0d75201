"""The TAO job contract and the launchers that run it.

A `TaoJob` says what to run (action, image, spec, results dir, mounts, GPUs, env names); `status` reads the
TAO status.json a job writes, `checkpoints` finds what a train job saved, `failures` says whether a failure
is infrastructure (retriable) or program (a hard stop), `LocalLauncher` runs jobs as subprocesses on this
machine, and `run_evaluator_command` runs a metric contract's command evaluator. Nothing here imports
Prefect: flows pass their run logger in as a plain callable.
"""

from aoi_pipeline.jobs.checkpoints import (
    BEST_RE,
    CHECKPOINT_RE,
    LATEST,
    Checkpoint,
    best_val_checkpoint,
    discover_checkpoints,
    latest_checkpoint,
    new_checkpoints,
)
from aoi_pipeline.jobs.failures import Failure, classify_failure, redact
from aoi_pipeline.jobs.gpu import GpuSlots
from aoi_pipeline.jobs.job import JobResult, Mount, Runtime, TaoJob
from aoi_pipeline.jobs.local import LocalLauncher
from aoi_pipeline.jobs.metric_command import run_evaluator_command
from aoi_pipeline.jobs.status_json import StatusLine, final_status, read_status, validation_history

__all__ = [
    "BEST_RE",
    "CHECKPOINT_RE",
    "LATEST",
    "Checkpoint",
    "Failure",
    "GpuSlots",
    "JobResult",
    "LocalLauncher",
    "Mount",
    "Runtime",
    "StatusLine",
    "TaoJob",
    "best_val_checkpoint",
    "classify_failure",
    "discover_checkpoints",
    "final_status",
    "latest_checkpoint",
    "new_checkpoints",
    "read_status",
    "redact",
    "run_evaluator_command",
    "validation_history",
]
