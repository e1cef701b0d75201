"""The probes: the host probe against stand-in tools on PATH, the static probe, and what a plan asks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from aoi_pipeline.jobs.gpu import GpuInfo
from aoi_pipeline.pipeline.preflight import HostProbe, StaticProbe, platform_check
from aoi_pipeline.pipeline.preflight.probe import ask_probe


def _executable(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    _executable(
        folder,
        "nvidia-smi",
        'echo "0, GPU-aaaa-1111, NVIDIA H100 80GB HBM3, 81559"\necho "1, GPU-bbbb-2222, NVIDIA RTX A5000, 24564"\n',
    )
    _executable(
        folder,
        "docker",
        'for last; do :; done\nif [ "$last" = "have:1" ]; then echo sha256:1; exit 0; fi\n'
        'echo "Error response from daemon: No such image: $last" >&2; exit 1\n',
    )
    _executable(folder, "sinfo", 'echo "gpu*|up|4:00:00|gpu:8|2|idle"\necho "cpu|up|1-00:00:00|(null)|4|idle"\n')
    return folder


def test_the_host_probe_reads_nvidia_smi_and_honours_cuda_visible_devices(fake_bin: Path) -> None:
    every = HostProbe({"PATH": str(fake_bin)}).gpus()
    second = HostProbe({"PATH": str(fake_bin), "CUDA_VISIBLE_DEVICES": "GPU-bbbb-2222"}).gpus()
    hidden = HostProbe({"PATH": str(fake_bin), "CUDA_VISIBLE_DEVICES": "-1"}).gpus()

    assert [gpu.name for gpu in every] == ["NVIDIA H100 80GB HBM3", "NVIDIA RTX A5000"]
    assert every[0].memory_gib == pytest.approx(81559 / 1024)
    assert second == [GpuInfo("NVIDIA RTX A5000", 24564 / 1024)]
    assert hidden == []


def test_the_host_probe_finds_no_gpu_without_nvidia_smi(tmp_path: Path) -> None:
    assert HostProbe({"PATH": str(tmp_path)}).gpus() == []


def test_the_host_probe_tells_present_and_missing_images(fake_bin: Path, tmp_path: Path) -> None:
    probe = HostProbe({"PATH": str(fake_bin)})

    assert probe.image_present("have:1") is True
    assert probe.image_present("lack:1") is False
    assert HostProbe({"PATH": str(tmp_path / "empty")}).image_present("have:1") is None


def test_the_host_probe_finds_commands_on_path(fake_bin: Path) -> None:
    probe = HostProbe({"PATH": str(fake_bin)})

    assert probe.command_available("docker")
    assert not probe.command_available("surely-not-a-command-here")
    assert probe.platform_reachable("local")[0]
    reachable, seen = HostProbe({"PATH": os.devnull}).platform_reachable("slurm")
    assert not reachable and "sinfo" in seen


def test_the_host_probe_shows_what_a_reachable_platform_answered(fake_bin: Path) -> None:
    assert HostProbe({"PATH": str(fake_bin)}).platform_reachable("slurm") == (
        True,
        "partition gpu: 2 node(s), gpu:8 per node, max 240 min",
    )


def test_a_platform_without_a_check_is_unreachable_until_one_is_registered(monkeypatch) -> None:
    from aoi_pipeline.pipeline.preflight import probe as probe_module

    monkeypatch.setattr(probe_module, "_PLATFORM_CHECKS", dict(probe_module._PLATFORM_CHECKS))
    host = HostProbe({"PATH": os.devnull})
    assert host.platform_reachable("lab-cluster") == (False, "no reachability check exists for platform 'lab-cluster'")

    @platform_check("lab-cluster")
    def _lab(probe: HostProbe) -> tuple[bool, str]:
        return True, f"asked with PATH {probe.environ['PATH']}"

    assert host.platform_reachable("lab-cluster") == (True, f"asked with PATH {os.devnull}")


def test_ask_probe_asks_each_image_once_and_only_on_docker() -> None:
    probe = StaticProbe(present_images=["a:1"], gpu_list=[GpuInfo("X", None)])

    docker = ask_probe(probe, platform="docker", runtime_command="aoi-changenet", images=["a:1", "b:1", "a:1"])
    slurm = ask_probe(StaticProbe(), platform="slurm", runtime_command="aoi-changenet", images=["a:1"])

    assert docker.images == {"a:1": True, "b:1": False}
    assert docker.gpus == (GpuInfo("X", None),) and docker.runtime_found is None
    assert docker.reachable == (True, "answers")
    assert slurm.gpus is None and slurm.images == {}


def test_the_slurm_check_asks_for_the_jobs_partition_gpus_and_time_limit(fake_bin: Path) -> None:
    from aoi_pipeline.config import config_from_mapping

    def reachable(gpus: int = 1, **slurm: str) -> tuple[bool, str]:
        data = {"workspace": "/ws", "platform": "slurm", "gpus": gpus, "slurm": slurm or None}
        environ = {"PATH": str(fake_bin), "SLURM_PARTITION": "gpu", "SLURM_TIME_HOURS": "1"}
        return HostProbe(environ, config=config_from_mapping(data)).platform_reachable("slurm")

    assert reachable(gpus=0, partition="cpu")[0]
    ok, seen = reachable(partition="cpu")
    assert not ok and "its nodes offer gpu:0 per node but a job asks for 1 GPU(s)" in seen
    ok, seen = reachable(time_limit="08:00:00")
    assert not ok and "time limit 08:00:00 exceeds the partition's maximum of 240 min" in seen
    # Without a slurm section: SLURM_PARTITION and SLURM_TIME_HOURS, as the reference reads them.
    assert reachable() == (True, "partition gpu: 2 node(s), gpu:8 per node, max 240 min")


def test_over_ssh_the_slurm_check_asks_the_login_node_and_says_which_failed(fake_bin: Path) -> None:
    environ = {"PATH": str(fake_bin), "SLURM_HOSTNAME": "login1.invalid", "SLURM_USER": "me"}

    ok, seen = HostProbe(environ, timeout_s=5).platform_reachable("slurm")

    assert not ok and "no Slurm login node answered over ssh" in seen and "me@login1.invalid" in seen
