"""What the work-pool runner asks of a pool for one job (no server needed for these)."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.jobs.job import Mount, TaoJob
from aoi_pipeline.jobs.workpool import deployment_name, job_variables, parent_tag


def make_job(tmp_path: Path, gpus: int, mounts: tuple[Mount, ...] = ()) -> TaoJob:
    return TaoJob(
        name="j",
        action="train",
        image="localhost/aoi-pipeline-job:latest",
        spec={},
        results_dir=tmp_path / "ws" / "results" / "j",
        gpus=gpus,
        mounts=mounts,
    )


def test_the_platform_names_the_deployment() -> None:
    assert deployment_name("docker") == "tao-job/docker"
    assert deployment_name("slurm") == "tao-job/slurm"
    assert parent_tag("1234") == "aoi-parent:1234"


def test_docker_gets_the_image_same_path_mounts_and_a_gpu_request_of_the_jobs_share(tmp_path: Path) -> None:
    extra = Mount(tmp_path / "models", "/models", read_only=True)
    ws = tmp_path / "ws"

    variables = job_variables("docker", make_job(tmp_path, 2, (extra,)), [ws, ws / "results", ws])

    assert variables["image"] == "localhost/aoi-pipeline-job:latest"
    assert variables["volumes"] == sorted(
        [f"{ws}:{ws}", f"{ws / 'results'}:{ws / 'results'}", f"{tmp_path / 'models'}:/models:ro"]
    )
    assert variables["device_requests"] == [{"driver": "nvidia", "count": 2, "capabilities": [["gpu"]]}]
    assert "env" not in variables  # secret values never travel in job variables


def test_a_cpu_job_requests_no_gpu_device_at_all(tmp_path: Path) -> None:
    assert job_variables("docker", make_job(tmp_path, 0), [])["device_requests"] == []


def test_other_platforms_get_a_plain_gpu_count(tmp_path: Path) -> None:
    variables = job_variables("slurm", make_job(tmp_path, 3), [tmp_path])

    assert variables["gpus"] == 3 and "device_requests" not in variables
