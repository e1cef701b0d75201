"""Tests of mining-pool resolution: every row pinned to exactly one existing file, or a DatasetError."""

from __future__ import annotations

import pytest

from aoi_pipeline.core.dataset import MAX_LISTED_PER_KIND, read_csv_table, read_dataset_csv
from aoi_pipeline.core.leakage import CsvInRoot, leaks_between, sample_keys
from aoi_pipeline.core.mining_pool import pool_sample_keys, resolve_mining_pool, write_resolved_pool
from aoi_pipeline.errors import DatasetError

POOL = "augmentation/mining_pool/mining_pool.csv"
DIR_COLUMNS = ("input_path", "golden_path", "label", "object_name", "boardname")


def test_directory_rows_relative_to_the_image_root_resolve_with_extra_columns_kept(ws):
    rows = [ws.sample("b1", "T00", boardname="b1"), ws.sample("b1", "T01", "open", boardname="b1")]
    pool = resolve_mining_pool(ws.csv(POOL, rows, DIR_COLUMNS), images_root=ws.images)
    assert pool.columns == (*DIR_COLUMNS, "filepath", "golden_filepath")
    assert [(r["filepath"], r["golden_filepath"], r["boardname"]) for r in pool.rows] == [
        ("b1/test/T00_SolderLight.jpg", "b1/golden/T00_SolderLight.jpg", "b1"),
        ("b1/test/T01_SolderLight.jpg", "b1/golden/T01_SolderLight.jpg", "b1"),
    ]
    assert pool.label_counts() == {"PASS": 1, "open": 1}


def test_workspace_relative_rows_resolve_after_stripping_the_images_prefix(ws):
    rows = [ws.sample("b1", "T00", prefix="images/")]
    pool = resolve_mining_pool(ws.csv(POOL, rows), images_root=ws.images)
    assert pool.rows[0]["filepath"] == "b1/test/T00_SolderLight.jpg"


def test_flat_file_rows_relative_to_the_csv_folder_resolve(ws):
    csv_dir = ws.root / "augmentation" / "mining_pool"
    ws.image("local/T00_SolderLight.png", under=csv_dir)
    path = ws.csv(POOL, [{"filepath": "local/T00_SolderLight.png", "label": "spur"}], ("filepath", "label"))
    pool = resolve_mining_pool(path, images_root=ws.images, image_ext=".png")
    # Outside the images root the path stays absolute.
    assert pool.rows[0]["filepath"] == str(csv_dir / "local" / "T00_SolderLight.png")
    assert pool.rows[0]["golden_filepath"] == ""


def test_absolute_paths_inside_the_image_root_become_relative(ws):
    ws.sample("b1", "T00")
    row = {"image_path": str(ws.images / "b1/test/T00_SolderLight.jpg"), "label": "PASS"}
    pool = resolve_mining_pool(ws.csv(POOL, [row], ("image_path", "label")), images_root=ws.images)
    assert pool.rows[0]["filepath"] == "b1/test/T00_SolderLight.jpg"


def test_the_first_non_empty_path_column_wins(ws):
    ws.sample("b1", "T00")
    row = {"filepath": "", "input_path": "b1/test", "label": "PASS", "object_name": "T00"}
    pool = resolve_mining_pool(
        ws.csv(POOL, [row], ("filepath", "input_path", "label", "object_name")), images_root=ws.images
    )
    assert pool.rows[0]["filepath"] == "b1/test/T00_SolderLight.jpg"


def test_a_row_matching_no_file_is_missing_with_the_candidates_tried(ws):
    rows = [
        ws.sample("b1", "T00"),
        {"input_path": "b1/test", "golden_path": "", "label": "open", "object_name": "T09"},
    ]
    path = ws.csv(POOL, rows)
    with pytest.raises(DatasetError) as excinfo:
        resolve_mining_pool(path, images_root=ws.images)
    (problem,) = excinfo.value.problems
    assert problem.where == f"{path}: row 2, column input_path"
    assert problem.what.startswith("input_path 'b1/test' with object_name 'T09' matches no existing file (tried ")
    assert str(ws.images / "b1/test/T09_SolderLight.jpg") in problem.what
    assert "check light and image_ext" in problem.fix


def test_a_row_matching_two_distinct_files_is_ambiguous(ws):
    csv_dir = ws.root / "augmentation" / "mining_pool"
    ws.sample("b1", "T00")
    ws.image("b1/test/T00_SolderLight.jpg", b"another file", under=csv_dir)
    path = ws.csv(
        POOL,
        [{"input_path": "b1/test", "label": "PASS", "object_name": "T00"}],
        ("input_path", "label", "object_name"),
    )
    with pytest.raises(DatasetError) as excinfo:
        resolve_mining_pool(path, images_root=ws.images)
    (problem,) = excinfo.value.problems
    assert problem.what == (
        f"input_path 'b1/test' with object_name 'T00' matches 2 distinct files "
        f"({csv_dir / 'b1/test/T00_SolderLight.jpg'}, {ws.images / 'b1/test/T00_SolderLight.jpg'})"
    )


def test_two_spellings_of_one_file_are_not_ambiguous(ws, tmp_path):
    """A pool CSV kept inside the image root reaches each file both via its folder and via images_root."""
    ws.sample("b1", "T00")
    path = ws.csv(
        "images/pool.csv",
        [{"input_path": "b1/test", "label": "PASS", "object_name": "T00"}],
        ("input_path", "label", "object_name"),
    )
    assert resolve_mining_pool(path, images_root=ws.images).rows[0]["filepath"] == "b1/test/T00_SolderLight.jpg"
    alias = tmp_path / "alias"
    alias.symlink_to(ws.images, target_is_directory=True)
    (ws.root / "augmentation").mkdir()
    (ws.root / "augmentation" / "b1").symlink_to(alias / "b1", target_is_directory=True)
    other = ws.csv(
        "augmentation/pool.csv",
        [{"input_path": "b1/test", "label": "PASS", "object_name": "T00"}],
        ("input_path", "label", "object_name"),
    )
    assert len(resolve_mining_pool(other, images_root=ws.images).rows) == 1


def test_a_golden_path_that_resolves_nowhere_is_an_error(ws):
    row = {**ws.sample("b1", "T00"), "golden_path": "b1/nogolden"}
    path = ws.csv(POOL, [row])
    with pytest.raises(DatasetError) as excinfo:
        resolve_mining_pool(path, images_root=ws.images)
    (problem,) = excinfo.value.problems
    assert problem.where == f"{path}: row 1, column golden_path"
    assert "matches no existing file" in problem.what


def test_a_missing_pool_is_a_dataset_error(ws):
    path = ws.root / POOL
    with pytest.raises(DatasetError) as excinfo:
        resolve_mining_pool(path, images_root=ws.images)
    (problem,) = excinfo.value.problems
    assert (problem.where, problem.what) == (str(path), "mining pool CSV does not exist")


def test_a_pool_without_rows_is_a_dataset_error(ws):
    path = ws.csv(POOL, [])
    with pytest.raises(DatasetError) as excinfo:
        resolve_mining_pool(path, images_root=ws.images)
    (problem,) = excinfo.value.problems
    assert problem.what == "mining pool has a header but no rows"
    assert problem.fix.startswith("add production images to the pool")


def test_a_pool_without_path_or_label_columns_is_a_dataset_error(ws):
    no_path = ws.csv(POOL, [{"label": "PASS", "object_name": "T00"}], ("label", "object_name"))
    with pytest.raises(DatasetError) as excinfo:
        resolve_mining_pool(no_path, images_root=ws.images)
    assert excinfo.value.problems[0].what.startswith("has none of the path columns filepath, input_path, image_path")
    no_label = ws.csv("pool2.csv", [{"filepath": "a.jpg"}], ("filepath",))
    with pytest.raises(DatasetError) as excinfo:
        resolve_mining_pool(no_label, images_root=ws.images)
    assert excinfo.value.problems[0].what.startswith("missing required column(s) label")


def test_a_bom_is_tolerated_in_the_pool(ws):
    ws.sample("b1", "T00")
    path = ws.root / "bom_pool.csv"
    path.write_bytes(b"\xef\xbb\xbffilepath,label\nb1/test/T00_SolderLight.jpg,PASS\n")
    assert resolve_mining_pool(path, images_root=ws.images).rows[0]["filepath"] == "b1/test/T00_SolderLight.jpg"


def test_many_unresolved_rows_are_listed_up_to_the_cap_and_counted(ws):
    rows = [{"filepath": f"gone/{i}.jpg", "label": "PASS"} for i in range(MAX_LISTED_PER_KIND + 7)]
    path = ws.csv(POOL, rows, ("filepath", "label"))
    with pytest.raises(DatasetError) as excinfo:
        resolve_mining_pool(path, images_root=ws.images)
    problems = excinfo.value.problems
    assert len(problems) == MAX_LISTED_PER_KIND + 1
    assert problems[-1].what == f"7 more rows with a missing file not listed ({MAX_LISTED_PER_KIND + 7} in all)"


def test_the_written_resolved_pool_reads_back_with_its_added_columns(ws, tmp_path):
    rows = [ws.sample("b1", "T00"), ws.sample("b1", "T01", "open")]
    pool = resolve_mining_pool(ws.csv(POOL, rows), images_root=ws.images)
    out = tmp_path / "run" / "inputs" / "mining_pool.resolved.csv"
    write_resolved_pool(pool, out)
    table = read_csv_table(out, required_columns=("filepath", "label"))
    assert table.columns == pool.columns
    assert table.rows == pool.rows


def test_pool_keys_match_the_sample_keys_of_the_same_rows_in_another_csv(ws):
    shared = ws.sample("b1", "T00")
    pool = resolve_mining_pool(ws.csv(POOL, [ws.sample("b2", "T00"), shared]), images_root=ws.images)
    kpi = CsvInRoot(read_dataset_csv(ws.csv("kpi.csv", [shared])), ws.images)
    leaks = leaks_between(sample_keys(kpi, lights=["SolderLight"], image_ext=".jpg"), pool_sample_keys(pool))
    assert [(leak.left_row, leak.right_row) for leak in leaks] == [(1, 2)]


def test_resolution_never_writes(ws, snapshot):
    rows = [ws.sample("b1", "T00"), {"filepath": "gone.jpg", "label": "PASS"}]
    path = ws.csv(POOL, rows, ("input_path", "golden_path", "label", "object_name", "filepath"))
    before = snapshot(ws.root)
    with pytest.raises(DatasetError):
        resolve_mining_pool(path, images_root=ws.images)
    assert snapshot(ws.root) == before
