"""Tests of the dataset CSV contract: labels, reading (encoding, delimiter, header, fields) and writing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aoi_pipeline.core.dataset import (
    PASS_LABEL,
    REQUIRED_COLUMNS,
    DatasetCsv,
    image_files,
    is_defect,
    normalize_label,
    read_dataset_csv,
    write_dataset_csv,
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


# --- labels -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PASS", "PASS"),
        ("open", "open"),
        (" Open ", "open"),
        ("MISSING", "missing"),
        ("pass", "PASS"),
        (" Pass ", "PASS"),
    ],
)
def test_normalize_label_keeps_pass_and_lowercases_defects(raw, expected):
    assert normalize_label(raw) == expected


@given(st.text(max_size=12))
def test_normalize_label_is_idempotent_and_yields_pass_or_stripped_lowercase(raw):
    label = normalize_label(raw)
    assert normalize_label(label) == label
    assert label == PASS_LABEL or label == label.strip().lower()


def test_is_defect_is_byte_exact_like_the_tao_dataloader():
    assert not is_defect("PASS")
    assert is_defect("pass")
    assert is_defect("PASS ")
    assert is_defect("open")


def test_label_counts_put_pass_first_then_defects_by_count_then_name():
    rows = tuple({"label": label} for label in ["open", "short", "PASS", "short", "copper", "open", "short", "PASS"])
    dataset = DatasetCsv(path=Path("x.csv"), columns=("label",), rows=rows)
    assert list(dataset.label_counts().items()) == [("PASS", 2), ("short", 3), ("open", 2), ("copper", 1)]


# --- reading ----------------------------------------------------------------------------------------------


def test_read_keeps_extra_columns_in_order_and_handles_crlf(ws):
    path = ws.text(
        "a.csv",
        "boardname,input_path,golden_path,label,object_name,defect_count\r\n"
        "b1,b1/test,b1/golden,PASS,T00,0\r\n"
        'b1,b1/test,b1/golden,open,"T,01",1\r\n',
    )
    dataset = read_dataset_csv(path)
    assert dataset.columns == ("boardname", *REQUIRED_COLUMNS, "defect_count")
    assert dataset.rows[1] == {
        "boardname": "b1",
        "input_path": "b1/test",
        "golden_path": "b1/golden",
        "label": "open",
        "object_name": "T,01",
        "defect_count": "1",
    }


def test_bom_is_named_with_its_fix_and_not_reported_as_missing_columns(ws):
    path = ws.root / "bom.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xef\xbb\xbfinput_path,golden_path,label,object_name\nb1/test,b1/golden,PASS,T00\n")
    with pytest.raises(DatasetError) as excinfo:
        read_dataset_csv(path)
    problem = only_problem(excinfo)
    assert problem.where == str(path)
    assert "byte order mark (BOM)" in problem.what
    assert problem.fix == "save the file as UTF-8 without BOM"


@pytest.mark.parametrize(("delimiter", "name"), [(";", "semicolon"), ("\t", "tab"), ("|", "pipe")])
def test_a_non_comma_delimiter_is_detected_and_named(ws, delimiter, name):
    path = ws.text("d.csv", delimiter.join(REQUIRED_COLUMNS) + "\n" + delimiter.join(["a", "b", "PASS", "T"]) + "\n")
    with pytest.raises(DatasetError) as excinfo:
        read_dataset_csv(path)
    problem = only_problem(excinfo)
    assert f"'{delimiter}' ({name}) as delimiter" in problem.what
    assert "comma-separated" in problem.fix


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_file_is_an_error(ws, content):
    path = ws.text("e.csv", content)
    with pytest.raises(DatasetError) as excinfo:
        read_dataset_csv(path)
    problem = only_problem(excinfo)
    assert problem.what == "dataset CSV is empty"
    assert "input_path,golden_path,label,object_name" in problem.fix


def test_header_only_reads_as_zero_rows_but_fails_validation(ws):
    path = ws.text("h.csv", ",".join(REQUIRED_COLUMNS) + "\n")
    assert read_dataset_csv(path).rows == ()
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    assert only_problem(excinfo).what == "has a header but no data rows"


def test_missing_required_columns_are_listed_with_a_rename_hint(ws):
    path = ws.text("m.csv", "input_path,Label,object_name\nb1/test,PASS,T00\n")
    with pytest.raises(DatasetError) as excinfo:
        read_dataset_csv(path)
    problem = only_problem(excinfo)
    assert "missing required column(s) golden_path, label" in problem.what
    assert "rename 'Label' to 'label'" in problem.fix


def test_rows_with_a_wrong_number_of_fields_are_reported_by_row(ws):
    path = ws.text("r.csv", ",".join(REQUIRED_COLUMNS) + "\nb1/test,b1/golden,PASS,T00\nb1/test,PASS,T01\n")
    with pytest.raises(DatasetError) as excinfo:
        read_dataset_csv(path)
    problem = only_problem(excinfo)
    assert problem.where == f"{path}: row 2"
    assert "has 3 fields but the header has 4" in problem.what


def test_non_utf8_bytes_are_reported_with_their_offset(ws):
    path = ws.root / "latin.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"input_path,golden_path,label,object_name\nb1/test,b1/golden,d\xe9faut,T00\n")
    with pytest.raises(DatasetError) as excinfo:
        read_dataset_csv(path)
    assert "not valid UTF-8 (byte 0xe9 at offset 60)" in only_problem(excinfo).what


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "absent.csv"
    with pytest.raises(DatasetError) as excinfo:
        read_dataset_csv(path)
    problem = only_problem(excinfo)
    assert (problem.where, problem.what) == (str(path), "dataset CSV does not exist")


def test_blank_lines_are_skipped_and_rows_numbered_without_them(ws):
    rows = valid_rows(ws)
    path = ws.text(
        "blank.csv",
        ",".join(REQUIRED_COLUMNS) + "\n\nb1/test,b1/golden,PASS,T00\n\nb1/test,b1/golden,Open,T01\n",
    )
    assert len(rows) == 2
    with pytest.raises(DatasetError) as excinfo:
        validate_dataset(path, images_dir=ws.images)
    assert only_problem(excinfo).where == f"{path}: row 2, column label"


# --- image_files and writing ------------------------------------------------------------------------------


def test_image_files_lists_test_side_then_golden_side_for_every_light():
    row = {"input_path": "b1/test", "golden_path": "b1/golden", "label": "PASS", "object_name": "T00"}
    assert image_files(row, images_dir=Path("/ws/images"), lights=["A", "B"], image_ext="png") == (
        Path("/ws/images/b1/test/T00_A.png"),
        Path("/ws/images/b1/test/T00_B.png"),
        Path("/ws/images/b1/golden/T00_A.png"),
        Path("/ws/images/b1/golden/T00_B.png"),
    )


def test_write_dataset_csv_round_trips_without_bom_and_fills_missing_cells(tmp_path):
    path = tmp_path / "out" / "train.csv"
    rows = [
        {
            "input_path": "b1/test",
            "golden_path": "b1/golden",
            "label": "PASS",
            "object_name": "T,00",
            "note": "x",
        },
        {"input_path": "b1/test", "golden_path": "b1/golden", "label": "open", "object_name": "T01"},
    ]
    write_dataset_csv(path, [*REQUIRED_COLUMNS, "note"], rows)
    assert path.read_bytes().startswith(b"input_path,golden_path,label,object_name,note\n")
    dataset = read_dataset_csv(path)
    assert dataset.rows == (rows[0], {**rows[1], "note": ""})
    assert os.listdir(path.parent) == ["train.csv"]


def test_write_dataset_csv_refuses_unknown_columns_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("old\n")
    with pytest.raises(ValueError):
        write_dataset_csv(path, REQUIRED_COLUMNS, [{"input_path": "a", "surprise": "b"}])
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["train.csv"]
