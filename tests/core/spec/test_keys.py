"""Tests of dotted spec keys: reading list items, setting a copy, refusing unknown keys."""

from __future__ import annotations

import copy

import pytest

from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.errors import SpecError


def problems_of(excinfo: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


def test_get_key_reads_list_items_and_reports_what_is_missing() -> None:
    spec = baseline_spec()
    assert get_key(spec, "train.classify.cls_weight[1]") == 10.0
    with pytest.raises(SpecError) as excinfo:
        get_key(spec, "train.checkpointer.monitor")
    (message,) = problems_of(excinfo)
    assert message.startswith("train.checkpointer.monitor: train.checkpointer is not set")
    with pytest.raises(SpecError, match=r"index 2 is out of range: train.classify.cls_weight has 2 item"):
        get_key(spec, "train.classify.cls_weight[2]")


def test_set_key_returns_a_new_spec_and_leaves_the_input_alone() -> None:
    spec = baseline_spec()
    before = copy.deepcopy(spec)
    changed = set_key(spec, "train.classify.cls_weight[1]", 20.0)
    assert spec == before
    assert changed["train"]["classify"]["cls_weight"] == [1.0, 20.0]
    created = set_key(spec, "train.checkpointer.monitor", "val_far")
    assert created["train"]["checkpointer"] == {"monitor": "val_far"}
    free = set_key(spec, "dataset.classify.input_map.LowAngleLight", 1)
    assert free["dataset"]["classify"]["input_map"] == {"SolderLight": 0, "LowAngleLight": 1}


def test_set_key_refuses_unknown_keys_with_the_closest_known_one() -> None:
    with pytest.raises(SpecError) as excinfo:
        set_key(baseline_spec(), "train.optim.lrr", 0.1)
    (message,) = problems_of(excinfo)
    assert message == (
        "train.optim.lrr: unknown key 'train.optim.lrr': the TAO Visual ChangeNet classify spec has no such "
        "key. Fix: rename it to train.optim.lr if that was meant, or remove it (TAO rejects keys its "
        "ExperimentConfig does not define)"
    )
