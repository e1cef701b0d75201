"""GPUs for local jobs: which GPUs this process may use, and a thread-safe pool handing them out.

The one rule for GPU visibility lives here and serves both the pre-flight (which shows the GPUs with their
memory) and the local launcher (which lends GPU ids to concurrent jobs): `nvidia-smi` lists the GPUs of the
machine, and `CUDA_VISIBLE_DEVICES`, when set, narrows that list the way CUDA does (indices or UUIDs of listed
GPUs, in its order; the first entry naming no listed GPU ends the list). A machine without a working
`nvidia-smi` has no GPUs, whatever the variable says. N trials run in parallel on an N-GPU machine by each
taking its own GPUs from the pool for the life of its process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from aoi_pipeline.errors import ConfigError

NVIDIA_SMI_QUERY = ("--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits")
_DETECT_TIMEOUT_S = 10.0
# How often a waiter re-checks its cancel event while no GPU is released.
_WAIT_POLL_S = 0.2


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


class GpuSlots:
    """A pool of GPU ids; `acquire(n)` lends n of them for the duration of a `with` block."""

    def __init__(self, gpu_ids: Sequence[int]) -> None:
        ids = [int(gpu_id) for gpu_id in gpu_ids]
        if len(set(ids)) != len(ids) or any(gpu_id < 0 for gpu_id in ids):
            raise ConfigError.at(
                "GPU slots",
                f"GPU ids {ids} contain duplicates or negative numbers",
                "list each GPU index once, e.g. [0, 1, 2, 3]",
            )
        self._gpu_ids = tuple(ids)
        self._free = sorted(ids)
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
        with self._changed:
            return len(self._free)

    @contextmanager
    def acquire(self, n: int) -> Iterator[tuple[int, ...]]:
        """Wait for n free GPUs and lend them; 0 lends none at once. They return to the pool on exit."""
        ids = self.take(n) or ()  # without a cancel event `take` only returns once it has the GPUs
        try:
            yield ids
        finally:
            self.release(ids)

    def take(self, n: int, *, cancel: threading.Event | None = None) -> tuple[int, ...] | None:
        """Wait for and take n GPUs (lowest ids first); None if `cancel` is set while waiting."""
        self.check_fits(n)
        with self._changed:
            while len(self._free) < n:
                if cancel is not None and cancel.is_set():
                    return None
                self._changed.wait(timeout=_WAIT_POLL_S if cancel is not None else None)
            taken, self._free = tuple(self._free[:n]), self._free[n:]
            return taken

    def release(self, ids: Sequence[int]) -> None:
        """Give GPUs taken with `take` back to the pool."""
        with self._changed:
            self._free = sorted({*self._free, *ids})
            self._changed.notify_all()

    def check_fits(self, n: int) -> None:
        """Raise ConfigError when n GPUs could never be lent (n < 0 or more than the pool holds)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError.at("job gpus", f"asked for {n!r} GPUs", "use a whole number >= 0")
        if n > self.capacity:
            raise ConfigError.at(
                "job gpus",
                f"a job asks for {n} GPU(s) but this launcher has {self.capacity} {list(self._gpu_ids)}",
                "lower the job's GPU count, or run it where that many GPUs are visible (nvidia-smi -L)",
            )


def cuda_visible_devices(gpu_ids: Sequence[int]) -> str:
    """The CUDA_VISIBLE_DEVICES value for a job: the ids joined by commas; "" hides every GPU."""
    return ",".join(str(gpu_id) for gpu_id in gpu_ids)
