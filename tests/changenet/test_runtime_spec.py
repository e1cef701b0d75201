"""How the runtime reads a spec: interpolations, runtime-only sections, results dirs, unhonoured keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from aoi_pipeline.changenet.runtime_spec import (
    action_results_dir,
    read_runtime_spec,
    resolve_interpolations,
    split_overrides,
    unhonoured_keys,
)
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.yaml_io import dump_spec
from aoi_pipeline.errors import SpecError


def test_interpolations_resolve_with_their_types() -> None:
    spec = {"results_dir": "/r", "a": {"b": 8, "dir": "${results_dir}/train", "n": "${a.b}"}, "c": "${a.n}"}
    resolved, problems = resolve_interpolations(spec)
    assert problems == []
    assert resolved == {"results_dir": "/r", "a": {"b": 8, "dir": "/r/train", "n": 8}, "c": 8}


def test_bad_interpolations_are_all_reported() -> None:
    spec = {"a": "${missing.key}", "b": "${c}", "c": "${b}", "d": "${oc.env:HOME}"}
    _, problems = resolve_interpolations(spec, where="spec.yaml")
    text = "\n".join(str(p) for p in problems)
    assert "missing.key" in text and "cycle" in text and "oc.env:HOME" in text
    assert all(p.where.startswith("spec.yaml: ") for p in problems)


def test_results_dir_falls_back_to_the_action_under_results_dir() -> None:
    assert action_results_dir({"results_dir": "/r", "train": {"results_dir": ""}}, "train") == "/r/train"
    assert action_results_dir({"results_dir": "/r", "embed": {"results_dir": "/e"}}, "embed") == "/e"
    with pytest.raises(SpecError, match=r"inference\.results_dir"):
        action_results_dir({}, "inference")


def test_runtime_overrides_are_split_from_tao_overrides() -> None:
    tao, runtime = split_overrides(["train.num_epochs=2", "reference.device=cpu", "embed.csv_path=x.csv"])
    assert tao == ["train.num_epochs=2"]
    assert runtime == ["reference.device=cpu", "embed.csv_path=x.csv"]


def spec_file(tmp_path: Path, **sections: object) -> Path:
    spec = baseline_spec()
    spec["results_dir"] = str(tmp_path / "results")
    spec.update(sections)
    path = tmp_path / "spec.yaml"
    dump_spec(spec, path)
    return path


def test_runtime_sections_are_read_and_kept_out_of_the_tao_spec(tmp_path: Path) -> None:
    path = spec_file(tmp_path, reference={"device": "cpu", "recall_pct": 99})
    spec = read_runtime_spec(path, ["reference.shift_fraction=0.05"], "train")
    assert read_runtime_spec(path, ["reference.compile=reduce-overhead"], "train").value("reference.compile") == (
        "reduce-overhead"
    )
    assert spec.value("reference.device") == "cpu"
    assert spec.value("reference.recall_pct") == 99
    assert spec.value("reference.shift_fraction") == 0.05
    assert spec.value("reference.compile") is False  # the default
    assert "reference" not in spec.tao_spec() and "reference" in spec.spec
    assert spec.results_dir == tmp_path / "results" / "train"


@pytest.mark.parametrize(
    ("sections", "overrides", "fragment"),
    [
        ({"reference": {"device": "tpu"}}, [], "reference.device"),
        ({"reference": {"recall_pct": 0}}, [], "reference.recall_pct"),
        ({"reference": {"compile": "fastest"}}, [], "reference.compile"),
        ({"reference": "cpu"}, [], "block of keys"),
        ({}, ["embed.chekpoint=x"], "embed.checkpoint"),
        ({}, ["dataset.classify.num_input=2"], "num_input"),
    ],
)
def test_bad_runtime_values_are_spec_errors(
    tmp_path: Path, sections: dict, overrides: list[str], fragment: str
) -> None:
    path = spec_file(tmp_path, **sections)
    with pytest.raises(SpecError) as error:
        read_runtime_spec(path, overrides, "train")
    assert fragment in str(error.value)


def test_all_problems_of_a_spec_come_in_one_error(tmp_path: Path) -> None:
    path = spec_file(tmp_path)
    with pytest.raises(SpecError) as error:
        read_runtime_spec(path, ["train.num_epochs=1", "train.validation_interval=3", "reference.devise=x"], "train")
    # The TAO overrides apply but break an invariant; the runtime override is unknown: both are named.
    messages = str(error.value)
    assert "train.validation_interval" in messages
    assert "reference.devise" in messages


def test_unhonoured_keys_depend_on_the_action() -> None:
    spec = baseline_spec()
    spec["inference"]["trt_engine"] = "/x/engine.trt"
    train_keys = {item.key for item in unhonoured_keys(spec, "train")}
    inference_keys = {item.key for item in unhonoured_keys(spec, "inference")}
    assert {"model.backbone.type", "train.tensorboard.enabled", "model.decode_head"} <= train_keys
    assert "inference.trt_engine" in inference_keys and "inference.trt_engine" not in train_keys
    assert "train.tensorboard.enabled" not in inference_keys
