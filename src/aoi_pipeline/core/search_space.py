"""The Visual ChangeNet classify AutoML search space, as data.

Each entry is one spec key with its range: the reference runner's tested ranges (its `CUSTOM_RANGES`, with
`cls_weight[1]` from its "unblocked" space), clipped to the TAO schema bounds where the runner exceeded them.
The learning rate and weight decay are log-scaled. Epochs and batch size are never searched: they are pinned
per phase so a sweep cannot drift into a longer training regime than the budget approved. Architecture keys
are searched only from scratch: a warm-started trial loads a checkpoint and must keep its architecture.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aoi_pipeline.core.spec.derive import ARCHITECTURE_KEYS
from aoi_pipeline.errors import ConfigError, Problem

PINNED_KEYS = ("train.num_epochs", "dataset.classify.batch_size")
_AUG = "dataset.classify.augmentation_config"


@dataclass(frozen=True)
class SearchParam:
    """One searchable spec key."""

    key: str
    kind: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    architecture: bool = False


DEFAULT_SEARCH_SPACE: tuple[SearchParam, ...] = (
    SearchParam("train.optim.lr", "float", 5e-6, 5e-4, log=True),
    SearchParam("train.optim.weight_decay", "float", 1e-4, 0.1, log=True),
    SearchParam("train.optim.momentum", "float", 0.85, 0.99),
    SearchParam("dataset.classify.fpratio_sampling", "float", 0.1, 0.5),
    SearchParam("train.classify.cls_weight[1]", "float", 2.0, 60.0),
    SearchParam("model.classify.learnable_difference_modules", "int", 1, 4, architecture=True),
    SearchParam(f"{_AUG}.random_color.brightness", "float", 0.1, 0.5),
    SearchParam(f"{_AUG}.random_color.contrast", "float", 0.1, 0.5),
    SearchParam(f"{_AUG}.random_rotate.rotate_probability", "float", 0.3, 0.8),
)


def _param_from_override(key: str, raw: Any, architecture: bool) -> SearchParam:
    # Accept plain mappings (YAML, notebooks) and validated config models alike.
    raw = raw.model_dump() if hasattr(raw, "model_dump") else raw
    kind = raw.get("type", "float")
    choices = raw.get("choices")
    return SearchParam(
        key=key,
        kind=kind,
        low=raw.get("low"),
        high=raw.get("high"),
        log=bool(raw.get("log", False)),
        choices=tuple(choices) if choices is not None else None,
        architecture=architecture,
    )


class _ParameterModel(Protocol):
    """A validated config model of one parameter (`config.SearchParameter`), read through its dump."""

    def model_dump(self) -> dict[str, Any]: ...


def build_search_space(
    overrides: Mapping[str, Mapping[str, Any] | _ParameterModel | None] | None = None,
    *,
    warm_start: bool = False,
    base: Iterable[SearchParam] = DEFAULT_SEARCH_SPACE,
) -> tuple[SearchParam, ...]:
    """The default space with user overrides (None removes a key); a warm start drops architecture keys."""
    space = {param.key: param for param in base}
    problems = [
        Problem(
            f"search_space key {key}",
            "epochs and batch size are pinned per phase, not searched",
            "remove it from search_space and set the phase's num_epochs or batch_size instead",
        )
        for key in (overrides or {})
        if key in PINNED_KEYS
    ]
    if problems:
        raise ConfigError(problems)
    for key, raw in (overrides or {}).items():
        if raw is None:
            space.pop(key, None)
            continue
        known = space.get(key)
        architecture = key in ARCHITECTURE_KEYS or (known is not None and known.architecture)
        space[key] = _param_from_override(key, raw, architecture)
    params = tuple(space.values())
    if warm_start:
        params = tuple(param for param in params if not param.architecture)
    return params


def without_keys(space: Iterable[SearchParam], keys: Iterable[str]) -> tuple[SearchParam, ...]:
    """The space minus the given keys (e.g. keys a user pinned with a spec override)."""
    drop = set(keys)
    return tuple(param for param in space if param.key not in drop)
