"""Tests of the TAO classify spec contract: baseline, YAML I/O, keys, overrides, validation, derivation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoi_pipeline.core import spec_schema
from aoi_pipeline.core.spec import (
    ARCHITECTURE_KEYS,
    DEFAULT_BACKBONE,
    apply_overrides,
    baseline_spec,
    deep_merge,
    derive_eval_spec,
    dump_spec,
    flatten,
    get_key,
    load_spec,
    parse_override,
    require_same_architecture,
    rewrite_host_paths,
    set_key,
    unknown_keys,
    validate_spec,
)
from aoi_pipeline.errors import SpecError

DATA = "/data/datasets/NV_PCB_Siamese"


def problems_of(excinfo: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


def validation_problems(spec: dict, **kwargs: object) -> list[str]:
    with pytest.raises(SpecError) as excinfo:
        validate_spec(spec, **kwargs)  # type: ignore[arg-type]
    return problems_of(excinfo)


# ------------------------------------------------------------------------------------------------ baseline

# Values of the reference DEFT baseline spec, copied by hand from its key table.
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


# ------------------------------------------------------------------------------------------------ YAML I/O


def test_load_spec_reads_exponent_floats_and_interpolations(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("task: classify\ntrain:\n  optim:\n    lr: 1e-5\nevaluate:\n  batch_size: ${a.b}\n")
    spec = load_spec(path)
    assert spec["train"]["optim"]["lr"] == 1e-5
    assert isinstance(spec["train"]["optim"]["lr"], float)
    assert spec["evaluate"]["batch_size"] == "${a.b}"


def test_load_spec_names_file_and_line_of_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("task: classify\nmodel: a: b\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    (message,) = problems_of(excinfo)
    assert message.startswith(f"{path}:2:")
    assert "invalid YAML" in message


def test_load_spec_rejects_a_duplicate_key_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("task: classify\ntrain:\n  num_epochs: 10\n  num_epochs: 20\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    (message,) = problems_of(excinfo)
    assert message.startswith(f"{path}:4:")
    assert "duplicate key 'num_epochs'" in message


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("- a\n- b\n", "the top level is a list, not a mapping of keys"),
        ("just text\n", "the top level is a text, not a mapping of keys"),
        ("", "the spec file is empty"),
        ("# only a comment\n", "the spec file is empty"),
    ],
)
def test_load_spec_rejects_a_non_mapping(tmp_path: Path, text: str, what: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    (message,) = problems_of(excinfo)
    assert message.startswith(f"{path}: {what}.")


def test_load_spec_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist") as excinfo:
        load_spec(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(excinfo.value)


def test_dump_then_load_round_trips_values_types_and_key_order(tmp_path: Path) -> None:
    spec = baseline_spec()
    spec["train"]["optim"]["lr"] = 3e-6
    spec["model"]["backbone"]["pretrained_backbone_path"] = "1e-5"  # text that looks like a number stays text
    path = tmp_path / "out" / "spec.yaml"
    dump_spec(spec, path)
    loaded = load_spec(path)
    assert loaded == spec
    assert json.dumps(loaded) == json.dumps(spec)  # same key order at every level
    assert loaded["model"]["backbone"]["pretrained_backbone_path"] == "1e-5"


def test_dump_spec_with_a_bad_value_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("old: content\n")
    spec = baseline_spec()
    spec["train"]["seed"] = object()
    with pytest.raises(SpecError) as excinfo:
        dump_spec(spec, path)
    assert "train.seed" in str(excinfo.value)
    assert path.read_text() == "old: content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


# ------------------------------------------------------------------------------------------------ keys


def test_get_key_reads_list_items_and_reports_what_is_missing() -> None:
    spec = baseline_spec()
    assert get_key(spec, "train.classify.cls_weight[1]") == 10.0
    with pytest.raises(SpecError) as excinfo:
        get_key(spec, "train.checkpointer.monitor")
    (message,) = problems_of(excinfo)
    assert message.startswith("train.checkpointer.monitor: train.checkpointer is not set")
    with pytest.raises(SpecError, match=r"index 2 is out of range: train.classify.cls_weight has 2 item"):
        get_key(spec, "train.classify.cls_weight[2]")


def test_set_key_returns_a_new_spec_and_leaves_the_input_alone() -> None:
    spec = baseline_spec()
    before = copy.deepcopy(spec)
    changed = set_key(spec, "train.classify.cls_weight[1]", 20.0)
    assert spec == before
    assert changed["train"]["classify"]["cls_weight"] == [1.0, 20.0]
    created = set_key(spec, "train.checkpointer.monitor", "val_far")
    assert created["train"]["checkpointer"] == {"monitor": "val_far"}
    free = set_key(spec, "dataset.classify.input_map.LowAngleLight", 1)
    assert free["dataset"]["classify"]["input_map"] == {"SolderLight": 0, "LowAngleLight": 1}


def test_set_key_refuses_unknown_keys_with_the_closest_known_one() -> None:
    with pytest.raises(SpecError) as excinfo:
        set_key(baseline_spec(), "train.optim.lrr", 0.1)
    (message,) = problems_of(excinfo)
    assert message == (
        "train.optim.lrr: unknown key 'train.optim.lrr': the TAO Visual ChangeNet classify spec has no such "
        "key. Fix: rename it to train.optim.lr if that was meant, or remove it (TAO rejects keys its "
        "ExperimentConfig does not define)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.b[1]=20", ("a.b[1]", 20)),
        ("k=", ("k", "")),
        ("train.optim.lr=1e-4", ("train.optim.lr", 1e-4)),
        ("train.optim.lr=0.001", ("train.optim.lr", 0.001)),
        ("x=true", ("x", True)),
        ("x=null", ("x", None)),
        ("x=[1.0, 10.0]", ("x", [1.0, 10.0])),
        ("x={SolderLight: 0}", ("x", {"SolderLight": 0})),
        ("x='5'", ("x", "5")),
        ("x=a=b", ("x", "a=b")),
        (" train.num_epochs = 3 ", ("train.num_epochs", 3)),
        ("results_dir=/results/iter1", ("results_dir", "/results/iter1")),
    ],
)
def test_parse_override_types_values_by_yaml(text: str, expected: tuple[str, object]) -> None:
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("train.num_epochs", "is not of the form key=value"),
        ("=5", "is not of the form key=value"),
        ("+train.seed=1", "uses a Hydra prefix (+)"),
        ("~train.seed", "is not of the form key=value"),
        ("a..b=1", "is not a dotted spec key"),
        ("x=[1, 2", "is not valid YAML"),
    ],
)
def test_parse_override_rejects_malformed_text(text: str, what: str) -> None:
    with pytest.raises(SpecError, match=r"Fix: ") as excinfo:
        parse_override(text)
    assert what in str(excinfo.value)


def test_apply_overrides_sets_indexed_keys_and_nothing_else() -> None:
    spec = baseline_spec()
    changed = apply_overrides(spec, ["train.classify.cls_weight[1]=20", "train.num_epochs=20"])
    diff = {k for k, v in flatten(changed).items() if flatten(spec).get(k) != v}
    assert diff == {"train.classify.cls_weight", "train.num_epochs"}
    assert changed["train"]["classify"]["cls_weight"] == [1.0, 20]


def test_apply_overrides_reports_every_bad_override_at_once() -> None:
    with pytest.raises(SpecError) as excinfo:
        apply_overrides(
            baseline_spec(),
            [
                "train.num_epoch=3",
                "train.classify.cls_weight[5]=1",
                "train.num_epochs=4",
                "train.batch_size=8",
            ],
        )
    messages = problems_of(excinfo)
    assert len(messages) == 3
    assert "rename it to train.num_epochs" in messages[0]
    assert messages[1].startswith("train.classify.cls_weight[5]: index 5 is out of range")
    assert "rename it to dataset.classify.batch_size" in messages[2]


def test_deep_merge_merges_blocks_replaces_leaves_and_accepts_dotted_keys() -> None:
    base = baseline_spec()
    before = copy.deepcopy(base)
    patch = {
        "train": {"optim": {"lr": 2e-4}, "classify": {"cls_weight": [1.0, 5.0]}},
        "train.classify.cls_weight[1]": 30.0,
        "dataset.classify.augmentation_config.random_color.brightness": 0.5,
    }
    merged = deep_merge(base, patch)
    assert base == before
    assert merged["train"]["optim"] == {**base["train"]["optim"], "lr": 2e-4}
    assert merged["train"]["classify"]["cls_weight"] == [1.0, 30.0]
    assert merged["dataset"]["classify"]["augmentation_config"]["random_color"]["brightness"] == 0.5
    changed = {k for k, v in flatten(merged).items() if flatten(base).get(k) != v}
    assert changed == {
        "train.optim.lr",
        "train.classify.cls_weight",
        "dataset.classify.augmentation_config.random_color.brightness",
    }


def test_deep_merge_expands_dotted_keys_inside_new_blocks() -> None:
    merged = deep_merge({"task": "classify"}, {"train": {"optim.lr": 1e-4}, "model": 3})
    assert merged == {"task": "classify", "train": {"optim": {"lr": 1e-4}}, "model": 3}
    assert deep_merge({"model": 3}, {"model": {"backbone": {"type": "x"}}}) == {"model": {"backbone": {"type": "x"}}}


def test_unknown_keys_lists_the_outermost_unknown_key_of_each_branch() -> None:
    spec = deep_merge(
        baseline_spec(),
        {"train": {"foo": {"bar": 1}}, "bogus": 2, "dataset": {"classify": {"input_map": {"UV": 1}}}},
    )
    assert unknown_keys(spec) == ["train.foo", "bogus"]


def test_every_key_of_the_reference_table_is_in_the_schema() -> None:
    known = set(spec_schema.known_keys())
    for key in [
        "train.checkpointer.enable_topk",
        "train.checkpointer.monitor",
        "train.tensorboard.enabled",
        "train.optim.lr_steps",
        "train.optim.lr_step_size",
        "train.optim.lr_decay",
        "train.optim.min_lr",
        "train.optim.monitor_name",
        "train.num_gpus",
        "train.gpu_ids",
        "train.seed",
        "train.precision",
        "train.checkpoint_interval_unit",
        "dataset.classify.num_golden",
        "dataset.classify.augmentation_config.random_color.color_probability",
        "dataset.classify.augmentation_config.with_scale_random_crop.scale_range",
        "inference.vis_after_n_batches",
        "evaluate.results_dir",
        "export.onnx_file",
        "gen_trt_engine.trt_engine",
    ]:
        assert key in known, key


# ------------------------------------------------------------------------------------------------ validation

W = "spec.yaml"


def invalid(overrides: list[str], **kwargs: object) -> list[str]:
    return validation_problems(apply_overrides(baseline_spec(), overrides), where=W, **kwargs)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["train.checkpoint_interval=20"],
            "spec.yaml: train.checkpoint_interval: checkpoint_interval 20 is greater than "
            "train.num_epochs 10: TAO asserts at startup and no checkpoint would be written. "
            "Fix: set train.checkpoint_interval to at most 10 (e.g. train.checkpoint_interval=10) "
            "or raise train.num_epochs",
        ),
        (
            ["train.validation_interval=11"],
            "spec.yaml: train.validation_interval: validation_interval 11 is greater than "
            "train.num_epochs 10: validation would never run. "
            "Fix: set train.validation_interval to at most 10 "
            "(e.g. train.validation_interval=10) or raise train.num_epochs",
        ),
        (
            ["dataset.classify.batch_size=1"],
            "spec.yaml: dataset.classify.batch_size: batch_size must be greater than 1 for training, got 1. "
            "Fix: set dataset.classify.batch_size to 2 or more (2 for a smoke test; 16 fits a 48 GB GPU)",
        ),
        (
            ["train.classify.loss=contrastive"],
            "spec.yaml: train.classify.loss: loss 'contrastive' needs model.classify.difference_module "
            "'euclidean', got 'learnable'. Fix: set train.classify.loss=ce (works with either module) or "
            "model.classify.difference_module=euclidean",
        ),
        (
            ["train.classify.cls_weight=[1.0, 10.0, 3.0]"],
            "spec.yaml: train.classify.cls_weight: cls_weight must be a list of 2 positive numbers "
            "[PASS, defect], got [1.0, 10.0, 3.0]. Fix: write e.g. train.classify.cls_weight=[1.0, 10.0]",
        ),
        (
            ["train.classify.cls_weight[0]=0"],
            "spec.yaml: train.classify.cls_weight: cls_weight must be a list of 2 positive numbers "
            "[PASS, defect], got [0, 10.0]. Fix: write e.g. train.classify.cls_weight=[1.0, 10.0]",
        ),
        (
            ["train.classify.cls_weight[1]=150"],
            "spec.yaml: train.classify.cls_weight[1]: the defect class weight cls_weight[1] is 150, outside "
            "1 to 100. Fix: use a value from 1 to 100, e.g. train.classify.cls_weight[1]=10",
        ),
        (
            ["train.optim.optim=Adam"],
            "spec.yaml: train.optim.optim: 'Adam' is not an allowed value. Fix: use one of: adamw, adam, sgd",
        ),
        (
            ["model.classify.difference_module=siamese"],
            "spec.yaml: model.classify.difference_module: 'siamese' is not an allowed value. "
            "Fix: use one of: learnable, euclidean",
        ),
        (
            ["train.num_epochs=0", "train.checkpoint_interval=1", "train.validation_interval=1"],
            "spec.yaml: train.num_epochs: 0 is below the minimum 1. Fix: use a value from 1 to inf",
        ),
        (
            ["train.num_epochs=ten"],
            "spec.yaml: train.num_epochs: expected a whole number, got 'ten' (text). "
            "Fix: write a whole number, e.g. 10",
        ),
        (
            ["model.classify.learnable_difference_modules=5"],
            "spec.yaml: model.classify.learnable_difference_modules: 5 is above the maximum 4. "
            "Fix: use a value from 1 to 4",
        ),
        (
            ["task=segment"],
            "spec.yaml: task: task is 'segment'; this pipeline trains Visual ChangeNet classify. "
            "Fix: set task: classify",
        ),
        (
            ["train.optim.lr='1e-5'"],
            "spec.yaml: train.optim.lr: expected a finite number, got '1e-5' (text). "
            "Fix: write it as a number without quotes, e.g. 1e-05",
        ),
        (
            ["model.backbone.type=vit_small_dinov3"],
            "spec.yaml: model.backbone.freeze_backbone: backbone vit_small_dinov3 is trained unfrozen; DEFT "
            "fine-tunes DINOv3 backbones frozen. Fix: set model.backbone.freeze_backbone=true",
        ),
    ],
)
def test_each_invariant_has_its_exact_message(overrides: list[str], expected: str) -> None:
    assert invalid(overrides) == [expected]


def test_workflow_keys_are_refused_anywhere_with_the_hydra_explanation() -> None:
    spec = deep_merge(baseline_spec(), {"workflow": {"name": "x"}, "train": {"automl_policy": "off"}})
    messages = validation_problems(spec, where=W)
    assert messages == [  # in spec order: train comes first, the merged-in workflow block last
        "spec.yaml: train.automl_policy: 'train.automl_policy' is a workflow argument, not a spec key: TAO's "
        "Hydra merge fails with \"Key 'automl_policy' not in 'ExperimentConfig'\". Fix: remove it from the "
        "spec; `visual_changenet train -e spec.yaml` is already plain training, and automl_policy/workflow "
        "settings belong to the pipeline configuration",
        "spec.yaml: workflow: 'workflow' is a workflow argument, not a spec key: TAO's Hydra merge "
        "fails with \"Key 'workflow' not in 'ExperimentConfig'\". Fix: remove it from the spec; "
        "`visual_changenet train -e spec.yaml` is already plain training, and automl_policy/workflow "
        "settings belong to the pipeline configuration",
    ]


def test_unknown_keys_name_the_closest_key_and_a_missing_task_is_reported() -> None:
    spec = baseline_spec()
    del spec["task"]
    spec["dataset"]["classify"]["batchsize"] = 8
    assert validation_problems(spec, where=W) == [
        "spec.yaml: dataset.classify.batchsize: unknown key 'dataset.classify.batchsize': the TAO Visual "
        "ChangeNet classify spec has no such key. Fix: rename it to dataset.classify.batch_size if that was "
        "meant, or remove it (TAO rejects keys its ExperimentConfig does not define)",
        "spec.yaml: task: task is not set (TAO then defaults to segment); this pipeline trains Visual "
        "ChangeNet classify. Fix: set task: classify",
    ]


def test_every_problem_is_collected_into_one_error() -> None:
    messages = invalid(
        [
            "train.checkpoint_interval=20",
            "dataset.classify.batch_size=1",
            "train.classify.loss=contrastive",
            "train.optim.policy=cosine",
        ]
    )
    assert len(messages) == 4


def test_contrastive_loss_is_fine_with_the_euclidean_module() -> None:
    validate_spec(
        apply_overrides(
            baseline_spec(), ["train.classify.loss=contrastive", "model.classify.difference_module=euclidean"]
        )
    )


def test_a_step_checkpoint_interval_is_not_compared_with_epochs() -> None:
    validate_spec(
        apply_overrides(baseline_spec(), ["train.checkpoint_interval_unit=step", "train.checkpoint_interval=200"])
    )


def test_batch_size_one_is_fine_for_inference() -> None:
    spec = apply_overrides(baseline_spec(), ["dataset.classify.batch_size=1", "inference.checkpoint=/r/m.pth"])
    validate_spec(spec, action="inference")


@pytest.mark.parametrize("action", ["evaluate", "inference"])
def test_evaluate_and_inference_need_an_explicit_checkpoint(action: str) -> None:
    assert invalid([], action=action) == [
        f"spec.yaml: {action}.checkpoint: no checkpoint is set for {action} (got ''). Fix: set "
        f"{action}.checkpoint to the container path of the trained .pth, e.g. "
        "/results/baseline/train/model_epoch_009_step_00120.pth"
    ]
    assert invalid([f"{action}.checkpoint='${{results_dir}}/train/m.pth'"], action=action) == [
        f"spec.yaml: {action}.checkpoint: checkpoint '${{results_dir}}/train/m.pth' uses ${{results_dir}}, "
        f"which Hydra rebases for each action. Fix: set {action}.checkpoint to an explicit container path "
        "such as /results/<iteration>/train/<file>.pth"
    ]


def test_a_block_given_a_scalar_is_reported() -> None:
    messages = validation_problems(deep_merge(baseline_spec(), {"train": {"optim": 5}}))
    assert len(messages) == 1
    assert messages[0].startswith("spec: train.optim: train.optim is a block of keys, got 5 (integer)")


# ------------------------------------------------------------------------------------------------ derivation


@pytest.mark.parametrize(("action", "block"), [("inference", "infer_dataset"), ("evaluate", "test_dataset")])
def test_derived_spec_changes_only_paths_checkpoint_results_and_augmentation(action: str, block: str) -> None:
    train = apply_overrides(baseline_spec(), ["model.classify.learnable_difference_modules=2"])
    before = copy.deepcopy(train)
    derived = derive_eval_spec(
        train,
        action=action,  # type: ignore[arg-type]
        checkpoint="/results/iter1/train/model_epoch_009_step_00120.pth",
        results_dir=f"/results/iter1/{action}/latest",
        csv_path="/data/workspace/kpi/testing_set.csv",
        images_dir="/data/workspace/images",
    )
    assert train == before
    old, new = flatten(train), flatten(derived)
    changed = {key for key in old.keys() | new.keys() if old.get(key, "<absent>") != new.get(key, "<absent>")}
    assert changed == {
        f"{action}.checkpoint",
        f"{action}.results_dir",
        f"dataset.classify.{block}.csv_path",
        f"dataset.classify.{block}.images_dir",
        "dataset.classify.augmentation_config.augment",
    }
    assert new["dataset.classify.augmentation_config.augment"] is False
    assert new[f"{action}.checkpoint"] == "/results/iter1/train/model_epoch_009_step_00120.pth"
    assert new["train.classify.loss"] == "ce"
    require_same_architecture(train, derived)
    validate_spec(derived, action=action)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(
    checkpoint=st.text(st.characters(codec="ascii", exclude_characters="${}\x00"), min_size=1).filter(str.strip),
    csv_path=st.none() | st.text(max_size=20),
)
def test_derivation_never_touches_any_other_key(checkpoint: str, csv_path: str | None) -> None:
    train = baseline_spec()
    derived = derive_eval_spec(train, action="inference", checkpoint=checkpoint, results_dir="/r", csv_path=csv_path)
    allowed = {
        "inference.checkpoint",
        "inference.results_dir",
        "dataset.classify.infer_dataset.csv_path",
        "dataset.classify.augmentation_config.augment",
    }
    old, new = flatten(train), flatten(derived)
    assert {k: v for k, v in old.items() if k not in allowed} == {k: v for k, v in new.items() if k not in allowed}


def test_derivation_adds_the_loss_stub_when_the_training_spec_lacks_it() -> None:
    train = baseline_spec()
    del train["train"]["classify"]["loss"]
    derived = derive_eval_spec(train, action="evaluate", checkpoint="/r/m.pth", results_dir="/r/evaluate")
    assert derived["train"]["classify"] == {"cls_weight": [1.0, 10.0], "loss": "ce"}


def test_derivation_refuses_a_missing_checkpoint_and_results_dir() -> None:
    with pytest.raises(SpecError) as excinfo:
        derive_eval_spec(baseline_spec(), action="inference", checkpoint=" ", results_dir="")
    messages = problems_of(excinfo)
    assert len(messages) == 2
    assert messages[0].startswith("inference.checkpoint: no checkpoint given")
    assert messages[1].startswith("inference.results_dir: no results directory given")


def test_a_changed_architecture_key_is_reported_against_the_training_spec() -> None:
    train = baseline_spec()
    other = apply_overrides(train, ["model.classify.embed_dec=5", "dataset.classify.image_ext=.png"])
    with pytest.raises(SpecError) as excinfo:
        require_same_architecture(train, other, where="infer.yaml")
    messages = problems_of(excinfo)
    assert [m.split(":")[1].strip() for m in messages] == [
        "model.classify.embed_dec",
        "dataset.classify.image_ext",
    ]
    assert "model.classify.embed_dec is 5 but the checkpoint was trained with 30" in messages[0]


# ------------------------------------------------------------------------------------------------ host paths


def test_rewrite_host_paths_uses_the_most_specific_mount_and_path_boundaries() -> None:
    spec = {
        "a": "/home/me/ws/train/base/training_set.csv",
        "b": ["/home/me/ws", "/home/me/ws2/x", "/home/me/ws/results/run_1/iter1/train/m.pth"],
        "c": {"d": "${results_dir}/train", "e": "relative/path", "f": 3},
        "g": "/home/me/ws/",
    }
    before = copy.deepcopy(spec)
    mounts = {"/home/me/ws": "/data/workspace", "/home/me/ws/results/run_1/": "/results"}
    assert rewrite_host_paths(spec, mounts) == {
        "a": "/data/workspace/train/base/training_set.csv",
        "b": ["/data/workspace", "/home/me/ws2/x", "/results/iter1/train/m.pth"],
        "c": {"d": "${results_dir}/train", "e": "relative/path", "f": 3},
        "g": "/data/workspace/",
    }
    assert spec == before


def test_rewrite_host_paths_refuses_relative_mounts() -> None:
    with pytest.raises(SpecError, match="absolute"):
        rewrite_host_paths({}, {"ws": "/data/workspace"})
