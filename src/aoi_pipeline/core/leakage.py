"""Leakage between dataset CSVs: the same sample appearing in two sets that must stay disjoint.

Two rows are the same sample when they open the same image files, test side and golden side, for every
light. Each CSV comes with the root its paths are relative to (base CSVs are relative to the image root
`<ws>/images`, combined iteration CSVs to the workspace root, so their paths carry an `images/` prefix), and
both sides are turned into absolute, normalised file paths before comparing. The reference compares raw
path strings across the two coordinate systems, which can never match; comparing resolved files finds those
leaks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aoi_pipeline.core.dataset import (
    MAX_LISTED_PER_KIND,
    PATH_COLUMNS,
    DatasetCsv,
    normalize_image_ext,
    normalize_lights,
)
from aoi_pipeline.errors import DatasetError, LeakageError, Problem

SampleKey = tuple[str, ...]


@dataclass(frozen=True)
class CsvInRoot:
    """A dataset CSV together with the directory its paths are relative to."""

    csv: DatasetCsv
    root: Path


@dataclass(frozen=True)
class Leak:
    """One row of the left CSV that is the same sample as one row of the right CSV (1-based data rows)."""

    left_row: int
    right_row: int
    key: SampleKey


class FileKeys:
    """Turns (root, directory, file name) into an absolute file path, resolving each directory once."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self._directories: dict[str, str] = {}

    def file(self, directory: str, name: str) -> str:
        """The comparison form of `root/directory/name`."""
        resolved = self._directories.get(directory)
        if resolved is None:
            # resolve() makes `a/../b`, `a/b/` and symlinked image roots compare equal.
            try:
                resolved = str(Path(self.root, directory).resolve(strict=False))
            except (RuntimeError, OSError):  # a symbolic-link loop: the data check names it; compare unresolved
                resolved = os.path.abspath(os.path.join(self.root, directory))
            self._directories[directory] = resolved
        return os.path.normpath(os.path.join(resolved, name))

    def key(self, row: Mapping[str, str], lights: Sequence[str], image_ext: str) -> SampleKey | None:
        """The sample key of a row, or None when a path or the object_name is empty."""
        cells = [row.get(column, "").strip() for column in (*PATH_COLUMNS, "object_name")]
        if not all(cells):
            return None
        object_name = cells[2]
        return tuple(
            self.file(directory, f"{object_name}_{light}{image_ext}") for directory in cells[:2] for light in lights
        )


def sample_key(row: Mapping[str, str], *, root: Path, lights: Sequence[str], image_ext: str) -> SampleKey:
    """The absolute image files of a row: test side for every light, then golden side for every light."""
    key = FileKeys(root).key(row, normalize_lights(lights), normalize_image_ext(image_ext))
    if key is None:
        raise DatasetError.at(
            "leakage key",
            f"row {dict(row)!r} has an empty input_path, golden_path or object_name",
            "validate the CSV first (validate_dataset)",
        )
    return key


def sample_keys(source: CsvInRoot, *, lights: Sequence[str], image_ext: str) -> tuple[SampleKey | None, ...]:
    """The sample key of every row of a CSV; None for rows lacking a path or object_name (never a leak)."""
    names = normalize_lights(lights)
    ext = normalize_image_ext(image_ext)
    keys = FileKeys(source.root)
    return tuple(keys.key(row, names, ext) for row in source.csv.rows)


def leaks_between(left: Sequence[SampleKey | None], right: Sequence[SampleKey | None]) -> list[Leak]:
    """Every (left row, right row) pair with equal keys, in left-row then right-row order."""
    right_rows: dict[SampleKey, list[int]] = {}
    for number, key in enumerate(right, start=1):
        if key is not None:
            right_rows.setdefault(key, []).append(number)
    return [
        Leak(left_row=number, right_row=other, key=key)
        for number, key in enumerate(left, start=1)
        if key is not None
        for other in right_rows.get(key, ())
    ]


def find_leaks(left: CsvInRoot, right: CsvInRoot, *, lights: Sequence[str], image_ext: str) -> list[Leak]:
    """Every pair of rows, one from each CSV, that open the same image files."""
    return leaks_between(
        sample_keys(left, lights=lights, image_ext=image_ext),
        sample_keys(right, lights=lights, image_ext=image_ext),
    )


def leak_problems(
    leaks: Sequence[Leak], *, left_path: Path, right_path: Path, left_name: str, right_name: str
) -> list[Problem]:
    """One problem per leak (the first MAX_LISTED_PER_KIND), then a count line for the rest."""
    fix = f"remove the sample from {left_name} or from {right_name}: a sample may belong to only one of them"
    problems = [
        Problem(
            f"{left_path}: row {leak.left_row}",
            f"same sample as {right_name} row {leak.right_row} ({right_path}): both open {leak.key[0]}",
            fix,
        )
        for leak in leaks[:MAX_LISTED_PER_KIND]
    ]
    if len(leaks) > MAX_LISTED_PER_KIND:
        problems.append(
            Problem(
                str(left_path),
                f"{len(leaks) - MAX_LISTED_PER_KIND} more samples shared with {right_name} not listed "
                f"({len(leaks)} in all)",
                fix,
            )
        )
    return problems


def assert_no_leakage(
    left: CsvInRoot,
    right: CsvInRoot,
    *,
    lights: Sequence[str],
    image_ext: str,
    left_name: str,
    right_name: str,
) -> None:
    """Raise LeakageError listing the shared rows when any sample of `left` is also in `right`."""
    leaks = find_leaks(left, right, lights=lights, image_ext=image_ext)
    if leaks:
        raise LeakageError(
            leak_problems(
                leaks,
                left_path=left.csv.path,
                right_path=right.csv.path,
                left_name=left_name,
                right_name=right_name,
            ),
            summary=f"{len(leaks)} samples of {left_name} are also in {right_name}",
        )


def content_key(row: Mapping[str, str], *, root: Path, lights: Sequence[str], image_ext: str) -> str:
    """sha256 of the test-side image bytes over every light: equal for byte-identical copies elsewhere."""
    digest = hashlib.sha256()
    names = normalize_lights(lights)
    ext = normalize_image_ext(image_ext)
    for light in names:
        image = Path(root, row["input_path"], f"{row['object_name']}_{light}{ext}")
        try:
            data = image.read_bytes()
        except OSError as error:
            raise DatasetError.at(
                str(image),
                f"cannot read the test image ({error.strerror or error})",
                "check input_path, object_name, the light names and image_ext of the row",
            ) from None
        # The length prefix keeps (ab, c) and (a, bc) from hashing alike across lights.
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()
