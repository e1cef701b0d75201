"""The job variables of a TAO job on the Slurm pool, and the config values the worker would refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.errors import ConfigError
from aoi_pipeline.jobs.job import Mount, TaoJob
from aoi_pipeline.workers.slurm import SlurmJobConfiguration
from aoi_pipeline.workers.slurm.sbatch import directives, run_line
from aoi_pipeline.workers.slurm.variables import job_variables, require_valid_settings, settings_problems


def config(tmp_path: Path, **slurm: Any):
    data: dict[str, Any] = {"workspace": str(tmp_path / "ws"), "platform": "slurm"}
    if slurm:
        data["slurm"] = slurm
    if slurm.get("runner") in ("pyxis", "apptainer"):
        data["images"] = dict.fromkeys(("train", "inference", "embed", "sdg"), "/lustre/aoi.sqsh")
    return config_from_mapping(data)


def job(tmp_path: Path, gpus: int = 1, **changes: Any) -> TaoJob:
    values: dict[str, Any] = {
        "name": "phase1-trial000-train",
        "action": "train",
        "image": "/lustre/aoi.sqsh",
        "spec": {},
        "results_dir": tmp_path / "ws" / "results" / "t",
        "gpus": gpus,
        **changes,
    }
    return TaoJob(**values)


def test_without_a_slurm_section_only_the_gpus_are_set_and_the_pool_decides_the_rest(tmp_path: Path) -> None:
    assert job_variables(job(tmp_path, gpus=2), config(tmp_path)) == {"gpus": 2}


def test_the_set_keys_pass_on_and_runner_none_gets_neither_image_nor_mounts(tmp_path: Path) -> None:
    settings = {
        "partition": "gpu",
        "account": "vision",
        "time_limit": "04:00:00",
        "memory": "64G",
        "cpus_per_task": 16,
        "gpu_type": "a100",
        "python_env": "/shared/venvs/aoi",
        "setup_commands": ["module load cuda"],
        "extra_options": ["--exclusive"],
        "requeue": True,
        "env_names": ["NGC_KEY"],
    }

    variables = job_variables(job(tmp_path), config(tmp_path, **settings))

    assert variables == {**settings, "gpus": 1}
    # What the worker renders from them: the GRES with its type, the environment's bin first on PATH.
    rendered = SlurmJobConfiguration(**variables).sbatch_request({"NGC_KEY": "secret"})
    assert "--gres=gpu:a100:1" in directives(rendered) and "--requeue" in directives(rendered)
    assert run_line(rendered) == "exec prefect flow-run execute"


def test_a_cpu_job_asks_for_no_gpu_type(tmp_path: Path) -> None:
    variables = job_variables(job(tmp_path, gpus=0), config(tmp_path, gpu_type="a100"))

    assert variables == {"gpus": 0}


def test_a_container_runner_gets_the_jobs_image_and_the_shared_folders_at_the_same_paths(tmp_path: Path) -> None:
    settings = config(tmp_path, runner="pyxis")
    workspace, results = settings.workspace, settings.resolved_results_root.parent / "results-elsewhere"
    settings = settings.model_copy(update={"results_root": results})
    extra = Mount(tmp_path / "models", "/models", read_only=True)

    variables = job_variables(job(tmp_path, mounts=(extra,)), settings)

    assert variables["runner"] == "pyxis" and variables["image"] == "/lustre/aoi.sqsh"
    assert variables["mounts"] == sorted(
        [f"{workspace}:{workspace}", f"{results}:{results}", f"{tmp_path / 'models'}:/models:ro"]
    )
    rendered = SlurmJobConfiguration(**variables).sbatch_request({})
    assert f"--container-mounts={','.join(variables['mounts'])}" in run_line(rendered)


def test_a_valid_section_has_no_problems(tmp_path: Path) -> None:
    assert settings_problems(config(tmp_path, partition="gpu", extra_options=["--exclusive"])) == []
    require_valid_settings(config(tmp_path))


@pytest.mark.parametrize(
    ("settings", "where", "what"),
    [
        ({"extra_options": ["--time=10"]}, "pipeline config key slurm.extra_options[0]", "set by the job variable"),
        ({"extra_options": ["exclusive"]}, "pipeline config key slurm.extra_options[0]", "is not an sbatch option"),
        ({"runner": "pyxis", "python_env": "/v"}, "pipeline config key slurm.python_env", "runs the image's Python"),
    ],
)
def test_what_the_worker_would_refuse_is_refused_before_the_run(
    tmp_path: Path, settings: dict[str, Any], where: str, what: str
) -> None:
    problems = settings_problems(config(tmp_path, **settings))

    assert [problem.where for problem in problems] == [where]
    assert what in problems[0].what
    with pytest.raises(ConfigError, match="slurm section is invalid"):
        require_valid_settings(config(tmp_path, **settings))
