"""SDG ingestion: the Visual ChangeNet rows of one SDG output folder, with its images staged in the workspace.

`ingest_sdg` turns an SDG output folder (AnomalyGen layout: `reconstructed_image/<T>+<A>_<idx>.png` paired by
file name with `original_image/`, `SDG_result.csv`, `allocation.json`) into Visual ChangeNet rows: it stages the
synthetic NG and its golden under the iteration's dataset images folder and refuses a shortfall against the
allocation or the result table, so no generated sample is ever dropped silently, while guardrail-blocked and
unpaired files are skipped and counted. The rows are in workspace coordinates and name their SDG file in
`sdg_file`, which the assembly moves into the provenance.
"""

from __future__ import annotations

import io
import json
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
    REQUIRED_COLUMNS,
    ProblemLog,
    normalize_image_ext,
    normalize_label,
    normalize_lights,
    ordered_label_counts,
    read_csv_table,
)
from aoi_pipeline.core.files import absolute_path, atomic_write_bytes
from aoi_pipeline.errors import DatasetError, Problem

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

MAX_LISTED_EXAMPLES = 10

_SAMPLE_STEM = re.compile(r"(?P<texture>[^+]+)\+(?P<anomaly>.+)_(?P<index>\d+)")
_GUARDRAIL_PASSED = frozenset({"1", "1.0", "true", "yes"})
_GUARDRAIL_BLOCKED = frozenset({"0", "0.0", "false", "no"})
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
_RERUN_FIX = "re-run SDG into a new output folder; a generated sample must never be dropped silently"


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
    sdg_dir = absolute_path(sdg_dir)
    workspace_root = absolute_path(workspace_root)
    dataset_images_dir = absolute_path(dataset_images_dir)
    ng_dir, ok_dir = dataset_images_dir / f"{subdir}_ng", dataset_images_dir / f"{subdir}_ok"
    ng_path = _workspace_relative(ng_dir, workspace_root, "dataset_images_dir") + "/"
    ok_path = _workspace_relative(ok_dir, workspace_root, "dataset_images_dir") + "/"
    output = _read_sdg_output(sdg_dir)
    staging = _Staging(ng_dir=ng_dir, ok_dir=ok_dir, light=light, ext=ext, image_format=image_format)
    converted = _stage_pairs(sdg_dir, output.kept, staging)
    rows = tuple(
        {
            "input_path": ng_path,
            "golden_path": ok_path,
            "label": pair.label,
            "object_name": pair.object_name,
            SDG_FILE: _display_path(sdg_dir / RECONSTRUCTED_DIR / pair.name, workspace_root),
        }
        for pair in output.kept
    )
    return SdgIngest(
        rows=rows,
        paired=len(output.paired),
        skipped_unpaired=output.unpaired,
        labels=ordered_label_counts(row["label"] for row in rows),
        skipped_guardrail=tuple(f"{RECONSTRUCTED_DIR}/{name}" for name in output.paired if name in output.blocked),
        allocation=output.allocation,
        generated=output.generated,
        converted=converted // 2,
    )


@dataclass(frozen=True)
class _SdgOutput:
    """An SDG output folder, checked: its file pairs by name, the allocation asked for, the guardrail's blocks."""

    paired: tuple[str, ...]
    unpaired: tuple[str, ...]
    allocation: dict[str, int]
    blocked: frozenset[str]
    generated: dict[str, int]
    kept: tuple[_StagedPair, ...]


def _read_sdg_output(sdg_dir: Path) -> _SdgOutput:
    """Pair the SDG files and check them against the result table and the allocation; one DatasetError."""
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
    return _SdgOutput(
        paired=tuple(paired),
        unpaired=tuple(unpaired),
        allocation=allocation,
        blocked=frozenset(blocked),
        generated=generated,
        kept=tuple(kept),
    )


@dataclass(frozen=True)
class _Staging:
    """Where and how the pairs are staged: the NG and OK folders, the light, the extension and its PIL format."""

    ng_dir: Path
    ok_dir: Path
    light: str
    ext: str
    image_format: str

    def target(self, folder: Path, pair: _StagedPair) -> Path:
        return folder / f"{pair.object_name}_{self.light}{self.ext}"


def _stage_pairs(sdg_dir: Path, kept: Sequence[_StagedPair], staging: _Staging) -> int:
    """Copy or re-encode the test and golden file of every kept pair; return how many files were re-encoded."""
    for folder in (staging.ng_dir, staging.ok_dir):
        _refuse_foreign_files(folder, {staging.target(folder, pair).name for pair in kept})
    jobs = [
        (sdg_dir / side / pair.name, staging.target(folder, pair))
        for pair in kept
        for side, folder in ((RECONSTRUCTED_DIR, staging.ng_dir), (ORIGINAL_DIR, staging.ok_dir))
    ]
    return _stage_files(jobs, staging.image_format, (staging.ng_dir, staging.ok_dir))


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
