"""Tests of the DEFT baseline spec: the reference values, validity, independent copies and backbones."""

from __future__ import annotations

import pytest

from aoi_pipeline.core.spec.baseline import DEFAULT_BACKBONE, baseline_spec
from aoi_pipeline.core.spec.derive import (
    ARCHITECTURE_KEYS,
)
from aoi_pipeline.core.spec.keys import get_key
from aoi_pipeline.core.spec.validation import unknown_keys, validate_spec
from aoi_pipeline.errors import SpecError

DATA = "/data/datasets/NV_PCB_Siamese"


def problems_of(excinfo: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


REFERENCE_VALUES = [
    ("encryption_key", "tlt_encode"),
    ("task", "classify"),
    ("results_dir", "/results"),
    ("train.resume_training_checkpoint_path", None),
    ("train.pretrained_model_path", None),
    ("train.classify.loss", "ce"),
    ("train.classify.cls_weight", [1.0, 10.0]),
    ("train.num_epochs", 10),
    ("train.num_nodes", 1),
    ("train.validation_interval", 10),
    ("train.checkpoint_interval", 5),
    ("train.optim.lr", 1e-5),
    ("train.optim.optim", "adamw"),
    ("train.optim.policy", "linear"),
    ("train.optim.momentum", 0.9),
    ("train.optim.weight_decay", 0.01),
    ("train.results_dir", "${results_dir}/train"),
    ("train.tensorboard.enabled", True),
    ("train.tensorboard.infrequent_logging_frequency", 1),
    ("model.backbone.type", "c_radio_v2_vit_base_patch16_224"),
    ("model.backbone.pretrained_backbone_path", "/data/pretrained_models/C-RADIOv2_B.pth"),
    ("model.backbone.freeze_backbone", False),
    ("model.classify.train_margin_euclid", 2.0),
    ("model.classify.eval_margin", 0.3),
    ("model.classify.embedding_vectors", 5),
    ("model.classify.embed_dec", 30),
    ("model.classify.difference_module", "learnable"),
    ("model.classify.learnable_difference_modules", 4),
    ("model.decode_head.use_summary_token", True),
    ("model.decode_head.feature_strides", [4, 8, 16, 32]),
    ("dataset.classify.train_dataset.csv_path", f"{DATA}/csv/training_set.csv"),
    ("dataset.classify.train_dataset.images_dir", f"{DATA}/images"),
    ("dataset.classify.validation_dataset.csv_path", f"{DATA}/csv/validation_set.csv"),
    ("dataset.classify.test_dataset.csv_path", f"{DATA}/csv/validation_set.csv"),
    ("dataset.classify.infer_dataset.csv_path", f"{DATA}/kpi/testing_set.csv"),
    ("dataset.classify.infer_dataset.images_dir", f"{DATA}/images"),
    ("dataset.classify.image_ext", ".jpg"),
    ("dataset.classify.batch_size", 16),
    ("dataset.classify.workers", 2),
    ("dataset.classify.fpratio_sampling", 0.2),
    ("dataset.classify.num_input", 1),
    ("dataset.classify.input_map", {"SolderLight": 0}),
    ("dataset.classify.concat_type", "linear"),
    ("dataset.classify.grid_map", {"x": 2, "y": 2}),
    ("dataset.classify.image_width", 224),
    ("dataset.classify.image_height", 224),
    ("dataset.classify.num_classes", 2),
    ("dataset.classify.augmentation_config.rgb_input_mean", [0.485, 0.456, 0.406]),
    ("dataset.classify.augmentation_config.rgb_input_std", [0.229, 0.224, 0.225]),
    ("dataset.classify.augmentation_config.random_rotate.angle_list", [90, 180, 270]),
    ("dataset.classify.augmentation_config.random_color.hue", 0.3),
    ("dataset.classify.augmentation_config.with_scale_random_crop.enable", True),
    ("dataset.classify.augmentation_config.augment", True),
    ("evaluate.checkpoint", ""),
    ("evaluate.trt_engine", ""),
    ("evaluate.batch_size", "${dataset.classify.batch_size}"),
    ("inference.checkpoint", ""),
    ("export.gpu_id", 0),
    ("export.onnx_file", "${results_dir}/export/changenet-classify.onnx"),
    ("export.input_width", 224),
    ("export.batch_size", "${dataset.classify.batch_size}"),
]


@pytest.mark.parametrize(("key", "expected"), REFERENCE_VALUES)
def test_baseline_has_the_reference_value(key: str, expected: object) -> None:
    value = get_key(baseline_spec(), key)
    assert value == expected
    assert type(value) is type(expected)  # 1e-5 must be a float, not the text YAML 1.1 would give


def test_baseline_is_valid_and_fully_known() -> None:
    spec = baseline_spec()
    validate_spec(spec)
    assert unknown_keys(spec) == []
    for key in ARCHITECTURE_KEYS:
        get_key(spec, key)


def test_baseline_returns_an_independent_copy_each_time() -> None:
    first = baseline_spec()
    first["train"]["num_epochs"] = 99
    assert baseline_spec()["train"]["num_epochs"] == 10


def test_dinov3_baseline_is_frozen_and_points_at_its_staged_file() -> None:
    spec = baseline_spec(backbone_type="vit_base_dinov3")
    assert get_key(spec, "model.backbone.type") == "vit_base_dinov3"
    assert get_key(spec, "model.backbone.freeze_backbone") is True
    assert get_key(spec, "model.backbone.pretrained_backbone_path") == (
        "/data/pretrained_models/vit_base_dinov3.safetensors"
    )
    validate_spec(spec)
    assert baseline_spec()["model"]["backbone"]["type"] == DEFAULT_BACKBONE


def test_unknown_backbone_is_refused_with_the_allowed_list() -> None:
    with pytest.raises(SpecError) as excinfo:
        baseline_spec(backbone_type="resnet50")
    (message,) = problems_of(excinfo)
    assert "model.backbone.type" in message
    assert "'resnet50'" in message
    assert "vit_base_dinov3" in message and DEFAULT_BACKBONE in message
