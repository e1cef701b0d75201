"""The AutoML search space as data: the default ranges, user overrides, pinned keys and warm starts."""

from __future__ import annotations

import pytest

from aoi_pipeline.config import SearchParameter
from aoi_pipeline.core.search_space import (
    DEFAULT_SEARCH_SPACE,
    PINNED_KEYS,
    SearchParam,
    build_search_space,
    without_keys,
)
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.derive import ARCHITECTURE_KEYS
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.errors import ConfigError


def _by_key(space: tuple[SearchParam, ...]) -> dict[str, SearchParam]:
    return {param.key: param for param in space}


def test_the_learning_rate_is_searched_on_a_log_scale_within_the_tested_range():
    lr = _by_key(build_search_space())["train.optim.lr"]
    assert lr.kind == "float" and lr.log
    assert 5e-6 <= lr.low < lr.high <= 5e-4


def test_the_default_space_searches_no_pinned_key_and_each_key_once():
    keys = [param.key for param in build_search_space()]
    assert len(keys) == len(set(keys))
    assert not set(keys) & set(PINNED_KEYS)


def test_every_default_range_is_usable_and_contains_the_baseline_value():
    # The baseline spec holds the reference's tried defaults: each must be a point of its own search range,
    # and every searched key must be a key the spec can carry.
    spec = baseline_spec()
    for param in DEFAULT_SEARCH_SPACE:
        assert param.kind in ("float", "int")
        assert param.low is not None and param.high is not None and param.low < param.high, param.key
        assert not param.log or param.low > 0, param.key
        value = get_key(spec, param.key)
        assert param.low <= value <= param.high, (param.key, value)
        set_key(spec, param.key, param.high)


def test_an_override_replaces_a_default_range():
    space = _by_key(build_search_space({"train.optim.lr": {"low": 1e-5, "high": 1e-4, "log": True}}))
    lr = space["train.optim.lr"]
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-5, 1e-4, True)
    assert set(space) == {param.key for param in DEFAULT_SEARCH_SPACE}


def test_an_override_adds_a_new_key_and_keeps_the_defaults():
    added = {"train.optim.optim": {"type": "categorical", "choices": ["adamw", "sgd"]}}
    space = _by_key(build_search_space(added))
    assert space["train.optim.optim"].kind == "categorical"
    assert space["train.optim.optim"].choices == ("adamw", "sgd")
    assert set(space) == {param.key for param in DEFAULT_SEARCH_SPACE} | {"train.optim.optim"}


def test_none_removes_a_key_and_removing_an_absent_key_is_harmless():
    space = _by_key(build_search_space({"train.optim.momentum": None, "train.optim.not_searched": None}))
    assert "train.optim.momentum" not in space
    assert len(space) == len(DEFAULT_SEARCH_SPACE) - 1


@pytest.mark.parametrize("key", PINNED_KEYS)
def test_a_pinned_key_is_refused_naming_it(key):
    with pytest.raises(ConfigError) as raised:
        build_search_space({key: {"low": 1, "high": 10, "type": "int"}})
    assert key in raised.value.problems[0].where
    assert raised.value.problems[0].fix


def test_every_pinned_key_is_named_at_once_even_when_removed():
    overrides = dict.fromkeys(PINNED_KEYS)
    with pytest.raises(ConfigError) as raised:
        build_search_space(overrides)
    named = " ".join(problem.where for problem in raised.value.problems)
    assert all(key in named for key in PINNED_KEYS)


def test_a_warm_start_drops_the_architecture_keys_and_only_them():
    cold = _by_key(build_search_space())
    warm = _by_key(build_search_space(warm_start=True))
    dropped = set(cold) - set(warm)
    assert dropped == {key for key in cold if key in ARCHITECTURE_KEYS}
    assert "model.classify.learnable_difference_modules" in dropped
    assert "train.optim.lr" in warm


def test_an_overridden_architecture_key_is_still_dropped_on_a_warm_start():
    override = {"model.classify.learnable_difference_modules": {"type": "int", "low": 2, "high": 3}}
    assert "model.classify.learnable_difference_modules" in _by_key(build_search_space(override))
    warm = _by_key(build_search_space(override, warm_start=True))
    assert "model.classify.learnable_difference_modules" not in warm


def test_an_added_architecture_key_is_dropped_on_a_warm_start():
    added = {"model.classify.embed_dec": {"type": "int", "low": 10, "high": 40}}
    warm = _by_key(build_search_space(added, warm_start=True))
    assert not set(warm) & set(ARCHITECTURE_KEYS)


def test_validated_config_models_are_accepted_like_plain_mappings():
    from_model = build_search_space(
        {
            "train.optim.lr": SearchParameter(low=1e-5, high=2e-4, log=True),
            "train.optim.optim": SearchParameter(type="categorical", choices=("adamw", "sgd")),
        }
    )
    from_dict = build_search_space(
        {
            "train.optim.lr": {"low": 1e-5, "high": 2e-4, "log": True},
            "train.optim.optim": {"type": "categorical", "choices": ["adamw", "sgd"]},
        }
    )
    assert from_model == from_dict
    assert _by_key(from_model)["train.optim.lr"] == SearchParam("train.optim.lr", "float", 1e-5, 2e-4, log=True)


def test_the_default_space_is_not_changed_by_building_from_it():
    before = DEFAULT_SEARCH_SPACE
    build_search_space({"train.optim.lr": {"low": 1e-5, "high": 1e-4}, "train.optim.momentum": None})
    assert before == DEFAULT_SEARCH_SPACE
    assert "train.optim.momentum" in _by_key(build_search_space())


def test_without_keys_removes_exactly_the_named_keys():
    space = build_search_space()
    left = without_keys(space, ["train.optim.lr", "not.a.key"])
    assert [param.key for param in left] == [param.key for param in space if param.key != "train.optim.lr"]
