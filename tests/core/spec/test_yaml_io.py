"""Tests of spec YAML files: exponent floats, duplicate keys, bad YAML named by line, atomic round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.yaml_io import dump_spec, load_spec
from aoi_pipeline.errors import SpecError


def problems_of(excinfo: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


def test_load_spec_reads_exponent_floats_and_interpolations(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("task: classify\ntrain:\n  optim:\n    lr: 1e-5\nevaluate:\n  batch_size: ${a.b}\n")
    spec = load_spec(path)
    assert spec["train"]["optim"]["lr"] == 1e-5
    assert isinstance(spec["train"]["optim"]["lr"], float)
    assert spec["evaluate"]["batch_size"] == "${a.b}"


def test_load_spec_names_file_and_line_of_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("task: classify\nmodel: a: b\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    (message,) = problems_of(excinfo)
    assert message.startswith(f"{path}:2:")
    assert "invalid YAML" in message


def test_load_spec_rejects_a_duplicate_key_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("task: classify\ntrain:\n  num_epochs: 10\n  num_epochs: 20\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    (message,) = problems_of(excinfo)
    assert message.startswith(f"{path}:4:")
    assert "duplicate key 'num_epochs'" in message


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("- a\n- b\n", "the top level is a list, not a mapping of keys"),
        ("just text\n", "the top level is a text, not a mapping of keys"),
        ("", "the spec file is empty"),
        ("# only a comment\n", "the spec file is empty"),
    ],
)
def test_load_spec_rejects_a_non_mapping(tmp_path: Path, text: str, what: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    (message,) = problems_of(excinfo)
    assert message.startswith(f"{path}: {what}.")


def test_load_spec_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist") as excinfo:
        load_spec(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(excinfo.value)


def test_dump_then_load_round_trips_values_types_and_key_order(tmp_path: Path) -> None:
    spec = baseline_spec()
    spec["train"]["optim"]["lr"] = 3e-6
    spec["model"]["backbone"]["pretrained_backbone_path"] = "1e-5"  # text that looks like a number stays text
    path = tmp_path / "out" / "spec.yaml"
    dump_spec(spec, path)
    loaded = load_spec(path)
    assert loaded == spec
    assert json.dumps(loaded) == json.dumps(spec)  # same key order at every level
    assert loaded["model"]["backbone"]["pretrained_backbone_path"] == "1e-5"


def test_dump_spec_with_a_bad_value_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("old: content\n")
    spec = baseline_spec()
    spec["train"]["seed"] = object()
    with pytest.raises(SpecError) as excinfo:
        dump_spec(spec, path)
    assert "train.seed" in str(excinfo.value)
    assert path.read_text() == "old: content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]
