"""TAO Visual ChangeNet classify specs: the baseline, dotted overrides, merges, validation and derivation.

A spec is a plain nested dict, exactly what the YAML file holds, so it can be written for the TAO container
unchanged. Everything here returns a new spec and never mutates its input. Validation collects every problem
(unknown keys with the closest known one, types, allowed values, and the invariants TAO only enforces when a
job is already running: intervals within `num_epochs`, `batch_size > 1`, contrastive loss only with the
euclidean difference module, no workflow keys) and raises one `SpecError`. Inference and evaluate specs are
derived from the exact training spec so the architecture a checkpoint was trained with is the one it is
loaded with.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from aoi_pipeline.core import spec_schema
from aoi_pipeline.core.files import atomic_write_text
from aoi_pipeline.core.spec_schema import FORBIDDEN_KEYS, KeySpec
from aoi_pipeline.errors import Problem, SpecError

Spec = dict[str, Any]
Action = Literal["train", "evaluate", "inference"]

DEFAULT_BACKBONE = "c_radio_v2_vit_base_patch16_224"

#: Keys that must be identical between training, inference and evaluation of one checkpoint: a mismatch
#: fails at checkpoint load, silently produces wrong scores, or reads an empty dataset.
ARCHITECTURE_KEYS: tuple[str, ...] = (
    "model.backbone.type",
    "model.classify.difference_module",
    "model.classify.learnable_difference_modules",
    "model.classify.embedding_vectors",
    "model.classify.embed_dec",
    "model.decode_head.use_summary_token",
    "model.decode_head.feature_strides",
    "dataset.classify.num_input",
    "dataset.classify.input_map",
    "dataset.classify.concat_type",
    "dataset.classify.grid_map",
    "dataset.classify.image_ext",
    "dataset.classify.image_width",
    "dataset.classify.image_height",
    "dataset.classify.num_classes",
    "train.classify.loss",
)

EVAL_DATASET_BLOCK: Mapping[str, str] = {"inference": "infer_dataset", "evaluate": "test_dataset"}

_BACKBONE_DIR = "/data/pretrained_models"
_INTERPOLATION = re.compile(r"\$\{[^}]*\}")
_SEGMENT = re.compile(r"([^.\[\]\s=]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")
_HYDRA_PREFIXES = ("++", "+", "~")

PathPart = str | int


# ------------------------------------------------------------------------------------------------ YAML


class _SpecLoader(yaml.SafeLoader):
    """Safe YAML with the two fixes a spec needs: `1e-5` is a float and a duplicated key is an error.

    PyYAML follows YAML 1.1, which reads `1e-5` (no dot) as text; TAO's Hydra reads it as a number, so a
    learning rate written that way would otherwise change type on its way through this package.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                break  # an unhashable key: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r} (YAML keeps only the last one)",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _SpecDumper(yaml.SafeDumper):
    """Block YAML in insertion order, lists of scalars inline, no anchors, `1e-5`-aware quoting."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_list(self, data: Any) -> yaml.SequenceNode:
        scalars = all(not isinstance(item, dict | list | tuple) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=scalars)


_SpecDumper.add_representer(list, _SpecDumper.represent_list)
_SpecDumper.add_representer(tuple, _SpecDumper.represent_list)


_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
for _cls in (_SpecLoader, _SpecDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def _yaml_value(text: str) -> Any:
    return yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass


def load_yaml_text(text: str) -> Any:
    """Safe YAML as every YAML input of the product is read: `1e-5` is a float, a duplicated key an error."""
    return _yaml_value(text)


def load_spec(path: Path) -> Spec:
    """Read a spec YAML file; SpecError naming the file (and line) when it is unreadable or not a mapping."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError.at(where, "the spec file does not exist", "check the path, or write the spec first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError.at(where, f"cannot read the spec as UTF-8 text ({exc})", "save it as UTF-8 YAML") from None
    try:
        data = _yaml_value(text)
    except yaml.YAMLError as exc:
        raise SpecError.at(_yaml_where(where, exc), f"invalid YAML: {_yaml_reason(exc)}", _YAML_FIX) from None
    if data is None:
        raise SpecError.at(where, "the spec file is empty", "write the spec's keys (start from baseline_spec)")
    if not isinstance(data, dict):
        raise SpecError.at(
            where,
            f"the top level is a {_kind_name(data)}, not a mapping of keys",
            "the file must start with top-level keys such as `task: classify`, `train:`, `model:`",
        )
    return data


_YAML_FIX = "fix the YAML syntax at that line (indentation with spaces, `key: value`, quotes closed)"


def _yaml_where(where: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where


def _yaml_reason(exc: yaml.YAMLError) -> str:
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    reason = "; ".join(part for part in parts if part)
    return reason or str(exc).splitlines()[0]


def dump_spec(spec: Spec, path: Path) -> None:
    """Write a spec as YAML atomically (old file or new file, never half of one), keeping key order."""
    path = Path(path)
    if not isinstance(spec, Mapping):
        raise SpecError.at(str(path), f"a spec must be a mapping, got {_kind_name(spec)}", _PLAIN_FIX)
    problems = [
        Problem(f"{path}: {key}", f"{value!r} ({type(value).__name__}) cannot be written to a spec", _PLAIN_FIX)
        for key, value in _non_plain_values(spec, "")
    ]
    if problems:
        raise SpecError(problems)
    text = yaml.dump(
        dict(spec),
        Dumper=_SpecDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=110,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


_PLAIN_FIX = "use only YAML values: str, int, float, bool, null, lists and mappings with string keys"


def _non_plain_values(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, child in node.items():
            if not isinstance(key, str):
                yield _join(prefix, repr(key)), key
            else:
                yield from _non_plain_values(child, _join(prefix, key))
    elif isinstance(node, list | tuple):
        for index, child in enumerate(node):
            yield from _non_plain_values(child, f"{prefix}[{index}]")
    elif node is not None and type(node) not in (str, int, float, bool):
        yield prefix, node


# -------------------------------------------------------------------------------------------- baseline


@lru_cache(maxsize=1)
def _baseline_text() -> str:
    return resources.files("aoi_pipeline.core").joinpath("baseline_spec.yaml").read_text(encoding="utf-8")


def baseline_spec(*, backbone_type: str = DEFAULT_BACKBONE) -> Spec:
    """The DEFT baseline classify spec (reference key names and values) with the given backbone.

    DINOv3 backbones are frozen and point at their staged file `/data/pretrained_models/<type>.safetensors`,
    as DEFT requires. Other non-default backbones get an empty `pretrained_backbone_path`: the staging step
    must set the container path of the file it staged.
    """
    if backbone_type not in spec_schema.BACKBONE_TYPES:
        raise SpecError.at(
            "model.backbone.type",
            f"unknown backbone {backbone_type!r}",
            f"use one of: {', '.join(spec_schema.BACKBONE_TYPES)}",
        )
    spec: Spec = _yaml_value(_baseline_text())
    backbone = spec["model"]["backbone"]
    backbone["type"] = backbone_type
    if backbone_type.endswith("_dinov3"):
        backbone["freeze_backbone"] = True
        backbone["pretrained_backbone_path"] = f"{_BACKBONE_DIR}/{backbone_type}.safetensors"
    elif backbone_type != DEFAULT_BACKBONE:
        backbone["pretrained_backbone_path"] = ""
    return spec


# ------------------------------------------------------------------------------------------------ keys


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _parse_dotted(dotted: str, *, where: str | None = None) -> tuple[PathPart, ...]:
    """`a.b[1].c` -> ("a", "b", 1, "c"); SpecError on anything else."""
    parts: list[PathPart] = []
    for segment in dotted.split(".") if dotted else [""]:
        match = _SEGMENT.fullmatch(segment)
        if match is None:
            raise SpecError.at(
                where or (dotted or "(empty key)"),
                f"{dotted!r} is not a dotted spec key",
                "write dot-separated names with optional list indices, e.g. train.classify.cls_weight[1]",
            )
        parts.append(match.group(1))
        parts.extend(int(index) for index in _INDEX.findall(match.group(2)))
    return tuple(parts)


def _render_path(parts: Iterable[PathPart]) -> str:
    text = ""
    for part in parts:
        text = f"{text}[{part}]" if isinstance(part, int) else _join(text, part)
    return text


def get_key(spec: Spec, dotted: str) -> Any:
    """The value at a dotted key such as `train.classify.cls_weight[1]`; SpecError when it is not set."""
    node: Any = spec
    walked: list[PathPart] = []
    for part in _parse_dotted(dotted):
        problem = _step_problem(node, part, walked, dotted)
        if problem is not None:
            raise SpecError(problem)
        node = node[part]
        walked.append(part)
    return node


def _step_problem(node: Any, part: PathPart, walked: list[PathPart], dotted: str) -> Problem | None:
    here = _render_path(walked) or "the top level"
    if isinstance(part, int):
        if not isinstance(node, list):
            return Problem(
                dotted, f"{here} is a {_kind_name(node)}, not a list, so [{part}] cannot index it", _LIST_FIX
            )
        if part >= len(node):
            return Problem(
                dotted,
                f"index {part} is out of range: {here} has {len(node)} item(s)",
                f"use an index from 0 to {len(node) - 1}" if node else "the list is empty: set the whole list",
            )
        return None
    if not isinstance(node, Mapping):
        return Problem(dotted, f"{here} is a {_kind_name(node)}, not a block of keys", "check the key path")
    if part not in node:
        present = ", ".join(map(str, node)) or "none"
        return Problem(
            dotted,
            f"{_render_path([*walked, part])} is not set in this spec",
            f"set it (e.g. override {dotted}=<value>) or check the spelling; keys at {here}: {present}",
        )
    return None


_LIST_FIX = "drop the [index] or point it at a list key such as train.classify.cls_weight[1]"


def set_key(spec: Spec, dotted: str, value: Any) -> Spec:
    """A copy of `spec` with the dotted key set (missing blocks are created); the input is never changed.

    The key must be known to the classify schema (children of maps such as `input_map` are free) and a list
    index must point at an existing item.
    """
    parts = _parse_dotted(dotted)
    problem = _unknown_key_problem(parts, dotted)
    if problem is not None:
        raise SpecError(problem)
    result = copy.deepcopy(spec)
    _assign(result, parts, copy.deepcopy(value), dotted)
    return result


def _unknown_key_problem(parts: tuple[PathPart, ...], dotted: str) -> Problem | None:
    names = tuple(part for part in parts if isinstance(part, str))
    for depth in range(1, len(names) + 1):
        if spec_schema.lookup(names[:depth]) is None:
            unknown = ".".join(names[:depth])
            return _unknown_problem(dotted if depth == len(names) else unknown, unknown)
    return None


def _unknown_problem(where: str, unknown: str) -> Problem:
    if unknown.rsplit(".", 1)[-1] in FORBIDDEN_KEYS:
        return _forbidden_problem(where, unknown)
    closest = spec_schema.closest_known_key(unknown)
    fix = f"rename it to {closest} if that was meant, or remove it" if closest else "remove it"
    return Problem(
        where,
        f"unknown key {unknown!r}: the TAO Visual ChangeNet classify spec has no such key",
        f"{fix} (TAO rejects keys its ExperimentConfig does not define)",
    )


def _forbidden_problem(where: str, key: str) -> Problem:
    return Problem(
        where,
        f"{key!r} is a workflow argument, not a spec key: TAO's Hydra merge fails with "
        f"\"Key '{key.rsplit('.', 1)[-1]}' not in 'ExperimentConfig'\"",
        "remove it from the spec; `visual_changenet train -e spec.yaml` is already plain training, and "
        "automl_policy/workflow settings belong to the pipeline configuration",
    )


def _assign(tree: Any, parts: tuple[PathPart, ...], value: Any, dotted: str) -> None:
    """Set `value` at `parts` inside `tree` in place, creating missing (or null) blocks on the way."""
    node = tree
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if isinstance(part, int) or not isinstance(node, dict):
            problem = _step_problem(node, part, list(parts[:position]), dotted)
            if problem is not None:
                raise SpecError(problem)
        if last:
            node[part] = value
            return
        if isinstance(parts[position + 1], str) and isinstance(node, dict) and node.get(part) is None:
            node[part] = {}
        node = node[part]


def parse_override(text: str) -> tuple[str, Any]:
    """`"a.b[1]=20"` -> `("a.b[1]", 20)`: the value is typed by YAML (`k=` gives the empty string).

    YAML typing follows the spec loader, so `lr=1e-5` is a float as Hydra would read it.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    where = key or text or "(empty override)"
    if not sep or not key:
        raise SpecError.at(where, f"override {text!r} is not of the form key=value", "write e.g. train.num_epochs=20")
    if key.startswith(_HYDRA_PREFIXES):
        raise SpecError.at(
            where,
            f"override {text!r} uses a Hydra prefix ({key[0]}) that specs here do not support",
            f"write {key.lstrip('+~')}=<value>: every known key can be set directly (remove a key by editing the spec)",
        )
    _parse_dotted(key, where=where)
    if raw.strip() == "":
        return key, ""
    try:
        value = _yaml_value(raw)
    except yaml.YAMLError as exc:
        raise SpecError.at(
            where,
            f"the value {raw!r} is not valid YAML ({_yaml_reason(exc)})",
            "quote text values, e.g. key='a: b', and write lists as [1.0, 10.0]",
        ) from None
    return key, value


def apply_overrides(spec: Spec, overrides: Iterable[str]) -> Spec:
    """`spec` with every `key=value` override applied in order; all bad overrides are reported together."""
    result = copy.deepcopy(spec)
    problems: list[Problem] = []
    for text in overrides:
        try:
            key, value = parse_override(text)
            result = set_key(result, key, value)
        except SpecError as exc:
            problems.extend(exc.problems)
    if problems:
        raise SpecError(problems, summary=f"{len(problems)} bad spec override(s)")
    return result


def deep_merge(base: Spec, patch: Mapping[str, Any]) -> Spec:
    """`base` with `patch` merged in: mappings merge key by key, anything else replaces.

    Keys of `patch` (at any level) may be dotted paths with list indices, as AutoML recommendations are
    (`{"train.optim.lr": 1e-4, "train.classify.cls_weight[1]": 20}`). No schema check happens here:
    validate the merged spec.
    """
    result = copy.deepcopy(dict(base))
    _merge_into(result, patch, "")
    return result


def _merge_into(target: dict[str, Any], patch: Mapping[str, Any], prefix: str) -> None:
    for key, value in patch.items():
        if isinstance(key, str) and ("." in key or "[" in key):
            dotted = _join(prefix, key)
            _assign(target, _parse_dotted(key, where=dotted), copy.deepcopy(value), dotted)
        elif isinstance(value, Mapping):
            if not isinstance(target.get(key), dict):
                target[key] = {}  # a block replaces a leaf; its own dotted keys still expand below
            _merge_into(target[key], value, _join(prefix, str(key)))
        else:
            target[key] = copy.deepcopy(value)


# ------------------------------------------------------------------------------------------ validation


def unknown_keys(spec: Spec) -> list[str]:
    """Dotted keys of `spec` the classify schema does not define (the outermost unknown key of a branch)."""
    return [dotted for dotted, _ in _unknown(spec, spec_schema.SCHEMA, "")]


def _unknown(node: Mapping[str, Any], schema: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        dotted = _join(prefix, str(key))
        child = schema.get(key) if isinstance(key, str) else None
        if child is None:
            yield dotted, value
        elif not isinstance(child, KeySpec) and isinstance(value, Mapping):
            yield from _unknown(value, child, dotted)


def validate_spec(spec: Spec, *, action: Action = "train", where: str = "spec") -> None:
    """Raise one SpecError listing every problem of `spec` for `action`; return quietly when it is valid."""
    if action not in ("train", "evaluate", "inference"):
        raise SpecError.at(where, f"unknown action {action!r}", "use train, evaluate or inference")
    if not isinstance(spec, Mapping):
        raise SpecError.at(where, f"a spec must be a mapping of keys, got {_kind_name(spec)}", _PLAIN_FIX)
    problems: list[Problem] = []
    forbidden = list(_forbidden_paths(spec, ""))
    problems += [_forbidden_problem(f"{where}: {dotted}", dotted) for dotted in forbidden]
    problems += [
        _unknown_problem(f"{where}: {dotted}", dotted) for dotted in unknown_keys(spec) if dotted not in forbidden
    ]
    problems += _value_problems(spec, spec_schema.SCHEMA, "", where)
    problems += _invariant_problems(spec, action, where)
    if problems:
        raise SpecError(problems, summary=f"{where}: {len(problems)} problem(s) in the {action} spec")


def _forbidden_paths(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, child in node.items():
            dotted = _join(prefix, str(key))
            if key in FORBIDDEN_KEYS:
                yield dotted
            else:
                yield from _forbidden_paths(child, dotted)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _forbidden_paths(child, f"{prefix}[{index}]")


def _value_problems(node: Mapping[str, Any], schema: Mapping[str, Any], prefix: str, where: str) -> list[Problem]:
    problems: list[Problem] = []
    for key, value in node.items():
        child = schema.get(key) if isinstance(key, str) else None
        dotted = _join(prefix, str(key))
        if child is None:
            continue
        if isinstance(child, KeySpec):
            problem = _leaf_problem(value, child, dotted, where)
            if problem is not None:
                problems.append(problem)
        elif isinstance(value, Mapping):
            problems += _value_problems(value, child, dotted, where)
        else:
            problems.append(
                Problem(
                    f"{where}: {dotted}",
                    f"{dotted} is a block of keys, got {value!r} ({_kind_name(value)})",
                    f"write its keys indented under `{key}:` or remove it (known keys: {', '.join(child)})",
                )
            )
    return problems


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and _INTERPOLATION.search(value) is not None


def _leaf_problem(value: Any, rule: KeySpec, dotted: str, where: str) -> Problem | None:
    location = f"{where}: {dotted}"
    if _is_interpolation(value) or (value is None and rule.nullable):
        return None
    expected = _kind_mismatch(value, rule)
    if expected is not None:
        return Problem(location, f"expected {expected}, got {value!r} ({_kind_name(value)})", _kind_fix(rule, value))
    if rule.choices is not None and value not in rule.choices:
        allowed = ", ".join(map(str, rule.choices))
        return Problem(location, f"{value!r} is not an allowed value", f"use one of: {allowed}")
    if rule.kind in ("int", "float"):
        if rule.minimum is not None and value < rule.minimum:
            return Problem(location, f"{value!r} is below the minimum {rule.minimum:g}", _range_fix(rule))
        if rule.maximum is not None and value > rule.maximum:
            return Problem(location, f"{value!r} is above the maximum {rule.maximum:g}", _range_fix(rule))
    return None


def _kind_mismatch(value: Any, rule: KeySpec) -> str | None:
    kind = rule.kind
    if kind == "str":
        return None if isinstance(value, str) else "text"
    if kind == "bool":
        return None if isinstance(value, bool) else "true or false"
    if kind == "int":
        return None if isinstance(value, int) and not isinstance(value, bool) else "a whole number"
    if kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a finite number"
    if kind == "list":
        return None if isinstance(value, list) else "a list"
    return None if isinstance(value, Mapping) else "a mapping"


def _kind_fix(rule: KeySpec, value: Any) -> str:
    if rule.kind == "float" and isinstance(value, str):
        return f"write it as a number without quotes, e.g. {_as_float_example(value)}"
    if rule.choices is not None:
        return f"use one of: {', '.join(map(str, rule.choices))}"
    examples = {
        "str": "quote it, e.g. 'value'",
        "bool": "write true or false",
        "int": "write a whole number, e.g. 10",
        "float": "write a number, e.g. 0.5",
        "list": "write a list, e.g. [1.0, 10.0]",
        "map": "write keys indented under it, e.g. {SolderLight: 0}",
    }
    return examples[rule.kind]


def _as_float_example(text: str) -> str:
    try:
        return repr(float(text))
    except ValueError:
        return "1.0e-05"


def _range_fix(rule: KeySpec) -> str:
    low = "-inf" if rule.minimum is None else f"{rule.minimum:g}"
    high = "inf" if rule.maximum is None else f"{rule.maximum:g}"
    return f"use a value from {low} to {high}"


def _present(spec: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = spec
    for part in _parse_dotted(dotted):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return False, None
        elif not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _number(spec: Mapping[str, Any], dotted: str, *, whole: bool = False) -> float | None:
    """A present, plain numeric value (type errors are reported by the schema check, not again here)."""
    present, value = _present(spec, dotted)
    if not present or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if whole and not isinstance(value, int):
        return None
    return value


def _invariant_problems(spec: Mapping[str, Any], action: Action, where: str) -> list[Problem]:
    problems = _task_problems(spec, where) + _loss_problems(spec, where) + _cls_weight_problems(spec, where)
    if action == "train":
        problems += _interval_problems(spec, where) + _batch_problems(spec, where) + _backbone_problems(spec, where)
    else:
        problems += _checkpoint_problems(spec, action, where)
    return problems


def _task_problems(spec: Mapping[str, Any], where: str) -> list[Problem]:
    present, task = _present(spec, "task")
    if present and task != "segment":
        return []  # classify is right; any other value is reported by the allowed-values check
    what = f"task is {task!r}" if present else "task is not set (TAO then defaults to segment)"
    return [Problem(f"{where}: task", f"{what}; this pipeline trains Visual ChangeNet classify", "set task: classify")]


def _loss_problems(spec: Mapping[str, Any], where: str) -> list[Problem]:
    _, loss = _present(spec, "train.classify.loss")
    present, module = _present(spec, "model.classify.difference_module")
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
    _, weights = _present(spec, "train.classify.cls_weight")
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
    _, unit = _present(spec, "train.checkpoint_interval_unit")
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
    _, kind = _present(spec, "model.backbone.type")
    frozen_present, frozen = _present(spec, "model.backbone.freeze_backbone")
    if isinstance(kind, str) and kind.endswith("_dinov3") and frozen_present and frozen is False:
        problems.append(
            Problem(
                f"{where}: model.backbone.freeze_backbone",
                f"backbone {kind} is trained unfrozen; DEFT fine-tunes DINOv3 backbones frozen",
                "set model.backbone.freeze_backbone=true",
            )
        )
    _, weights = _present(spec, "model.backbone.pretrained_backbone_path")
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
    _, checkpoint = _present(spec, key)
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


def require_same_architecture(train_spec: Spec, other: Spec, *, where: str = "spec") -> None:
    """SpecError listing every ARCHITECTURE_KEYS value of `other` that differs from `train_spec`."""
    problems = []
    for key in ARCHITECTURE_KEYS:
        trained = _present(train_spec, key)
        used = _present(other, key)
        if trained != used:
            problems.append(
                Problem(
                    f"{where}: {key}",
                    f"{key} is {_shown(used)} but the checkpoint was trained with {_shown(trained)}",
                    "derive inference/evaluate specs from the training spec (derive_eval_spec) "
                    "instead of editing architecture keys",
                )
            )
    if problems:
        raise SpecError(problems, summary=f"{where}: the architecture differs from the training spec")


def _shown(present_value: tuple[bool, Any]) -> str:
    present, value = present_value
    return repr(value) if present else "unset"


# ------------------------------------------------------------------------------------------ derivation


def derive_eval_spec(
    train_spec: Spec,
    *,
    action: Literal["inference", "evaluate"],
    checkpoint: str,
    results_dir: str,
    csv_path: str | None = None,
    images_dir: str | None = None,
) -> Spec:
    """The inference or evaluate spec for a checkpoint trained with `train_spec`.

    Only these keys change: `<action>.checkpoint`, `<action>.results_dir`, the action's dataset block
    (`infer_dataset` for inference, `test_dataset` for evaluate) `csv_path`/`images_dir` when given, and
    `dataset.classify.augmentation_config.augment` (off). Everything else, the architecture above all, is the
    training spec's, including the `train.classify.loss` stub TAO 7.1 still reads outside training (added as
    `ce`, TAO's own default, when the training spec leaves it unset).
    """
    block = EVAL_DATASET_BLOCK.get(action)
    if block is None:
        raise SpecError.at("action", f"cannot derive a spec for action {action!r}", "use inference or evaluate")
    problems = []
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        problems.append(Problem(f"{action}.checkpoint", f"no checkpoint given (got {checkpoint!r})", _CKPT_FIX))
    elif "${results_dir}" in checkpoint:
        problems.append(
            Problem(f"{action}.checkpoint", f"{checkpoint!r} uses ${{results_dir}}, rebased per action", _CKPT_FIX)
        )
    if not isinstance(results_dir, str) or not results_dir.strip():
        problems.append(
            Problem(
                f"{action}.results_dir",
                f"no results directory given (got {results_dir!r})",
                f"pass a fresh directory such as /results/<iteration>/{action}/<best_val|latest>",
            )
        )
    if problems:
        raise SpecError(problems)
    spec = copy.deepcopy(train_spec)
    _assign(spec, (action, "checkpoint"), checkpoint, f"{action}.checkpoint")
    _assign(spec, (action, "results_dir"), results_dir, f"{action}.results_dir")
    for name, value in (("csv_path", csv_path), ("images_dir", images_dir)):
        if value is not None:
            _assign(spec, ("dataset", "classify", block, name), value, f"dataset.classify.{block}.{name}")
    _assign(spec, _parse_dotted("dataset.classify.augmentation_config.augment"), False, "augment")
    if not _present(spec, "train.classify.loss")[0]:
        _assign(spec, ("train", "classify", "loss"), "ce", "train.classify.loss")
    return spec


_CKPT_FIX = "pass the explicit container path of the trained .pth, e.g. /results/iter1/train/<file>.pth"


def rewrite_host_paths(spec: Spec, mounts: Mapping[str, str]) -> Spec:
    """A copy of `spec` whose host paths are container paths, per `{host_prefix: container_prefix}`.

    A value is rewritten when it equals a host prefix or continues it after a `/`; the longest matching
    prefix wins, so nested mounts (`<ws>` and `<ws>/results/run_x`) resolve to the most specific one.
    Values outside every mount, and `${...}` interpolations, are left as they are.
    """
    problems = [
        Problem(
            f"mounts: {host!r}",
            f"a mount needs absolute host and container paths, got {host!r} -> {container!r}",
            "use absolute paths, e.g. {'/home/me/ws': '/data/workspace'}",
        )
        for host, container in mounts.items()
        if not (_is_absolute(host) and _is_absolute(container))
    ]
    if problems:
        raise SpecError(problems)
    ordered = sorted(
        ((_strip_slash(host), _strip_slash(container)) for host, container in mounts.items()),
        key=lambda pair: len(pair[0]),
        reverse=True,
    )
    return _rewrite(copy.deepcopy(spec), ordered)


def _is_absolute(path: Any) -> bool:
    return isinstance(path, str) and path.startswith("/")


def _strip_slash(path: str) -> str:
    return path.rstrip("/") or "/"


def _rewrite(node: Any, mounts: list[tuple[str, str]]) -> Any:
    if isinstance(node, dict):
        return {key: _rewrite(value, mounts) for key, value in node.items()}
    if isinstance(node, list):
        return [_rewrite(value, mounts) for value in node]
    if isinstance(node, str) and not _is_interpolation(node):
        for host, container in mounts:
            if node == host:
                return container
            if host == "/" or node.startswith(f"{host}/"):
                rest = node[len(host) :].lstrip("/")
                return f"{container.rstrip('/')}/{rest}"
    return node


def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: leaves by dotted key (lists stay whole), for diffs and records."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        dotted = _join(prefix, str(key))
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def _kind_name(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "text", bool: "boolean", int: "integer", float: "number"}
    if value is None:
        return "null"
    for kind, name in names.items():
        if type(value) is kind:
            return name
    return type(value).__name__
