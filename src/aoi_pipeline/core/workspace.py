"""The DEFT workspace layout and its read-only data check.

A workspace holds the image root (`images/`, or the legacy `kpi/images/`), the seed training and validation
CSVs (`train/base/`), the KPI CSV (`kpi/testing_set.csv`), the production mining pool
(`augmentation/mining_pool/mining_pool.csv`) and the baseline spec (`specs/baseline_spec.yaml`).
`check_workspace` validates every CSV against the images, resolves the mining pool, looks for leakage between
every pair of sets, collects every problem into one DatasetError, and otherwise returns a report of rows and
label counts per set. It never writes anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aoi_pipeline.core.dataset import (
    DatasetCsv,
    FileIndex,
    is_defect,
    normalize_image_ext,
    normalize_lights,
    read_dataset_csv,
)
from aoi_pipeline.core.dataset_validation import Mode, check_both_classes, collect_dataset_problems
from aoi_pipeline.core.image_modes import dataset_images, mixed_mode_problems
from aoi_pipeline.core.leakage import CsvInRoot, SampleKey, leak_problems, leaks_between, sample_keys
from aoi_pipeline.core.mining_pool import ResolvedPool, pool_sample_keys, resolve_mining_pool
from aoi_pipeline.errors import DatasetError, Problem

TRAINING, VALIDATION, KPI, MINING_POOL = "training", "validation", "kpi", "mining_pool"
SET_NAMES = (TRAINING, VALIDATION, KPI, MINING_POOL)


@dataclass(frozen=True)
class Workspace:
    """Where each input of a DEFT workspace lives (paths only; nothing is checked here)."""

    root: Path
    images_dir: Path
    training_csv: Path
    validation_csv: Path
    kpi_csv: Path
    mining_pool_csv: Path
    spec_file: Path

    @classmethod
    def at(cls, root: Path) -> Workspace:
        """The layout of the workspace at `root`; images_dir is `images/`, else the legacy `kpi/images/`."""
        root = Path(os.path.abspath(Path(root).expanduser()))
        images_dir = root / "images"
        if not images_dir.is_dir() and (root / "kpi" / "images").is_dir():
            images_dir = root / "kpi" / "images"
        return cls(
            root=root,
            images_dir=images_dir,
            training_csv=root / "train" / "base" / "training_set.csv",
            validation_csv=root / "train" / "base" / "validation_set.csv",
            kpi_csv=root / "kpi" / "testing_set.csv",
            mining_pool_csv=root / "augmentation" / "mining_pool" / "mining_pool.csv",
            spec_file=root / "specs" / "baseline_spec.yaml",
        )

    def csv_path(self, name: str) -> Path:
        return {
            TRAINING: self.training_csv,
            VALIDATION: self.validation_csv,
            KPI: self.kpi_csv,
            MINING_POOL: self.mining_pool_csv,
        }[name]


@dataclass(frozen=True)
class CsvSummary:
    """Rows and label counts of one set of the workspace."""

    name: str
    path: Path
    rows: int
    label_counts: dict[str, int]


@dataclass(frozen=True)
class WorkspaceReport:
    """The outcome of a passing data check: one summary per set, leaks per pair of sets, pool size, notes."""

    workspace: Workspace
    csvs: tuple[CsvSummary, ...]
    leakage: dict[tuple[str, str], int]
    pool_rows: int | None
    notes: tuple[str, ...] = field(default=())

    def render(self) -> str:
        """A plain-text summary table for a terminal."""
        root = self.workspace.root
        lines = [f"Workspace  {root}", f"Images     {self.workspace.images_dir}", ""]
        table = [("set", "file", "rows", "labels")]
        for summary in self.csvs:
            labels = ", ".join(f"{label} {count}" for label, count in summary.label_counts.items())
            table.append((summary.name, _relative(summary.path, root), str(summary.rows), labels))
        widths = [max(len(row[i]) for row in table) for i in range(3)]
        for name, path, rows, labels in table:
            lines.append(f"{name:<{widths[0]}}  {path:<{widths[1]}}  {rows:>{widths[2]}}  {labels}".rstrip())
        if self.pool_rows is None:
            lines.append(f"{MINING_POOL:<{widths[0]}}  (absent)")
        lines += ["", "Leakage (samples found in both sets)"]
        pair_width = max((len(f"{a} / {b}") for a, b in self.leakage), default=0)
        lines += [f"{f'{a} / {b}':<{pair_width}}  {count}" for (a, b), count in self.leakage.items()]
        if self.notes:
            lines += ["", "Notes", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        return {
            "workspace": str(self.workspace.root),
            "images_dir": str(self.workspace.images_dir),
            "csvs": [
                {"name": s.name, "path": str(s.path), "rows": s.rows, "label_counts": dict(s.label_counts)}
                for s in self.csvs
            ],
            "leakage": [{"left": a, "right": b, "count": count} for (a, b), count in self.leakage.items()],
            "pool_rows": self.pool_rows,
            "notes": list(self.notes),
        }


def check_workspace(
    root: Path,
    *,
    lights: Sequence[str] = ("SolderLight",),
    image_ext: str = ".jpg",
    batch_size: int | None = None,
) -> WorkspaceReport:
    """Validate the whole workspace read-only; raise one DatasetError listing every problem of every file.

    Training is checked in train mode (both classes, `batch_size` against its rows), validation and KPI in
    evaluate mode and must each hold PASS and defect rows (FAR and recall are undefined otherwise). The pool
    is resolved with the first light; an absent pool is only a note at this level.
    """
    names = normalize_lights(lights)
    ext = normalize_image_ext(image_ext)
    workspace = Workspace.at(root)
    if not workspace.root.is_dir():
        raise DatasetError.at(
            str(workspace.root), "workspace directory does not exist", "pass the root folder of the workspace"
        )
    check = _WorkspaceCheck(workspace, names, ext)
    problems = check.images_dir_problems()
    datasets: dict[str, DatasetCsv] = {}
    modes: tuple[tuple[str, Mode], ...] = ((TRAINING, "train"), (VALIDATION, "evaluate"), (KPI, "evaluate"))
    for name, mode in modes:
        dataset, found = check.dataset(name, mode, batch_size if name == TRAINING else None)
        problems += found
        if dataset is not None:
            datasets[name] = dataset
    pool, found = check.pool()
    problems += found
    leakage, found = check.leakage(datasets, pool)
    problems += found + check.loop_problems()
    problems += mixed_mode_problems(
        dataset_images(datasets, str(workspace.images_dir), names, ext) if check.has_images else []
    )
    if problems:
        raise DatasetError(problems, summary=f"data check of workspace {workspace.root} failed")
    summaries = [CsvSummary(n, d.path, len(d.rows), d.label_counts()) for n, d in datasets.items()]
    if pool is not None:
        summaries.append(CsvSummary(MINING_POOL, pool.source_csv, len(pool.rows), pool.label_counts()))
    return WorkspaceReport(
        workspace=workspace,
        csvs=tuple(summaries),
        leakage=leakage,
        pool_rows=None if pool is None else len(pool.rows),
        notes=tuple(check.notes(datasets, pool)),
    )


class _WorkspaceCheck:
    """The steps of check_workspace, sharing one FileIndex so no image folder is listed twice."""

    def __init__(self, workspace: Workspace, lights: tuple[str, ...], image_ext: str) -> None:
        self.workspace = workspace
        self.lights = lights
        self.image_ext = image_ext
        self.files = FileIndex()
        self.has_images = self.files.is_dir(workspace.images_dir)
        # Loops met in the image root's own listing: no CSV path reached them (yet); a note, not a problem.
        self.root_loops = list(self.files.loops)

    def images_dir_problems(self) -> list[Problem]:
        if self.has_images:
            return []
        return [
            Problem(
                str(self.workspace.root),
                "has neither images/ nor kpi/images/ (the image root every CSV path is relative to)",
                f"put the images under {self.workspace.root / 'images'}",
            )
        ]

    def loop_problems(self) -> list[Problem]:
        """A symbolic-link loop on a path a CSV reaches: its rows' images can never be read."""
        return [
            Problem(
                loop,
                "is a symbolic-link loop (the link points back to itself), so the images below it cannot be read",
                "replace the link with the folder or file it should point to, or remove it",
            )
            for loop in self.files.loops
            if loop not in self.root_loops
        ]

    def dataset(self, name: str, mode: Mode, batch_size: int | None) -> tuple[DatasetCsv | None, list[Problem]]:
        try:
            dataset = read_dataset_csv(self.workspace.csv_path(name))
        except DatasetError as error:
            return None, list(error.problems)
        log = collect_dataset_problems(
            dataset,
            images_dir=self.workspace.images_dir,
            lights=self.lights,
            image_ext=self.image_ext,
            mode=mode,
            batch_size=batch_size,
            files=self.files if self.has_images else None,
        )
        problems = log.problems()
        if name != TRAINING and dataset.rows:
            metric_use = "FAR at the recall target is measured on it" if name == KPI else "AutoML scores FAR on it"
            problems += check_both_classes(dataset, why=f"{metric_use}, undefined without both classes")
        return dataset, problems

    def pool(self) -> tuple[ResolvedPool | None, list[Problem]]:
        if not self.workspace.mining_pool_csv.exists():
            return None, []
        try:
            pool = resolve_mining_pool(
                self.workspace.mining_pool_csv,
                images_root=self.workspace.images_dir,
                light=self.lights[0],
                image_ext=self.image_ext,
                files=self.files,
            )
        except DatasetError as error:
            return None, list(error.problems)
        return pool, []

    def leakage(
        self, datasets: dict[str, DatasetCsv], pool: ResolvedPool | None
    ) -> tuple[dict[tuple[str, str], int], list[Problem]]:
        keys = {
            name: sample_keys(
                CsvInRoot(dataset, self.workspace.images_dir), lights=self.lights, image_ext=self.image_ext
            )
            for name, dataset in datasets.items()
        }
        # The pool is resolved for one light, so it is compared on that light's files only.
        pool_light_keys = {
            name: keys[name]
            if len(self.lights) == 1
            else sample_keys(
                CsvInRoot(dataset, self.workspace.images_dir),
                lights=self.lights[:1],
                image_ext=self.image_ext,
            )
            for name, dataset in datasets.items()
        }
        available: dict[str, tuple[SampleKey | None, ...]] = dict(keys)
        if pool is not None:
            available[MINING_POOL] = pool_sample_keys(pool)
        counts: dict[tuple[str, str], int] = {}
        problems: list[Problem] = []
        for i, left in enumerate(SET_NAMES):
            for right in SET_NAMES[i + 1 :]:
                if left not in available or right not in available:
                    continue
                left_keys = pool_light_keys[left] if right == MINING_POOL else available[left]
                leaks = leaks_between(left_keys, available[right])
                counts[(left, right)] = len(leaks)
                problems += leak_problems(
                    leaks,
                    left_path=self.workspace.csv_path(left),
                    right_path=self.workspace.csv_path(right),
                    left_name=left,
                    right_name=right,
                )
        return counts, problems

    def notes(self, datasets: dict[str, DatasetCsv], pool: ResolvedPool | None) -> list[str]:
        notes = []
        if pool is None:
            notes.append(
                f"no mining pool at {self.workspace.mining_pool_csv}: the improvement loop needs one to mine "
                "real images"
            )
        elif KPI in datasets:
            pool_labels = set(pool.label_counts())
            absent = [label for label in datasets[KPI].label_counts() if is_defect(label) and label not in pool_labels]
            if absent:
                notes.append(
                    f"the mining pool has no rows of KPI defect type(s) {', '.join(absent)}: "
                    "mining cannot find real images of them"
                )
        notes += [f"{loop} is a symbolic-link loop (no CSV uses it): remove it" for loop in self.root_loops]
        if not self.workspace.spec_file.is_file():
            spec = self.workspace.spec_file
            notes.append(f"no baseline spec at {spec} (runs start from the built-in DEFT baseline spec)")
        return notes


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
