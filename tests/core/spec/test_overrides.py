"""Tests of spec overrides and merges: YAML-typed values, malformed text, dotted keys in patches."""

from __future__ import annotations

import copy

import pytest

from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.keys import flatten
from aoi_pipeline.core.spec.overrides import apply_overrides, deep_merge, parse_override
from aoi_pipeline.errors import SpecError


def problems_of(excinfo: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.b[1]=20", ("a.b[1]", 20)),
        ("k=", ("k", "")),
        ("train.optim.lr=1e-4", ("train.optim.lr", 1e-4)),
        ("train.optim.lr=0.001", ("train.optim.lr", 0.001)),
        ("x=true", ("x", True)),
        ("x=null", ("x", None)),
        ("x=[1.0, 10.0]", ("x", [1.0, 10.0])),
        ("x={SolderLight: 0}", ("x", {"SolderLight": 0})),
        ("x='5'", ("x", "5")),
        ("x=a=b", ("x", "a=b")),
        (" train.num_epochs = 3 ", ("train.num_epochs", 3)),
        ("results_dir=/results/iter1", ("results_dir", "/results/iter1")),
    ],
)
def test_parse_override_types_values_by_yaml(text: str, expected: tuple[str, object]) -> None:
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("train.num_epochs", "is not of the form key=value"),
        ("=5", "is not of the form key=value"),
        ("+train.seed=1", "uses a Hydra prefix (+)"),
        ("~train.seed", "is not of the form key=value"),
        ("a..b=1", "is not a dotted spec key"),
        ("x=[1, 2", "is not valid YAML"),
    ],
)
def test_parse_override_rejects_malformed_text(text: str, what: str) -> None:
    with pytest.raises(SpecError, match=r"Fix: ") as excinfo:
        parse_override(text)
    assert what in str(excinfo.value)


def test_apply_overrides_sets_indexed_keys_and_nothing_else() -> None:
    spec = baseline_spec()
    changed = apply_overrides(spec, ["train.classify.cls_weight[1]=20", "train.num_epochs=20"])
    diff = {k for k, v in flatten(changed).items() if flatten(spec).get(k) != v}
    assert diff == {"train.classify.cls_weight", "train.num_epochs"}
    assert changed["train"]["classify"]["cls_weight"] == [1.0, 20]


def test_apply_overrides_reports_every_bad_override_at_once() -> None:
    with pytest.raises(SpecError) as excinfo:
        apply_overrides(
            baseline_spec(),
            [
                "train.num_epoch=3",
                "train.classify.cls_weight[5]=1",
                "train.num_epochs=4",
                "train.batch_size=8",
            ],
        )
    messages = problems_of(excinfo)
    assert len(messages) == 3
    assert "rename it to train.num_epochs" in messages[0]
    assert messages[1].startswith("train.classify.cls_weight[5]: index 5 is out of range")
    assert "rename it to dataset.classify.batch_size" in messages[2]


def test_deep_merge_merges_blocks_replaces_leaves_and_accepts_dotted_keys() -> None:
    base = baseline_spec()
    before = copy.deepcopy(base)
    patch = {
        "train": {"optim": {"lr": 2e-4}, "classify": {"cls_weight": [1.0, 5.0]}},
        "train.classify.cls_weight[1]": 30.0,
        "dataset.classify.augmentation_config.random_color.brightness": 0.5,
    }
    merged = deep_merge(base, patch)
    assert base == before
    assert merged["train"]["optim"] == {**base["train"]["optim"], "lr": 2e-4}
    assert merged["train"]["classify"]["cls_weight"] == [1.0, 30.0]
    assert merged["dataset"]["classify"]["augmentation_config"]["random_color"]["brightness"] == 0.5
    changed = {k for k, v in flatten(merged).items() if flatten(base).get(k) != v}
    assert changed == {
        "train.optim.lr",
        "train.classify.cls_weight",
        "dataset.classify.augmentation_config.random_color.brightness",
    }


def test_deep_merge_expands_dotted_keys_inside_new_blocks() -> None:
    merged = deep_merge({"task": "classify"}, {"train": {"optim.lr": 1e-4}, "model": 3})
    assert merged == {"task": "classify", "train": {"optim": {"lr": 1e-4}}, "model": 3}
    assert deep_merge({"model": 3}, {"model": {"backbone": {"type": "x"}}}) == {"model": {"backbone": {"type": "x"}}}
