"""The run context's job defaults: GPUs per job, image, runtime and timeout."""

from __future__ import annotations

import pytest
from run_support import (
    make_config,
    make_context,
)

from aoi_pipeline.pipeline.context import JobDefaults
from aoi_pipeline.pipeline.layout import RunLayout


@pytest.mark.parametrize(
    ("gpus", "per_job", "visible", "expected"),
    [
        ("auto", 2, 0, 0),
        ("auto", 2, 4, 2),
        ("auto", 1, 1, 1),
        (0, 1, 4, 0),
        (0, 3, 0, 0),
        (4, 2, 4, 2),
    ],
)
def test_the_gpus_of_each_job(workspace, gpus, per_job, visible, expected):
    config = make_config(workspace, gpus=gpus, gpus_per_job=per_job)
    assert JobDefaults.from_config(config, visible_gpus=visible).gpus == expected


def test_on_kubernetes_gpus_auto_gives_each_job_its_share_of_the_pools_gpus(workspace, monkeypatch):
    from aoi_pipeline.jobs.gpu import GpuSlots

    # This machine has no GPU; the cluster's nodes do.
    monkeypatch.setattr(GpuSlots, "detect", classmethod(lambda cls, *a, **k: pytest.fail("GPUs probed here")))
    config = make_config(workspace, gpus="auto", gpus_per_job=2).model_copy(update={"platform": "kubernetes"})

    assert JobDefaults.from_config(config).gpus == 2
    assert JobDefaults.from_config(config.model_copy(update={"gpus": 0})).gpus == 0


def test_the_job_defaults_carry_the_image_runtime_and_timeout(workspace):
    context = make_context(workspace, RunLayout(workspace.root / "run"), job_timeout_minutes=1.5, runtime="tao")
    assert context.jobs == JobDefaults(image="registry.example/tao:pyt", runtime="tao", gpus=0, timeout_s=90.0)
    assert make_context(workspace, RunLayout(workspace.root / "run")).jobs.timeout_s is None


def test_on_slurm_auto_asks_every_job_for_its_share_of_the_nodes_gpus_whatever_this_machine_has(workspace, monkeypatch):
    import aoi_pipeline.pipeline.context as context_module
    from aoi_pipeline.config import config_from_mapping

    monkeypatch.setattr(context_module.GpuSlots, "detect", lambda: pytest.fail("this machine's GPUs were probed"))

    def slurm_config(**changes):
        return config_from_mapping({"workspace": str(workspace.root), "platform": "slurm", **changes})

    assert JobDefaults.from_config(slurm_config(gpus="auto", gpus_per_job=2)).gpus == 2
    assert JobDefaults.from_config(slurm_config(gpus=0)).gpus == 0
