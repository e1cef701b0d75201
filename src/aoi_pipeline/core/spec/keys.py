"""Dotted spec keys: reading and setting `train.classify.cls_weight[1]`, and naming an unknown key.

A key path is dot-separated names with optional list indices. Setting a key checks it against the classify
schema first, so a misspelt key is refused with the closest known one (or, for a workflow argument such as
`automl_policy`, with why TAO would reject it) instead of reaching TAO. Everything returns new values and
never mutates its input.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from aoi_pipeline.core.spec import Spec, schema
from aoi_pipeline.core.spec.schema import FORBIDDEN_KEYS
from aoi_pipeline.errors import Problem, SpecError

_INTERPOLATION = re.compile(r"\$\{[^}]*\}")
_SEGMENT = re.compile(r"([^.\[\]\s=]+)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")

PathPart = str | int


def join_key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse_dotted(dotted: str, *, where: str | None = None) -> tuple[PathPart, ...]:
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
        text = f"{text}[{part}]" if isinstance(part, int) else join_key(text, part)
    return text


def get_key(spec: Spec, dotted: str) -> Any:
    """The value at a dotted key such as `train.classify.cls_weight[1]`; SpecError when it is not set."""
    node: Any = spec
    walked: list[PathPart] = []
    for part in parse_dotted(dotted):
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
            return Problem(dotted, f"{here} is a {kind_name(node)}, not a list, so [{part}] cannot index it", _LIST_FIX)
        if part >= len(node):
            return Problem(
                dotted,
                f"index {part} is out of range: {here} has {len(node)} item(s)",
                f"use an index from 0 to {len(node) - 1}" if node else "the list is empty: set the whole list",
            )
        return None
    if not isinstance(node, Mapping):
        return Problem(dotted, f"{here} is a {kind_name(node)}, not a block of keys", "check the key path")
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
    parts = parse_dotted(dotted)
    problem = _unknown_key_problem(parts, dotted)
    if problem is not None:
        raise SpecError(problem)
    result = copy.deepcopy(spec)
    assign_key(result, parts, copy.deepcopy(value), dotted)
    return result


def _unknown_key_problem(parts: tuple[PathPart, ...], dotted: str) -> Problem | None:
    names = tuple(part for part in parts if isinstance(part, str))
    for depth in range(1, len(names) + 1):
        if schema.lookup(names[:depth]) is None:
            unknown = ".".join(names[:depth])
            return unknown_problem(dotted if depth == len(names) else unknown, unknown)
    return None


def unknown_problem(where: str, unknown: str) -> Problem:
    if unknown.rsplit(".", 1)[-1] in FORBIDDEN_KEYS:
        return forbidden_problem(where, unknown)
    closest = schema.closest_known_key(unknown)
    fix = f"rename it to {closest} if that was meant, or remove it" if closest else "remove it"
    return Problem(
        where,
        f"unknown key {unknown!r}: the TAO Visual ChangeNet classify spec has no such key",
        f"{fix} (TAO rejects keys its ExperimentConfig does not define)",
    )


def forbidden_problem(where: str, key: str) -> Problem:
    return Problem(
        where,
        f"{key!r} is a workflow argument, not a spec key: TAO's Hydra merge fails with "
        f"\"Key '{key.rsplit('.', 1)[-1]}' not in 'ExperimentConfig'\"",
        "remove it from the spec; `visual_changenet train -e spec.yaml` is already plain training, and "
        "automl_policy/workflow settings belong to the pipeline configuration",
    )


def assign_key(tree: Any, parts: tuple[PathPart, ...], value: Any, dotted: str) -> None:
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


def find_key(spec: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = spec
    for part in parse_dotted(dotted):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return False, None
        elif not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and _INTERPOLATION.search(value) is not None


def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: leaves by dotted key (lists stay whole), for diffs and records."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        dotted = join_key(prefix, str(key))
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def kind_name(value: Any) -> str:
    names = {dict: "mapping", list: "list", str: "text", bool: "boolean", int: "integer", float: "number"}
    if value is None:
        return "null"
    for kind, name in names.items():
        if type(value) is kind:
            return name
    return type(value).__name__
