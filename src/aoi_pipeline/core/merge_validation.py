"""Merge validation, the single check the state's `data_merge` commit relies on.

`validate_merge` reads an iteration's combined training CSV from the workspace root and checks that every
image exists, labels follow the rule, and no sample is shared with the validation or KPI set, compared on
resolved files across coordinate systems (the combined CSV is in workspace coordinates, the validation and KPI
CSVs in their own roots). Its JSON report is written even when it fails, as the evidence of the hard stop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aoi_pipeline.core.dataset import (
    PATH_COLUMNS,
    DatasetCsv,
    FileIndex,
    image_files,
    normalize_image_ext,
    normalize_lights,
    read_dataset_csv,
)
from aoi_pipeline.core.dataset_validation import collect_dataset_problems
from aoi_pipeline.core.files import absolute_path, atomic_write_json
from aoi_pipeline.core.leakage import CsvInRoot, Leak, find_leaks, leak_problems
from aoi_pipeline.errors import DatasetError, LeakageError, Problem

MAX_REPORTED_PROBLEMS = 100


def validate_merge(
    combined_csv: Path,
    *,
    workspace_root: Path,
    validation: CsvInRoot,
    kpi: CsvInRoot,
    lights: Sequence[str] | str,
    image_ext: str,
    report_json: Path,
) -> dict[str, Any]:
    """Check the combined CSV in one call and write the merge validation report; raise when it fails.

    The CSV is validated from `workspace_root` in train mode (every image exists, label rule, both classes,
    no duplicate rows), and its samples are compared on resolved files with the validation and KPI sets,
    each in its own root. The report (`status`, `rows_checked`, `missing_file_count` = distinct missing image
    files, `train_val_leakage_overlap_count` and `train_kpi_leakage_overlap_count` = combined rows sharing a
    sample, the three CSV paths, `problems`) is written whatever the outcome; then LeakageError (any shared
    sample) or DatasetError (any other problem) is raised.
    """
    names = normalize_lights(lights)
    ext = normalize_image_ext(image_ext)
    combined_csv = absolute_path(combined_csv)
    workspace_root = absolute_path(workspace_root)
    report = _failed_report(combined_csv, workspace_root, validation, kpi)
    try:
        dataset = read_dataset_csv(combined_csv)
    except DatasetError as error:
        _write_report(report_json, report, list(error.problems))
        raise
    files = FileIndex()
    log = collect_dataset_problems(
        dataset, images_dir=workspace_root, lights=names, image_ext=ext, mode="train", files=files
    )
    combined = CsvInRoot(dataset, workspace_root)
    val_leaks = find_leaks(combined, validation, lights=names, image_ext=ext)
    kpi_leaks = find_leaks(combined, kpi, lights=names, image_ext=ext)
    problems = [
        *log.problems(),
        *_leak_problems(val_leaks, combined_csv, validation, "the validation set"),
        *_leak_problems(kpi_leaks, combined_csv, kpi, "the KPI set"),
    ]
    report.update(
        rows_checked=len(dataset.rows),
        missing_file_count=_missing_file_count(dataset, workspace_root, names, ext, files),
        train_val_leakage_overlap_count=len({leak.left_row for leak in val_leaks}),
        train_kpi_leakage_overlap_count=len({leak.left_row for leak in kpi_leaks}),
        status="failed" if problems else "ok",
    )
    _write_report(report_json, report, problems)
    _raise_if_failed(combined_csv, report, problems, leaked=bool(val_leaks or kpi_leaks))
    return report


def _failed_report(combined_csv: Path, workspace_root: Path, validation: CsvInRoot, kpi: CsvInRoot) -> dict[str, Any]:
    """The report as it stands before any check passed: failed, nothing counted, the paths it is about."""
    return {
        "status": "failed",
        "rows_checked": 0,
        "missing_file_count": None,
        "train_val_leakage_overlap_count": None,
        "train_kpi_leakage_overlap_count": None,
        "validation_csv": str(absolute_path(validation.csv.path)),
        "kpi_csv": str(absolute_path(kpi.csv.path)),
        "combined_csv": str(combined_csv),
        "workspace_root": str(workspace_root),
        "problem_count": 0,
        "problems": [],
    }


def _raise_if_failed(combined_csv: Path, report: Mapping[str, Any], problems: list[Problem], *, leaked: bool) -> None:
    """LeakageError when a sample is shared with the validation or KPI set, else DatasetError for any problem."""
    if leaked:
        raise LeakageError(
            problems,
            summary=(
                f"{combined_csv}: {report['train_val_leakage_overlap_count']} rows share a sample with the "
                f"validation set, {report['train_kpi_leakage_overlap_count']} with the KPI set"
            ),
        )
    if problems:
        raise DatasetError(problems, summary=f"{combined_csv}: the combined training CSV is invalid")


def _leak_problems(leaks: Sequence[Leak], combined_csv: Path, other: CsvInRoot, name: str) -> list[Problem]:
    return leak_problems(
        leaks,
        left_path=combined_csv,
        right_path=other.csv.path,
        left_name="the combined training CSV",
        right_name=name,
    )


def _missing_file_count(
    dataset: DatasetCsv, workspace_root: Path, lights: Sequence[str], image_ext: str, files: FileIndex
) -> int:
    missing: set[str] = set()
    for row in dataset.rows:
        if not all(row[column].strip() for column in (*PATH_COLUMNS, "object_name")):
            continue
        for path in image_files(row, images_dir=workspace_root, lights=lights, image_ext=image_ext):
            if not files.is_file(path):
                missing.add(os.path.normpath(path))
    return len(missing)


def _write_report(report_json: Path, report: dict[str, Any], problems: Sequence[Problem]) -> None:
    report["problem_count"] = len(problems)
    report["problems"] = [str(problem) for problem in problems[:MAX_REPORTED_PROBLEMS]]
    Path(report_json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report_json, report)
