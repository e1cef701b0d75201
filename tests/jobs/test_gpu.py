"""GPUs: the one visibility rule (nvidia-smi's list narrowed by CUDA_VISIBLE_DEVICES) and the slots lent to jobs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from aoi_pipeline.errors import ConfigError
from aoi_pipeline.jobs import GpuSlots
from aoi_pipeline.jobs.gpu import (
    GpuInfo,
    ListedGpu,
    cuda_visible_devices,
    detect_gpus,
    parse_gpu_line,
    visible_gpus,
)

NVIDIA_SMI_LISTING = """0, GPU-aaaa1111-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559
1, GPU-bbbb2222-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559
"""
H100 = GpuInfo("NVIDIA H100 80GB HBM3", 81559 / 1024)


def test_acquire_lends_the_lowest_free_ids_and_takes_them_back():
    slots = GpuSlots([2, 0, 1])

    with slots.acquire(2) as first:
        assert first == (0, 1)
        with slots.acquire(1) as second:
            assert second == (2,)
            assert slots.free_count() == 0
    assert slots.free_count() == 3


def test_zero_gpus_are_lent_at_once_and_hide_every_gpu():
    slots = GpuSlots([])

    with slots.acquire(0) as ids:
        assert ids == ()
        assert cuda_visible_devices(ids) == ""
    assert cuda_visible_devices((1, 3)) == "1,3"


def test_a_waiter_gets_the_gpu_that_is_released():
    slots = GpuSlots([0, 1])
    held = slots.take(2)
    got: list[tuple[int, ...]] = []
    waiter = threading.Thread(target=lambda: got.append(slots.take(1) or ()))
    waiter.start()

    slots.release([1])
    waiter.join(timeout=10)

    assert got == [(1,)]
    assert held == (0, 1)


def test_a_cancelled_waiter_gets_nothing():
    slots = GpuSlots([0])
    slots.take(1)
    cancel = threading.Event()
    cancel.set()

    assert slots.take(1, cancel=cancel) is None
    assert slots.free_count() == 0


@pytest.mark.parametrize("count", [3, -1])
def test_impossible_requests_are_refused_instead_of_waiting_forever(count):
    with pytest.raises(ConfigError):
        GpuSlots([0, 1]).take(count)


def test_duplicate_ids_are_refused():
    with pytest.raises(ConfigError):
        GpuSlots([0, 0])


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    quoted = " ".join(f"'{line}'" for line in NVIDIA_SMI_LISTING.splitlines())
    # Shell builtins only: PATH holds nothing but this directory.
    query = "--query-gpu=index,uuid,name,memory.total"
    tool.write_text(f'#!/bin/sh\n[ "$1" = "{query}" ] || exit 9\nprintf "%s\\n" {quoted}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, (0, 1)),
        ("1", (1,)),
        ("GPU-bbbb2222-0000-0000-0000-000000000000,0", (1, 0)),
        ("", ()),
        ("0,-1,1", (0,)),
    ],
)
def test_detect_reads_cuda_visible_devices_then_nvidia_smi(fake_nvidia_smi, monkeypatch, visible, expected):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)

    assert GpuSlots.detect().gpu_ids == expected


def test_detect_without_nvidia_smi_finds_no_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    assert GpuSlots.detect().gpu_ids == ()


def test_the_rule_ignores_cuda_visible_devices_without_nvidia_smi(tmp_path, monkeypatch):
    # A GPU counts only when the driver lists it: a variable set on a machine without GPUs lends none.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")

    assert GpuSlots.detect().gpu_ids == ()
    assert detect_gpus() == []


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("5,0", ()),  # an index nvidia-smi does not list is invalid, and CUDA stops at it
        ("0,5,1", (0,)),
        ("1,1,0", (1, 0)),  # each GPU once, in the variable's order
        (" 1 , 0 ", (1, 0)),
        ("GPU-cccc", ()),  # an unknown UUID is invalid too
    ],
)
def test_the_rule_stops_at_the_first_entry_naming_no_listed_gpu(visible, expected):
    listed = [parse_gpu_line(line) for line in NVIDIA_SMI_LISTING.splitlines()]

    assert tuple(entry.index for entry in visible_gpus(listed, visible)) == expected


def test_detect_gpus_reads_the_given_environment_with_names_and_memory(fake_nvidia_smi, tmp_path):
    environ = {"PATH": str(tmp_path / "bin"), "CUDA_VISIBLE_DEVICES": "GPU-bbbb2222-0000-0000-0000-000000000000"}

    assert detect_gpus(environ) == [ListedGpu(1, "GPU-bbbb2222-0000-0000-0000-000000000000", H100)]
    assert GpuSlots.detect(environ).gpu_ids == (1,)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("3, GPU-x, NVIDIA A100-SXM4-40GB, 40960", ListedGpu(3, "GPU-x", GpuInfo("NVIDIA A100-SXM4-40GB", 40.0))),
        ("0, GPU-y, Board, with comma, [N/A]", ListedGpu(0, "GPU-y", GpuInfo("Board, with comma", None))),
        ("GPU 0: NVIDIA H100 (UUID: GPU-z)", None),
        ("", None),
    ],
)
def test_parse_gpu_line(line, expected):
    assert parse_gpu_line(line) == expected


def test_a_gpu_describes_its_memory_or_says_it_is_unknown():
    assert GpuInfo("NVIDIA L40S", 44.99).describe() == "NVIDIA L40S (45.0 GiB)"
    assert GpuInfo("Board", None).describe() == "Board (memory unknown)"


def test_quarter_shares_fill_one_gpu_four_times_and_a_fifth_waits():
    slots = GpuSlots([0])
    taken = [slots.take(0.25) for _ in range(4)]
    assert taken == [(0,)] * 4
    assert slots.loads() == {0: 1.0}
    assert not slots.fits_now(0.25)
    cancel = threading.Event()
    cancel.set()
    assert slots.take(0.25, cancel=cancel) is None  # a fifth quarter would put the GPU over its whole

    slots.release((0,), 0.25)
    assert slots.take(0.25, cancel=cancel) == (0,)


def test_shares_spread_over_the_least_loaded_gpu_first():
    slots = GpuSlots([0, 1])
    order = [slots.take(0.25) for _ in range(4)]
    assert order == [(0,), (1,), (0,), (1,)]
    assert slots.loads() == {0: 0.5, 1: 0.5}


def test_mixed_shares_never_put_a_gpu_over_its_whole():
    slots = GpuSlots([0, 1])
    cancel = threading.Event()
    cancel.set()
    assert slots.take(0.5, cancel=cancel) == (0,)
    assert slots.take(0.5, cancel=cancel) == (1,)
    assert slots.take(0.25, cancel=cancel) == (0,)
    assert slots.take(0.25, cancel=cancel) == (1,)
    assert slots.take(0.25, cancel=cancel) == (0,)
    assert slots.take(0.5, cancel=cancel) is None  # 0.75 + 0.5 and 1.0 + 0.5 both exceed a GPU
    assert max(slots.loads().values()) <= 1.0


def test_a_whole_gpu_job_waits_for_a_gpu_no_share_is_lent_from():
    slots = GpuSlots([0, 1])
    slots.take(0.25)
    cancel = threading.Event()
    cancel.set()
    assert slots.take(1, cancel=cancel) == (1,)
    assert slots.take(1, cancel=cancel) is None  # GPU 0 still holds a quarter job
    slots.release((0,), 0.25)
    assert slots.take(1, cancel=cancel) == (0,)


@pytest.mark.parametrize("share", [0.3, 0.7, 1.5, -0.25])
def test_a_share_that_does_not_divide_a_gpu_is_refused(share):
    with pytest.raises(ConfigError, match="share 1/k"):
        GpuSlots([0]).take(share)


def test_a_share_needs_at_least_one_gpu():
    with pytest.raises(ConfigError, match="this launcher has 0"):
        GpuSlots([]).check_fits(0.5)
