"""Checkpoint files of the reference runtime: TAO's names, atomic writes, safe loading, architecture checks.

Names follow TAO: `model_epoch_<EEE>_step_<SSS>.pth` (0-based epoch index, global optimiser step),
`changenet_model_classify_latest.pth` and the checkpointer's `model_best_{epoch:03d}.pth`. A checkpoint holds
the model weights and shape, the optimiser state, the epoch and step, the layout of the input images and the
resolved training spec, so a resumed run continues exactly and an inference spec whose architecture keys
differ from the training spec's is refused with the keys named. Files are written to a temporary name and
renamed, so a crash never leaves half a checkpoint under a name the pipeline would pick up, and they are read
with `weights_only=True`: a checkpoint is data, never code.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from aoi_pipeline.core.files import atomic_write_bytes
from aoi_pipeline.core.spec.derive import require_same_architecture
from aoi_pipeline.errors import SpecError

FORMAT = "aoi-changenet-classify/1"
TAO_MODEL = "visual_changenet_classify"
LATEST_NAME = "changenet_model_classify_latest.pth"
EXTENSION = ".pth"
PERIODIC_PATTERN = re.compile(r"^model_epoch_(\d{3,})_step_(\d{5,})\.pth$")
_FIELD = re.compile(r"\{(\w+)(:[^}]*)?\}")
REQUIRED_FIELDS = ("format", "model_config", "layout", "state_dict", "epoch", "global_step", "spec")


def periodic_name(epoch: int, step: int) -> str:
    """`model_epoch_004_step_00120.pth` for the 0-based epoch index and the global step."""
    return f"model_epoch_{epoch:03d}_step_{step:05d}{EXTENSION}"


def best_name(pattern: str, values: Mapping[str, Any], *, auto_insert_metric_name: bool = False) -> str:
    """The checkpointer's file name: `pattern` (e.g. `model_best_{epoch:03d}`) filled from `values`, with
    Lightning's `name=` prefixes when `auto_insert_metric_name` is set, plus `.pth`."""
    if auto_insert_metric_name:
        pattern = _FIELD.sub(lambda m: f"{m.group(1)}={m.group(0)}", pattern)
    try:
        name = pattern.format(**values)
    except (KeyError, IndexError, ValueError) as error:
        raise SpecError.at(
            "train.checkpointer.filename",
            f"{pattern!r} cannot be filled ({error!r}); fields available: {', '.join(values)}",
            "use a pattern such as model_best_{epoch:03d}",
        ) from None
    return name if name.endswith(EXTENSION) else name + EXTENSION


def periodic_checkpoints(directory: Path) -> list[Path]:
    """The `model_epoch_*_step_*.pth` files of a directory, oldest (lowest epoch, step) first."""
    if not Path(directory).is_dir():
        return []
    found = [(PERIODIC_PATTERN.match(p.name), p) for p in Path(directory).iterdir()]
    return [p for m, p in sorted(((m, p) for m, p in found if m), key=lambda mp: (int(mp[0][1]), int(mp[0][2])))]


def any_checkpoints(directory: Path) -> list[Path]:
    """Every `.pth` file directly inside `directory` (what a fresh training run must not find there)."""
    directory = Path(directory)
    return sorted(directory.glob(f"*{EXTENSION}")) if directory.is_dir() else []


def save_checkpoint(path: Path, payload: Mapping[str, Any]) -> None:
    """Serialise `payload` in memory, then write it atomically."""
    buffer = io.BytesIO()
    torch.save(dict(payload, format=FORMAT, tao_model=TAO_MODEL), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path | str, *, key: str) -> dict[str, Any]:
    """Read a reference checkpoint; SpecError naming the spec `key` that pointed at a missing, unreadable or
    foreign file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError.at(
            f"{key}={path}",
            "the checkpoint file does not exist",
            "point it at a .pth written by `aoi-changenet train` (e.g. changenet_model_classify_latest.pth)",
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise SpecError.at(
            f"{key}={path}",
            f"the file cannot be read as a checkpoint ({type(error).__name__}: {error})",
            "point it at a complete .pth written by `aoi-changenet train`",
        ) from None
    missing = [field for field in REQUIRED_FIELDS if not isinstance(checkpoint, dict) or field not in checkpoint]
    if missing or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise SpecError.at(
            f"{key}={path}",
            f"not a checkpoint of this runtime (format {found!r}, missing {missing or 'nothing'}): a TAO "
            "container checkpoint cannot be loaded by the reference runtime",
            "use a checkpoint written by `aoi-changenet train`, or run TAO's own visual_changenet",
        )
    return checkpoint


def require_matching_architecture(checkpoint: Mapping[str, Any], spec: Mapping[str, Any], *, key: str) -> None:
    """SpecError listing every architecture key whose value in `spec` differs from the training spec stored
    in the checkpoint that `key` names."""
    require_same_architecture(dict(checkpoint["spec"]), dict(spec), where=f"{key}: spec vs checkpoint")
