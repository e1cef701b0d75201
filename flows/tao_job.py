"""The `tao-job` flow: run one TAO job on whatever machine executes this flow run.

This is the unit a Docker, Kubernetes or Slurm work pool executes: the pipeline hands it a job record, the
pool's infrastructure provides the container and GPUs, and the flow run's log is the job's output.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from aoi_pipeline.jobs.job import TaoJob
from aoi_pipeline.jobs.local import LocalLauncher


@flow(name="tao-job", flow_run_name="{job[name]}")
def tao_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run the job; returns its result record (status, exit code, failure, log path)."""
    logger = get_run_logger()
    result = LocalLauncher().run(TaoJob.from_record(job), log=logger.info)
    return result.to_record()
