"""Cross-key spec invariants that TAO enforces only once a job is already running.

The classify task, contrastive loss only with the euclidean difference module, two positive class weights,
intervals no larger than `num_epochs`, `batch_size > 1`, frozen DINOv3 backbones and local weights for
training, and an explicit checkpoint for inference and evaluation. Type errors are left to the schema check,
so a wrong value is reported once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aoi_pipeline.core.spec import Action
from aoi_pipeline.core.spec.keys import find_key
from aoi_pipeline.errors import Problem


def _number(spec: Mapping[str, Any], dotted: str, *, whole: bool = False) -> float | None:
    """A present, plain numeric value (type errors are reported by the schema check, not again here)."""
    present, value = find_key(spec, dotted)
    if not present or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if whole and not isinstance(value, int):
        return None
    return value


def invariant_problems(spec: Mapping[str, Any], action: Action, where: str) -> list[Problem]:
    problems = _task_problems(spec, where) + _loss_problems(spec, where) + _cls_weight_problems(spec, where)
    if action == "train":
        problems += _interval_problems(spec, where) + _batch_problems(spec, where) + _backbone_problems(spec, where)
    else:
        problems += _checkpoint_problems(spec, action, where)
    return problems


def _task_problems(spec: Mapping[str, Any], where: str) -> list[Problem]:
    present, task = find_key(spec, "task")
    if present and task != "segment":
        return []  # classify is right; any other value is reported by the allowed-values check
    what = f"task is {task!r}" if present else "task is not set (TAO then defaults to segment)"
    return [Problem(f"{where}: task", f"{what}; this pipeline trains Visual ChangeNet classify", "set task: classify")]


def _loss_problems(spec: Mapping[str, Any], where: str) -> list[Problem]:
    _, loss = find_key(spec, "train.classify.loss")
    present, module = find_key(spec, "model.classify.difference_module")
    if loss != "contrastive" or not present or module == "euclidean":
        return []
    return [
        Problem(
            f"{where}: train.classify.loss",
            f"loss 'contrastive' needs model.classify.difference_module 'euclidean', got {module!r}",
            "set train.classify.loss=ce (works with either module) or model.classify.difference_module=euclidean",
        )
    ]


def _cls_weight_problems(spec: Mapping[str, Any], where: str) -> list[Problem]:
    _, weights = find_key(spec, "train.classify.cls_weight")
    if not isinstance(weights, list):
        return []  # absent, an interpolation, or not a list (reported by the type check)
    location = f"{where}: train.classify.cls_weight"
    numbers = all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) for w in weights)
    if not numbers or len(weights) != 2 or min(weights) <= 0:
        return [
            Problem(
                location,
                f"cls_weight must be a list of 2 positive numbers [PASS, defect], got {weights!r}",
                "write e.g. train.classify.cls_weight=[1.0, 10.0]",
            )
        ]
    if not 1.0 <= weights[1] <= 100.0:
        return [
            Problem(
                f"{location}[1]",
                f"the defect class weight cls_weight[1] is {weights[1]!r}, outside 1 to 100",
                "use a value from 1 to 100, e.g. train.classify.cls_weight[1]=10",
            )
        ]
    return []


def _interval_problems(spec: Mapping[str, Any], where: str) -> list[Problem]:
    epochs = _number(spec, "train.num_epochs", whole=True)
    if epochs is None or epochs < 1:
        return []
    problems = []
    _, unit = find_key(spec, "train.checkpoint_interval_unit")
    checkpoint = _number(spec, "train.checkpoint_interval", whole=True)
    # A step-based interval counts optimiser steps, which have no fixed relation to epochs.
    if unit != "step" and checkpoint is not None and checkpoint > epochs:
        problems.append(
            Problem(
                f"{where}: train.checkpoint_interval",
                f"checkpoint_interval {checkpoint} is greater than train.num_epochs {epochs}: "
                "TAO asserts at startup and no checkpoint would be written",
                f"set train.checkpoint_interval to at most {epochs} "
                f"(e.g. train.checkpoint_interval={epochs}) or raise train.num_epochs",
            )
        )
    validation = _number(spec, "train.validation_interval", whole=True)
    if validation is not None and validation > epochs:
        problems.append(
            Problem(
                f"{where}: train.validation_interval",
                f"validation_interval {validation} is greater than train.num_epochs {epochs}: "
                "validation would never run",
                f"set train.validation_interval to at most {epochs} "
                f"(e.g. train.validation_interval={epochs}) or raise train.num_epochs",
            )
        )
    return problems


def _batch_problems(spec: Mapping[str, Any], where: str) -> list[Problem]:
    batch = _number(spec, "dataset.classify.batch_size", whole=True)
    if batch is None or batch > 1:
        return []
    return [
        Problem(
            f"{where}: dataset.classify.batch_size",
            f"batch_size must be greater than 1 for training, got {batch}",
            "set dataset.classify.batch_size to 2 or more (2 for a smoke test; 16 fits a 48 GB GPU)",
        )
    ]


def _backbone_problems(spec: Mapping[str, Any], where: str) -> list[Problem]:
    problems = []
    _, kind = find_key(spec, "model.backbone.type")
    frozen_present, frozen = find_key(spec, "model.backbone.freeze_backbone")
    if isinstance(kind, str) and kind.endswith("_dinov3") and frozen_present and frozen is False:
        problems.append(
            Problem(
                f"{where}: model.backbone.freeze_backbone",
                f"backbone {kind} is trained unfrozen; DEFT fine-tunes DINOv3 backbones frozen",
                "set model.backbone.freeze_backbone=true",
            )
        )
    _, weights = find_key(spec, "model.backbone.pretrained_backbone_path")
    if isinstance(weights, str) and "://" in weights:
        problems.append(
            Problem(
                f"{where}: model.backbone.pretrained_backbone_path",
                f"{weights!r} is a URL; TAO loads backbone weights only from a file inside the container",
                "stage the weights to a local file and set its container path, e.g. /data/pretrained_models/<file>",
            )
        )
    return problems


def _checkpoint_problems(spec: Mapping[str, Any], action: Action, where: str) -> list[Problem]:
    key = f"{action}.checkpoint"
    _, checkpoint = find_key(spec, key)
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        return [
            Problem(
                f"{where}: {key}",
                f"no checkpoint is set for {action} (got {checkpoint!r})",
                f"set {key} to the container path of the trained .pth, e.g. "
                "/results/baseline/train/model_epoch_009_step_00120.pth",
            )
        ]
    if "${results_dir}" in checkpoint:
        return [
            Problem(
                f"{where}: {key}",
                f"checkpoint {checkpoint!r} uses ${{results_dir}}, which Hydra rebases for each action",
                f"set {key} to an explicit container path such as /results/<iteration>/train/<file>.pth",
            )
        ]
    return []
