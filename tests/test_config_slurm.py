"""The config's `slurm` section: accepted with platform slurm, its values refused where Slurm would misread them.

Sections and keys the chosen platform would not honour are pre-flight blockers
(tests/pipeline/preflight/checks/test_platform_settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoi_pipeline.config import load_config
from aoi_pipeline.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text("workspace: ws\n" + text, encoding="utf-8")
    return path


def refusal(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def test_platform_slurm_with_its_settings_is_accepted(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "platform: slurm\nslurm:\n  partition: gpu\n  time_limit: '02:00:00'\n  memory: 64G\n"
            "  runner: pyxis\n  env_names: [NGC_KEY]\nimages:\n  train: /lustre/aoi.sqsh\n",
        )
    )

    assert config.platform == "slurm"
    assert config.slurm is not None
    assert (config.slurm.partition, config.slurm.time_limit, config.slurm.memory) == ("gpu", "02:00:00", "64G")
    assert config.slurm.env_names == ("NGC_KEY",) and config.images.train == "/lustre/aoi.sqsh"


def test_platform_slurm_needs_no_section(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "platform: slurm\n")).slurm is None


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("time_limit: four hours", "slurm.time_limit"),
        ("memory: lots", "slurm.memory"),
        ("partition: 'gpu a100'", "slurm.partition"),
        ("runner: docker", "slurm.runner"),
        ("env_names: ['NGC KEY']", "slurm.env_names[0]"),
        ("cpus_per_task: 0", "slurm.cpus_per_task"),
        ("gres: gpu:2", "slurm.gres"),
    ],
)
def test_a_value_slurm_would_misread_is_refused_naming_its_key(tmp_path: Path, line: str, key: str) -> None:
    path = write(tmp_path, f"platform: slurm\nslurm:\n  {line}\n")

    error = refusal(path)

    assert [problem.where for problem in error.problems] == [f"{path} key {key}"]
