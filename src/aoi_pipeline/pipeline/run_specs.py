"""The experiment specs of one run: the base spec of the workspace, and every job spec derived from it.

The base spec is the user's spec file (config `spec_file`, else `<workspace>/specs/baseline_spec.yaml`) or the
built-in DEFT baseline, pointed at the workspace's CSVs and images, with the lighting layout and image
extension of the config and the config's overrides on top. A training spec pins the phase's budget (epochs,
batch size, and intervals no larger than the epochs, which TAO asserts) and sets a fresh results directory;
inference specs are derived from the exact training spec of the checkpoint. Paths are host paths; a launcher
that mounts directories rewrites them to container paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.derive import derive_eval_spec
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.core.spec.overrides import apply_overrides
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import SpecError

_BLOCKS = "dataset.classify"


def spec_source(config: PipelineConfig, workspace: Workspace) -> Path | None:
    """The spec file the run starts from, or None for the built-in baseline."""
    if config.spec_file is not None:
        return config.spec_file
    return workspace.spec_file if workspace.spec_file.is_file() else None


def with_datasets(
    spec: Spec,
    *,
    train_csv: Path,
    train_images: Path,
    validation_csv: Path,
    images_dir: Path,
    infer_csv: Path,
) -> Spec:
    """Point the four dataset blocks at host CSVs (validation doubles as the evaluate test set)."""
    blocks = {
        "train_dataset": (train_csv, train_images),
        "validation_dataset": (validation_csv, images_dir),
        "test_dataset": (validation_csv, images_dir),
        "infer_dataset": (infer_csv, images_dir),
    }
    for block, (csv_path, images) in blocks.items():
        spec = set_key(spec, f"{_BLOCKS}.{block}.csv_path", str(csv_path))
        spec = set_key(spec, f"{_BLOCKS}.{block}.images_dir", str(images))
    return spec


def workspace_base_spec(config: PipelineConfig, workspace: Workspace) -> Spec:
    """The run's base spec: source spec + workspace datasets + lighting layout + config overrides."""
    source = spec_source(config, workspace)
    spec = load_spec(source) if source else baseline_spec()
    spec = with_datasets(
        spec,
        train_csv=workspace.training_csv,
        train_images=workspace.images_dir,
        validation_csv=workspace.validation_csv,
        images_dir=workspace.images_dir,
        infer_csv=workspace.kpi_csv,
    )
    lights = config.dataset.lights
    spec = set_key(spec, f"{_BLOCKS}.input_map", {light: index for index, light in enumerate(lights)})
    spec = set_key(spec, f"{_BLOCKS}.num_input", len(lights))
    spec = set_key(spec, f"{_BLOCKS}.image_ext", config.dataset.image_ext)
    return apply_overrides(spec, config.spec_overrides)


def pin_budget(spec: Spec, *, num_epochs: int, batch_size: int) -> Spec:
    """Fix epochs and batch size; keep checkpoint/validation intervals within the epochs."""
    spec = set_key(spec, "train.num_epochs", num_epochs)
    spec = set_key(spec, f"{_BLOCKS}.batch_size", batch_size)
    intervals = ["train.validation_interval"]
    # A step-based checkpoint interval has no fixed relation to epochs; only an epoch interval is clamped.
    if _optional_key(spec, "train.checkpoint_interval_unit", "epoch") == "epoch":
        intervals.append("train.checkpoint_interval")
    for interval in intervals:
        value = _optional_key(spec, interval, None)
        if value is not None:  # unset keeps TAO's default of 1, which never exceeds the epochs
            spec = set_key(spec, interval, min(int(value), num_epochs))
    return spec


def _optional_key(spec: Spec, dotted: str, default: Any) -> Any:
    try:
        return get_key(spec, dotted)
    except SpecError:
        return default


def training_spec(
    base: Spec,
    *,
    results_dir: Path,
    num_epochs: int,
    batch_size: int,
    params: Mapping[str, Any] | None = None,
    pretrained_model: Path | None = None,
    extra_overrides: Iterable[str] = (),
) -> Spec:
    """A training job's spec: base + searched params + pinned budget + warm start + fresh results dir."""
    spec = apply_overrides(base, extra_overrides)
    for key, value in (params or {}).items():
        spec = set_key(spec, key, value)
    spec = pin_budget(spec, num_epochs=num_epochs, batch_size=batch_size)
    spec = set_key(spec, "results_dir", str(results_dir.parent))
    spec = set_key(spec, "train.results_dir", str(results_dir))
    spec = set_key(spec, "train.resume_training_checkpoint_path", None)
    return set_key(spec, "train.pretrained_model_path", str(pretrained_model) if pretrained_model else None)


def inference_spec(train_spec: Spec, *, checkpoint: Path, csv_path: Path, images_dir: Path, results_dir: Path) -> Spec:
    """The inference spec of a checkpoint, derived from the exact spec it was trained with."""
    return derive_eval_spec(
        train_spec,
        action="inference",
        checkpoint=str(checkpoint),
        results_dir=str(results_dir),
        csv_path=str(csv_path),
        images_dir=str(images_dir),
    )


def with_train_csv(spec: Spec, *, csv_path: Path, images_dir: Path) -> Spec:
    """Only the training block moves (DEFT iterations and Phase 3 train on the cumulative CSV)."""
    spec = set_key(spec, f"{_BLOCKS}.train_dataset.csv_path", str(csv_path))
    return set_key(spec, f"{_BLOCKS}.train_dataset.images_dir", str(images_dir))
