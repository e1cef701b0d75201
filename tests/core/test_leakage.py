"""Tests of leakage detection across coordinate systems, and of the content key used for mining."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aoi_pipeline.core.dataset import read_dataset_csv
from aoi_pipeline.core.leakage import (
    CsvInRoot,
    Leak,
    assert_no_leakage,
    content_key,
    find_leaks,
    leaks_between,
    sample_key,
)
from aoi_pipeline.errors import DatasetError, LeakageError

LIGHT = ("SolderLight",)


def in_root(ws, name: str, rows, root: Path) -> CsvInRoot:
    return CsvInRoot(read_dataset_csv(ws.csv(name, rows)), root)


def test_workspace_relative_combined_csv_leaks_into_image_root_relative_validation_csv(ws):
    """The reference compares 'images/b1/test' with 'b1/test' as strings and never sees this leak."""
    shared = ws.sample("b1", "T03", "open")
    validation = in_root(ws, "val.csv", [ws.sample("b2", "T00"), shared], ws.images)
    combined_rows = [ws.sample("b3", "T00", prefix="images/"), {**shared, "input_path": "images/b1/test"}]
    combined_rows[1]["golden_path"] = "images/b1/golden"
    combined = in_root(ws, "combined.csv", combined_rows, ws.root)
    leaks = find_leaks(combined, validation, lights=LIGHT, image_ext=".jpg")
    images = ws.images.resolve()
    expected_key = (
        str(images / "b1/test/T03_SolderLight.jpg"),
        str(images / "b1/golden/T03_SolderLight.jpg"),
    )
    assert leaks == [Leak(left_row=2, right_row=2, key=expected_key)]


def test_equal_strings_in_different_roots_are_different_samples(ws):
    """'b1/test' relative to <ws>/images and 'b1/test' relative to <ws> are different folders."""
    row = ws.sample("b1", "T00")
    base = in_root(ws, "base.csv", [row], ws.images)
    combined = in_root(ws, "combined.csv", [row], ws.root)
    assert find_leaks(base, combined, lights=LIGHT, image_ext=".jpg") == []


def test_dot_dot_segments_trailing_slashes_and_spaces_are_normalised(ws):
    row = ws.sample("b1", "T00")
    spelled = {**row, "input_path": "b1/x/../test/", "golden_path": " ./b1//golden "}
    left = in_root(ws, "l.csv", [row], ws.images)
    right = in_root(ws, "r.csv", [spelled], ws.images)
    assert [(leak.left_row, leak.right_row) for leak in find_leaks(left, right, lights=LIGHT, image_ext="jpg")] == [
        (1, 1)
    ]


def test_a_symlinked_image_root_resolves_to_the_same_files(ws, tmp_path):
    row = ws.sample("b1", "T00")
    alias = tmp_path / "alias"
    alias.symlink_to(ws.images, target_is_directory=True)
    left = in_root(ws, "l.csv", [row], ws.images)
    right = in_root(ws, "r.csv", [row], alias)
    assert len(find_leaks(left, right, lights=LIGHT, image_ext=".jpg")) == 1


def test_a_different_golden_makes_a_different_sample(ws):
    row = ws.sample("b1", "T00")
    ws.sample("b2", "T00")
    other_golden = {**row, "golden_path": "b2/golden"}
    left = in_root(ws, "l.csv", [row], ws.images)
    right = in_root(ws, "r.csv", [other_golden], ws.images)
    assert find_leaks(left, right, lights=LIGHT, image_ext=".jpg") == []


def test_rows_with_empty_cells_are_never_leaks(ws):
    broken = {"input_path": "", "golden_path": "", "label": "PASS", "object_name": "T00"}
    left = in_root(ws, "l.csv", [broken], ws.images)
    right = in_root(ws, "r.csv", [broken], ws.images)
    assert find_leaks(left, right, lights=LIGHT, image_ext=".jpg") == []


def test_sample_key_lists_test_then_golden_files_for_every_light(tmp_path):
    row = {"input_path": "b1/test", "golden_path": "b1/golden", "label": "PASS", "object_name": "T00"}
    key = sample_key(row, root=tmp_path, lights=["A", "B"], image_ext=".png")
    root = tmp_path.resolve()
    assert key == tuple(
        str(root / part)
        for part in ("b1/test/T00_A.png", "b1/test/T00_B.png", "b1/golden/T00_A.png", "b1/golden/T00_B.png")
    )


def test_assert_no_leakage_names_both_sets_and_rows(ws):
    shared = ws.sample("b1", "T00")
    left = in_root(ws, "train.csv", [ws.sample("b2", "T00"), shared], ws.images)
    right = in_root(ws, "val.csv", [shared], ws.images)
    with pytest.raises(LeakageError) as excinfo:
        assert_no_leakage(left, right, lights=LIGHT, image_ext=".jpg", left_name="training", right_name="validation")
    assert isinstance(excinfo.value, DatasetError)
    (problem,) = excinfo.value.problems
    assert problem.where == f"{left.csv.path}: row 2"
    opened = ws.images.resolve() / "b1/test/T00_SolderLight.jpg"
    assert problem.what == f"same sample as validation row 1 ({right.csv.path}): both open {opened}"
    assert problem.fix.startswith("remove the sample from training or from validation")
    assert excinfo.value.summary == "1 samples of training are also in validation"


def test_assert_no_leakage_passes_for_disjoint_sets(ws):
    left = in_root(ws, "train.csv", [ws.sample("b1", "T00")], ws.images)
    right = in_root(ws, "val.csv", [ws.sample("b2", "T00")], ws.images)
    assert_no_leakage(left, right, lights=LIGHT, image_ext=".jpg", left_name="training", right_name="validation")


def test_many_leaks_are_listed_up_to_the_cap_and_counted(ws):
    rows = [ws.sample("b1", f"T{i:02d}") for i in range(25)]
    left = in_root(ws, "train.csv", rows, ws.images)
    right = in_root(ws, "val.csv", rows, ws.images)
    with pytest.raises(LeakageError) as excinfo:
        assert_no_leakage(left, right, lights=LIGHT, image_ext=".jpg", left_name="training", right_name="validation")
    problems = excinfo.value.problems
    assert len(problems) == 21
    assert problems[-1].what == "5 more samples shared with validation not listed (25 in all)"


keys = st.lists(st.one_of(st.none(), st.tuples(st.sampled_from("abcd"), st.sampled_from("xy"))), max_size=8)


@given(keys, keys)
def test_leaks_between_equals_the_brute_force_pairing(left, right):
    expected = [
        (i, j) for i, a in enumerate(left, start=1) for j, b in enumerate(right, start=1) if a is not None and a == b
    ]
    assert [(leak.left_row, leak.right_row) for leak in leaks_between(left, right)] == expected


def test_content_key_matches_byte_identical_copies_at_other_paths(ws):
    original = ws.sample("b1", "T00")
    copy = {**original, "input_path": "mined/test"}
    ws.image("mined/test/T00_SolderLight.jpg", (ws.images / "b1/test/T00_SolderLight.jpg").read_bytes())
    other = ws.sample("b2", "T00")
    key = content_key(original, root=ws.images, lights=LIGHT, image_ext=".jpg")
    assert key == content_key(copy, root=ws.images, lights=LIGHT, image_ext=".jpg")
    assert key != content_key(other, root=ws.images, lights=LIGHT, image_ext=".jpg")


def test_content_key_of_a_missing_image_is_a_dataset_error(ws):
    row = {"input_path": "b9/test", "golden_path": "b9/golden", "label": "PASS", "object_name": "T00"}
    with pytest.raises(DatasetError) as excinfo:
        content_key(row, root=ws.images, lights=LIGHT, image_ext=".jpg")
    assert excinfo.value.problems[0].where == str(ws.images / "b9/test/T00_SolderLight.jpg")


def test_leakage_checks_never_write(ws, snapshot):
    row = ws.sample("b1", "T00")
    left = in_root(ws, "l.csv", [row], ws.images)
    before = snapshot(ws.root)
    with pytest.raises(LeakageError):
        assert_no_leakage(left, left, lights=LIGHT, image_ext=".jpg", left_name="a", right_name="b")
    assert snapshot(ws.root) == before
