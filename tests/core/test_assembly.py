"""Combined training CSV assembly with provenance: coordinates, origins carried forward, duplicates, columns."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sdg_workspace import (
    EXT,
    LIGHT,
    SDG_NAMES,
    as_mined,
    assemble_iter1,
    ingest,
    pool_rows,
    read_rows,
    write_rows,
)

from aoi_pipeline.core.assembly import PROVENANCE_COLUMNS, assemble, read_provenance
from aoi_pipeline.core.dataset import DatasetCsv, image_files, read_dataset_csv
from aoi_pipeline.errors import DatasetError


def resolves(root: Path, row: dict[str, str]) -> bool:
    return all(path.is_file() for path in image_files(row, images_dir=root, lights=(LIGHT,), image_ext=EXT))


def test_iter1_prefixes_base_rows_once_and_appends_sdg_and_mined_rows(workspace: Path) -> None:
    base_csv = workspace / "train" / "base" / "training_set.csv"
    base_rows = read_rows(base_csv)
    base_rows[0]["label"], base_rows[1]["label"] = "pass", "Open "
    write_rows(base_csv, base_rows)
    sdg = ingest(workspace).rows
    mined = [as_mined(row, target_row=n, similarity=0.9 + n / 100) for n, row in enumerate(pool_rows(workspace)[:4])]

    result = assemble(
        iteration=1,
        previous=read_dataset_csv(base_csv),
        previous_in_workspace_coordinates=False,
        sdg_rows=sdg,
        mined_rows=mined,
    )

    assert result.columns == ("input_path", "golden_path", "label", "object_name", "boardname", "defect_count")
    assert len(result.rows) == len(base_rows) + 3 + 4
    for row, base in zip(result.rows, base_rows, strict=False):
        assert row["input_path"] == "images/" + base["input_path"]
        assert row["golden_path"] == "images/" + base["golden_path"]
        assert row["boardname"] == base["boardname"]
    assert (result.rows[0]["label"], result.rows[1]["label"]) == ("PASS", "open")
    assert all(row["label"] == "PASS" or row["label"] == row["label"].lower() for row in result.rows)
    assert [row["label"] for row in result.rows[-4:]] == [row["label"] for row in pool_rows(workspace)[:4]]
    assert all(resolves(workspace, row) for row in result.rows)

    sources = [entry["source"] for entry in result.provenance]
    assert sources == ["base_train"] * len(base_rows) + ["sdg"] * 3 + ["mined"] * 4
    for number, (row, entry) in enumerate(zip(result.rows, result.provenance, strict=True), start=1):
        assert entry["row"] == str(number) and entry["iteration"] == "1"
        assert all(entry[column] == row[column] for column in ("input_path", "golden_path", "label", "object_name"))
    assert [entry["sdg_file"].rsplit("/", 1)[-1] for entry in result.provenance if entry["source"] == "sdg"] == list(
        SDG_NAMES
    )
    mined_entries = [entry for entry in result.provenance if entry["source"] == "mined"]
    assert [(entry["target_row"], float(entry["similarity"])) for entry in mined_entries] == [
        (str(n), 0.9 + n / 100) for n in range(4)
    ]
    assert [entry["pool_row"] for entry in mined_entries] == [str(n + 100) for n in range(4)]
    assert [entry["pool_filepath"] for entry in mined_entries] == [m["pool_filepath"] for m in mined]
    assert result.source_counts() == {"base_train": len(base_rows), "sdg": 3, "mined": 4}


def test_iter2_keeps_previous_rows_unchanged_and_never_re_prefixes_or_re_adds_base(workspace: Path) -> None:
    combined, provenance = assemble_iter1(workspace)
    previous = read_dataset_csv(combined)
    base_rows = read_rows(workspace / "train" / "base" / "training_set.csv")
    new_mined = [as_mined(row, n, 0.93) for n, row in enumerate(pool_rows(workspace)[4:9])]

    result = assemble(
        iteration=2,
        previous=previous,
        previous_in_workspace_coordinates=True,
        sdg_rows=ingest(workspace, 2).rows,
        mined_rows=new_mined,
        previous_provenance=read_provenance(provenance),
    )

    assert len(result.rows) == len(previous.rows) + 3 + 5  # monotone growth by exactly the new rows
    previous_columns = previous.columns
    assert [tuple(row[c] for c in previous_columns) for row in result.rows[: len(previous.rows)]] == [
        tuple(row[c] for c in previous_columns) for row in previous.rows
    ]
    assert not any(row[c].startswith("images/images/") for row in result.rows for c in ("input_path", "golden_path"))
    base_samples = Counter((f"images/{r['input_path']}", r["object_name"]) for r in base_rows)
    combined_samples = Counter((r["input_path"], r["object_name"]) for r in result.rows)
    assert all(combined_samples[sample] == 1 for sample in base_samples)
    assert all(resolves(workspace, row) for row in result.rows)
    sources = [entry["source"] for entry in result.provenance]
    assert sources == ["previous_iter_train"] * len(previous.rows) + ["sdg"] * 3 + ["mined"] * 5
    origins = Counter((entry["origin"], entry["origin_iteration"]) for entry in result.provenance)
    expected_origins = {("base_train", "0"): len(base_rows), ("sdg", "1"): 3, ("mined", "1"): 4}
    expected_origins.update({("sdg", "2"): 3, ("mined", "2"): 5})
    assert origins == expected_origins
    assert {entry["sdg_file"].split("/")[2] for entry in result.provenance if entry["origin"] == "sdg"} == {
        "iter1",
        "iter2",
    }


@pytest.mark.parametrize(("iteration", "in_workspace"), [(1, True), (2, False)])
def test_iteration_and_coordinate_system_must_agree(workspace: Path, iteration: int, in_workspace: bool) -> None:
    with pytest.raises(DatasetError, match="coordinates"):
        assemble(
            iteration=iteration,
            previous=read_dataset_csv(workspace / "train" / "base" / "training_set.csv"),
            previous_in_workspace_coordinates=in_workspace,
            sdg_rows=[],
            mined_rows=[],
        )


def test_malformed_new_rows_are_all_reported(workspace: Path) -> None:
    good = as_mined(pool_rows(workspace)[0], 0, 0.95)
    without_golden = {key: value for key, value in good.items() if key != "golden_path"}
    with pytest.raises(DatasetError) as raised:
        assemble(
            iteration=1,
            previous=read_dataset_csv(workspace / "train" / "base" / "training_set.csv"),
            previous_in_workspace_coordinates=False,
            sdg_rows=[{**good, "label": None}],
            mined_rows=[good, without_golden],
        )
    wheres = [problem.where for problem in raised.value.problems]
    assert wheres == ["sdg row 1", "mined row 2"]


def test_a_new_row_repeating_a_training_sample_is_dropped_and_listed(workspace: Path) -> None:
    base_csv = workspace / "train" / "base" / "training_set.csv"
    base = read_rows(base_csv)
    repeat = as_mined(base[2], 7, 0.99)
    repeat["input_path"] += "/"  # the same directory, written differently
    fresh = as_mined(pool_rows(workspace)[0], 8, 0.95)

    result = assemble(
        iteration=1,
        previous=read_dataset_csv(base_csv),
        previous_in_workspace_coordinates=False,
        sdg_rows=[],
        mined_rows=[repeat, fresh],
    )

    assert len(result.rows) == len(base) + 1
    assert result.rows[-1]["object_name"] == fresh["object_name"]
    assert [(d["source"], d["index"], d["duplicate_of_row"]) for d in result.dropped_duplicates] == [
        ("mined", "1", "3")
    ]


def test_extra_columns_keep_previous_extras_first_then_new_ones(workspace: Path) -> None:
    mined = {**as_mined(pool_rows(workspace)[0], 0, 0.95), "line_id": "L7"}

    result = assemble(
        iteration=1,
        previous=read_dataset_csv(workspace / "train" / "base" / "training_set.csv"),
        previous_in_workspace_coordinates=False,
        sdg_rows=ingest(workspace).rows,
        mined_rows=[mined],
    )

    assert result.columns[4:] == ("boardname", "defect_count", "line_id")
    assert result.rows[-1]["line_id"] == "L7"
    assert all(row["line_id"] == "" for row in result.rows[:-1])
    assert not {"sdg_file", "similarity", "target_row", "pool_row", "pool_filepath"} & set(result.columns)


def test_write_assembly_writes_aligned_csvs(workspace: Path) -> None:
    combined, provenance = assemble_iter1(workspace)

    combined_rows, provenance_rows = read_rows(combined), read_rows(provenance)
    assert len(combined_rows) == len(provenance_rows) > 0
    with provenance.open(encoding="utf-8") as handle:
        assert handle.readline().strip() == ",".join(PROVENANCE_COLUMNS)
    for row, entry in zip(combined_rows, provenance_rows, strict=True):
        assert (row["input_path"], row["object_name"]) == (entry["input_path"], entry["object_name"])


_CELL = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=6)
_LABEL = st.sampled_from(["PASS", "pass", " Pass", "open", "Short ", "PIN_HOLE", "ng"])


@st.composite
def _rows(draw: st.DrawFn, tag: str, max_size: int) -> list[dict[str, str]]:
    count = draw(st.integers(0, max_size))
    return [
        {
            "input_path": f"{tag}/{draw(_CELL)}",
            "golden_path": f"{tag}/{draw(_CELL)}",
            "label": draw(_LABEL),
            "object_name": f"{tag}{index}",
        }
        for index in range(count)
    ]


@settings(max_examples=60, deadline=None)
@given(
    previous=_rows("p", 12), sdg=_rows("s", 6), mined=_rows("m", 6), prefix=st.sampled_from(["images", "kpi/images"])
)
def test_iter1_assembly_properties(
    previous: list[dict[str, str]], sdg: list[dict[str, str]], mined: list[dict[str, str]], prefix: str
) -> None:
    base = DatasetCsv(
        path=Path("base.csv"), columns=("input_path", "golden_path", "label", "object_name"), rows=tuple(previous)
    )

    result = assemble(
        iteration=1,
        previous=base,
        previous_in_workspace_coordinates=False,
        sdg_rows=sdg,
        mined_rows=mined,
        images_prefix=prefix + "/",
    )

    def label(raw: str) -> str:
        return "PASS" if raw.strip().lower() == "pass" else raw.strip().lower()

    expected = (
        [
            {**row, "input_path": f"{prefix}/{row['input_path']}", "golden_path": f"{prefix}/{row['golden_path']}"}
            for row in previous
        ]
        + sdg
        + mined
    )
    assert result.rows == tuple({**row, "label": label(row["label"])} for row in expected)
    assert [entry["source"] for entry in result.provenance] == (
        ["base_train"] * len(previous) + ["sdg"] * len(sdg) + ["mined"] * len(mined)
    )
    assert [entry["row"] for entry in result.provenance] == [str(n) for n in range(1, len(expected) + 1)]
