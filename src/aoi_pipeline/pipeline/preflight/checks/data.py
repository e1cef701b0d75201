"""Checks of section 4: the workspace's CSVs and images, leakage between every pair of sets, the mining pool.

The core validators do the checking; this module decides what blocks (a problem with the mining pool blocks
only when DEFT iterations mine it) and, when the check fails, gathers what can still be shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.dataset import read_csv_table, read_dataset_csv
from aoi_pipeline.core.leakage import CsvInRoot, leaks_between, sample_keys
from aoi_pipeline.core.workspace import KPI, MINING_POOL, SET_NAMES, TRAINING, VALIDATION, Workspace, check_workspace
from aoi_pipeline.errors import DatasetError, Problem
from aoi_pipeline.pipeline.preflight.checks.findings import Findings


@dataclass(frozen=True)
class SetRow:
    """One set of the dataset table: its CSV, rows and labels (None/empty when unreadable) and a status."""

    name: str
    path: Path
    rows: int | None
    labels: Mapping[str, int]
    status: str = ""


@dataclass(frozen=True)
class DataFacts:
    """What the dataset section shows."""

    workspace: Workspace
    sets: tuple[SetRow, ...]
    leakage: Mapping[tuple[str, str], int]
    notes: tuple[str, ...]


def check_data(config: PipelineConfig, workspace: Workspace, batch_size: int | None) -> tuple[DataFacts, Findings]:
    """Validate the workspace (images, labels, leakage, the pool) for the largest batch size the plan trains."""
    mining = config.deft.max_iterations > 0
    try:
        report = check_workspace(
            config.workspace,
            lights=config.dataset.lights,
            image_ext=config.dataset.image_ext,
            batch_size=batch_size,
        )
    except DatasetError as error:
        pool = [p for p in error.problems if _about_pool(workspace, p)]
        others = Findings.of(p for p in error.problems if not _about_pool(workspace, p))
        return _data_without_report(config, workspace), others + _pool_findings(pool, mining=mining)
    found = Findings()
    if report.pool_rows is None and mining:
        absent = Problem(
            str(workspace.mining_pool_csv),
            "the mining pool does not exist, and every DEFT iteration mines real images from it",
            "put the production pool CSV there, or set deft.max_iterations: 0",
        )
        found = _pool_findings([absent], mining=mining)
    sets = tuple(SetRow(s.name, s.path, s.rows, s.label_counts) for s in report.csvs)
    if report.pool_rows is None:
        sets += (SetRow(MINING_POOL, workspace.mining_pool_csv, None, {}, "absent"),)
    return DataFacts(workspace, sets, report.leakage, report.notes), found


def _about_pool(workspace: Workspace, problem: Problem) -> bool:
    pool = str(workspace.mining_pool_csv)
    leak = f"{MINING_POOL} row" in problem.what or f"shared with {MINING_POOL}" in problem.what
    return problem.where.startswith(pool) or leak


def _pool_findings(problems: Sequence[Problem], *, mining: bool) -> Findings:
    if mining:
        return Findings.of(problems)
    return Findings.of(
        warnings=[
            f"{problem} (not a blocker: deft.max_iterations is 0, so no iteration mines the pool)"
            for problem in problems
        ]
    )


def _data_without_report(config: PipelineConfig, workspace: Workspace) -> DataFacts:
    """What can still be shown when the data check failed: rows, labels and base-set leakage."""
    sets: list[SetRow] = []
    readable = {}
    for name in (TRAINING, VALIDATION, KPI):
        path = workspace.csv_path(name)
        try:
            csv = read_dataset_csv(path)
        except DatasetError:
            sets.append(SetRow(name, path, None, {}, "missing" if not path.exists() else "unreadable"))
            continue
        readable[name] = csv
        sets.append(SetRow(name, path, len(csv.rows), csv.label_counts()))
    sets.append(_pool_row_unchecked(workspace))
    lights, ext = config.dataset.lights, config.dataset.image_ext
    keys = {
        name: sample_keys(CsvInRoot(csv, workspace.images_dir), lights=lights, image_ext=ext)
        for name, csv in readable.items()
    }
    leakage = {
        (left, right): len(leaks_between(keys[left], keys[right]))
        for i, left in enumerate(SET_NAMES)
        for right in SET_NAMES[i + 1 :]
        if left in keys and right in keys
    }
    note = "the data check failed (see blockers): leakage is counted between the readable base sets only"
    return DataFacts(workspace, tuple(sets), leakage, (note,))


def _pool_row_unchecked(workspace: Workspace) -> SetRow:
    path = workspace.mining_pool_csv
    if not path.exists():
        return SetRow(MINING_POOL, path, None, {}, "absent")
    try:
        table = read_csv_table(path, required_columns=("label",), allow_bom=True, role="mining pool CSV")
    except DatasetError:
        return SetRow(MINING_POOL, path, None, {}, "unreadable")
    labels: dict[str, int] = {}
    for row in table.rows:
        labels[row.get("label", "")] = labels.get(row.get("label", ""), 0) + 1
    return SetRow(MINING_POOL, path, len(table.rows), labels, "not resolved")
