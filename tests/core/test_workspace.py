"""Tests of the workspace layout and the whole-workspace data check, on tiny workspaces and on DeepPCB-AOI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aoi_pipeline.core.workspace import Workspace, check_workspace
from aoi_pipeline.errors import DatasetError

DEEPPCB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "deeppcb-aoi"
TRAIN, VAL, KPI, POOL = (
    "train/base/training_set.csv",
    "train/base/validation_set.csv",
    "kpi/testing_set.csv",
    "augmentation/mining_pool/mining_pool.csv",
)
ALL_PAIRS = [
    ("training", "validation"),
    ("training", "kpi"),
    ("training", "mining_pool"),
    ("validation", "kpi"),
    ("validation", "mining_pool"),
    ("kpi", "mining_pool"),
]


def build_valid_workspace(ws, *, pool: bool = True) -> None:
    ws.csv(TRAIN, [ws.sample("b1", "T00"), ws.sample("b1", "T01", "open"), ws.sample("b1", "T02", "open")])
    ws.csv(VAL, [ws.sample("b2", "T00"), ws.sample("b2", "T01", "short")])
    ws.csv(KPI, [ws.sample("b3", "T00"), ws.sample("b3", "T01", "open"), ws.sample("b3", "T02", "short")])
    if pool:
        ws.csv(POOL, [ws.sample("b4", "T00"), ws.sample("b4", "T01", "open")])


def test_layout_paths_and_the_legacy_image_root(tmp_path):
    workspace = Workspace.at(tmp_path)
    assert workspace.images_dir == tmp_path / "images"
    assert workspace.training_csv == tmp_path / "train/base/training_set.csv"
    assert workspace.validation_csv == tmp_path / "train/base/validation_set.csv"
    assert workspace.kpi_csv == tmp_path / "kpi/testing_set.csv"
    assert workspace.mining_pool_csv == tmp_path / "augmentation/mining_pool/mining_pool.csv"
    assert workspace.spec_file == tmp_path / "specs/baseline_spec.yaml"
    (tmp_path / "kpi" / "images").mkdir(parents=True)
    assert Workspace.at(tmp_path).images_dir == tmp_path / "kpi" / "images"
    (tmp_path / "images").mkdir()
    assert Workspace.at(tmp_path).images_dir == tmp_path / "images"


def test_a_valid_workspace_reports_rows_labels_leakage_and_pool(ws):
    build_valid_workspace(ws)
    report = check_workspace(ws.root, batch_size=2)
    assert [(s.name, s.rows, s.label_counts) for s in report.csvs] == [
        ("training", 3, {"PASS": 1, "open": 2}),
        ("validation", 2, {"PASS": 1, "short": 1}),
        ("kpi", 3, {"PASS": 1, "open": 1, "short": 1}),
        ("mining_pool", 2, {"PASS": 1, "open": 1}),
    ]
    assert report.leakage == dict.fromkeys(ALL_PAIRS, 0)
    assert report.pool_rows == 2
    assert report.notes == (
        "the mining pool has no rows of KPI defect type(s) short: mining cannot find real images of them",
        f"no baseline spec at {ws.root / 'specs/baseline_spec.yaml'} (runs start from the built-in DEFT baseline spec)",
    )
    lines = [line.split() for line in report.render().splitlines()]
    assert ["training", TRAIN, "3", "PASS", "1,", "open", "2"] in lines
    assert ["mining_pool", POOL, "2", "PASS", "1,", "open", "1"] in lines
    assert ["kpi", "/", "mining_pool", "0"] in lines
    data = json.loads(json.dumps(report.to_dict()))
    assert data["pool_rows"] == 2
    assert data["csvs"][2] == {
        "name": "kpi",
        "path": str(ws.root / KPI),
        "rows": 3,
        "label_counts": {"PASS": 1, "open": 1, "short": 1},
    }
    assert {"left": "training", "right": "validation", "count": 0} in data["leakage"]


def test_an_absent_pool_is_a_note_not_an_error(ws):
    build_valid_workspace(ws, pool=False)
    report = check_workspace(ws.root)
    assert report.pool_rows is None
    assert list(report.leakage) == [pair for pair in ALL_PAIRS if "mining_pool" not in pair]
    assert report.notes[0].startswith(f"no mining pool at {ws.root / POOL}")
    assert "mining_pool  (absent)" in report.render()


def test_problems_of_every_file_and_leaks_are_collected_into_one_error(ws):
    build_valid_workspace(ws)
    leaked = ws.sample("b2", "T05", "open")
    ws.csv(
        TRAIN,
        [ws.sample("b1", "T00", "pass"), ws.sample("b1", "T01", "open"), ws.sample("b1", "T02"), leaked],
    )
    (ws.images / "b3/golden/T02_SolderLight.jpg").unlink()
    ws.csv(VAL, [ws.sample("b2", "T00"), leaked])
    ws.csv(POOL, [ws.sample("b4", "T00"), {"input_path": "b4/test", "label": "open", "object_name": "T99"}])
    with pytest.raises(DatasetError) as excinfo:
        check_workspace(ws.root)
    wheres = [problem.where for problem in excinfo.value.problems]
    assert wheres == [
        f"{ws.root / TRAIN}: row 1, column label",
        f"{ws.root / KPI}: row 3, column golden_path",
        f"{ws.root / POOL}: row 2, column input_path",
        f"{ws.root / TRAIN}: row 4",
    ]
    assert "same sample as validation row 2" in excinfo.value.problems[-1].what
    assert excinfo.value.summary == f"data check of workspace {ws.root} failed"


def test_leaks_into_the_pool_are_found_whatever_the_pool_coordinates(ws):
    build_valid_workspace(ws)
    kpi_row = ws.sample("b3", "T01", "open")
    ws.csv(
        POOL,
        [
            ws.sample("b4", "T00"),
            {**kpi_row, "input_path": "images/b3/test", "golden_path": "images/b3/golden"},
        ],
    )
    with pytest.raises(DatasetError) as excinfo:
        check_workspace(ws.root)
    (problem,) = excinfo.value.problems
    assert problem.where == f"{ws.root / KPI}: row 2"
    assert problem.what.startswith(f"same sample as mining_pool row 2 ({ws.root / POOL})")


@pytest.mark.parametrize(("csv", "label", "name"), [(KPI, "PASS", "kpi"), (VAL, "short", "validation")])
def test_kpi_and_validation_sets_need_both_classes(ws, csv, label, name):
    build_valid_workspace(ws)
    board = "b3" if name == "kpi" else "b2"
    ws.csv(csv, [ws.sample(board, "T00", label), ws.sample(board, "T01", label)])
    with pytest.raises(DatasetError) as excinfo:
        check_workspace(ws.root)
    (problem,) = excinfo.value.problems
    assert problem.where == f"{ws.root / csv}: column label"
    assert "undefined without both classes" in problem.fix


def test_batch_size_applies_to_the_training_set_only(ws):
    build_valid_workspace(ws)
    check_workspace(ws.root, batch_size=3)
    with pytest.raises(DatasetError) as excinfo:
        check_workspace(ws.root, batch_size=4)
    (problem,) = excinfo.value.problems
    assert problem.where == f"{ws.root / TRAIN}: batch_size (dataset.classify.batch_size)"


def test_missing_images_dir_and_csv_are_reported_without_a_flood_of_missing_images(ws):
    build_valid_workspace(ws)
    (ws.root / TRAIN).unlink()
    (ws.images).rename(ws.root / "elsewhere")
    with pytest.raises(DatasetError) as excinfo:
        check_workspace(ws.root)
    whats = [(problem.where, problem.what) for problem in excinfo.value.problems]
    assert whats[:2] == [
        (str(ws.root), "has neither images/ nor kpi/images/ (the image root every CSV path is relative to)"),
        (str(ws.root / TRAIN), "dataset CSV does not exist"),
    ]
    assert not any("image " in what and "does not exist" in what for _, what in whats)


def test_a_missing_workspace_is_an_error(tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        check_workspace(tmp_path / "nowhere")
    assert excinfo.value.problems[0].what == "workspace directory does not exist"


def test_the_check_never_writes(ws, snapshot):
    build_valid_workspace(ws)
    before = snapshot(ws.root)
    check_workspace(ws.root)
    assert snapshot(ws.root) == before
    ws.csv(VAL, [ws.sample("b2", "T00", "Pass")])
    before = snapshot(ws.root)
    with pytest.raises(DatasetError):
        check_workspace(ws.root)
    assert snapshot(ws.root) == before


def test_the_deeppcb_workspace_passes_with_the_counts_of_its_readme():
    if not DEEPPCB.is_dir():
        pytest.skip("../shared/data/deeppcb-aoi is absent: the real-data check needs it beside the checkout")
    report = check_workspace(DEEPPCB, image_ext=".png", batch_size=16)
    by_name = {summary.name: summary for summary in report.csvs}
    six_types = {"open", "short", "mousebite", "spur", "copper", "pin_hole"}
    # The numbers below are the table of the data set's README.md.
    assert by_name["training"].rows == 480
    assert by_name["training"].label_counts == {
        "PASS": 320,
        "open": 43,
        "mousebite": 39,
        "short": 38,
        "copper": 32,
        "pin_hole": 4,
        "spur": 4,
    }
    for name, rows, passes in (("validation", 882, 530), ("kpi", 3702, 2308), ("mining_pool", 9623, 5772)):
        assert by_name[name].rows == rows
        assert by_name[name].label_counts["PASS"] == passes
        assert set(by_name[name].label_counts) == {"PASS", *six_types}
    assert report.pool_rows == 9623
    # "Boards never straddle two files."
    assert report.leakage == dict.fromkeys(ALL_PAIRS, 0)


def test_an_unreferenced_symlink_loop_under_images_is_a_note_not_a_missing_image_root(tiny_ws) -> None:
    tiny_ws.write_valid()
    (tiny_ws.images / "loop").symlink_to("loop")

    report = check_workspace(tiny_ws.root)

    assert any(f"{tiny_ws.images / 'loop'} is a symbolic-link loop" in note for note in report.notes)


def test_a_symlink_loop_on_a_csv_path_is_a_problem_naming_it_not_a_crash(tiny_ws) -> None:
    tiny_ws.write_valid()
    kpi_board = tiny_ws.images / "b3"
    for path in sorted(kpi_board.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    kpi_board.rmdir()
    kpi_board.symlink_to("b3")

    with pytest.raises(DatasetError) as refused:
        check_workspace(tiny_ws.root)

    loops = [p for p in refused.value.problems if "symbolic-link loop" in p.what]
    assert {p.where for p in loops} == {str(kpi_board / "test"), str(kpi_board / "golden")}
    assert all("replace the link" in p.fix for p in loops)
