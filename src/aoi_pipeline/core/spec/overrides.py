"""Spec overrides and merges: `key=value` texts typed by YAML, and nested patches with dotted keys.

An override is typed as Hydra would read it (`lr=1e-5` is a float); every bad override of a list is reported
at once. A merge takes AutoML recommendations (`{"train.optim.lr": 1e-4}`) as they come; the merged spec is
validated afterwards, not here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.keys import assign_key, join_key, parse_dotted, set_key
from aoi_pipeline.core.spec.yaml_io import load_yaml_text, yaml_reason
from aoi_pipeline.errors import Problem, SpecError

_HYDRA_PREFIXES = ("++", "+", "~")


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
    parse_dotted(key, where=where)
    if raw.strip() == "":
        return key, ""
    try:
        value = load_yaml_text(raw)
    except yaml.YAMLError as exc:
        raise SpecError.at(
            where,
            f"the value {raw!r} is not valid YAML ({yaml_reason(exc)})",
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
            dotted = join_key(prefix, key)
            assign_key(target, parse_dotted(key, where=dotted), copy.deepcopy(value), dotted)
        elif isinstance(value, Mapping):
            if not isinstance(target.get(key), dict):
                target[key] = {}  # a block replaces a leaf; its own dotted keys still expand below
            _merge_into(target[key], value, join_key(prefix, str(key)))
        else:
            target[key] = copy.deepcopy(value)
