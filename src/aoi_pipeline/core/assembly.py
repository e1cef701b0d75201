"""Assembly of each DEFT iteration's training set: the combined CSV and one provenance row per combined row.

`assemble` concatenates the previous training CSV (the base set in image-root coordinates for iteration 1,
prefixed once; the previous combined CSV in workspace coordinates afterwards, never re-prefixed and never
re-adding base rows) with the SDG rows (`sdg_ingest.ingest_sdg`) and the mined rows (`mining.mined_rows`),
normalises every label and records where each combined row came from. `write_assembly` writes both CSVs and
`read_provenance` reads a provenance CSV back, so the next iteration carries each row's origin forward. The
combined CSV is then checked by `merge_validation.validate_merge` before the state commits it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from aoi_pipeline.core.dataset import (
    PATH_COLUMNS,
    REQUIRED_COLUMNS,
    DatasetCsv,
    ProblemLog,
    normalize_label,
    read_csv_table,
    write_dataset_csv,
)
from aoi_pipeline.core.files import absolute_path
from aoi_pipeline.core.sdg_ingest import SDG_FILE
from aoi_pipeline.errors import DatasetError, Problem

BASE_TRAIN, PREVIOUS_ITER_TRAIN, SDG, MINED = "base_train", "previous_iter_train", "sdg", "mined"
SOURCES = (BASE_TRAIN, PREVIOUS_ITER_TRAIN, SDG, MINED)
# Per-row facts of where a new row came from: they go into the provenance CSV, never into the training CSV.
PROVENANCE_FIELDS = ("target_row", "similarity", "pool_row", "pool_filepath", SDG_FILE)
PROVENANCE_COLUMNS = ("row", "source", "iteration", "origin", "origin_iteration", *PROVENANCE_FIELDS, *REQUIRED_COLUMNS)


@dataclass(frozen=True)
class Assembly:
    """The combined training CSV of one iteration, one provenance row per combined row (same order).

    `dropped_duplicates` lists new rows left out because the same sample (same directories and object_name)
    already is in the training set; each names its source, its 1-based index within that source and the
    combined row it duplicates.
    """

    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]
    provenance: tuple[dict[str, str], ...]
    dropped_duplicates: tuple[dict[str, str], ...] = ()

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.provenance):
            raise ValueError(f"{len(self.rows)} rows but {len(self.provenance)} provenance rows")

    def source_counts(self) -> dict[str, int]:
        """Combined rows per source, in `SOURCES` order (sources without rows left out)."""
        counts = Counter(row["source"] for row in self.provenance)
        return {source: counts[source] for source in SOURCES if counts[source]}


def assemble(
    *,
    iteration: int,
    previous: DatasetCsv,
    previous_in_workspace_coordinates: bool,
    sdg_rows: Sequence[Mapping[str, Any]],
    mined_rows: Sequence[Mapping[str, Any]],
    images_prefix: str = "images",
    previous_provenance: Sequence[Mapping[str, str]] | None = None,
) -> Assembly:
    """Previous training rows (unchanged, first), then SDG rows, then mined rows, with provenance.

    Iteration 1 starts from the base training CSV (image-root coordinates): its paths get `images_prefix`
    prepended exactly once and its rows the source `base_train`. Later iterations start from the previous
    combined CSV (workspace coordinates, `previous_in_workspace_coordinates=True`): no prefix, no base rows
    re-added, source `previous_iter_train`; its provenance, when given, carries each row's origin forward.
    SDG and mined rows are already in workspace coordinates; their `PROVENANCE_FIELDS` (`target_row`,
    `similarity`, `pool_row`, `pool_filepath`, `sdg_file`) go to the provenance only. Labels are normalised on
    every source. A new row repeating a sample already in the set is dropped and listed. Columns: the
    required four, the previous CSV's extras, then new ones.
    """
    _check_iteration(iteration, previous_in_workspace_coordinates, previous)
    prefix = _checked_prefix(images_prefix)
    log = ProblemLog("assembly")
    source = PREVIOUS_ITER_TRAIN if previous_in_workspace_coordinates else BASE_TRAIN
    carried = _carried_provenance(previous, previous_provenance, source, log)
    entries = _previous_entries(previous, carried, source, None if previous_in_workspace_coordinates else prefix)
    new_columns: list[str] = []
    for new_source, source_rows in ((SDG, sdg_rows), (MINED, mined_rows)):
        for index, raw in enumerate(source_rows, start=1):
            split = _split_new_row(raw, new_source, index, log)
            if split is None:
                continue
            data, facts = split
            new_columns.extend(column for column in data if column not in new_columns)
            origin = {"origin": new_source, "origin_iteration": str(iteration), **facts}
            entries.append((data, {"source": new_source, **origin, "_index": str(index)}))
    log.raise_if_any(summary="the iteration's training rows cannot be assembled")
    kept, dropped = _without_duplicate_samples(entries, len(previous.rows))
    extras = [column for column in previous.columns if column not in REQUIRED_COLUMNS]
    columns = (*REQUIRED_COLUMNS, *extras)
    columns += tuple(column for column in new_columns if column not in columns)
    rows = tuple({column: data.get(column, "") for column in columns} for data, _ in kept)
    provenance = _provenance_rows(rows, [facts for _, facts in kept], iteration)
    return Assembly(columns=columns, rows=rows, provenance=provenance, dropped_duplicates=tuple(dropped))


def _previous_entries(
    previous: DatasetCsv, carried: Sequence[Mapping[str, str]], source: str, prefix: str | None
) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(training columns, provenance facts) of every previous row: labels normalised, paths get `prefix` if any."""
    entries = []
    for row, origin in zip(previous.rows, carried, strict=True):
        data = dict(row)
        data["label"] = normalize_label(data.get("label", ""))
        if prefix is not None:
            for column in PATH_COLUMNS:
                data[column] = _prefixed(data.get(column, ""), prefix)
        entries.append((data, {"source": source, **origin}))
    return entries


def _provenance_rows(
    rows: Sequence[Mapping[str, str]], facts: Sequence[Mapping[str, str]], iteration: int
) -> tuple[dict[str, str], ...]:
    """One provenance row per combined row: its number, source and origin facts, and its four CSV columns."""
    return tuple(
        {
            "row": str(number),
            "source": row_facts["source"],
            "iteration": str(iteration),
            **{column: row_facts.get(column, "") for column in ("origin", "origin_iteration", *PROVENANCE_FIELDS)},
            **{column: row[column] for column in REQUIRED_COLUMNS},
        }
        for number, (row, row_facts) in enumerate(zip(rows, facts, strict=True), start=1)
    )


def _check_iteration(iteration: int, in_workspace: bool, previous: DatasetCsv) -> None:
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 1:
        raise DatasetError.at("iteration", f"{iteration!r} is not an iteration number >= 1", "give 1, 2, ...")
    if iteration == 1 and in_workspace:
        raise DatasetError.at(
            f"assembly of iter1 ({previous.path})",
            "the previous CSV is declared in workspace coordinates, but iteration 1 starts from the base "
            "training CSV (paths relative to the image root)",
            "pass train/base/training_set.csv with previous_in_workspace_coordinates=False",
        )
    if iteration > 1 and not in_workspace:
        raise DatasetError.at(
            f"assembly of iter{iteration} ({previous.path})",
            "the previous CSV is declared in image-root coordinates, which would re-add the base rows",
            f"pass iter{iteration - 1}'s combined CSV with previous_in_workspace_coordinates=True",
        )


def _checked_prefix(images_prefix: str) -> str:
    prefix = images_prefix.strip().strip("/") if isinstance(images_prefix, str) else ""
    parts = PurePosixPath(prefix).parts
    if not prefix or "\\" in prefix or PurePosixPath(prefix).is_absolute() or ".." in parts or "." in parts:
        raise DatasetError.at(
            "images_prefix",
            f"{images_prefix!r} is not the image root relative to the workspace",
            "give 'images' (or 'kpi/images' for a legacy workspace)",
        )
    return prefix


def _prefixed(path: str, prefix: str) -> str:
    # Empty and absolute paths stay as they are, so validation reports them instead of hiding them.
    if not path.strip() or PurePosixPath(path).is_absolute():
        return path
    return f"{prefix}/{path}"


def _carried_provenance(
    previous: DatasetCsv,
    previous_provenance: Sequence[Mapping[str, str]] | None,
    source: str,
    log: ProblemLog,
) -> list[dict[str, str]]:
    """Origin facts per previous row: base rows are their own origin; later rows take the previous file's."""
    if source == BASE_TRAIN:
        return [{"origin": BASE_TRAIN, "origin_iteration": "0"} for _ in previous.rows]
    if previous_provenance is None:
        return [{} for _ in previous.rows]
    where = f"previous provenance of {previous.path}"
    if len(previous_provenance) != len(previous.rows):
        raise DatasetError.at(
            where,
            f"has {len(previous_provenance)} rows for the {len(previous.rows)} rows of the previous CSV",
            "pass the provenance CSV written with that combined CSV",
        )
    carried = []
    for number, (row, facts) in enumerate(zip(previous.rows, previous_provenance, strict=True), start=1):
        differing = [column for column in REQUIRED_COLUMNS if facts.get(column, row[column]) != row[column]]
        if differing:
            log.add(
                "provenance rows not aligned",
                Problem(
                    f"{where}: row {number}",
                    f"{', '.join(differing)} differ from the combined CSV's row {number}",
                    "pass the provenance CSV written with that combined CSV",
                ),
            )
        carried.append(
            {
                "origin": facts.get("origin") or facts.get("source", ""),
                "origin_iteration": facts.get("origin_iteration", ""),
                **{column: facts.get(column, "") for column in PROVENANCE_FIELDS},
            }
        )
    return carried


def _split_new_row(
    raw: Mapping[str, Any], source: str, index: int, log: ProblemLog
) -> tuple[dict[str, str], dict[str, str]] | None:
    """(training columns, provenance facts) of one SDG or mined row, or None after logging its problems."""
    where = f"{source} row {index}"
    missing = [column for column in REQUIRED_COLUMNS if column not in raw]
    not_text = sorted(
        str(column) for column, value in raw.items() if column not in PROVENANCE_FIELDS and not isinstance(value, str)
    )
    if missing or not_text:
        what = []
        if missing:
            what.append(f"lacks column(s) {', '.join(missing)}")
        if not_text:
            what.append(f"has non-text value(s) in {', '.join(not_text)}")
        log.add(
            f"malformed {source} rows",
            Problem(where, f"{' and '.join(what)}: {dict(raw)!r}", "give every row the four CSV columns as text"),
        )
        return None
    data = {str(column): value for column, value in raw.items() if column not in PROVENANCE_FIELDS}
    data["label"] = normalize_label(data["label"])
    facts = {column: _cell(raw[column]) for column in PROVENANCE_FIELDS if column in raw}
    return data, facts


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _sample_id(row: Mapping[str, str]) -> tuple[str, str, str]:
    input_path, golden_path = (os.path.normpath(row.get(column, "").strip() or ".") for column in PATH_COLUMNS)
    return input_path, golden_path, row.get("object_name", "").strip()


def _without_duplicate_samples(
    entries: Sequence[tuple[dict[str, str], dict[str, str]]], previous_count: int
) -> tuple[list[tuple[dict[str, str], dict[str, str]]], list[dict[str, str]]]:
    """Drop new rows whose sample is already in the set; previous rows are never dropped."""
    first_row: dict[tuple[str, str, str], int] = {}
    kept: list[tuple[dict[str, str], dict[str, str]]] = []
    dropped: list[dict[str, str]] = []
    for position, (data, facts) in enumerate(entries):
        sample = _sample_id(data)
        index = facts.pop("_index", "")
        if position >= previous_count and sample in first_row:
            dropped.append(
                {
                    "source": facts["source"],
                    "index": index,
                    **{column: data[column] for column in REQUIRED_COLUMNS},
                    "duplicate_of_row": str(first_row[sample]),
                }
            )
            continue
        kept.append((data, facts))
        first_row.setdefault(sample, len(kept))
    return kept, dropped


def write_assembly(assembly: Assembly, *, combined_csv: Path, provenance_csv: Path) -> None:
    """Write the combined CSV and its provenance CSV (each atomically; the combined CSV first)."""
    if absolute_path(combined_csv) == absolute_path(provenance_csv):
        raise DatasetError.at(
            str(combined_csv),
            "the combined CSV and the provenance CSV are the same file",
            "give two paths, e.g. train_combined_iterN.csv and train_combined_iterN_provenance.csv",
        )
    write_dataset_csv(Path(combined_csv), assembly.columns, assembly.rows)
    write_dataset_csv(Path(provenance_csv), PROVENANCE_COLUMNS, assembly.provenance)


def read_provenance(path: Path) -> tuple[dict[str, str], ...]:
    """The rows of a provenance CSV written by `write_assembly` (to carry origins into the next iteration)."""
    return read_csv_table(Path(path), required_columns=("source",), role="provenance CSV").rows
