"""Tests of spec validation: unknown and workflow keys, types, values and one error listing every problem."""

from __future__ import annotations

import pytest

from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.overrides import apply_overrides, deep_merge
from aoi_pipeline.core.spec.validation import unknown_keys, validate_spec
from aoi_pipeline.errors import SpecError


def problems_of(excinfo: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


def validation_problems(spec: dict, **kwargs: object) -> list[str]:
    with pytest.raises(SpecError) as excinfo:
        validate_spec(spec, **kwargs)  # type: ignore[arg-type]
    return problems_of(excinfo)


W = "spec.yaml"


def invalid(overrides: list[str], **kwargs: object) -> list[str]:
    return validation_problems(apply_overrides(baseline_spec(), overrides), where=W, **kwargs)


def test_unknown_keys_lists_the_outermost_unknown_key_of_each_branch() -> None:
    spec = deep_merge(
        baseline_spec(),
        {"train": {"foo": {"bar": 1}}, "bogus": 2, "dataset": {"classify": {"input_map": {"UV": 1}}}},
    )
    assert unknown_keys(spec) == ["train.foo", "bogus"]


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
            "spec.yaml: train.num_epochs: 0 is below the minimum 1. Fix: use a value from 1 to 10000",
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


def test_a_block_given_a_scalar_is_reported() -> None:
    messages = validation_problems(deep_merge(baseline_spec(), {"train": {"optim": 5}}))
    assert len(messages) == 1
    assert messages[0].startswith("spec: train.optim: train.optim is a block of keys, got 5 (integer)")
