"""GPUs for local jobs: which GPUs this process may use, and a thread-safe pool handing them out.

The one rule for GPU visibility lives here and serves both the pre-flight (which shows the GPUs with their
memory) and the local launcher (which lends GPU ids to concurrent jobs): `nvidia-smi` lists the GPUs of the
machine, and `CUDA_VISIBLE_DEVICES`, when set, narrows that list the way CUDA does (indices or UUIDs of listed
GPUs, in its order; the first entry naming no listed GPU ends the list). A machine without a working
`nvidia-smi` has no GPUs, whatever the variable says. N trials run in parallel on an N-GPU machine by each
taking its own GPUs from the pool for the life of its process; small-model trials may take a share 1/k of a GPU
instead, so k of them run side by side on it.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

from aoi_pipeline.errors import ConfigError

NVIDIA_SMI_QUERY = ("--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits")
_DETECT_TIMEOUT_S = 10.0
# How often a waiter re-checks its cancel event while no GPU is released.
_WAIT_POLL_S = 0.2
# The finest share of a GPU a job may take (1/64).
_MAX_JOBS_PER_GPU = 64


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the driver reports it; memory None when the driver does not say."""

    name: str
    memory_gib: float | None

    def describe(self) -> str:
        memory = "memory unknown" if self.memory_gib is None else f"{self.memory_gib:.1f} GiB"
        return f"{self.name} ({memory})"


@dataclass(frozen=True)
class ListedGpu:
    """One line of `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`."""

    index: int
    uuid: str
    gpu: GpuInfo


def parse_gpu_line(line: str) -> ListedGpu | None:
    """`0, GPU-ab12.., NVIDIA H100 80GB HBM3, 81559` -> ListedGpu; None for a line of another shape."""
    parts = [part.strip() for part in line.split(",")]
    if len(parts) < 4 or not parts[0].isdigit():
        return None
    name = ", ".join(parts[2:-1])  # a name holding a comma keeps it
    try:
        memory: float | None = float(parts[-1]) / 1024.0
    except ValueError:
        memory = None  # "[N/A]" on some boards
    return ListedGpu(int(parts[0]), parts[1], GpuInfo(name, memory))


def visible_gpus(listed: Sequence[ListedGpu], cuda_visible_devices: str | None) -> list[ListedGpu]:
    """The listed GPUs CUDA_VISIBLE_DEVICES lets a job see (indices or UUIDs), in its order, each once."""
    if cuda_visible_devices is None:
        return list(listed)
    by_token = {str(entry.index): entry for entry in listed} | {entry.uuid: entry for entry in listed}
    seen: dict[int, ListedGpu] = {}
    for token in (part.strip() for part in cuda_visible_devices.split(",")):
        entry = by_token.get(token)
        if entry is None:
            break  # CUDA ignores every device after the first invalid entry ("-1" hides them all)
        seen.setdefault(entry.index, entry)
    return list(seen.values())


def list_gpus(search_path: str | None = None, *, timeout_s: float = _DETECT_TIMEOUT_S) -> list[ListedGpu]:
    """Every GPU `nvidia-smi` (found on `search_path`, else PATH) lists; [] when it is missing or fails."""
    executable = shutil.which("nvidia-smi", path=search_path)
    if executable is None:
        return []
    try:
        completed = subprocess.run(
            [executable, *NVIDIA_SMI_QUERY],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if completed.returncode != 0:
        return []
    return [gpu for line in completed.stdout.splitlines() if (gpu := parse_gpu_line(line)) is not None]


def detect_gpus(environ: Mapping[str, str] | None = None, *, timeout_s: float = _DETECT_TIMEOUT_S) -> list[ListedGpu]:
    """The GPUs a process with `environ` (default: this one's) may use: nvidia-smi's list, narrowed by CUDA."""
    env = os.environ if environ is None else environ
    return visible_gpus(list_gpus(env.get("PATH"), timeout_s=timeout_s), env.get("CUDA_VISIBLE_DEVICES"))


def is_gpu_share(share: float) -> bool:
    """Whether `share` is 1/k of one GPU for a whole k from 2 to 64, so k jobs fill the GPU exactly."""
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
        return False
    jobs = 1 / share
    return round(jobs) <= _MAX_JOBS_PER_GPU and math.isclose(jobs, round(jobs), rel_tol=0, abs_tol=1e-6)


def _load_of(share: float) -> Fraction:
    """A job's load on each GPU it holds: 1 for whole GPUs, 1/k for a share of one GPU."""
    return Fraction(1, round(1 / share)) if 0 < share < 1 else Fraction(1)


class GpuSlots:
    """A pool of GPU ids lent to jobs: whole GPUs, or a share 1/k of one GPU packing k jobs onto it.

    Every GPU carries a load between 0 and 1. A job of n whole GPUs takes n idle GPUs; a job of share 1/k
    takes the least loaded GPU that has 1/k left (the lowest id among equals), so jobs spread over the GPUs
    before they pile up, and no GPU ever holds more than its whole.
    """

    def __init__(self, gpu_ids: Sequence[int]) -> None:
        ids = [int(gpu_id) for gpu_id in gpu_ids]
        if len(set(ids)) != len(ids) or any(gpu_id < 0 for gpu_id in ids):
            raise ConfigError.at(
                "GPU slots",
                f"GPU ids {ids} contain duplicates or negative numbers",
                "list each GPU index once, e.g. [0, 1, 2, 3]",
            )
        self._gpu_ids = tuple(ids)
        self._load: dict[int, Fraction] = {gpu_id: Fraction(0) for gpu_id in sorted(ids)}
        self._changed = threading.Condition()

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> GpuSlots:
        """The GPUs this process (or one with `environ`) may use, by `detect_gpus`'s rule; none without any."""
        return cls([entry.index for entry in detect_gpus(environ)])

    @property
    def gpu_ids(self) -> tuple[int, ...]:
        return self._gpu_ids

    @property
    def capacity(self) -> int:
        return len(self._gpu_ids)

    def free_count(self) -> int:
        """How many GPUs no job holds any share of."""
        with self._changed:
            return sum(1 for load in self._load.values() if load == 0)

    def loads(self) -> dict[int, float]:
        """The share of each GPU lent out now (0 idle, 1 full)."""
        with self._changed:
            return {gpu_id: float(load) for gpu_id, load in self._load.items()}

    def fits_now(self, n: float) -> bool:
        """Whether a job of `n` GPUs (or a share of one) could take its GPUs without waiting."""
        with self._changed:
            return self._pick(n) is not None

    @contextmanager
    def acquire(self, n: float) -> Iterator[tuple[int, ...]]:
        """Wait for n free GPUs (or a share of one) and lend them; 0 lends none at once. Returned on exit."""
        ids = self.take(n) or ()  # without a cancel event `take` only returns once it has the GPUs
        try:
            yield ids
        finally:
            self.release(ids, n)

    def take(self, n: float, *, cancel: threading.Event | None = None) -> tuple[int, ...] | None:
        """Wait for and take n GPUs (lowest ids first) or a share of one; None if `cancel` is set while waiting."""
        self.check_fits(n)
        with self._changed:
            while (picked := self._pick(n)) is None:
                if cancel is not None and cancel.is_set():
                    return None
                self._changed.wait(timeout=_WAIT_POLL_S if cancel is not None else None)
            for gpu_id in picked:
                self._load[gpu_id] += _load_of(n)
            return picked

    def release(self, ids: Sequence[int], n: float = 1) -> None:
        """Give back GPUs taken with `take(n)` (n: the same count or share the job took them with)."""
        with self._changed:
            for gpu_id in ids:
                self._load[gpu_id] = max(Fraction(0), self._load[gpu_id] - _load_of(n))
            self._changed.notify_all()

    def _pick(self, n: float) -> tuple[int, ...] | None:
        if n == 0:
            return ()
        if 0 < n < 1:
            share = _load_of(n)
            room = [(load, gpu_id) for gpu_id, load in self._load.items() if load + share <= 1]
            return (min(room)[1],) if room else None
        idle = [gpu_id for gpu_id, load in self._load.items() if load == 0]
        return tuple(idle[: int(n)]) if len(idle) >= n else None

    def check_fits(self, n: float) -> None:
        """Raise ConfigError when n GPUs could never be lent (not a count >= 0 nor a share 1/k, or too many)."""
        whole = isinstance(n, int) and not isinstance(n, bool) and n >= 0
        if not whole and not is_gpu_share(n):
            raise ConfigError.at(
                "job gpus", f"asked for {n!r} GPUs", "use a whole number >= 0 or a share 1/k of one GPU (0.25)"
            )
        if max(n, 1 if n else 0) > self.capacity:
            raise ConfigError.at(
                "job gpus",
                f"a job asks for {n} GPU(s) but this launcher has {self.capacity} {list(self._gpu_ids)}",
                "lower the job's GPU count, or run it where that many GPUs are visible (nvidia-smi -L)",
            )


def cuda_visible_devices(gpu_ids: Sequence[int]) -> str:
    """The CUDA_VISIBLE_DEVICES value for a job: the ids joined by commas; "" hides every GPU."""
    return ",".join(str(gpu_id) for gpu_id in gpu_ids)
