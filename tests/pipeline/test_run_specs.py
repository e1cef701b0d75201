"""The run's specs: the workspace base spec, the budget pin, training specs and derived inference specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.config import PipelineConfig, config_from_mapping
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.derive import ARCHITECTURE_KEYS
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.core.spec.yaml_io import dump_spec
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import SpecError
from aoi_pipeline.pipeline.run_specs import (
    inference_spec,
    pin_budget,
    spec_source,
    training_spec,
    with_train_csv,
    workspace_base_spec,
)

BLOCKS = ("train_dataset", "validation_dataset", "test_dataset", "infer_dataset")


def _config(workspace: Path, **changes: Any) -> PipelineConfig:
    return config_from_mapping({"workspace": str(workspace), **changes})


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    (root / "images").mkdir(parents=True)
    return Workspace.at(root)


def _lr_spec(path: Path, lr: float) -> Path:
    dump_spec(set_key(baseline_spec(), "train.optim.lr", lr), path)
    return path


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        found: dict[str, Any] = {}
        for key, child in node.items():
            found.update(_leaves(child, f"{prefix}.{key}" if prefix else str(key)))
        return found
    return {prefix: node}


def test_the_four_dataset_blocks_point_at_the_workspace_csvs_and_images(workspace):
    spec = workspace_base_spec(_config(workspace.root), workspace)
    expected = {
        "train_dataset": workspace.training_csv,
        "validation_dataset": workspace.validation_csv,
        "test_dataset": workspace.validation_csv,
        "infer_dataset": workspace.kpi_csv,
    }
    for block, csv_path in expected.items():
        assert get_key(spec, f"dataset.classify.{block}.csv_path") == str(csv_path)
        assert get_key(spec, f"dataset.classify.{block}.images_dir") == str(workspace.images_dir)


def test_the_lighting_layout_and_image_extension_come_from_the_config(workspace):
    config = _config(workspace.root, dataset={"lights": ["LowAngleLight", "SolderLight"], "image_ext": "bmp"})
    spec = workspace_base_spec(config, workspace)
    # The whole map is replaced: the baseline's SolderLight=0 entry must not survive beside the new ones.
    assert get_key(spec, "dataset.classify.input_map") == {"LowAngleLight": 0, "SolderLight": 1}
    assert get_key(spec, "dataset.classify.num_input") == 2
    assert get_key(spec, "dataset.classify.image_ext") == ".bmp"


def test_the_config_overrides_are_applied_last(workspace):
    config = _config(
        workspace.root,
        spec_overrides=[
            "train.optim.lr=0.002",
            "dataset.classify.image_width=64",
            "train.classify.cls_weight[1]=25",
        ],
    )
    spec = workspace_base_spec(config, workspace)
    assert get_key(spec, "train.optim.lr") == 0.002
    assert get_key(spec, "dataset.classify.image_width") == 64
    assert get_key(spec, "train.classify.cls_weight") == [1.0, 25]


def test_a_bad_config_override_is_a_spec_error_naming_the_key(workspace):
    config = _config(workspace.root, spec_overrides=["train.optim.not_a_key=1"])
    with pytest.raises(SpecError) as raised:
        workspace_base_spec(config, workspace)
    assert "train.optim.not_a_key" in str(raised.value)


def test_without_a_spec_file_the_built_in_baseline_is_used(workspace):
    config = _config(workspace.root)
    assert spec_source(config, workspace) is None
    assert get_key(workspace_base_spec(config, workspace), "train.optim.lr") == get_key(
        baseline_spec(), "train.optim.lr"
    )


def test_the_workspace_spec_is_preferred_over_the_built_in_baseline(workspace):
    _lr_spec(workspace.spec_file, 0.0222)
    config = _config(workspace.root)
    assert spec_source(config, workspace) == workspace.spec_file
    assert get_key(workspace_base_spec(config, workspace), "train.optim.lr") == 0.0222


def test_the_users_spec_file_is_preferred_over_the_workspace_spec(workspace, tmp_path):
    _lr_spec(workspace.spec_file, 0.0222)
    user_spec = _lr_spec(tmp_path / "mine.yaml", 0.0111)
    before = workspace.spec_file.read_bytes()
    config = _config(workspace.root, spec_file=str(user_spec))
    assert spec_source(config, workspace) == user_spec
    spec = workspace_base_spec(config, workspace)
    assert get_key(spec, "train.optim.lr") == 0.0111
    # The datasets still come from the workspace, whatever the user's file says.
    assert get_key(spec, "dataset.classify.train_dataset.csv_path") == str(workspace.training_csv)
    assert workspace.spec_file.read_bytes() == before


def test_a_missing_user_spec_file_is_a_spec_error_naming_it(workspace, tmp_path):
    missing = tmp_path / "absent.yaml"
    with pytest.raises(SpecError) as raised:
        workspace_base_spec(_config(workspace.root, spec_file=str(missing)), workspace)
    assert str(missing) in str(raised.value)


@pytest.mark.parametrize(
    ("epochs", "intervals"),
    [(1, (1, 1)), (3, (3, 3)), (7, (7, 5)), (10, (10, 5)), (50, (10, 5))],
)
def test_the_budget_pin_keeps_the_intervals_within_the_epochs(epochs, intervals):
    # The baseline validates every 10 epochs and checkpoints every 5.
    spec = pin_budget(baseline_spec(), num_epochs=epochs, batch_size=6)
    assert get_key(spec, "train.num_epochs") == epochs
    assert get_key(spec, "dataset.classify.batch_size") == 6
    assert (
        get_key(spec, "train.validation_interval"),
        get_key(spec, "train.checkpoint_interval"),
    ) == intervals


def test_the_budget_pin_accepts_a_spec_that_leaves_the_intervals_to_their_defaults():
    spec = baseline_spec()
    del spec["train"]["checkpoint_interval"]
    del spec["train"]["validation_interval"]
    pinned = pin_budget(spec, num_epochs=2, batch_size=4)
    for interval in ("checkpoint_interval", "validation_interval"):
        assert pinned["train"].get(interval, 1) <= 2


def test_the_budget_pin_leaves_a_step_based_checkpoint_interval_alone():
    spec = set_key(baseline_spec(), "train.checkpoint_interval_unit", "step")
    spec = set_key(spec, "train.checkpoint_interval", 500)
    pinned = pin_budget(spec, num_epochs=3, batch_size=4)
    assert get_key(pinned, "train.checkpoint_interval") == 500
    assert get_key(pinned, "train.validation_interval") == 3


def test_the_caller_spec_is_not_changed_by_any_derivation(tmp_path):
    base = baseline_spec()
    untouched = baseline_spec()
    pin_budget(base, num_epochs=2, batch_size=4)
    training_spec(base, results_dir=tmp_path / "t" / "train", num_epochs=2, batch_size=4, params={"train.optim.lr": 1})
    with_train_csv(base, csv_path=tmp_path / "a.csv", images_dir=tmp_path)
    assert base == untouched


def test_a_training_spec_sets_results_dirs_params_budget_and_warm_start(tmp_path):
    results = tmp_path / "run" / "phase1" / "trial_002" / "train"
    checkpoint = tmp_path / "run" / "iter1" / "train" / "model_epoch_001_step_00010.pth"
    base = set_key(baseline_spec(), "train.resume_training_checkpoint_path", "/old/resume.pth")
    spec = training_spec(
        base,
        results_dir=results,
        num_epochs=3,
        batch_size=8,
        params={"train.optim.lr": 4e-5, "train.classify.cls_weight[1]": 30.0, "train.num_epochs": 99},
        pretrained_model=checkpoint,
        extra_overrides=["dataset.classify.image_width=32", "train.optim.lr=1e-3"],
    )
    assert get_key(spec, "train.results_dir") == str(results)
    assert get_key(spec, "results_dir") == str(results.parent)
    # The trial's parameters win over the phase's overrides; the pinned budget wins over both.
    assert get_key(spec, "train.optim.lr") == 4e-5
    assert get_key(spec, "train.classify.cls_weight") == [1.0, 30.0]
    assert get_key(spec, "dataset.classify.image_width") == 32
    assert get_key(spec, "train.num_epochs") == 3
    assert get_key(spec, "dataset.classify.batch_size") == 8
    assert get_key(spec, "train.checkpoint_interval") <= 3 and get_key(spec, "train.validation_interval") <= 3
    assert get_key(spec, "train.pretrained_model_path") == str(checkpoint)
    assert get_key(spec, "train.resume_training_checkpoint_path") is None


def test_a_training_spec_from_scratch_has_no_pretrained_model(tmp_path):
    base = set_key(baseline_spec(), "train.pretrained_model_path", "/older/model.pth")
    spec = training_spec(base, results_dir=tmp_path / "train", num_epochs=2, batch_size=4)
    assert get_key(spec, "train.pretrained_model_path") is None


def test_the_inference_spec_keeps_every_architecture_key_of_the_training_spec(tmp_path):
    trained = training_spec(
        baseline_spec(backbone_type="vit_small_dinov3"),
        results_dir=tmp_path / "train",
        num_epochs=2,
        batch_size=4,
        params={"model.classify.learnable_difference_modules": 2, "model.classify.embed_dec": 12},
        extra_overrides=[
            "dataset.classify.image_width=48",
            "dataset.classify.image_height=40",
            "dataset.classify.image_ext=.png",
            "dataset.classify.num_input=2",
            "dataset.classify.input_map={SolderLight: 0, LowAngleLight: 1}",
        ],
    )
    checkpoint = tmp_path / "train" / "model_epoch_001_step_00010.pth"
    spec = inference_spec(
        trained,
        checkpoint=checkpoint,
        csv_path=tmp_path / "kpi.csv",
        images_dir=tmp_path / "images",
        results_dir=tmp_path / "inference" / "latest",
    )
    checked = 0
    for key in ARCHITECTURE_KEYS:
        try:
            value = get_key(trained, key)
        except SpecError:
            continue
        assert get_key(spec, key) == value, key
        checked += 1
    assert checked >= 12
    assert get_key(spec, "inference.checkpoint") == str(checkpoint)
    assert get_key(spec, "inference.results_dir") == str(tmp_path / "inference" / "latest")
    assert get_key(spec, "dataset.classify.infer_dataset.csv_path") == str(tmp_path / "kpi.csv")
    assert get_key(spec, "dataset.classify.infer_dataset.images_dir") == str(tmp_path / "images")
    assert get_key(spec, "dataset.classify.augmentation_config.augment") is False


def test_moving_the_training_csv_changes_only_the_training_block(tmp_path):
    base = baseline_spec()
    moved = with_train_csv(base, csv_path=tmp_path / "combined.csv", images_dir=tmp_path / "ws")
    changed = {key for key, value in _leaves(moved).items() if _leaves(base).get(key) != value}
    assert changed == {"dataset.classify.train_dataset.csv_path", "dataset.classify.train_dataset.images_dir"}
    assert get_key(moved, "dataset.classify.train_dataset.csv_path") == str(tmp_path / "combined.csv")
