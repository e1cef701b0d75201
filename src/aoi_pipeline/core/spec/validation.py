"""Spec validation: one SpecError listing every problem of a spec before any job is launched.

Unknown keys (with the closest known one), workflow keys TAO's Hydra merge rejects, value types, allowed
values and bounds come from the classify schema; the invariants TAO only enforces once a job is running come
from `invariants`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from aoi_pipeline.core.spec import Action, Spec, schema
from aoi_pipeline.core.spec.invariants import invariant_problems
from aoi_pipeline.core.spec.keys import forbidden_problem, is_interpolation, join_key, kind_name, unknown_problem
from aoi_pipeline.core.spec.schema import FORBIDDEN_KEYS, KeySpec
from aoi_pipeline.core.spec.yaml_io import PLAIN_VALUES_FIX
from aoi_pipeline.errors import Problem, SpecError


def unknown_keys(spec: Spec) -> list[str]:
    """Dotted keys of `spec` the classify schema does not define (the outermost unknown key of a branch)."""
    return [dotted for dotted, _ in _unknown(spec, schema.SCHEMA, "")]


def _unknown(node: Mapping[str, Any], schema: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        dotted = join_key(prefix, str(key))
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
        raise SpecError.at(where, f"a spec must be a mapping of keys, got {kind_name(spec)}", PLAIN_VALUES_FIX)
    problems: list[Problem] = []
    forbidden = list(_forbidden_paths(spec, ""))
    problems += [forbidden_problem(f"{where}: {dotted}", dotted) for dotted in forbidden]
    problems += [
        unknown_problem(f"{where}: {dotted}", dotted) for dotted in unknown_keys(spec) if dotted not in forbidden
    ]
    problems += _value_problems(spec, schema.SCHEMA, "", where)
    problems += invariant_problems(spec, action, where)
    if problems:
        raise SpecError(problems, summary=f"{where}: {len(problems)} problem(s) in the {action} spec")


def _forbidden_paths(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, child in node.items():
            dotted = join_key(prefix, str(key))
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
        dotted = join_key(prefix, str(key))
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
                    f"{dotted} is a block of keys, got {value!r} ({kind_name(value)})",
                    f"write its keys indented under `{key}:` or remove it (known keys: {', '.join(child)})",
                )
            )
    return problems


def _leaf_problem(value: Any, rule: KeySpec, dotted: str, where: str) -> Problem | None:
    location = f"{where}: {dotted}"
    if is_interpolation(value) or (value is None and rule.nullable):
        return None
    expected = _kind_mismatch(value, rule)
    if expected is not None:
        return Problem(location, f"expected {expected}, got {value!r} ({kind_name(value)})", _kind_fix(rule, value))
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
