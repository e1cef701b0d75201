"""GPU slots for local jobs: a thread-safe pool of GPU ids handed out through `CUDA_VISIBLE_DEVICES`.

N trials run in parallel on an N-GPU machine by each taking its own GPUs from the pool for the life of its
process. The pool is detected from `CUDA_VISIBLE_DEVICES` when the launcher itself was given a subset (a
Slurm allocation, a shared workstation), else from `nvidia-smi -L`; a machine without either has no GPUs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from aoi_pipeline.errors import ConfigError

_NVIDIA_SMI_GPU_RE = re.compile(r"^GPU (\d+):.*?\(UUID: (GPU-[0-9A-Za-z-]+)\)")
_DETECT_TIMEOUT_S = 10.0
# How often a waiter re-checks its cancel event while no GPU is released.
_WAIT_POLL_S = 0.2


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
    def detect(cls) -> GpuSlots:
        """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`, else none."""
        listing = _nvidia_smi_listing()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            return cls([index for index, _ in listing])
        by_uuid = {uuid: index for index, uuid in listing}
        ids: list[int] = []
        for token in (part.strip() for part in visible.split(",")):
            if token.isdigit():
                ids.append(int(token))
            elif token in by_uuid:
                ids.append(by_uuid[token])
            else:
                # CUDA ignores every device after the first invalid entry (e.g. "-1" hides them all).
                break
        return cls(list(dict.fromkeys(ids)))

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


def _nvidia_smi_listing() -> list[tuple[int, str]]:
    """(index, UUID) per GPU from `nvidia-smi -L`; [] when the tool is missing or fails."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return []
    try:
        completed = subprocess.run(
            [executable, "-L"], capture_output=True, text=True, timeout=_DETECT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if completed.returncode != 0:
        return []
    return [
        (int(match[1]), match[2])
        for line in completed.stdout.splitlines()
        if (match := _NVIDIA_SMI_GPU_RE.match(line.strip()))
    ]
