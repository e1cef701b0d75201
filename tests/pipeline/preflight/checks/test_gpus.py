"""GPU checks: the count the run may use, GPUs per job, parallel slots and the batch-size rule of thumb."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.jobs.gpu import GpuInfo
from aoi_pipeline.pipeline.preflight import StaticProbe
from aoi_pipeline.pipeline.preflight.checks.gpus import GpuPlan, check_gpus

L40S = GpuInfo("NVIDIA L40S", 44.99)


def test_asking_for_more_gpus_than_exist_is_a_blocker(ws: Path, preflight, read) -> None:
    report = preflight(ws, probe=StaticProbe(gpu_list=[L40S]), gpus=4)

    found = read.blockers_at(report, "pipeline config key gpus")
    assert len(found) == 1 and "4 GPU(s)" in found[0].what
    read.assert_actionable(found)


def test_a_job_asking_for_more_gpus_than_the_run_has_is_a_blocker(ws: Path, preflight, read) -> None:
    report = preflight(ws, probe=StaticProbe(gpu_list=[L40S]), gpus_per_job=2)

    assert read.blockers_at(report, "pipeline config key gpus_per_job")


def test_no_gpu_means_cpu_only_without_a_blocker(ws: Path, preflight, read) -> None:
    report = preflight(ws, probe=StaticProbe(gpu_list=()))

    assert report.ok
    assert "CPU only" in read.section(report, 1)
    assert report.plan["gpus"] == {"count": 0, "per_job": 0}


def test_the_batch_size_rule_of_thumb_warns_on_a_24_gb_gpu(ws: Path, preflight) -> None:
    small = StaticProbe(gpu_list=[GpuInfo("NVIDIA RTX A5000", 23.99)])

    too_big = preflight(ws, probe=small, phase1={"batch_size": 16})
    fits = preflight(ws, probe=small, phase1={"batch_size": 8})

    assert any("phase1.batch_size is 16" in warning for warning in too_big.warnings)
    assert not any("phase1.batch_size" in warning for warning in fits.warnings)


def test_more_parallel_trials_than_slots_warn(ws: Path, make_config) -> None:
    config = make_config(ws, gpus_per_job=1, phase1={"parallel": 3}, phase3={"enabled": False})

    gpus, found = check_gpus(config, (L40S, L40S), {})

    assert gpus == GpuPlan((L40S, L40S), 2, 1) and gpus.slots(3) == 2
    assert found.warnings == (
        "phase1.parallel is 3 but 2 GPU(s) at 1 per job give 2 slot(s): the other trials wait for a free slot",
    )


def test_gpus_on_a_remote_platform_are_the_platforms_call(ws: Path, make_config, read, preflight) -> None:
    gpus, found = check_gpus(make_config(ws, platform="slurm", gpus="auto"), None, {"phase1.batch_size": 64})

    assert gpus == GpuPlan(None, "auto", 1) and gpus.slots(4) == 4
    assert found.blockers == () and found.warnings == ()
    shown = read.section(preflight(ws, platform="kubernetes", gpus=3), 1)
    assert "- GPUs: on the kubernetes nodes (not probed from here); requested: 3" in shown
