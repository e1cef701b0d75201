"""The Visual ChangeNet classify dataset CSV contract: reading and writing the CSVs TAO trains on.

A dataset CSV has the columns `input_path, golden_path, label, object_name` (extra columns are kept in order);
the two paths are directories relative to the images root, and TAO opens
`{images_dir}/{dir}/{object_name}_{light}{image_ext}` for each side and each light. `PASS` is the only
byte-exact label (the dataloader's class-0 sentinel); every other label is a stripped, lower-case defect type.
Reading checks what makes a file unreadable to TAO (a BOM, UTF-16, a `;` delimiter, a wrong header, a wrong
field count) and raises one `DatasetError`; `ProblemLog` keeps such messages readable on a 10k-row file. The
rows themselves are checked against the images in `dataset_validation`. Nothing here writes to disk except
`write_dataset_csv`.
"""

from __future__ import annotations

import csv
import errno
import io
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aoi_pipeline.core.files import atomic_write_text
from aoi_pipeline.errors import DatasetError, Problem

PASS_LABEL = "PASS"
REQUIRED_COLUMNS = ("input_path", "golden_path", "label", "object_name")
PATH_COLUMNS = ("input_path", "golden_path")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Relative image roots a workspace may use; rows that only resolve with (or without) one of these prefixes
# were written in the other coordinate system (workspace-relative vs image-root-relative).
IMAGE_ROOT_PREFIXES = ("images/", "kpi/images/")
MAX_LISTED_PER_KIND = 20

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
_HEADER_EXAMPLE = ",".join(REQUIRED_COLUMNS)


def normalize_label(raw: str) -> str:
    """The label as TAO must see it: `PASS` byte-exact, every other label stripped and lower-cased.

    A case or spacing variant of PASS (`pass`, ` Pass `) becomes `PASS`: lower-casing it would silently turn
    good parts into defects, which is the reference loop's worst label failure.
    """
    stripped = raw.strip()
    if stripped.upper() == PASS_LABEL:
        return PASS_LABEL
    return stripped.lower()


def is_defect(label: str) -> bool:
    """Whether TAO puts the label in class 1: anything not byte-equal to PASS, exactly like its dataloader."""
    return label != PASS_LABEL


def ordered_label_counts(labels: Iterable[str]) -> dict[str, int]:
    """Label counts with PASS first, then defect labels by count (descending) and name."""
    counts = Counter(labels)
    ordered = {PASS_LABEL: counts.pop(PASS_LABEL)} if PASS_LABEL in counts else {}
    ordered.update(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return ordered


@dataclass(frozen=True)
class DatasetCsv:
    """A parsed dataset CSV: its columns in file order and its data rows (row 1 follows the header)."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]

    def label_counts(self) -> dict[str, int]:
        """Rows per label, PASS first then defects by count (descending)."""
        return ordered_label_counts(row.get("label", "") for row in self.rows)


class ProblemLog:
    """Collects problems by kind, keeping the first `limit` of each kind and counting the rest.

    A 10k-row CSV with a wrong image extension thus gives a readable message: twenty listed problems and one
    line with the total, instead of twenty thousand lines.
    """

    def __init__(self, source: Path | str, *, limit: int = MAX_LISTED_PER_KIND) -> None:
        self.source = str(source)
        self.limit = limit
        self._listed: dict[str, list[Problem]] = {}
        self._totals: Counter[str] = Counter()

    def add(self, kind: str, problem: Problem) -> None:
        """Record one problem of `kind` (a plural noun phrase such as "missing image files")."""
        self._totals[kind] += 1
        listed = self._listed.setdefault(kind, [])
        if len(listed) < self.limit:
            listed.append(problem)

    def is_full(self, kind: str) -> bool:
        """Whether further problems of `kind` will only be counted (so costly hints can be skipped)."""
        return len(self._listed.get(kind, ())) >= self.limit

    @property
    def total(self) -> int:
        """Every problem recorded, listed or not."""
        return sum(self._totals.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def problems(self) -> list[Problem]:
        """The listed problems, each kind followed by one count line when some were left out."""
        result: list[Problem] = []
        for kind, listed in self._listed.items():
            result.extend(listed)
            unlisted = self._totals[kind] - len(listed)
            if unlisted:
                fixes = {problem.fix for problem in listed}
                fix = fixes.pop() if len(fixes) == 1 else "fix them like the ones listed above"
                what = f"{unlisted} more {kind} not listed ({self._totals[kind]} in all)"
                result.append(Problem(self.source, what, fix))
        return result

    def raise_if_any(self, *, summary: str | None = None) -> None:
        """Raise one DatasetError with every listed problem when anything was recorded."""
        if self:
            raise DatasetError(self.problems(), summary=summary or f"{self.source}: {self.total} problems")


class FileIndex:
    """Answers "is this path a file?" from one listing per directory.

    Checking the ~30k images of a workspace then costs one directory read per board folder instead of one
    stat per image, and no path is looked up twice. Names are matched exactly, as on TAO's Linux containers.
    """

    def __init__(self) -> None:
        self._listings: dict[str, frozenset[str] | None] = {}
        # Paths met while listing that are symbolic-link loops (ELOOP), in the order found.
        self.loops: dict[str, None] = {}

    def names(self, directory: str | Path) -> frozenset[str] | None:
        """File names in `directory`, or None when it is not a readable directory."""
        key = os.path.normpath(directory)
        if key not in self._listings:
            try:
                with os.scandir(key) as entries:
                    self._listings[key] = frozenset(entry.name for entry in entries if self._is_file(entry))
            except OSError as error:
                if error.errno == errno.ELOOP:
                    self.loops[key] = None
                self._listings[key] = None
            except ValueError:  # a NUL byte in a CSV path
                self._listings[key] = None
        return self._listings[key]

    def _is_file(self, entry: os.DirEntry[str]) -> bool:
        """Whether an entry is a file; a link loop in a listed folder is remembered, never raised."""
        try:
            return entry.is_file()
        except OSError as error:
            if error.errno == errno.ELOOP:
                self.loops[os.path.normpath(entry.path)] = None
            return False

    def is_file(self, path: str | Path) -> bool:
        directory, name = os.path.split(os.path.normpath(path))
        listing = self.names(directory or ".")
        return listing is not None and name in listing

    def is_dir(self, path: str | Path) -> bool:
        return self.names(path) is not None


def normalize_image_ext(image_ext: str) -> str:
    """`png` or `.png` -> `.png`; DatasetError for an empty or path-like extension."""
    ext = image_ext.strip()
    if ext and not ext.startswith("."):
        ext = "." + ext
    if len(ext) < 2 or "/" in ext or "\\" in ext:
        raise DatasetError.at(
            "image_ext (dataset.classify.image_ext)",
            f"'{image_ext}' is not a file extension",
            "give the extension of the image files, e.g. '.jpg' or '.png'",
        )
    return ext


def normalize_lights(lights: Sequence[str] | str) -> tuple[str, ...]:
    """The light names as a tuple (a bare string is one light); DatasetError when empty or path-like."""
    names = (lights,) if isinstance(lights, str) else tuple(lights)
    bad = [name for name in names if not name or name != name.strip() or "/" in name or "\\" in name]
    if not names or bad:
        raise DatasetError.at(
            "lights (dataset.classify.input_map keys)",
            f"{list(names)!r} is not a non-empty list of light names",
            "give the lighting names of the image files, e.g. ['SolderLight']",
        )
    return names


MAX_COLUMNS = 1000


def read_dataset_csv(path: Path) -> DatasetCsv:
    """Read a dataset CSV, checking only encoding, delimiter, header and the four required columns."""
    return read_csv_table(path, required_columns=REQUIRED_COLUMNS)


def read_csv_table(
    path: Path,
    *,
    required_columns: Sequence[str],
    allow_bom: bool = False,
    role: str = "dataset CSV",
) -> DatasetCsv:
    """Read a comma-separated UTF-8 CSV with a header holding `required_columns`.

    A BOM is an error unless `allow_bom` (for files only this package reads). Raises one DatasetError with
    every encoding, delimiter, header and field-count problem found.
    """
    path = Path(path)
    log = ProblemLog(path)
    text = _read_text(path, allow_bom=allow_bom, role=role, log=log)
    _check_column_count(path, text)
    records = _parse_records(path, text)
    header = records[0]
    if not _check_delimiter(path, header, required_columns, log):
        _check_header(path, header, required_columns, log)
    rows: list[dict[str, str]] = []
    for number, record in enumerate(records[1:], start=1):
        if len(record) != len(header):
            log.add(
                "rows with a wrong number of fields",
                Problem(
                    f"{path}: row {number}",
                    f"has {len(record)} fields but the header has {len(header)}: {record!r}",
                    "give every row one value per header column (quote values that contain commas)",
                ),
            )
        rows.append(dict(zip(header, record, strict=False)))
    log.raise_if_any()
    return DatasetCsv(path=path, columns=tuple(header), rows=tuple(rows))


def _read_text(path: Path, *, allow_bom: bool, role: str, log: ProblemLog) -> str:
    if not path.exists():
        raise DatasetError.at(str(path), f"{role} does not exist", f"create it, or pass the path of the {role}")
    if not path.is_file():
        raise DatasetError.at(str(path), f"{role} is not a file", f"pass the path of the {role} file itself")
    data = path.read_bytes()
    if data.startswith(_UTF16_BOMS):
        raise DatasetError.at(str(path), "is UTF-16 encoded", "save the file as UTF-8 without BOM")
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
        if not allow_bom:
            log.add(
                "encoding problems",
                Problem(
                    str(path),
                    "starts with a UTF-8 byte order mark (BOM), so TAO reads the first column as '\\ufeffinput_path'",
                    "save the file as UTF-8 without BOM",
                ),
            )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError.at(
            str(path),
            f"is not valid UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start})",
            "save the file as UTF-8 without BOM",
        ) from None
    if not text.strip():
        raise DatasetError.at(
            str(path),
            f"{role} is empty",
            f"write a header line ({_HEADER_EXAMPLE}) and at least one data row",
        )
    return text


def _check_column_count(path: Path, text: str) -> None:
    """Refuse a header with absurdly many columns at once, before every row is parsed and checked."""
    header_line = text.split("\n", 1)[0]
    columns = header_line.count(",") + 1
    if columns > MAX_COLUMNS:
        raise DatasetError.at(
            f"{path}: header",
            f"has {columns} columns; a dataset CSV has the 4 required ones and a few extra, at most {MAX_COLUMNS}",
            f"keep {', '.join(REQUIRED_COLUMNS)} and the extra columns you need (fewer than {MAX_COLUMNS})",
        )


def _parse_records(path: Path, text: str) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        # Blank lines are skipped, as pandas (and so TAO) skips them; data rows are numbered without them.
        return [record for record in reader if record]
    except csv.Error as error:
        raise DatasetError.at(
            f"{path}: line {reader.line_num}",
            f"cannot be parsed as CSV ({error})",
            "save it as a plain comma-separated UTF-8 text file",
        ) from None


def _check_delimiter(path: Path, header: list[str], required: Sequence[str], log: ProblemLog) -> bool:
    """Record a problem when the header is separated by something other than commas; True if so."""
    if all(column in header for column in required):
        return False
    line = ",".join(header)
    for delimiter, name in _OTHER_DELIMITERS.items():
        fields = [field.strip() for field in line.split(delimiter)]
        if len(fields) > len(header) and any(column in fields for column in required):
            log.add(
                "delimiter problems",
                Problem(
                    str(path),
                    f"uses '{delimiter}' ({name}) as delimiter instead of a comma (header {line!r})",
                    "save the file comma-separated (in a spreadsheet: CSV, comma delimited)",
                ),
            )
            return True
    return False


def _check_header(path: Path, header: list[str], required: Sequence[str], log: ProblemLog) -> None:
    duplicated = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicated:
        log.add(
            "header problems",
            Problem(
                str(path),
                f"header repeats column(s) {', '.join(duplicated)}",
                "keep one column of each name",
            ),
        )
    missing = [column for column in required if column not in header]
    if not missing:
        return
    by_loose_name = {name.strip().lower(): name for name in header}
    renames = [f"'{by_loose_name[c]}' to '{c}'" for c in missing if c in by_loose_name]
    fix = f"the header must contain {', '.join(required)}"
    if renames:
        fix = f"rename {', '.join(renames)} (exact lower-case names, no spaces); {fix}"
    log.add(
        "header problems",
        Problem(
            str(path),
            f"missing required column(s) {', '.join(missing)} (header: {','.join(header)!r})",
            fix,
        ),
    )


def image_files(row: Mapping[str, str], *, images_dir: Path, lights: Sequence[str], image_ext: str) -> tuple[Path, ...]:
    """The image files TAO opens for a row: the test side for every light, then the golden side."""
    ext = normalize_image_ext(image_ext)
    names = normalize_lights(lights)
    object_name = row["object_name"]
    return tuple(
        Path(images_dir, row[column], f"{object_name}_{light}{ext}") for column in PATH_COLUMNS for light in names
    )


def write_dataset_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, str]]) -> None:
    """Write a comma-separated UTF-8 CSV (no BOM) atomically: the old file or the new one, never a torn one.

    A row lacking a column gets an empty cell; a row with a column not in `columns` raises ValueError.
    """
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), buffer.getvalue())
