"""deployments/slurm/base-job-template.json is the worker's own template with the project's defaults."""

from __future__ import annotations

import json
from pathlib import Path

from aoi_pipeline.workers.slurm import SlurmWorker

TEMPLATE = Path(__file__).resolve().parents[3] / "deployments" / "slurm" / "base-job-template.json"


def test_the_pool_template_renders_every_variable_the_worker_knows() -> None:
    shipped = json.loads(TEMPLATE.read_text())
    own = SlurmWorker.get_default_base_job_template()
    assert shipped["job_configuration"] == own["job_configuration"]
    assert set(shipped["variables"]["properties"]) == set(own["variables"]["properties"])


def test_the_pool_asks_for_one_gpu_and_four_hours_and_runs_without_a_container_by_default() -> None:
    properties = json.loads(TEMPLATE.read_text())["variables"]["properties"]
    assert properties["gpus"]["default"] == 1
    assert properties["time_limit"]["default"] == "04:00:00"
    assert properties["runner"]["default"] == "none"
