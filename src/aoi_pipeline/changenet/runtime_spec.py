"""How the reference runtime reads a TAO Visual ChangeNet classify spec.

The spec is loaded, Hydra-like `dotted.key=value` overrides are applied, `${...}` interpolations are resolved
(`${results_dir}/train`, `${dataset.classify.batch_size}`) and the result is validated by the core's spec
rules plus the few the reference adds, all problems reported in one `SpecError` before anything is written.
TAO keys the reference cannot honour (another backbone, its pretrained weights, the decode head, TensorBoard,
TensorRT engines, several GPUs, ...) are accepted, and `unhonoured_keys` lists them with what the reference
uses instead, for one warning per run.

Two top-level sections exist only for this runtime and are removed before the TAO rules see the spec:
`embed` (the `embed` action: `checkpoint`, `csv_path`, `images_dir`, `results_dir`, `batch_size`) and
`reference` (`device`: auto|cpu|cuda|cuda:N, `recall_pct`: the recall at which `evaluate` reports FAR,
`shift_fraction`: the largest independent shift augmentation as a share of the image side, `backbone`: the
learnable module's encoder, small or resnet, `register_fraction`: how far the golden is searched for its
registration onto the test image, as a share of the image side (0 = no registration), `compile`:
false, true or a torch.compile mode; `reduce-overhead` adds CUDA graphs and pays off on long GPU runs, after
about a minute of compilation). A spec for the TAO container never needs either.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aoi_pipeline.core.spec import Action
from aoi_pipeline.core.spec.overrides import apply_overrides, parse_override
from aoi_pipeline.core.spec.validation import validate_spec
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.errors import Problem, SpecError

ACTIONS = ("train", "evaluate", "inference", "embed")
#: The dataset block each action reads (embed reads its own `embed.csv_path`/`embed.images_dir`).
ACTION_DATASET = {"evaluate": "test_dataset", "inference": "infer_dataset"}


@dataclass(frozen=True)
class RuntimeKey:
    """One key of a runtime-only section: its type, default, and allowed range or values."""

    kind: type[Any]
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    accepts_bool: bool = False
    help: str = ""


RUNTIME_SECTIONS: Mapping[str, Mapping[str, RuntimeKey]] = {
    "embed": {
        "checkpoint": RuntimeKey(str, "", help="the .pth whose features are written"),
        "csv_path": RuntimeKey(str, "", help="the dataset CSV to embed"),
        "images_dir": RuntimeKey(str, "", help="the image root of that CSV"),
        "results_dir": RuntimeKey(str, "", help="where embeddings.npy goes (default ${results_dir}/embed)"),
        "batch_size": RuntimeKey(int, 0, minimum=0, help="0 = dataset.classify.batch_size"),
    },
    "reference": {
        "device": RuntimeKey(str, "auto", pattern=r"auto|cpu|cuda(:\d+)?", help="auto|cpu|cuda|cuda:N"),
        "recall_pct": RuntimeKey(float, 100.0, minimum=1e-9, maximum=100.0, help="recall of evaluate's FAR"),
        "shift_fraction": RuntimeKey(float, 0.03, minimum=0.0, maximum=0.25, help="largest shift / image side"),
        "backbone": RuntimeKey(
            str, "small", pattern=r"small|resnet", help="learnable module's encoder: small (CPU default) or resnet"
        ),
        "register_fraction": RuntimeKey(
            float, 0.08, minimum=0.0, maximum=0.45, help="registration search radius / image side (0 = off)"
        ),
        "compile": RuntimeKey(
            str,
            False,
            pattern=r"off|default|reduce-overhead|max-autotune(-no-cudagraphs)?",
            accepts_bool=True,
            help="false, true (= default) or a torch.compile mode such as reduce-overhead",
        ),
    },
}

#: TAO's defaults (its ExperimentConfig/schema) for keys a spec may leave out.
TAO_DEFAULTS: Mapping[str, Any] = {
    "train.num_epochs": 10,
    "train.validation_interval": 1,
    "train.checkpoint_interval": 1,
    "train.checkpoint_interval_unit": "epoch",
    "train.seed": 1234,
    "train.precision": None,
    "train.resume_training_checkpoint_path": None,
    "train.pretrained_model_path": None,
    "train.optim.lr": 1e-4,
    "train.optim.optim": "adamw",
    "train.optim.policy": "linear",
    "train.optim.momentum": 0.9,
    "train.optim.weight_decay": 0.01,
    "train.classify.loss": "ce",
    "train.classify.cls_weight": [1.0, 10.0],
    "train.checkpointer.enable_topk": False,
    "train.checkpointer.replace_periodic": False,
    "train.checkpointer.monitor": "val_loss",
    "train.checkpointer.mode": "min",
    "train.checkpointer.save_top_k": 1,
    "train.checkpointer.filename": "model_best_{epoch:03d}",
    "train.checkpointer.dirpath": "",
    "train.checkpointer.auto_insert_metric_name": False,
    "model.classify.train_margin_euclid": 2.0,
    "model.classify.eval_margin": 2.0,
    "model.classify.embedding_vectors": 5,
    "model.classify.embed_dec": 5,
    "model.classify.difference_module": "euclidean",
    "model.classify.learnable_difference_modules": 4,
    "dataset.classify.image_ext": ".jpg",
    "dataset.classify.batch_size": 8,
    "dataset.classify.workers": 1,
    "dataset.classify.fpratio_sampling": 0.1,
    "dataset.classify.num_input": 4,
    "dataset.classify.input_map": {"LowAngleLight": 0, "SolderLight": 1, "UniformLight": 2, "WhiteLight": 3},
    "dataset.classify.image_width": 224,
    "dataset.classify.image_height": 224,
    "dataset.classify.num_classes": 2,
    "dataset.classify.augmentation_config": {"augment": False},
    "dataset.classify.augmentation_config.rgb_input_mean": [0.485, 0.456, 0.406],
    "dataset.classify.augmentation_config.rgb_input_std": [0.226, 0.226, 0.226],
    "evaluate.batch_size": -1,
    "inference.batch_size": -1,
    **{f"{section}.{key}": rule.default for section, keys in RUNTIME_SECTIONS.items() for key, rule in keys.items()},
}

CHECKPOINT_MONITORS = ("val_loss", "val_far", "val_acc", "val_fpr")
_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_MISSING = object()


@dataclass(frozen=True)
class Unhonoured:
    """A TAO key the reference accepts but cannot honour, and what it does instead."""

    key: str
    value: Any
    instead: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.instead}"


@dataclass(frozen=True)
class RuntimeSpec:
    """A loaded, overridden, resolved and validated spec for one action."""

    action: str
    path: Path
    spec: dict[str, Any]
    results_dir: Path
    unhonoured: tuple[Unhonoured, ...]

    def value(self, dotted: str) -> Any:
        """The resolved value at `dotted`, else TAO's default for it; KeyError when neither exists."""
        found = lookup(self.spec, dotted)
        if found is not _MISSING:
            return found
        if dotted in TAO_DEFAULTS:
            return copy.deepcopy(TAO_DEFAULTS[dotted])
        raise KeyError(dotted)

    def section(self, dotted: str) -> dict[str, Any]:
        """A block of keys (e.g. the augmentation config), empty when absent."""
        found = lookup(self.spec, dotted)
        return dict(found) if isinstance(found, Mapping) else {}

    def tao_spec(self) -> dict[str, Any]:
        """The spec without the runtime-only sections (what a TAO container would accept)."""
        return {key: value for key, value in self.spec.items() if key not in RUNTIME_SECTIONS}

    def where(self, dotted: str) -> str:
        return f"{self.path}: {dotted}"


def lookup(spec: Mapping[str, Any], dotted: str) -> Any:
    """The value at a plain dotted key (no list indices), or `_MISSING`."""
    node: Any = spec
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def read_runtime_spec(path: Path, overrides: Sequence[str], action: str) -> RuntimeSpec:
    """Load `path`, apply `overrides`, resolve interpolations and validate for `action`; one SpecError with
    every problem otherwise. Nothing is written."""
    if action not in ACTIONS:
        raise SpecError.at("action", f"unknown action {action!r}", f"use one of {', '.join(ACTIONS)}")
    path = Path(path)
    raw = load_spec(path)
    problems: list[Problem] = []
    runtime = {name: raw.pop(name) for name in list(raw) if name in RUNTIME_SECTIONS}
    problems += [
        Problem(
            f"{path}: {name}",
            f"{name} must be a block of keys, got {value!r}",
            f"write its keys under `{name}:`",
        )
        for name, value in runtime.items()
        if not isinstance(value, Mapping)
    ]
    runtime = {name: dict(value) for name, value in runtime.items() if isinstance(value, Mapping)}
    tao_overrides, runtime_overrides = split_overrides(overrides)
    try:
        tao = apply_overrides(raw, tao_overrides)
        complete = True
    except SpecError as error:
        problems += error.problems
        tao, complete = raw, False
    problems += _apply_runtime_overrides(runtime, runtime_overrides)
    problems += runtime_section_problems(runtime, where=str(path))
    merged = {**tao, **runtime}
    resolved, interpolation_problems = resolve_interpolations(merged, where=str(path))
    problems += interpolation_problems
    # Validating a spec whose overrides or interpolations failed would report values nobody asked for.
    if complete and not interpolation_problems:
        problems += _core_problems(resolved, action, path)
        problems += reference_problems(resolved, action, where=str(path))
    if problems:
        raise SpecError(problems, summary=f"{path}: {len(problems)} problem(s) in the {action} spec")
    return RuntimeSpec(
        action=action,
        path=path,
        spec=resolved,
        results_dir=Path(action_results_dir(resolved, action)),
        unhonoured=tuple(unhonoured_keys(resolved, action)),
    )


def split_overrides(overrides: Iterable[str]) -> tuple[list[str], list[str]]:
    """(TAO overrides, runtime-section overrides), each in the given order."""
    tao: list[str] = []
    runtime: list[str] = []
    for text in overrides:
        section = text.partition("=")[0].strip().split(".", 1)[0]
        (runtime if section in RUNTIME_SECTIONS else tao).append(text)
    return tao, runtime


def _apply_runtime_overrides(runtime: dict[str, dict[str, Any]], overrides: Iterable[str]) -> list[Problem]:
    problems: list[Problem] = []
    for text in overrides:
        try:
            key, value = parse_override(text)
        except SpecError as error:
            problems += error.problems
            continue
        section, _, name = key.partition(".")
        if not name or "." in name or "[" in name:
            problems.append(Problem(key, f"{key!r} is not a key of the {section} section", _known_fix(section, name)))
            continue
        runtime.setdefault(section, {})[name] = value
    return problems


def _known_fix(section: str, name: str) -> str:
    known = list(RUNTIME_SECTIONS[section])
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"rename it to {section}.{close[0]} if that was meant; " if close else ""
    return f"{hint}the {section} section has: {', '.join(known)}"


def runtime_section_problems(runtime: Mapping[str, Mapping[str, Any]], *, where: str) -> list[Problem]:
    """Unknown keys and bad values in the runtime-only sections."""
    problems = []
    for section, values in runtime.items():
        rules = RUNTIME_SECTIONS[section]
        for name, value in values.items():
            location = f"{where}: {section}.{name}"
            rule = rules.get(name)
            if rule is None:
                problems.append(
                    Problem(
                        location,
                        f"unknown key '{section}.{name}' of the reference runtime",
                        _known_fix(section, name),
                    )
                )
                continue
            problem = _runtime_value_problem(value, rule, location)
            if problem is not None:
                problems.append(problem)
    return problems


def _runtime_value_problem(value: Any, rule: RuntimeKey, location: str) -> Problem | None:
    if (rule.kind is str and value is None) or (rule.accepts_bool and isinstance(value, bool)):
        return None
    if rule.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, rule.kind) or (rule.kind is not bool and isinstance(value, bool)):
        return Problem(location, f"expected {rule.kind.__name__}, got {value!r}", f"write {rule.help}")
    too_low = rule.minimum is not None and value < rule.minimum
    if too_low or (rule.maximum is not None and value > rule.maximum):
        bounds = f"{rule.minimum if rule.minimum is not None else '-inf'}..{rule.maximum or 'inf'}"
        return Problem(location, f"{value!r} is outside {bounds}", f"use {rule.help}")
    if rule.pattern is not None and not re.fullmatch(rule.pattern, value):
        return Problem(location, f"{value!r} is not allowed", f"use {rule.help}")
    return None


def resolve_interpolations(spec: Mapping[str, Any], *, where: str = "spec") -> tuple[dict[str, Any], list[Problem]]:
    """A copy of `spec` with every `${dotted.key}` replaced by that key's (resolved) value.

    A value that is exactly one reference keeps the referenced value's type (`${dataset.classify.batch_size}`
    stays an integer); references inside text are substituted as text. Unset keys, cycles and Hydra resolvers
    (`${oc.env:...}`) are reported as problems.
    """
    problems: list[Problem] = []

    def resolve_key(dotted: str, stack: tuple[str, ...], location: str) -> Any:
        if dotted in stack:
            cycle = " -> ".join((*stack, dotted))
            problems.append(Problem(location, f"interpolation cycle {cycle}", "write one of the values directly"))
            return None
        if ":" in dotted:
            problems.append(Problem(location, f"resolver ${{{dotted}}} is not supported", "write the value directly"))
            return None
        value = lookup(spec, dotted)
        if value is _MISSING:
            problems.append(
                Problem(
                    location,
                    f"${{{dotted}}} refers to {dotted}, which is not set",
                    f"set {dotted} or write the value",
                )
            )
            return None
        return resolve(value, (*stack, dotted), location)

    def resolve(value: Any, stack: tuple[str, ...], location: str) -> Any:
        if isinstance(value, Mapping):
            return {k: resolve(v, stack, f"{location}.{k}" if stack == () else location) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, stack, location) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _REFERENCE.fullmatch(value)
        if whole:
            return resolve_key(whole.group(1).strip(), stack, location)
        return _REFERENCE.sub(lambda m: str(resolve_key(m.group(1).strip(), stack, location)), value)

    resolved = {key: resolve(value, (), f"{where}: {key}") for key, value in spec.items()}
    return resolved, problems


def action_results_dir(spec: Mapping[str, Any], action: str) -> str:
    """`<action>.results_dir`, else `${results_dir}/<action>` as TAO does; SpecError when neither is set."""
    own = lookup(spec, f"{action}.results_dir")
    if isinstance(own, str) and own.strip():
        return own
    root = lookup(spec, "results_dir")
    if isinstance(root, str) and root.strip():
        return str(Path(root) / action)
    raise SpecError.at(
        f"{action}.results_dir",
        f"neither {action}.results_dir nor results_dir is set",
        f"set {action}.results_dir=<fresh directory> (or results_dir, which then gets /{action})",
    )


def _core_problems(spec: dict[str, Any], action: str, path: Path) -> list[Problem]:
    tao = {key: value for key, value in spec.items() if key not in RUNTIME_SECTIONS}
    core_action = action
    if action == "embed":
        # The core checks inference specs; the embed checkpoint plays the inference checkpoint's part.
        core_action = "inference"
        checkpoint = lookup(spec, "embed.checkpoint")
        tao = copy.deepcopy(tao)
        tao.setdefault("inference", {})
        if not isinstance(tao["inference"], dict):
            tao["inference"] = {}
        tao["inference"]["checkpoint"] = checkpoint if isinstance(checkpoint, str) and checkpoint else "-"
    try:
        # Typed as the core's actions; validate_spec itself refuses, by name, any other action it is given.
        validate_spec(tao, action=cast(Action, core_action), where=str(path))
    except SpecError as error:
        return list(error.problems)
    return []


def reference_problems(spec: Mapping[str, Any], action: str, *, where: str) -> list[Problem]:
    """What the reference needs beyond the core's rules: two classes, lights matching num_input, the dataset
    paths of the action, a results directory, a known checkpoint monitor, and an embed checkpoint."""
    problems = []

    def get(dotted: str) -> Any:
        found = lookup(spec, dotted)
        return copy.deepcopy(TAO_DEFAULTS.get(dotted)) if found is _MISSING else found

    if get("dataset.classify.num_classes") != 2:
        problems.append(
            Problem(
                f"{where}: dataset.classify.num_classes",
                f"num_classes is {get('dataset.classify.num_classes')!r}; classify is PASS vs defect",
                "set dataset.classify.num_classes=2",
            )
        )
    problems += _input_map_problems(get("dataset.classify.input_map"), get("dataset.classify.num_input"), where)
    for size_key in ("dataset.classify.image_width", "dataset.classify.image_height"):
        size = get(size_key)
        if isinstance(size, int) and size < 16:
            problems.append(Problem(f"{where}: {size_key}", f"{size} px is too small", "use 16 px or more"))
    for dotted in _dataset_keys(action):
        value = get(dotted)
        if not isinstance(value, str) or not value.strip():
            problems.append(
                Problem(f"{where}: {dotted}", f"{dotted} is not set (got {value!r})", f"set {dotted} for {action}")
            )
    if action == "train":
        monitor = get("train.checkpointer.monitor")
        if get("train.checkpointer.enable_topk") and monitor not in CHECKPOINT_MONITORS:
            problems.append(
                Problem(
                    f"{where}: train.checkpointer.monitor",
                    f"monitor {monitor!r} is not a metric the validation step produces",
                    f"use one of {', '.join(CHECKPOINT_MONITORS)}",
                )
            )
    try:
        action_results_dir(spec, action)
    except SpecError as error:
        problems += [Problem(f"{where}: {p.where}", p.what, p.fix) for p in error.problems]
    return problems


def _input_map_problems(input_map: Any, num_input: Any, where: str) -> list[Problem]:
    """The lights of `input_map` and `num_input` must agree."""
    if not isinstance(input_map, Mapping) or not input_map:
        return [
            Problem(
                f"{where}: dataset.classify.input_map",
                f"input_map must map light names to channel indices, got {input_map!r}",
                "write e.g. input_map: {SolderLight: 0}",
            )
        ]
    elif len(input_map) != num_input:
        return [
            Problem(
                f"{where}: dataset.classify.num_input",
                f"num_input is {num_input!r} but input_map names {len(input_map)} light(s): "
                f"{', '.join(map(str, input_map))}",
                f"set dataset.classify.num_input={len(input_map)} or list every light in input_map",
            )
        ]
    return []


def _dataset_keys(action: str) -> list[str]:
    if action == "train":
        blocks = ["train_dataset", "validation_dataset"]
    elif action == "embed":
        return ["embed.checkpoint", "embed.csv_path", "embed.images_dir"]
    else:
        blocks = [ACTION_DATASET[action]]
    return [f"dataset.classify.{block}.{name}" for block in blocks for name in ("csv_path", "images_dir")]


_ONE_DEVICE = "runs on one device (reference.device), like a single-GPU job"


def unhonoured_keys(spec: Mapping[str, Any], action: str) -> list[Unhonoured]:
    """The TAO keys of `spec` that the reference accepts but cannot honour for `action`."""
    found: list[Unhonoured] = []

    def note(dotted: str, instead: str, when: Any = lambda value: value not in (None, "", [], {}, False)) -> None:
        value = lookup(spec, dotted)
        if value is not _MISSING and when(value):
            found.append(Unhonoured(dotted, value, instead))

    note(
        "model.backbone.type",
        "the reference trains its own CNN from random weights (reference.backbone: small, about 0.5M "
        "parameters, or resnet, about 6M)",
    )
    note(
        "model.backbone.pretrained_backbone_path",
        "no backbone weights are loaded: the CNN starts from random weights or train.pretrained_model_path",
    )
    note("model.backbone.freeze_backbone", "the whole network is trained")
    decode_head = lookup(spec, "model.decode_head")
    if isinstance(decode_head, Mapping) and decode_head:
        found.append(
            Unhonoured(
                "model.decode_head",
                dict(decode_head),
                "shift-tolerant difference modules replace the decode head",
            )
        )
    note("dataset.classify.concat_type", "lights are stacked as image channels", lambda v: v == "grid")
    note(
        "dataset.classify.num_golden",
        "one golden image per row (the golden_path directory)",
        lambda v: isinstance(v, int) and v > 1,
    )
    if action == "train":
        note("train.tensorboard.enabled", "metrics go to status.json and train.log only")
        note("wandb.enable", "metrics go to status.json and train.log only")
        note("train.num_gpus", _ONE_DEVICE, lambda v: isinstance(v, int) and v > 1)
        note("train.num_nodes", _ONE_DEVICE, lambda v: isinstance(v, int) and v > 1)
        note("train.gpu_ids", _ONE_DEVICE, lambda v: isinstance(v, list) and len(v) > 1)
        note(
            "train.precision",
            "bf16 autocast on a GPU (fp32 on a CPU)",
            lambda v: isinstance(v, str) and "16" in v and "bf16" not in v,
        )
        note(
            "dataset.classify.augmentation_config.random_color.hue",
            "hue is not jittered (brightness, contrast and saturation are)",
            lambda v: (
                isinstance(v, int | float)
                and v > 0
                and bool(lookup(spec, "dataset.classify.augmentation_config.random_color.enable"))
            ),
        )
    if action in ("evaluate", "inference"):
        note(f"{action}.trt_engine", "scores with the PyTorch checkpoint, never a TensorRT engine")
        note(f"{action}.num_gpus", _ONE_DEVICE, lambda v: isinstance(v, int) and v > 1)
    for section in ("export", "gen_trt_engine", "quantize"):
        note(section, "the reference has no export, TensorRT or quantize action (block unused)")
    return found


def warning_message(unhonoured: Sequence[Unhonoured]) -> str:
    """The one warning of a run about keys the reference accepts but cannot honour."""
    lines = [f"WARNING: the reference runtime accepts but cannot honour {len(unhonoured)} spec key(s):"]
    lines += [f"  - {item}" for item in unhonoured]
    return "\n".join(lines)
