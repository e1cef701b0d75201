"""The known-key tree of the TAO Visual ChangeNet classify experiment spec, as data.

TAO merges a spec into its `ExperimentConfig` dataclasses with Hydra, so a misspelt key fails only when the
container starts (or, for a key Hydra tolerates, silently does nothing). This module lists every key the
classify task reads, with its type and, where TAO's config or schema states them, its allowed values and
bounds, so `aoi_pipeline.core.spec.validation` can reject a bad spec before any job is launched. Keys whose
children are user-defined (`input_map`, `grid_map`, ...) are leaves of kind `map`; blocks TAO owns but classify
never reads (`dataset.segment`, `quantize`, `gen_trt_engine.tensorrt`) are opaque maps, accepted and not
inspected.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

KeyKind = Literal["str", "int", "float", "bool", "list", "map"]


@dataclass(frozen=True)
class KeySpec:
    """What one leaf key accepts. Bounds are inclusive; `nullable` allows YAML null (TAO `Optional`)."""

    kind: KeyKind
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False
    note: str = ""


SchemaNode: TypeAlias = "KeySpec | Mapping[str, SchemaNode]"

STR = KeySpec("str")
PATH = KeySpec("str", nullable=True)
BOOL = KeySpec("bool")
LIST = KeySpec("list")
MAP = KeySpec("map", nullable=True)


def integer(minimum: float | None = None, maximum: float | None = None) -> KeySpec:
    return KeySpec("int", minimum=minimum, maximum=maximum)


def number(minimum: float | None = None, maximum: float | None = None) -> KeySpec:
    return KeySpec("float", minimum=minimum, maximum=maximum)


def choice(*choices: str) -> KeySpec:
    return KeySpec("str", choices=choices)


PROBABILITY = number(0.0, 1.0)
# Sane upper bounds: far above any real AOI run, low enough that a typo (an extra zero, 1e12) is caught
# before it allocates a 100000-pixel-wide batch or trains for ever.
MAX_IMAGE_SIDE = 8192
MAX_BATCH_SIZE = 4096
MAX_EPOCHS = 10000

#: The backbones TAO's schema enumerates, plus C-RADIOv2-B, which the schema omits but DEFT uses by default.
BACKBONE_TYPES: tuple[str, ...] = (
    "c_radio_v2_vit_base_patch16_224",
    "fan_tiny_8_p4_hybrid",
    "fan_small_12_p4_hybrid",
    "fan_base_16_p4_hybrid",
    "fan_large_16_p4_hybrid",
    "vit_large_nvdinov2",
    "vit_small_dinov3",
    "vit_small_plus_dinov3",
    "vit_base_dinov3",
    "vit_large_dinov3",
    "vit_huge_plus_dinov3",
    "vit_7b_dinov3",
)

#: Top-level or nested keys that belong to a workflow call, never to a spec: Hydra refuses to merge them.
FORBIDDEN_KEYS: tuple[str, ...] = ("workflow", "automl_policy")

DATASET_SPLITS: tuple[str, ...] = ("train_dataset", "validation_dataset", "test_dataset", "infer_dataset")

_DATA_PATHS: Mapping[str, SchemaNode] = {"csv_path": PATH, "images_dir": PATH}

_PARALLELISM: Mapping[str, SchemaNode] = {
    "num_gpus": integer(1),
    "gpu_ids": LIST,
    "num_nodes": integer(1),
}

_EVAL_ACTION: Mapping[str, SchemaNode] = {
    **_PARALLELISM,
    "checkpoint": PATH,
    "results_dir": PATH,
    "trt_engine": PATH,
    "batch_size": integer(-1),
    "vis_after_n_batches": integer(1),
}

_AUGMENTATION: Mapping[str, SchemaNode] = {
    "rgb_input_mean": LIST,
    "rgb_input_std": LIST,
    "random_flip": {"vflip_probability": PROBABILITY, "hflip_probability": PROBABILITY, "enable": BOOL},
    "random_rotate": {"rotate_probability": PROBABILITY, "angle_list": LIST, "enable": BOOL},
    "random_color": {
        "brightness": number(0.0, 2.0),
        "contrast": number(0.0, 2.0),
        "saturation": number(0.0, 2.0),
        "hue": number(0.0, 0.5),
        "enable": BOOL,
        "color_probability": PROBABILITY,
    },
    "with_scale_random_crop": {"scale_range": LIST, "enable": BOOL},
    "with_random_blur": BOOL,
    "with_random_crop": BOOL,
    "augment": BOOL,
}

SCHEMA: Mapping[str, SchemaNode] = {
    "encryption_key": PATH,
    "task": choice("segment", "classify"),
    "results_dir": PATH,
    "model_name": PATH,
    "wandb": {
        "enable": BOOL,
        "project": STR,
        "entity": PATH,
        "group": PATH,
        "name": STR,
        "reinit": BOOL,
        "run_id": PATH,
        "save_code": BOOL,
        "sync_tensorboard": BOOL,
        "tags": LIST,
    },
    "train": {
        **_PARALLELISM,
        "seed": integer(-1),
        "cudnn": {"benchmark": BOOL, "deterministic": BOOL},
        "num_epochs": integer(1, MAX_EPOCHS),
        "checkpoint_interval": integer(1),
        "checkpoint_interval_unit": choice("epoch", "step"),
        "validation_interval": integer(1),
        "resume_training_checkpoint_path": PATH,
        "pretrained_model_path": PATH,
        "results_dir": PATH,
        "precision": STR,
        "sync_batchnorm": BOOL,
        "use_distributed_sampler": BOOL,
        "checkpointer": {
            "enable_topk": BOOL,
            "replace_periodic": BOOL,
            "monitor": STR,
            "mode": choice("min", "max"),
            "save_top_k": integer(1),
            "filename": STR,
            "dirpath": PATH,
            "auto_insert_metric_name": BOOL,
        },
        "optim": {
            "lr": number(0.0),
            "optim": choice("adamw", "adam", "sgd"),
            "policy": choice("linear", "step"),
            "momentum": number(0.0, 1.0),
            "weight_decay": number(0.0, 1.0),
            "monitor_name": STR,
            "lr_steps": LIST,
            "lr_step_size": integer(1),
            "lr_decay": number(0.0),
            "min_lr": number(0.0),
        },
        "classify": {"loss": choice("ce", "contrastive"), "cls_weight": LIST},
        "segment": {"loss": choice("ce"), "weights": LIST},
        "tensorboard": {"enabled": BOOL, "infrequent_logging_frequency": integer(0)},
    },
    "model": {
        "backbone": {
            "type": choice(*BACKBONE_TYPES),
            "pretrained_backbone_path": PATH,
            "freeze_backbone": BOOL,
            "feat_downsample": BOOL,
        },
        "classify": {
            "train_margin_euclid": number(1.0),
            "eval_margin": number(0.0),
            "embedding_vectors": integer(1),
            "embed_dec": integer(1),
            "difference_module": choice("learnable", "euclidean"),
            "learnable_difference_modules": integer(1, 4),
        },
        "decode_head": {
            "in_channels": LIST,
            "in_index": LIST,
            "feature_strides": LIST,
            "align_corners": BOOL,
            "decoder_params": MAP,
            "use_summary_token": BOOL,
        },
    },
    "dataset": {
        "classify": {
            **{split: _DATA_PATHS for split in DATASET_SPLITS},
            "quant_calibration_dataset": {"images_dir": PATH},
            "image_ext": PATH,
            "batch_size": integer(1, MAX_BATCH_SIZE),
            "workers": integer(0, 256),
            "fpratio_sampling": PROBABILITY,
            "num_input": integer(1),
            "input_map": MAP,
            "grid_map": MAP,
            "concat_type": choice("linear", "grid"),
            "image_width": integer(1, MAX_IMAGE_SIDE),
            "image_height": integer(1, MAX_IMAGE_SIDE),
            "num_classes": integer(1, 2),
            "num_golden": integer(1),
            "augmentation_config": _AUGMENTATION,
        },
        "segment": MAP,
    },
    "evaluate": _EVAL_ACTION,
    "inference": _EVAL_ACTION,
    "export": {
        "results_dir": PATH,
        "gpu_id": integer(0),
        "checkpoint": PATH,
        "onnx_file": PATH,
        "on_cpu": BOOL,
        "input_channel": integer(1),
        "input_width": integer(128),
        "input_height": integer(128),
        "opset_version": integer(1),
        "batch_size": integer(-1),
        "verbose": BOOL,
    },
    "gen_trt_engine": {
        "results_dir": PATH,
        "gpu_id": integer(0),
        "onnx_file": PATH,
        "trt_engine": PATH,
        "input_channel": integer(1),
        "input_width": integer(128),
        "input_height": integer(128),
        "opset_version": integer(1),
        "batch_size": integer(-1),
        "verbose": BOOL,
        "tensorrt": MAP,
    },
    "quantize": MAP,
}


def lookup(parts: tuple[str, ...]) -> SchemaNode | None:
    """The schema node at a key path (mapping keys only, no list indices), or None when it is not known.

    A path that runs into a `map` leaf is known: the children of a map are user-defined.
    """
    node: SchemaNode = SCHEMA
    for part in parts:
        if isinstance(node, KeySpec):
            return node if node.kind == "map" else None
        child = node.get(part)
        if child is None:
            return None
        node = child
    return node


def known_keys() -> tuple[str, ...]:
    """Every dotted key of the schema, blocks and leaves, in schema order."""
    return tuple(_walk(SCHEMA, ""))


def _walk(node: Mapping[str, SchemaNode], prefix: str) -> Iterator[str]:
    for name, child in node.items():
        dotted = f"{prefix}{name}"
        yield dotted
        if not isinstance(child, KeySpec):
            yield from _walk(child, f"{dotted}.")


def closest_known_key(dotted: str) -> str | None:
    """The known key a misspelt or misplaced dotted key most likely meant, or None.

    A sibling with a similar name wins (`train.num_epoch` -> `train.num_epochs`), then a key with the same
    name elsewhere (`train.batch_size` -> `dataset.classify.batch_size`), then the closest dotted key.
    """
    parent, _, leaf = dotted.rpartition(".")
    siblings = lookup(tuple(parent.split("."))) if parent else SCHEMA
    if isinstance(siblings, Mapping):
        match = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
        if match:
            return f"{parent}.{match[0]}" if parent else match[0]
    keys = known_keys()
    same_leaf = [key for key in keys if key.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return same_leaf[0]
    match = difflib.get_close_matches(dotted, keys, n=1, cutoff=0.6)
    return match[0] if match else None
