"""Tests of dataset validation: row rules, image lookups with their hints, duplicates, classes and batch size."""

from __future__ import annotations

import pytest

from aoi_pipeline.core.dataset import (
    IMAGE_SUFFIXES,
    MAX_LISTED_PER_KIND,
)
from aoi_pipeline.core.dataset_validation import validate_dataset
from aoi_pipeline.errors import DatasetError, Problem


def problems_of(excinfo: pytest.ExceptionInfo[DatasetError]) -> tuple[Problem, ...]:
    return excinfo.value.problems


def only_problem(excinfo: pytest.ExceptionInfo[DatasetError]) -> Problem:
    problems = problems_of(excinfo)
    assert len(problems) == 1, problems
    return problems[0]


def valid_rows(ws, board: str = "b1") -> list[dict[str, str]]:
    return [ws.sample(board, "T00", "PASS"), ws.sample(board, "T01", "open")]


# --- row rules --------------------------------------------------------------------------------------------


def test_a_valid_csv_passes_and_is_returned(ws):
    path = ws.csv("ok.csv", valid_rows(ws))
    dataset = validate_dataset(path, images_dir=ws.images, batch_size=2)
    assert dataset.label_counts() == {"PASS": 1, "open": 1}


@pytest.mark.parametrize(
    ("label", "what", "fix"),
    [
        (
            "pass",
            "label 'pass' is not the byte-exact PASS, so TAO counts it as a defect",
            "write PASS in upper case",
        ),
        (
            "Pass",
            "label 'Pass' is not the byte-exact PASS, so TAO counts it as a defect",
            "write PASS in upper case",
        ),
        (
            "PASS ",
            "label 'PASS ' is not the byte-exact PASS, so TAO counts it as a defect",
            "write PASS in upper case, without spaces",
        ),
        (
            "Open",
            "defect label 'Open' is not lower-case and stripped",
            "write 'open' (every label but PASS is lower-case, without spaces)",
        ),
        (
            "open ",
            "defect label 'open ' is not lower-case and stripped",
            "write 'open' (every label but PASS is lower-case, without spaces)",
        ),
        ("", "label is empty", "write PASS or a lower-case defect type"),
    ],
)
def test_label_rule(ws, label, what, fix):
    rows = [*valid_rows(ws), ws.sample("b1", "T02", label)]
    path = ws.csv("l.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images, mode="evaluate")
    assert only_problem(excinfo) == Problem(f"{path}: row 3, column label", what, fix)


def test_empty_path_is_reported_with_row_and_column(ws):
    rows = valid_rows(ws)
    rows[1]["golden_path"] = ""
    path = ws.csv("p.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    problem = only_problem(excinfo)
    assert problem.where == f"{path}: row 2, column golden_path"
    assert problem.what == "golden_path is empty"
    assert str(ws.images) in problem.fix


def test_absolute_path_inside_images_dir_gets_the_relative_form_as_fix(ws):
    rows = valid_rows(ws)
    rows[0]["input_path"] = str(ws.images / "b1" / "test")
    path = ws.csv("abs.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    problem = only_problem(excinfo)
    assert problem.where == f"{path}: row 1, column input_path"
    assert problem.what == f"input_path '{ws.images / 'b1' / 'test'}' is absolute"
    assert problem.fix.startswith("write 'b1/test': paths are relative to images_dir")


def test_flat_file_path_gets_directory_and_object_name_as_fix(ws):
    rows = valid_rows(ws)
    rows[1]["input_path"] = "b1/test/T01_SolderLight.jpg"
    path = ws.csv("flat.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    problem = only_problem(excinfo)
    assert problem.what == "input_path 'b1/test/T01_SolderLight.jpg' names an image file, not a directory"
    assert problem.fix.startswith("write the directory 'b1/test' in input_path and the stem 'T01' in object_name")


def test_every_image_suffix_counts_as_a_flat_file_in_any_case(ws):
    for suffix in sorted(IMAGE_SUFFIXES):
        rows = valid_rows(ws)
        rows[0]["golden_path"] = f"b1/golden/T00{suffix.upper()}"
        path = ws.csv("flat.csv", rows)
        with pytest.raises(DatasetError) as excinfo:
            validate_dataset(path, images_dir=ws.images)
        assert "names an image file" in only_problem(excinfo).what


def test_backslash_paths_are_reported(ws):
    rows = valid_rows(ws)
    rows[0]["input_path"] = "b1\\test"
    path = ws.csv("bs.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    problem = only_problem(excinfo)
    assert problem.what == "input_path 'b1\\test' uses backslashes"
    assert problem.fix.startswith("write 'b1/test'")


@pytest.mark.parametrize(
    ("object_name", "what", "fix"),
    [
        ("", "object_name is empty", "write the component id (the image file stem before _<light>)"),
        (
            "T01_SolderLight",
            "object_name 'T01_SolderLight' carries the light suffix",
            "write 'T01': TAO appends _{light}.jpg from the spec",
        ),
        (
            "T01.jpg",
            "object_name 'T01.jpg' carries an extension",
            "write 'T01': TAO appends _{light}.jpg from the spec",
        ),
        (
            "T01_SolderLight.PNG",
            "object_name 'T01_SolderLight.PNG' carries the light suffix and extension",
            "write 'T01': TAO appends _{light}.jpg from the spec",
        ),
    ],
)
def test_object_name_rule(ws, object_name, what, fix):
    rows = valid_rows(ws)
    rows[1]["object_name"] = object_name
    path = ws.csv("o.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    assert only_problem(excinfo) == Problem(f"{path}: row 2, column object_name", what, fix)


def test_object_name_with_a_dot_that_is_no_image_suffix_is_fine(ws):
    rows = [ws.sample("b1", "C1.5@1", "PASS"), ws.sample("b1", "R2", "open")]
    validate_dataset(ws.csv("dot.csv", rows), images_dir=ws.images)


# --- images -----------------------------------------------------------------------------------------------


def test_missing_image_names_the_file_row_column_and_values(ws):
    rows = valid_rows(ws)
    (ws.images / "b1" / "golden" / "T01_SolderLight.jpg").unlink()
    path = ws.csv("i.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    problem = only_problem(excinfo)
    missing = ws.images / "b1" / "golden" / "T01_SolderLight.jpg"
    assert problem.where == f"{path}: row 2, column golden_path"
    assert problem.what == (
        f"image {missing} does not exist (golden_path 'b1/golden', object_name 'T01', light 'SolderLight')"
    )
    assert problem.fix == "add the image, or correct golden_path and object_name of this row"


def test_every_light_is_checked_on_both_sides(ws):
    lights = ("SolderLight", "UniformLight")
    rows = [ws.sample("b1", "T00", "PASS", lights=lights), ws.sample("b1", "T01", "open", lights=lights)]
    (ws.images / "b1" / "test" / "T00_UniformLight.jpg").unlink()
    (ws.images / "b1" / "golden" / "T01_UniformLight.jpg").unlink()
    path = ws.csv("lights.csv", rows)
    validate_dataset(path, images_dir=ws.images, lights=("SolderLight",))
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images, lights=lights)
    assert [(p.where.rsplit(": ", 1)[1], p.what.split(" does not")[0]) for p in problems_of(excinfo)] == [
        ("row 1, column input_path", f"image {ws.images / 'b1/test/T00_UniformLight.jpg'}"),
        ("row 2, column golden_path", f"image {ws.images / 'b1/golden/T01_UniformLight.jpg'}"),
    ]


def test_image_root_relative_csv_checked_against_the_workspace_root_hints_the_images_prefix(ws):
    path = ws.csv("c.csv", valid_rows(ws))
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.root)
    problems = problems_of(excinfo)
    assert len(problems) == 4
    assert {p.fix for p in problems} == {
        f"prepend 'images/' to the path exactly once (the image exists under {ws.root / 'images'}), or "
        f"validate against images_dir {ws.root / 'images'} if every path of this CSV is relative to it"
    }


def test_workspace_relative_csv_checked_against_the_image_root_hints_removing_the_prefix(ws):
    path = ws.csv("c.csv", [ws.sample("b1", "T00", "PASS", prefix="images/"), ws.sample("b1", "T01", "open")])
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    problems = problems_of(excinfo)
    assert [p.where.rsplit(": ", 1)[1] for p in problems] == [
        "row 1, column input_path",
        "row 1, column golden_path",
    ]
    assert problems[0].fix.startswith("remove the leading 'images/' from the path")


def test_the_legacy_kpi_images_prefix_is_hinted_too(ws):
    legacy = ws.root / "kpi" / "images"
    for tile in ("T00", "T01"):
        for side in ("test", "golden"):
            ws.image(f"b9/{side}/{tile}_SolderLight.jpg", under=legacy)
    rows = [
        {"input_path": "b9/test", "golden_path": "b9/golden", "label": label, "object_name": tile}
        for tile, label in (("T00", "PASS"), ("T01", "open"))
    ]
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(ws.csv("k.csv", rows), images_dir=ws.root)
    assert problems_of(excinfo)[0].fix.startswith("prepend 'kpi/images/' to the path exactly once")


def test_a_wrong_image_ext_is_hinted_and_the_ext_is_normalised(ws):
    rows = [ws.sample("b1", "T00", "PASS", ext=".png"), ws.sample("b1", "T01", "open", ext=".png")]
    path = ws.csv("ext.csv", rows)
    validate_dataset(path, images_dir=ws.images, image_ext="png")
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images, image_ext=".jpg")
    assert problems_of(excinfo)[0].fix == (
        "set image_ext (dataset.classify.image_ext) to '.png': the images exist with that extension"
    )


def test_a_wrong_light_name_is_hinted(ws):
    path = ws.csv("light.csv", valid_rows(ws))
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images, lights=["BackLight"])
    assert (
        problems_of(excinfo)[0].fix == "T00_SolderLight.jpg exists: check the light names ['BackLight'] and object_name"
    )


def test_a_missing_directory_is_named(ws):
    rows = valid_rows(ws)
    rows[0]["input_path"] = "b7/test"
    path = ws.csv("dir.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    assert only_problem(excinfo).fix.startswith(f"directory {ws.images / 'b7' / 'test'} does not exist")


def test_check_images_false_does_not_look_at_the_disk(ws):
    rows = valid_rows(ws)
    rows[0]["input_path"] = "nowhere/test"
    validate_dataset(ws.csv("n.csv", rows), images_dir=ws.images, check_images=False)


def test_many_missing_images_are_listed_up_to_the_cap_and_counted(ws):
    rows = [ws.sample("b1", f"T{i:03d}", "PASS" if i % 2 else "open", ext=".png") for i in range(30)]
    path = ws.csv("big.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    problems = problems_of(excinfo)
    assert len(problems) == MAX_LISTED_PER_KIND + 1
    assert problems[-1] == Problem(
        str(path),
        f"{60 - MAX_LISTED_PER_KIND} more missing image files not listed (60 in all)",
        "set image_ext (dataset.classify.image_ext) to '.png': the images exist with that extension",
    )
    assert excinfo.value.summary == f"{path}: 60 problems"


# --- duplicates, classes, batch ---------------------------------------------------------------------------


def test_duplicate_rows_name_both_rows_even_with_other_spelling(ws):
    rows = valid_rows(ws)
    rows.append({**rows[0], "input_path": "b1/test/", "golden_path": "b1/x/../golden"})
    path = ws.csv("dup.csv", rows)
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    problem = only_problem(excinfo)
    assert problem.where == f"{path}: row 3"
    assert problem.what.startswith("duplicates row 1 (")
    assert problem.fix == "remove row 3 or row 1"


def test_duplicate_rows_with_conflicting_labels_say_so(ws):
    rows = valid_rows(ws)
    rows.append({**rows[1], "label": "short"})
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(ws.csv("dup.csv", rows), images_dir=ws.images)
    problem = only_problem(excinfo)
    assert problem.what.endswith("with a different label ('short' vs 'open')")
    assert problem.fix == "keep one of rows 2 and 3, with the right label"


def test_train_mode_needs_pass_rows(ws):
    path = ws.csv("c.csv", [ws.sample("b1", "T00", "open"), ws.sample("b1", "T01", "short")])
    validate_dataset(path, images_dir=ws.images, mode="evaluate")
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images, mode="train")
    problem = only_problem(excinfo)
    assert problem.where == f"{path}: column label"
    assert problem.what == "has no PASS rows (labels: open 1, short 1)"
    assert problem.fix.startswith("add PASS rows")


def test_train_mode_needs_defect_rows(ws):
    path = ws.csv("c.csv", [ws.sample("b1", "T00"), ws.sample("b1", "T01")])
    validate_dataset(path, images_dir=ws.images, mode="inference")
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images, mode="train")
    assert only_problem(excinfo).what == "has only PASS rows (PASS 2)"


@pytest.mark.parametrize(
    ("batch_size", "num_gpus", "ok"), [(2, 1, True), (4, 1, True), (5, 1, False), (2, 2, True), (3, 2, False)]
)
def test_batch_size_must_fit_the_rows_per_gpu(ws, batch_size, num_gpus, ok):
    rows = [ws.sample("b1", f"T{i}", "PASS" if i % 2 else "open") for i in range(4)]
    path = ws.csv("batch.csv", rows)
    if ok:
        validate_dataset(path, images_dir=ws.images, batch_size=batch_size, num_gpus=num_gpus)
        return
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images, batch_size=batch_size, num_gpus=num_gpus)
    problem = only_problem(excinfo)
    per_gpu = 4 // num_gpus
    assert problem.where == f"{path}: batch_size (dataset.classify.batch_size)"
    assert problem.what.startswith(f"batch_size {batch_size} exceeds the {per_gpu} rows per GPU (4 rows / {num_gpus}")
    assert problem.fix == f"lower batch_size to at most {per_gpu}, or add rows"


def test_batch_size_one_is_refused(ws):
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(ws.csv("b.csv", valid_rows(ws)), images_dir=ws.images, batch_size=1)
    assert only_problem(excinfo).what == "batch_size 1 is below 2"


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"mode": "training"}, "mode"),
        ({"num_gpus": 0}, "num_gpus"),
        ({"lights": []}, "lights (dataset.classify.input_map keys)"),
        ({"image_ext": "."}, "image_ext (dataset.classify.image_ext)"),
    ],
)
def test_bad_settings_are_refused_before_reading(tmp_path, kwargs, where):
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(tmp_path / "absent.csv", images_dir=tmp_path, **kwargs)
    assert only_problem(excinfo).where == where


def test_problems_of_every_kind_are_collected_into_one_error(ws):
    broken = {
        "input_path": "/abs/b1/test",
        "golden_path": "b1/golden",
        "label": "pass",
        "object_name": "T05.jpg",
    }
    rows = [*valid_rows(ws), broken]
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(ws.csv("many.csv", rows), images_dir=ws.images)
    columns = sorted(p.where.rsplit("column ", 1)[1] for p in problems_of(excinfo))
    assert columns == ["input_path", "label", "object_name"]


def test_validation_never_writes(ws, snapshot):
    rows = valid_rows(ws)
    good = ws.csv("good.csv", rows)
    bad = ws.csv("bad.csv", [*rows, {**rows[0], "label": "pass"}])
    before = snapshot(ws.root)
    validate_dataset(good, images_dir=ws.images)
    with pytest.raises(DatasetError):
        validate_dataset(bad, images_dir=ws.images)
    assert snapshot(ws.root) == before
