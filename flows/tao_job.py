"""The `tao-job` flow: run one TAO job on whatever machine executes this flow run.

This is the unit a Docker, Kubernetes or Slurm work pool executes (`tao-job/<platform>`): the pipeline hands
it a job record, the pool's infrastructure provides the container and GPUs, and the flow run's log is the
job's output. Secret values never travel with the job: the names it lists (and the NGC key) are resolved
here, from this machine's environment or from Secret blocks, and redacted from everything the job prints.
A job that does not succeed fails the run, so the UI shows it; its job record (job.json) says why.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger

from aoi_pipeline.jobs.job import TaoJob
from aoi_pipeline.jobs.local import LocalLauncher
from aoi_pipeline.pipeline.job_runner import require_success
from blocks import secret_env


@flow(name="tao-job", flow_run_name="{job[name]}")
def tao_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run the job; returns its result record, or raises the job's error when it did not succeed."""
    logger = get_run_logger()
    tao = TaoJob.from_record(job)
    launcher = LocalLauncher(extra_env=secret_env(tao.env_names, os.environ))
    result = launcher.run(tao, log=logger.info)
    require_success(result)
    return result.to_record()
