"""Assembly of each DEFT iteration's training set: SDG ingestion, the combined CSV, its provenance and its proof.

`ingest_sdg` turns an SDG output folder (AnomalyGen layout: `reconstructed_image/<T>+<A>_<idx>.png` paired by
file name with `original_image/`, `SDG_result.csv`, `allocation.json`) into Visual ChangeNet rows: it stages the
synthetic NG and its golden under the iteration's dataset images folder and refuses a shortfall against the
allocation or the result table, so no generated sample is ever dropped silently, while guardrail-blocked and
unpaired files are skipped and counted. `assemble` concatenates the previous training CSV (the base set in
image-root coordinates for iteration 1, prefixed once; the previous combined CSV in workspace coordinates
afterwards, never re-prefixed and never re-adding base rows) with the SDG and mined rows, normalises every
label and records one provenance row per combined row. `validate_merge` is the single check the state's
`data_merge` commit relies on: every image exists from the workspace root, labels follow the rule, and no
sample is shared with the validation or KPI set, compared on resolved files across coordinate systems; its
report is written even when it fails, as the evidence of the hard stop.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from aoi_pipeline.core.dataset import (
    IMAGE_SUFFIXES,
    PASS_LABEL,
    PATH_COLUMNS,
    REQUIRED_COLUMNS,
    DatasetCsv,
    FileIndex,
    ProblemLog,
    image_files,
    normalize_image_ext,
    normalize_label,
    normalize_lights,
    ordered_label_counts,
    read_csv_table,
    read_dataset_csv,
    write_dataset_csv,
)
from aoi_pipeline.core.dataset_validation import collect_dataset_problems
from aoi_pipeline.core.files import atomic_write_bytes, atomic_write_json
from aoi_pipeline.core.leakage import CsvInRoot, Leak, find_leaks, leak_problems
from aoi_pipeline.errors import DatasetError, LeakageError, Problem

# The SDG output layout (AnomalyGen's, reproduced by the reference runtime's `sdg` action).
RECONSTRUCTED_DIR = "reconstructed_image"
ORIGINAL_DIR = "original_image"
RESULT_CSV = "SDG_result.csv"
ALLOCATION_JSON = "allocation.json"
GUARDRAIL_COLUMN = "guardrail_pass"
FALLBACK_SDG_LABEL = "NG"
SDG_FILE = "sdg_file"
SDG_ROW_COLUMNS = (*REQUIRED_COLUMNS, SDG_FILE)
JPEG_QUALITY = 95

BASE_TRAIN, PREVIOUS_ITER_TRAIN, SDG, MINED = "base_train", "previous_iter_train", "sdg", "mined"
SOURCES = (BASE_TRAIN, PREVIOUS_ITER_TRAIN, SDG, MINED)
# Per-row facts of where a new row came from: they go into the provenance CSV, never into the training CSV.
PROVENANCE_FIELDS = ("target_row", "similarity", "pool_row", "pool_filepath", SDG_FILE)
PROVENANCE_COLUMNS = ("row", "source", "iteration", "origin", "origin_iteration", *PROVENANCE_FIELDS, *REQUIRED_COLUMNS)

MAX_LISTED_EXAMPLES = 10
MAX_REPORTED_PROBLEMS = 100

_SAMPLE_STEM = re.compile(r"(?P<texture>[^+]+)\+(?P<anomaly>.+)_(?P<index>\d+)")
_GUARDRAIL_PASSED = frozenset({"1", "1.0", "true", "yes"})
_GUARDRAIL_BLOCKED = frozenset({"0", "0.0", "false", "no"})
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
_RERUN_FIX = "re-run SDG into a new output folder; a generated sample must never be dropped silently"


# ---------------------------------------------------------------------------------------------------------
# SDG ingestion


@dataclass(frozen=True)
class SdgIngest:
    """The ChangeNet rows made from one SDG output folder, and what was skipped on the way.

    `rows` are in workspace coordinates with columns `SDG_ROW_COLUMNS`; `paired` counts file pairs found
    (guardrail-blocked ones included); `skipped_unpaired` and `skipped_guardrail` name the files left out,
    relative to the SDG folder; `labels` counts the rows per label; `allocation` is allocation.json as read;
    `generated` counts pairs per label; `converted` counts pairs re-encoded to the spec's image format.
    """

    rows: tuple[dict[str, str], ...]
    paired: int
    skipped_unpaired: tuple[str, ...]
    labels: dict[str, int]
    skipped_guardrail: tuple[str, ...] = ()
    allocation: dict[str, int] = field(default_factory=dict)
    generated: dict[str, int] = field(default_factory=dict)
    converted: int = 0

    def summary(self) -> dict[str, Any]:
        """The JSON-ready ingest summary (requested allocation vs generated vs ingested, by label)."""
        return {
            "allocated_count": sum(self.allocation.values()),
            "paired_count": self.paired,
            "ingested_count": len(self.rows),
            "skipped_unpaired_count": len(self.skipped_unpaired),
            "skipped_unpaired_examples": list(self.skipped_unpaired[:MAX_LISTED_EXAMPLES]),
            "skipped_guardrail_count": len(self.skipped_guardrail),
            "skipped_guardrail_examples": list(self.skipped_guardrail[:MAX_LISTED_EXAMPLES]),
            "converted_count": self.converted,
            "allocation": dict(self.allocation),
            "generated": dict(self.generated),
            "labels": dict(self.labels),
        }


@dataclass(frozen=True)
class _StagedPair:
    name: str
    object_name: str
    label: str


def ingest_sdg(
    sdg_dir: Path,
    *,
    workspace_root: Path,
    dataset_images_dir: Path,
    subdir: str,
    light: str,
    image_ext: str,
) -> SdgIngest:
    """Stage the SDG pairs as `<dataset_images_dir>/<subdir>_{ng,ok}/<object_name>_<light><ext>` and return rows.

    Pairs are matched by identical file name; the label is `<A>` of `<T>+<A>_<idx>` (else NG), normalised;
    the object_name is the file stem. Files are copied, or re-encoded (JPEG at quality 95) when `image_ext`
    names another format. Rows blocked by the guardrail (`guardrail_pass` 0: black images) and files without a
    partner are skipped and counted. Any SDG_result row without its pair, or fewer pairs of a type than
    allocation.json asks for, raises DatasetError before anything is written; re-running the same ingest
    rewrites the same files (resume), while other files already in the staging folders are refused.
    """
    (light,) = normalize_lights((light,))
    ext = normalize_image_ext(image_ext)
    image_format = _pil_format(ext)
    _check_subdir(subdir)
    sdg_dir = _absolute(sdg_dir)
    workspace_root = _absolute(workspace_root)
    dataset_images_dir = _absolute(dataset_images_dir)
    ng_dir, ok_dir = dataset_images_dir / f"{subdir}_ng", dataset_images_dir / f"{subdir}_ok"
    ng_path = _workspace_relative(ng_dir, workspace_root, "dataset_images_dir") + "/"
    ok_path = _workspace_relative(ok_dir, workspace_root, "dataset_images_dir") + "/"

    reconstructed = _image_names(sdg_dir / RECONSTRUCTED_DIR)
    originals = _image_names(sdg_dir / ORIGINAL_DIR)
    paired = sorted(reconstructed & originals)
    unpaired = [f"{RECONSTRUCTED_DIR}/{name}" for name in sorted(reconstructed - originals)]
    unpaired += [f"{ORIGINAL_DIR}/{name}" for name in sorted(originals - reconstructed)]
    allocation = _read_allocation(sdg_dir / ALLOCATION_JSON)
    blocked = _check_sdg_results(sdg_dir / RESULT_CSV, set(paired))

    log = ProblemLog(sdg_dir)
    pairs = [_StagedPair(name, Path(name).stem, _sdg_label(Path(name).stem)) for name in paired]
    generated = ordered_label_counts(pair.label for pair in pairs)
    _check_allocation(sdg_dir, allocation, generated, log)
    kept = [pair for pair in pairs if pair.name not in blocked]
    _check_pairs(sdg_dir, kept, log)
    log.raise_if_any(summary=f"{sdg_dir}: the SDG output cannot be ingested")

    def target(folder: Path, pair: _StagedPair) -> Path:
        return folder / f"{pair.object_name}_{light}{ext}"

    for folder in (ng_dir, ok_dir):
        _refuse_foreign_files(folder, {target(folder, pair).name for pair in kept})
    jobs = [
        (sdg_dir / side / pair.name, target(folder, pair))
        for pair in kept
        for side, folder in ((RECONSTRUCTED_DIR, ng_dir), (ORIGINAL_DIR, ok_dir))
    ]
    converted = _stage_files(jobs, image_format, (ng_dir, ok_dir))
    rows = tuple(
        {
            "input_path": ng_path,
            "golden_path": ok_path,
            "label": pair.label,
            "object_name": pair.object_name,
            SDG_FILE: _display_path(sdg_dir / RECONSTRUCTED_DIR / pair.name, workspace_root),
        }
        for pair in kept
    )
    return SdgIngest(
        rows=rows,
        paired=len(paired),
        skipped_unpaired=tuple(unpaired),
        labels=ordered_label_counts(row["label"] for row in rows),
        skipped_guardrail=tuple(f"{RECONSTRUCTED_DIR}/{name}" for name in paired if name in blocked),
        allocation=allocation,
        generated=generated,
        converted=converted // 2,
    )


def _absolute(path: Path | str) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def _check_subdir(subdir: str) -> None:
    if not isinstance(subdir, str) or not subdir.strip() or subdir != subdir.strip() or re.search(r"[/\\]", subdir):
        raise DatasetError.at(
            "subdir",
            f"{subdir!r} is not a plain folder name",
            "give a name such as synthetic_iter1 (no slashes or surrounding spaces)",
        )


def _pil_format(ext: str) -> str:
    image_format = Image.registered_extensions().get(ext.lower())
    if ext.lower() not in IMAGE_SUFFIXES or image_format is None:
        raise DatasetError.at(
            "image_ext (dataset.classify.image_ext)",
            f"'{ext}' is not an image format the staged SDG images can be written in",
            f"use one of {', '.join(sorted(IMAGE_SUFFIXES))}",
        )
    return image_format


def _workspace_relative(path: Path, workspace_root: Path, name: str) -> str:
    """`path` relative to the workspace root (POSIX); DatasetError when it lies outside."""
    for inner, root in ((path, workspace_root), (path.resolve(), workspace_root.resolve())):
        try:
            return inner.relative_to(root).as_posix()
        except ValueError:
            continue
    raise DatasetError.at(
        f"{name} ({path})",
        f"lies outside the workspace root {workspace_root}, so the combined CSV cannot point at it",
        "stage the SDG images inside the workspace (the run's iterN/dataset/images folder)",
    )


def _display_path(path: Path, workspace_root: Path) -> str:
    try:
        return path.relative_to(workspace_root).as_posix()
    except ValueError:
        return path.as_posix()


def _image_names(folder: Path) -> set[str]:
    if not folder.is_dir():
        raise DatasetError.at(
            str(folder),
            "the SDG output folder is missing",
            f"give the SDG output folder holding {RECONSTRUCTED_DIR}/, {ORIGINAL_DIR}/ and {RESULT_CSV}",
        )
    return {
        entry.name
        for entry in folder.iterdir()
        if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_SUFFIXES
    }


def _sdg_label(stem: str) -> str:
    match = _SAMPLE_STEM.fullmatch(stem)
    return normalize_label(match["anomaly"] if match else FALLBACK_SDG_LABEL)


def _read_allocation(path: Path) -> dict[str, int]:
    fix = "write allocation.json as {defect_type: count} beside the SDG outputs (it is the proof of what was asked)"
    if not path.is_file():
        raise DatasetError.at(str(path), "allocation.json is missing", fix)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError.at(str(path), f"cannot be read as JSON ({error})", fix) from None
    valid = isinstance(raw, dict) and all(
        isinstance(key, str) and key.strip() and isinstance(count, int) and not isinstance(count, bool) and count >= 0
        for key, count in raw.items()
    )
    if not valid:
        raise DatasetError.at(str(path), f"{raw!r} is not a mapping of defect type to a count >= 0", fix)
    return dict(raw)


def _check_sdg_results(path: Path, paired: set[str]) -> set[str]:
    """Names the guardrail blocked; DatasetError for a result row whose sample is not a complete pair."""
    table = read_csv_table(path, required_columns=("image",), allow_bom=True, role="SDG result CSV")
    log = ProblemLog(path)
    blocked: set[str] = set()
    has_guardrail = GUARDRAIL_COLUMN in table.columns
    for number, row in enumerate(table.rows, start=1):
        name = PurePosixPath(row["image"].strip().replace("\\", "/")).name
        if name not in paired:
            log.add(
                "generated samples without a pair",
                Problem(
                    f"{path}: row {number}, column image",
                    f"lists '{row['image']}', but {RECONSTRUCTED_DIR}/{name} and {ORIGINAL_DIR}/{name} "
                    "are not both present",
                    _RERUN_FIX,
                ),
            )
        if not has_guardrail:
            continue
        verdict = row[GUARDRAIL_COLUMN].strip().lower()
        if verdict in _GUARDRAIL_BLOCKED:
            blocked.add(name)
        elif verdict not in _GUARDRAIL_PASSED:
            log.add(
                "unreadable guardrail verdicts",
                Problem(
                    f"{path}: row {number}, column {GUARDRAIL_COLUMN}",
                    f"{row[GUARDRAIL_COLUMN]!r} is neither 1 (passed) nor 0 (blocked)",
                    "write 1 or 0",
                ),
            )
    log.raise_if_any(summary=f"{path}: the SDG result table does not match the generated files")
    return blocked


def _check_allocation(
    sdg_dir: Path, allocation: Mapping[str, int], generated: Mapping[str, int], log: ProblemLog
) -> None:
    """Every allocated defect type must have at least as many generated pairs (labels compared normalised)."""
    allocated: Counter[str] = Counter()
    for key, count in allocation.items():
        # AnomalyGen keys are `<T>+<A>` like its file names; the procedural SDG's are bare defect types.
        allocated[normalize_label(key.partition("+")[2] or key)] += count
    for label, count in allocated.items():
        made = generated.get(label, 0)
        if made < count:
            log.add(
                "allocation shortfalls",
                Problem(
                    f"{sdg_dir / ALLOCATION_JSON}: {label}",
                    f"{count} samples were allocated but only {made} pairs were generated",
                    _RERUN_FIX,
                ),
            )


def _check_pairs(sdg_dir: Path, pairs: Sequence[_StagedPair], log: ProblemLog) -> None:
    seen: dict[str, str] = {}
    for pair in pairs:
        where = f"{sdg_dir / RECONSTRUCTED_DIR / pair.name}"
        if pair.label == PASS_LABEL:
            log.add(
                "synthetic samples labelled PASS",
                Problem(where, "the file name gives the defect type PASS", "name synthetic defects <T>+<defect>_<idx>"),
            )
        first = seen.setdefault(pair.object_name, pair.name)
        if first != pair.name:
            log.add(
                "synthetic samples with the same stem",
                Problem(where, f"has the same stem as {first}, so both would stage to one file", "keep one of them"),
            )


def _refuse_foreign_files(folder: Path, expected: set[str]) -> None:
    if not folder.is_dir():
        return
    # A run killed mid-write may leave a hidden temporary file of the atomic writer: harmless, not foreign.
    foreign = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name not in expected and not (entry.name.startswith(".") and entry.name.endswith(".tmp"))
    )
    if foreign:
        raise DatasetError.at(
            str(folder),
            f"already holds {len(foreign)} file(s) of another SDG ingest (e.g. {foreign[0]})",
            "stage into the iteration's own fresh dataset folder, or delete the stale files first",
        )


def _stage_files(jobs: Sequence[tuple[Path, Path]], image_format: str, folders: Sequence[Path]) -> int:
    """Copy or re-encode every (source, destination); on any failure remove what this call created."""
    created_dirs = [folder for folder in folders if not folder.exists()]
    created: list[Path] = []
    converted = 0
    try:
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        for source, destination in jobs:
            same_format = Image.registered_extensions().get(source.suffix.lower()) == image_format
            data = source.read_bytes() if same_format else _encoded(source, image_format)
            converted += not same_format
            existed = destination.exists()
            atomic_write_bytes(destination, data)
            if not existed:
                created.append(destination)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        for folder in reversed(created_dirs):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return converted


def _encoded(source: Path, image_format: str) -> bytes:
    buffer = io.BytesIO()
    try:
        with Image.open(source) as image:
            if image_format == "JPEG":
                image.convert("L" if image.mode in _GREY_MODES else "RGB").save(
                    buffer, format="JPEG", quality=JPEG_QUALITY
                )
            else:
                image.save(buffer, format=image_format)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DatasetError.at(
            str(source),
            f"cannot be converted to {image_format} ({error})",
            "check the SDG output image, or set image_ext to its own format",
        ) from None
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------
# Assembly of the combined training CSV


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
    entries: list[tuple[dict[str, str], dict[str, str]]] = []
    for row, origin in zip(previous.rows, carried, strict=True):
        data = dict(row)
        data["label"] = normalize_label(data.get("label", ""))
        if not previous_in_workspace_coordinates:
            for column in PATH_COLUMNS:
                data[column] = _prefixed(data.get(column, ""), prefix)
        entries.append((data, {"source": source, **origin}))
    new_columns: list[str] = []
    for new_source, rows in ((SDG, sdg_rows), (MINED, mined_rows)):
        for index, raw in enumerate(rows, start=1):
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
    provenance = tuple(
        {
            "row": str(number),
            "source": facts["source"],
            "iteration": str(iteration),
            **{column: facts.get(column, "") for column in ("origin", "origin_iteration", *PROVENANCE_FIELDS)},
            **{column: row[column] for column in REQUIRED_COLUMNS},
        }
        for number, (row, (_, facts)) in enumerate(zip(rows, kept, strict=True), start=1)
    )
    return Assembly(columns=columns, rows=rows, provenance=provenance, dropped_duplicates=tuple(dropped))


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
    if _absolute(combined_csv) == _absolute(provenance_csv):
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


# ---------------------------------------------------------------------------------------------------------
# Merge validation


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
    combined_csv = _absolute(combined_csv)
    workspace_root = _absolute(workspace_root)
    report: dict[str, Any] = {
        "status": "failed",
        "rows_checked": 0,
        "missing_file_count": None,
        "train_val_leakage_overlap_count": None,
        "train_kpi_leakage_overlap_count": None,
        "validation_csv": str(_absolute(validation.csv.path)),
        "kpi_csv": str(_absolute(kpi.csv.path)),
        "combined_csv": str(combined_csv),
        "workspace_root": str(workspace_root),
        "problem_count": 0,
        "problems": [],
    }
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
    if val_leaks or kpi_leaks:
        raise LeakageError(
            problems,
            summary=(
                f"{combined_csv}: {report['train_val_leakage_overlap_count']} rows share a sample with the "
                f"validation set, {report['train_kpi_leakage_overlap_count']} with the KPI set"
            ),
        )
    if problems:
        raise DatasetError(problems, summary=f"{combined_csv}: the combined training CSV is invalid")
    return report


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
