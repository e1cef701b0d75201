"""Synthetic workspaces: the DeepPCB-AOI layout, disjoint boards, the seed-set skew, determinism, refusals."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aoi_pipeline.core.workspace import check_workspace
from aoi_pipeline.errors import ConfigError, DatasetError
from aoi_pipeline.synth.workspace import SynthSpec, SynthSummary, write_workspace

COLUMNS = ["input_path", "golden_path", "label", "object_name", "boardname", "defect_count"]
CSV_FILES = {
    "training": "train/base/training_set.csv",
    "validation": "train/base/validation_set.csv",
    "kpi": "kpi/testing_set.csv",
    "mining_pool": "augmentation/mining_pool/mining_pool.csv",
}
DEFECTS = {"open", "short", "mousebite", "spur", "copper", "pin_hole"}
SPEC = SynthSpec(boards=24, size=32, seed=3, tiles_per_board=10, defect_share=0.5)


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return write_workspace(tmp_path_factory.mktemp("synth") / "ws", SPEC)


def test_layout_columns_and_images_follow_the_deeppcb_workspace(written: SynthSummary) -> None:
    root = written.root
    assert (root / "README.md").read_text(encoding="utf-8").startswith("# ")
    for name, relative in CSV_FILES.items():
        columns, rows = read_rows(root / relative)
        assert columns == COLUMNS
        assert len(rows) == written.rows[name]
        for row in rows:
            assert row["input_path"] == f"{row['boardname']}/test"
            assert row["golden_path"] == f"{row['boardname']}/golden"
            for side in ("input_path", "golden_path"):
                image = Image.open(root / "images" / row[side] / f"{row['object_name']}_SolderLight.png")
                assert image.size == (SPEC.size, SPEC.size)
                assert image.mode in ("1", "L")
                assert set(np.unique(np.array(image.convert("L"))).tolist()) <= {0, 255}


def test_labels_and_defect_counts_agree_and_every_set_has_both_classes(written: SynthSummary) -> None:
    for name, relative in CSV_FILES.items():
        _, rows = read_rows(written.root / relative)
        labels = [row["label"] for row in rows]
        assert "PASS" in labels and set(labels) - {"PASS"}, name
        assert set(labels) <= DEFECTS | {"PASS"}
        for row in rows:
            assert (row["defect_count"] == "0") == (row["label"] == "PASS")
        counted: dict[str, int] = {}
        for label in labels:
            counted[label] = counted.get(label, 0) + 1
        assert written.label_counts[name] == counted
        assert next(iter(written.label_counts[name])) == "PASS"


def test_ng_tests_differ_from_their_golden(written: SynthSummary) -> None:
    _, rows = read_rows(written.root / CSV_FILES["kpi"])
    for row in rows:
        if row["label"] == "PASS":
            continue
        folder = written.root / "images" / row["boardname"]
        test = np.array(Image.open(folder / "test" / f"{row['object_name']}_SolderLight.png").convert("L"))
        golden = np.array(Image.open(folder / "golden" / f"{row['object_name']}_SolderLight.png").convert("L"))
        assert (test != golden).sum() >= 12


def test_boards_never_straddle_two_sets_and_shares_follow_deeppcb(written: SynthSummary) -> None:
    boards = {}
    for name, relative in CSV_FILES.items():
        _, rows = read_rows(written.root / relative)
        boards[name] = {row["boardname"] for row in rows}
    names = list(boards)
    for index, left in enumerate(names):
        for right in names[index + 1 :]:
            assert not boards[left] & boards[right], (left, right)
    on_disk = {path.name for path in (written.root / "images").iterdir()}
    assert set().union(*boards.values()) == on_disk
    assert len(on_disk) == SPEC.boards
    shares = {name: len(members) / SPEC.boards for name, members in boards.items()}
    assert len(boards["training"]) >= 1 and shares["training"] <= 0.08
    assert 0.05 <= shares["validation"] <= 0.13
    assert 0.2 <= shares["kpi"] <= 0.35
    assert shares["mining_pool"] >= 0.5


def test_seed_training_set_is_skewed_against_pin_holes_and_spurs(written: SynthSummary) -> None:
    training = written.label_counts["training"]
    pool = written.label_counts["mining_pool"]
    for rare in ("pin_hole", "spur"):
        assert 1 <= training.get(rare, 0) <= 2
        assert pool.get(rare, 0) >= 5
    common = [count for label, count in training.items() if label not in ("PASS", "pin_hole", "spur")]
    assert sum(common) > training["pin_hole"] + training["spur"]


def test_same_spec_writes_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    spec = SynthSpec(boards=5, size=32, seed=9, tiles_per_board=4)
    first = tree_digest(write_workspace(tmp_path / "a", spec).root)
    second = tree_digest(write_workspace(tmp_path / "b", spec).root)
    assert first == second
    other = tree_digest(write_workspace(tmp_path / "c", SynthSpec(boards=5, size=32, seed=10, tiles_per_board=4)).root)
    assert other.keys() == first.keys()
    assert other != first


def test_a_non_empty_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "ws"
    out.mkdir()
    (out / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        write_workspace(out, SynthSpec(boards=4, size=32, tiles_per_board=2))
    message = str(caught.value)
    assert str(out) in message and "not empty" in message and "Fix:" in message
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ws"]


def test_an_existing_empty_folder_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "ws"
    out.mkdir()
    summary = write_workspace(out, SynthSpec(boards=4, size=32, tiles_per_board=2))
    assert summary.root == out
    assert (out / CSV_FILES["kpi"]).is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ws"]


def test_an_invalid_spec_lists_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    bad = SynthSpec(boards=2, size=16, defect_share=1.5, image_ext=".gif")
    with pytest.raises(ConfigError) as caught:
        write_workspace(tmp_path / "ws", bad)
    wheres = {problem.where for problem in caught.value.problems}
    assert wheres == {"SynthSpec.boards", "SynthSpec.size", "SynthSpec.defect_share", "SynthSpec.image_ext"}
    assert list(tmp_path.iterdir()) == []


def test_jpeg_workspace_writes_grey_jpegs(tmp_path: Path) -> None:
    summary = write_workspace(tmp_path / "ws", SynthSpec(boards=4, size=32, tiles_per_board=2, image_ext="jpg"))
    images = sorted((summary.root / "images").rglob("*_SolderLight.jpg"))
    assert len(images) == 2 * 4 * 2
    assert Image.open(images[0]).format == "JPEG"


def test_written_workspace_passes_the_workspace_check(written: SynthSummary) -> None:
    report = check_workspace(written.root, image_ext=".png")
    assert {summary.name: summary.rows for summary in report.csvs} == written.rows
    assert {summary.name: summary.label_counts for summary in report.csvs} == written.label_counts
    assert len(report.leakage) == 6
    assert all(count == 0 for count in report.leakage.values())
