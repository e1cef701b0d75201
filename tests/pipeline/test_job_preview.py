"""`aoi-pipeline jobs render`: the job a run would launch for an action, as the Kubernetes worker would submit it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aoi_pipeline.cli import main
from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.errors import ConfigError
from aoi_pipeline.pipeline.job_preview import preview_job, render_job


def write_config(tmp_path: Path, **extra) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"workspace": "ws", **extra}))
    return path


def test_the_command_prints_the_job_manifest_with_the_gpu_share_and_mounts(tmp_path: Path, capsys) -> None:
    path = write_config(tmp_path, gpus_per_job=2, images={"train": "registry.local/aoi-tao:1"})
    assert main(["jobs", "render", "--platform", "kubernetes", "--config", str(path), "--action", "train"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert manifest["kind"] == "Job"
    assert container["image"] == "registry.local/aoi-tao:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert {"name": "workspace", "mountPath": str((tmp_path / "ws").resolve())} in container["volumeMounts"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_gpus_auto_counts_the_pools_gpus_not_this_machines(tmp_path: Path) -> None:
    config = config_from_mapping({"workspace": str(tmp_path), "gpus": "auto"})
    assert preview_job(config, "train").gpus == 1
    assert preview_job(config, "sdg").gpus == 0
    assert preview_job(config.model_copy(update={"gpus": 0}), "train").gpus == 0


def test_each_action_gets_its_image(tmp_path: Path) -> None:
    config = config_from_mapping(
        {"workspace": str(tmp_path), "images": {"train": "t", "inference": "i", "embed": "e", "sdg": "s"}}
    )
    images = {
        action: preview_job(config, action).image for action in ("train", "evaluate", "inference", "embed", "sdg")
    }
    assert images == {"train": "t", "evaluate": "t", "inference": "i", "embed": "e", "sdg": "s"}


def test_an_unknown_action_or_platform_is_refused(tmp_path: Path, capsys) -> None:
    config = config_from_mapping({"workspace": str(tmp_path)})
    with pytest.raises(ConfigError, match="unknown action"):
        preview_job(config, "fly")
    with pytest.raises(ConfigError, match="not available"):
        render_job(config, "train", "slurm")
    path = write_config(tmp_path)
    assert main(["jobs", "render", "--platform", "kubernetes", "--config", str(path), "--action", "fly"]) == 1
    assert "unknown action 'fly'" in capsys.readouterr().err
