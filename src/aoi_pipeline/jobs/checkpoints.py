"""Finding the checkpoints a train job wrote, and choosing the latest and the best-validation one.

A train results directory holds periodic checkpoints `model_epoch_<EEE>_step_<SSS>.pth`, the
`changenet_model_classify_latest.pth` link or copy, optionally the checkpointer's `model_best_*.pth`, and
`status.json`. When there is no best file, the best-validation checkpoint is the periodic checkpoint of the
epoch whose monitored validation KPI in status.json is best, among the epochs that have a checkpoint (the
reference leaves that mapping unspecified; an epoch without a checkpoint cannot be chosen, however good).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from aoi_pipeline.jobs.status_json import read_status, validation_history

CHECKPOINT_RE = re.compile(r"model_epoch_(\d+)_step_(\d+)\.pth")
LATEST = "changenet_model_classify_latest.pth"
BEST_RE = re.compile(r"model_best_.*\.pth")
_BEST_EPOCH_RE = re.compile(r"model_best_(?:epoch=)?(\d+)")
STATUS_FILE = "status.json"
# Spec copies a train dir may hold: ours (written by the launcher) and the one TAO resolves and writes.
_SPEC_FILES = ("spec.yaml", "experiment.yaml")

CheckpointKind = Literal["periodic", "best", "latest"]
_KIND_ORDER = {"periodic": 0, "best": 1, "latest": 2}


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file in a train results directory."""

    path: Path
    epoch: int | None
    step: int | None
    kind: CheckpointKind


def discover_checkpoints(train_dir: Path) -> list[Checkpoint]:
    """Every checkpoint directly in `train_dir`: periodic by (epoch, step), then best, then latest.

    A dangling latest link (its target deleted) is not a checkpoint and is left out.
    """
    train_dir = Path(train_dir)
    if not train_dir.is_dir():
        return []
    found = [checkpoint for path in train_dir.iterdir() if (checkpoint := _checkpoint(path)) is not None]
    return sorted(found, key=_discovery_order)


def latest_checkpoint(train_dir: Path) -> Checkpoint | None:
    """The periodic checkpoint with the highest (epoch, step); else the latest file; else None."""
    checkpoints = discover_checkpoints(train_dir)
    periodic = [c for c in checkpoints if c.kind == "periodic"]
    if periodic:
        return max(periodic, key=lambda c: (c.epoch, c.step))
    return next((c for c in checkpoints if c.kind == "latest"), None)


def best_val_checkpoint(
    train_dir: Path, *, monitor: str = "val_loss", mode: Literal["min", "max"] = "min"
) -> Checkpoint | None:
    """The checkpoint with the best monitored validation KPI, or None when none can be named.

    The checkpointer's best file is used when present and it monitored the same KPI (when the spec in the
    directory says it monitored another one, it is not the answer to this question). Otherwise the periodic
    checkpoint at the epoch with the best `monitor` value in status.json; ties go to the earlier epoch, as
    Lightning's checkpointer keeps the first of equal values.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
    train_dir = Path(train_dir)
    checkpoints = discover_checkpoints(train_dir)
    history = dict(validation_history(read_status(train_dir / STATUS_FILE)))
    best_files = [c for c in checkpoints if c.kind == "best"]
    if best_files and _checkpointer_monitor(train_dir) in (None, monitor):
        return _pick_best_file(best_files, history, monitor, mode)
    by_epoch: dict[int, Checkpoint] = {}
    for checkpoint in checkpoints:
        if checkpoint.kind == "periodic" and checkpoint.epoch is not None:
            current = by_epoch.get(checkpoint.epoch)
            if current is None or (checkpoint.step or 0) > (current.step or 0):
                by_epoch[checkpoint.epoch] = checkpoint
    scored = [
        (value, epoch)
        for epoch in sorted(by_epoch)
        if (value := _finite(history.get(epoch, {}).get(monitor))) is not None
    ]
    if not scored:
        return None
    sign = 1.0 if mode == "min" else -1.0
    _, best_epoch = min(scored, key=lambda item: (sign * item[0], item[1]))
    return by_epoch[best_epoch]


def new_checkpoints(train_dir: Path, before: set[Path]) -> list[Checkpoint]:
    """Checkpoints in `train_dir` whose paths were not in `before` (a snapshot taken before the job ran)."""
    seen = {Path(path) for path in before}
    return [checkpoint for checkpoint in discover_checkpoints(train_dir) if checkpoint.path not in seen]


def _discovery_order(checkpoint: Checkpoint) -> tuple[int, int, int, str]:
    epoch = -1 if checkpoint.epoch is None else checkpoint.epoch
    step = -1 if checkpoint.step is None else checkpoint.step
    return _KIND_ORDER[checkpoint.kind], epoch, step, checkpoint.path.name


def _checkpoint(path: Path) -> Checkpoint | None:
    name = path.name
    if match := CHECKPOINT_RE.fullmatch(name):
        return Checkpoint(path, int(match[1]), int(match[2]), "periodic") if path.is_file() else None
    if BEST_RE.fullmatch(name):
        epoch = _BEST_EPOCH_RE.match(name)
        return Checkpoint(path, int(epoch[1]) if epoch else None, None, "best") if path.is_file() else None
    if name == LATEST and path.is_file():  # is_file() follows the link: a dangling one is False
        target = CHECKPOINT_RE.fullmatch(path.resolve().name) if path.is_symlink() else None
        return Checkpoint(path, int(target[1]) if target else None, int(target[2]) if target else None, "latest")
    return None


def _pick_best_file(
    best_files: list[Checkpoint], history: dict[int, dict[str, float]], monitor: str, mode: str
) -> Checkpoint:
    """One best file; with several (top-k), the one whose epoch scored best, else the highest epoch."""
    if len(best_files) == 1:
        return best_files[0]
    sign = 1.0 if mode == "min" else -1.0
    scored = [
        (sign * value, c.epoch, c)
        for c in best_files
        if c.epoch is not None and (value := _finite(history.get(c.epoch, {}).get(monitor))) is not None
    ]
    if scored:
        return min(scored, key=lambda item: (item[0], item[1]))[2]
    return max(best_files, key=lambda c: (c.epoch if c.epoch is not None else -1, c.path.name))


def _checkpointer_monitor(train_dir: Path) -> str | None:
    """`train.checkpointer.monitor` from the spec saved beside the checkpoints, if one says so."""
    for name in _SPEC_FILES:
        try:
            spec: Any = yaml.safe_load((train_dir / name).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        monitor = _dig(spec, ("train", "checkpointer", "monitor"))
        if isinstance(monitor, str) and monitor:
            return monitor
    return None


def _dig(spec: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(spec, dict):
            return None
        spec = spec.get(key)
    return spec


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
