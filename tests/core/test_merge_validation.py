"""The merge validation hard stop: its report, leaks across coordinate systems, missing images, real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sdg_workspace import (
    EXT,
    LIGHT,
    RUN,
    as_mined,
    assemble_iter1,
    pool_rows,
    read_rows,
)

from aoi_pipeline.core.assembly import assemble, write_assembly
from aoi_pipeline.core.dataset import read_dataset_csv
from aoi_pipeline.core.leakage import CsvInRoot
from aoi_pipeline.core.merge_validation import validate_merge
from aoi_pipeline.errors import DatasetError, LeakageError

DEEPPCB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "deeppcb-aoi"
REPORT_KEYS = {
    "status",
    "rows_checked",
    "missing_file_count",
    "train_val_leakage_overlap_count",
    "train_kpi_leakage_overlap_count",
    "validation_csv",
    "kpi_csv",
    "combined_csv",
}


def sets(root: Path) -> tuple[CsvInRoot, CsvInRoot]:
    images = root / "images"
    validation = CsvInRoot(read_dataset_csv(root / "train" / "base" / "validation_set.csv"), images)
    kpi = CsvInRoot(read_dataset_csv(root / "kpi" / "testing_set.csv"), images)
    return validation, kpi


def merge(root: Path, combined: Path, report: Path) -> dict:
    validation, kpi = sets(root)
    return validate_merge(
        combined,
        workspace_root=root,
        validation=validation,
        kpi=kpi,
        lights=[LIGHT],
        image_ext=EXT,
        report_json=report,
    )


def test_a_clean_merge_passes_and_writes_its_report(workspace: Path) -> None:
    combined, _ = assemble_iter1(workspace)
    report_path = workspace / RUN / "iter1" / "dataset" / "merge_validation.json"

    report = merge(workspace, combined, report_path)

    assert report == json.loads(report_path.read_text(encoding="utf-8"))
    assert set(report) >= REPORT_KEYS
    assert report["status"] == "ok"
    assert report["rows_checked"] == len(read_rows(combined))
    assert (report["missing_file_count"], report["train_val_leakage_overlap_count"]) == (0, 0)
    assert report["train_kpi_leakage_overlap_count"] == 0
    assert report["combined_csv"] == str(combined)


def test_a_planted_leak_is_found_across_coordinate_systems(workspace: Path) -> None:
    validation_rows = read_rows(workspace / "train" / "base" / "validation_set.csv")
    kpi_rows = read_rows(workspace / "kpi" / "testing_set.csv")
    result = assemble(
        iteration=1,
        previous=read_dataset_csv(workspace / "train" / "base" / "training_set.csv"),
        previous_in_workspace_coordinates=False,
        sdg_rows=[],
        mined_rows=[
            as_mined(kpi_rows[2], 0, 0.97),
            as_mined(kpi_rows[5], 1, 0.96),
            as_mined(validation_rows[0], 2, 0.95),
        ],
    )
    dataset = workspace / RUN / "iter1" / "dataset"
    combined = dataset / "train_combined_iter1.csv"
    write_assembly(result, combined_csv=combined, provenance_csv=dataset / "provenance.csv")
    # The raw strings never match: combined paths carry images/, the KPI and validation CSVs do not.
    assert not {row["input_path"] for row in result.rows} & {row["input_path"] for row in kpi_rows + validation_rows}
    report_path = dataset / "merge_validation.json"

    with pytest.raises(LeakageError):
        merge(workspace, combined, report_path)

    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["status"] == "failed"
    assert report["train_kpi_leakage_overlap_count"] == 2
    assert report["train_val_leakage_overlap_count"] == 1
    assert report["missing_file_count"] == 0


def test_missing_images_fail_the_merge_with_a_count(workspace: Path) -> None:
    broken = as_mined(pool_rows(workspace)[0], 0, 0.95)
    broken["input_path"] = "images/nowhere/test"
    result = assemble(
        iteration=1,
        previous=read_dataset_csv(workspace / "train" / "base" / "training_set.csv"),
        previous_in_workspace_coordinates=False,
        sdg_rows=[],
        mined_rows=[broken],
    )
    dataset = workspace / RUN / "iter1" / "dataset"
    write_assembly(result, combined_csv=dataset / "combined.csv", provenance_csv=dataset / "provenance.csv")
    report_path = dataset / "merge_validation.json"

    with pytest.raises(DatasetError, match="nowhere") as raised:
        merge(workspace, dataset / "combined.csv", report_path)

    assert not isinstance(raised.value, LeakageError)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert (report["status"], report["missing_file_count"]) == ("failed", 1)
    assert report["train_kpi_leakage_overlap_count"] == 0


def test_a_missing_combined_csv_still_writes_a_failed_report(workspace: Path) -> None:
    report_path = workspace / RUN / "iter1" / "dataset" / "merge_validation.json"

    with pytest.raises(DatasetError, match="does not exist"):
        merge(workspace, workspace / "absent.csv", report_path)

    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["status"] == "failed" and report["problem_count"] == 1


def test_deeppcb_base_set_assembles_and_validates_clean(tmp_path: Path) -> None:
    if not DEEPPCB.is_dir():
        pytest.skip("../shared/data/deeppcb-aoi is absent: the real-data check needs it beside the checkout")
    base = read_dataset_csv(DEEPPCB / "train" / "base" / "training_set.csv")
    result = assemble(iteration=1, previous=base, previous_in_workspace_coordinates=False, sdg_rows=[], mined_rows=[])
    combined = tmp_path / "combined.csv"
    write_assembly(result, combined_csv=combined, provenance_csv=tmp_path / "provenance.csv")
    images = DEEPPCB / "images"

    report = validate_merge(
        combined,
        workspace_root=DEEPPCB,
        validation=CsvInRoot(read_dataset_csv(DEEPPCB / "train" / "base" / "validation_set.csv"), images),
        kpi=CsvInRoot(read_dataset_csv(DEEPPCB / "kpi" / "testing_set.csv"), images),
        lights=LIGHT,
        image_ext=EXT,
        report_json=tmp_path / "merge_validation.json",
    )

    assert report["status"] == "ok"
    assert report["rows_checked"] == len(base.rows)
    assert (report["missing_file_count"], report["train_kpi_leakage_overlap_count"]) == (0, 0)
