"""Resolution of the production mining pool: every pool row pinned to exactly one existing image file.

The pool CSV (`augmentation/mining_pool/mining_pool.csv`) carries a `label` and a path in `filepath`,
`input_path` or `image_path` (first non-empty one wins), optionally `object_name` and `golden_path`. A path
may be absolute, relative to the CSV's folder or relative to the images root (with or without a leading
`images/`), and may name the file itself or the directory holding `<object_name>_<light><ext>`. A row
resolves when exactly one distinct existing file matches; none (missing) or several (ambiguous) is an
error, and so is a missing or empty pool: the improvement loop stops rather than guess. The result adds
`filepath` and `golden_filepath` relative to the images root (absolute when outside it), the only
coordinates downstream stages use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aoi_pipeline.core.dataset import (
    FileIndex,
    ProblemLog,
    normalize_image_ext,
    normalize_lights,
    ordered_label_counts,
    read_csv_table,
    write_dataset_csv,
)
from aoi_pipeline.core.leakage import FileKeys, SampleKey
from aoi_pipeline.errors import DatasetError, Problem

POOL_PATH_COLUMNS = ("filepath", "input_path", "image_path")
RESOLVED_COLUMNS = ("filepath", "golden_filepath")
_STRIPPED_PREFIX = "images"


@dataclass(frozen=True)
class ResolvedPool:
    """The pool's rows with `filepath` and `golden_filepath` (empty without a golden) added."""

    source_csv: Path
    images_root: Path
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]

    def label_counts(self) -> dict[str, int]:
        """Rows per label, PASS first then defects by count (descending)."""
        return ordered_label_counts(row.get("label", "") for row in self.rows)


def resolve_mining_pool(
    csv_path: Path,
    *,
    images_root: Path,
    light: str = "SolderLight",
    image_ext: str = ".jpg",
    files: FileIndex | None = None,
) -> ResolvedPool:
    """Pin every pool row to one test file (and one golden file when `golden_path` is set).

    Raises one DatasetError for a missing pool, a pool without rows, or any missing or ambiguous row
    (the first rows of each kind listed, all counted). A shared `files` index avoids listing folders twice.
    """
    (light,) = normalize_lights((light,))
    ext = normalize_image_ext(image_ext)
    csv_path = Path(csv_path)
    table = read_csv_table(csv_path, required_columns=("label",), allow_bom=True, role="mining pool CSV")
    path_columns = [column for column in POOL_PATH_COLUMNS if column in table.columns]
    if not path_columns:
        raise DatasetError.at(
            str(csv_path),
            f"has none of the path columns {', '.join(POOL_PATH_COLUMNS)} (header: {','.join(table.columns)!r})",
            "add a filepath column (the image file) or input_path + object_name (its directory and stem)",
        )
    if not table.rows:
        raise DatasetError.at(
            str(csv_path),
            "mining pool has a header but no rows",
            "add production images to the pool: the improvement loop mines real images from it",
        )
    resolver = _Resolver(csv_path, Path(images_root), light, ext, files or FileIndex())
    log = ProblemLog(csv_path)
    rows = []
    first_row_of: dict[tuple[str, str], int] = {}
    for number, row in enumerate(table.rows, start=1):
        resolved = resolver.resolve_row(number, row, path_columns, log)
        if resolved is None:
            continue
        # As in the KPI set, a sample listed twice would be mined (and weighted) twice.
        sample = (os.path.realpath(resolver.absolute(resolved["filepath"])), resolved["golden_filepath"])
        if (first := first_row_of.setdefault(sample, number)) != number:
            log.add(
                "duplicate rows",
                Problem(
                    f"{csv_path}: row {number}",
                    f"duplicates row {first} (the same test image {resolved['filepath']!r})",
                    "list each pool image once: delete the duplicate row",
                ),
            )
            continue
        rows.append(resolved)
    log.raise_if_any(summary=f"mining pool {csv_path}: {log.total} rows are refused")
    columns = table.columns + tuple(column for column in RESOLVED_COLUMNS if column not in table.columns)
    return ResolvedPool(source_csv=csv_path, images_root=Path(images_root), columns=columns, rows=tuple(rows))


def write_resolved_pool(pool: ResolvedPool, path: Path) -> None:
    """Write the resolved pool CSV atomically (all original columns plus filepath, golden_filepath)."""
    write_dataset_csv(path, pool.columns, pool.rows)


def pool_sample_keys(pool: ResolvedPool) -> tuple[SampleKey | None, ...]:
    """Leakage keys of the pool rows, comparable with `leakage.sample_keys` for the pool's single light.

    Rows without a golden file get None: a sample is the (test, golden) pair, so they cannot be matched.
    """
    files = FileKeys(pool.images_root)
    keys: list[SampleKey | None] = []
    for row in pool.rows:
        golden = row["golden_filepath"]
        test_key = files.file(*os.path.split(row["filepath"]))
        keys.append((test_key, files.file(*os.path.split(golden))) if golden else None)
    return tuple(keys)


class _Resolver:
    def __init__(self, csv_path: Path, images_root: Path, light: str, image_ext: str, files: FileIndex) -> None:
        self.csv_path = csv_path
        self.csv_dir = os.path.abspath(csv_path.parent)
        self.images_root = os.path.abspath(images_root)
        self.light = light
        self.image_ext = image_ext
        self.files = files

    def resolve_row(
        self, number: int, row: dict[str, str], path_columns: Sequence[str], log: ProblemLog
    ) -> dict[str, str] | None:
        object_name = row.get("object_name", "").strip()
        column = next((c for c in path_columns if row[c].strip()), None)
        if column is None:
            log.add(
                "rows without a path",
                Problem(
                    f"{self.csv_path}: row {number}",
                    f"has no path: {'/'.join(path_columns)} empty",
                    "give the image file (filepath) or its directory (input_path) with object_name",
                ),
            )
            return None
        test = self._resolve_cell(number, column, row[column].strip(), object_name, log)
        golden_value = row.get("golden_path", "").strip()
        golden = self._resolve_cell(number, "golden_path", golden_value, object_name, log) if golden_value else ""
        if test is None or golden is None:
            return None
        return {**row, "filepath": self._relative(test), "golden_filepath": golden and self._relative(golden)}

    def _resolve_cell(self, number: int, column: str, value: str, object_name: str, log: ProblemLog) -> str | None:
        candidates = self._candidates(value, object_name)
        found = self._distinct_files(candidates)
        where = f"{self.csv_path}: row {number}, column {column}"
        described = f"{column} '{value}'" + (f" with object_name '{object_name}'" if object_name else "")
        if len(found) == 1:
            return found[0]
        if not found:
            log.add(
                "rows with a missing file",
                Problem(
                    where,
                    f"{described} matches no existing file (tried {', '.join(candidates)})",
                    "point it at the image file, or at the directory holding "
                    f"<object_name>_{self.light}{self.image_ext}, relative to images_root "
                    f"{self.images_root}; check light and image_ext",
                ),
            )
        else:
            log.add(
                "rows matching several files",
                Problem(
                    where,
                    f"{described} matches {len(found)} distinct files ({', '.join(found)})",
                    f"make the path match exactly one file, e.g. relative to images_root {self.images_root}",
                ),
            )
        return None

    def _candidates(self, value: str, object_name: str) -> list[str]:
        if os.path.isabs(value):
            bases = [value]
        else:
            parts = PurePosixPath(value).parts
            bases = [os.path.join(self.csv_dir, value), os.path.join(self.images_root, value)]
            if len(parts) > 1 and parts[0] == _STRIPPED_PREFIX:
                bases.append(os.path.join(self.images_root, *parts[1:]))
        files = list(bases)
        if object_name:
            files += [os.path.join(base, f"{object_name}_{self.light}{self.image_ext}") for base in bases]
        return list(dict.fromkeys(os.path.normpath(file) for file in files))

    def _distinct_files(self, candidates: Sequence[str]) -> list[str]:
        existing = [candidate for candidate in candidates if self.files.is_file(candidate)]
        if len(existing) < 2:
            return existing
        # Two spellings of one file (a symlinked folder, csv_dir inside images_root) are one match.
        by_real_path = {os.path.realpath(file): file for file in reversed(existing)}
        return sorted(by_real_path.values(), key=existing.index)

    def absolute(self, file: str) -> str:
        """A resolved `filepath` back as an absolute path."""
        return file if os.path.isabs(file) else os.path.join(self.images_root, file)

    def _relative(self, file: str) -> str:
        prefix = os.path.join(self.images_root, "")
        return file[len(prefix) :] if file.startswith(prefix) else file
