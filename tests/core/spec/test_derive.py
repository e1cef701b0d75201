"""Tests of derived specs: inference and evaluate specs, the architecture check, container paths."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.derive import (
    derive_eval_spec,
    require_same_architecture,
    rewrite_host_paths,
)
from aoi_pipeline.core.spec.keys import flatten
from aoi_pipeline.core.spec.overrides import apply_overrides
from aoi_pipeline.core.spec.validation import validate_spec
from aoi_pipeline.errors import SpecError


def problems_of(excinfo: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


@pytest.mark.parametrize(("action", "block"), [("inference", "infer_dataset"), ("evaluate", "test_dataset")])
def test_derived_spec_changes_only_paths_checkpoint_results_and_augmentation(action: str, block: str) -> None:
    train = apply_overrides(baseline_spec(), ["model.classify.learnable_difference_modules=2"])
    before = copy.deepcopy(train)
    derived = derive_eval_spec(
        train,
        action=action,  # type: ignore[arg-type]
        checkpoint="/results/iter1/train/model_epoch_009_step_00120.pth",
        results_dir=f"/results/iter1/{action}/latest",
        csv_path="/data/workspace/kpi/testing_set.csv",
        images_dir="/data/workspace/images",
    )
    assert train == before
    old, new = flatten(train), flatten(derived)
    changed = {key for key in old.keys() | new.keys() if old.get(key, "<absent>") != new.get(key, "<absent>")}
    assert changed == {
        f"{action}.checkpoint",
        f"{action}.results_dir",
        f"dataset.classify.{block}.csv_path",
        f"dataset.classify.{block}.images_dir",
        "dataset.classify.augmentation_config.augment",
    }
    assert new["dataset.classify.augmentation_config.augment"] is False
    assert new[f"{action}.checkpoint"] == "/results/iter1/train/model_epoch_009_step_00120.pth"
    assert new["train.classify.loss"] == "ce"
    require_same_architecture(train, derived)
    validate_spec(derived, action=action)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(
    checkpoint=st.text(st.characters(codec="ascii", exclude_characters="${}\x00"), min_size=1).filter(str.strip),
    csv_path=st.none() | st.text(max_size=20),
)
def test_derivation_never_touches_any_other_key(checkpoint: str, csv_path: str | None) -> None:
    train = baseline_spec()
    derived = derive_eval_spec(train, action="inference", checkpoint=checkpoint, results_dir="/r", csv_path=csv_path)
    allowed = {
        "inference.checkpoint",
        "inference.results_dir",
        "dataset.classify.infer_dataset.csv_path",
        "dataset.classify.augmentation_config.augment",
    }
    old, new = flatten(train), flatten(derived)
    assert {k: v for k, v in old.items() if k not in allowed} == {k: v for k, v in new.items() if k not in allowed}


def test_derivation_adds_the_loss_stub_when_the_training_spec_lacks_it() -> None:
    train = baseline_spec()
    del train["train"]["classify"]["loss"]
    derived = derive_eval_spec(train, action="evaluate", checkpoint="/r/m.pth", results_dir="/r/evaluate")
    assert derived["train"]["classify"] == {"cls_weight": [1.0, 10.0], "loss": "ce"}


def test_derivation_refuses_a_missing_checkpoint_and_results_dir() -> None:
    with pytest.raises(SpecError) as excinfo:
        derive_eval_spec(baseline_spec(), action="inference", checkpoint=" ", results_dir="")
    messages = problems_of(excinfo)
    assert len(messages) == 2
    assert messages[0].startswith("inference.checkpoint: no checkpoint given")
    assert messages[1].startswith("inference.results_dir: no results directory given")


def test_a_changed_architecture_key_is_reported_against_the_training_spec() -> None:
    train = baseline_spec()
    other = apply_overrides(train, ["model.classify.embed_dec=5", "dataset.classify.image_ext=.png"])
    with pytest.raises(SpecError) as excinfo:
        require_same_architecture(train, other, where="infer.yaml")
    messages = problems_of(excinfo)
    assert [m.split(":")[1].strip() for m in messages] == [
        "model.classify.embed_dec",
        "dataset.classify.image_ext",
    ]
    assert "model.classify.embed_dec is 5 but the checkpoint was trained with 30" in messages[0]


# ------------------------------------------------------------------------------------------------ host paths


def test_rewrite_host_paths_uses_the_most_specific_mount_and_path_boundaries() -> None:
    spec = {
        "a": "/home/me/ws/train/base/training_set.csv",
        "b": ["/home/me/ws", "/home/me/ws2/x", "/home/me/ws/results/run_1/iter1/train/m.pth"],
        "c": {"d": "${results_dir}/train", "e": "relative/path", "f": 3},
        "g": "/home/me/ws/",
    }
    before = copy.deepcopy(spec)
    mounts = {"/home/me/ws": "/data/workspace", "/home/me/ws/results/run_1/": "/results"}
    assert rewrite_host_paths(spec, mounts) == {
        "a": "/data/workspace/train/base/training_set.csv",
        "b": ["/data/workspace", "/home/me/ws2/x", "/results/iter1/train/m.pth"],
        "c": {"d": "${results_dir}/train", "e": "relative/path", "f": 3},
        "g": "/data/workspace/",
    }
    assert spec == before


def test_rewrite_host_paths_refuses_relative_mounts() -> None:
    with pytest.raises(SpecError, match="absolute"):
        rewrite_host_paths({}, {"ws": "/data/workspace"})
