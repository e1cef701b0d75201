"""Spec YAML files: safe loading with the fixes a TAO spec needs, and atomic, order-keeping writing.

PyYAML follows YAML 1.1, which reads `1e-5` as text where TAO's Hydra reads a number, and keeps the last of
two duplicated keys silently; the loader here fixes both, and every YAML input of the product is read with it.
A spec is written only when every value is plain YAML, and atomically, so TAO never reads half a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from aoi_pipeline.core.files import atomic_write_text
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.keys import join_key, kind_name
from aoi_pipeline.errors import Problem, SpecError


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


def load_yaml_text(text: str) -> Any:
    """Safe YAML as every YAML input of the product is read: `1e-5` is a float, a duplicated key an error."""
    return yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass


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
        data = load_yaml_text(text)
    except yaml.YAMLError as exc:
        raise SpecError.at(_yaml_where(where, exc), f"invalid YAML: {yaml_reason(exc)}", _YAML_FIX) from None
    if data is None:
        raise SpecError.at(where, "the spec file is empty", "write the spec's keys (start from baseline_spec)")
    if not isinstance(data, dict):
        raise SpecError.at(
            where,
            f"the top level is a {kind_name(data)}, not a mapping of keys",
            "the file must start with top-level keys such as `task: classify`, `train:`, `model:`",
        )
    return data


_YAML_FIX = "fix the YAML syntax at that line (indentation with spaces, `key: value`, quotes closed)"


def _yaml_where(where: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where


def yaml_reason(exc: yaml.YAMLError) -> str:
    parts = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    reason = "; ".join(part for part in parts if part)
    return reason or str(exc).splitlines()[0]


def dump_spec(spec: Spec, path: Path) -> None:
    """Write a spec as YAML atomically (old file or new file, never half of one), keeping key order."""
    path = Path(path)
    if not isinstance(spec, Mapping):
        raise SpecError.at(str(path), f"a spec must be a mapping, got {kind_name(spec)}", PLAIN_VALUES_FIX)
    problems = [
        Problem(f"{path}: {key}", f"{value!r} ({type(value).__name__}) cannot be written to a spec", PLAIN_VALUES_FIX)
        for key, value in _non_plain_values(spec, "")
    ]
    if problems:
        raise SpecError(problems)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, spec_text(spec))


def spec_text(spec: Spec) -> str:
    """The YAML text `dump_spec` writes (key order kept), for a caller that annotates it before writing."""
    return yaml.dump(
        dict(spec),
        Dumper=_SpecDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=110,
    )


PLAIN_VALUES_FIX = "use only YAML values: str, int, float, bool, null, lists and mappings with string keys"


def _non_plain_values(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, child in node.items():
            if not isinstance(key, str):
                yield join_key(prefix, repr(key)), key
            else:
                yield from _non_plain_values(child, join_key(prefix, key))
    elif isinstance(node, list | tuple):
        for index, child in enumerate(node):
            yield from _non_plain_values(child, f"{prefix}[{index}]")
    elif node is not None and type(node) not in (str, int, float, bool):
        yield prefix, node
