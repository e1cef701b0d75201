"""The Visual ChangeNet classify dataset CSV contract: reading, validating and writing the CSVs TAO trains on.

A dataset CSV has the columns `input_path, golden_path, label, object_name` (extra columns are kept in order);
the two paths are directories relative to the images root, and TAO opens
`{images_dir}/{dir}/{object_name}_{light}{image_ext}` for each side and each light. `PASS` is the only
byte-exact label (the dataloader's class-0 sentinel); every other label is a stripped, lower-case defect type.
TAO fails late or silently on most violations (a BOM, a `;` delimiter, a lower-case `pass`, a wrong image
extension), so `validate_dataset` checks all of them up front, collects every problem, lists at most
`MAX_LISTED_PER_KIND` of each kind plus a count line, and raises one `DatasetError`. Nothing here writes to
disk except `write_dataset_csv`.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal, get_args

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

Mode = Literal["train", "evaluate", "inference"]
MODES: tuple[str, ...] = get_args(Mode)

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

    def names(self, directory: str | Path) -> frozenset[str] | None:
        """File names in `directory`, or None when it is not a readable directory."""
        key = os.path.normpath(directory)
        if key not in self._listings:
            try:
                with os.scandir(key) as entries:
                    self._listings[key] = frozenset(entry.name for entry in entries if entry.is_file())
            except (OSError, ValueError):  # ValueError: a NUL byte in a CSV path
                self._listings[key] = None
        return self._listings[key]

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


def validate_dataset(
    path: Path,
    *,
    images_dir: Path,
    lights: Sequence[str] = ("SolderLight",),
    image_ext: str = ".jpg",
    mode: Mode = "train",
    batch_size: int | None = None,
    num_gpus: int = 1,
    check_images: bool = True,
) -> DatasetCsv:
    """Read and fully validate a dataset CSV against its images; raise one DatasetError listing every problem.

    `images_dir` is the root the CSV's paths are relative to. `mode="train"` also requires both classes;
    `batch_size` must fit the rows per GPU. With `check_images=False` the image files are not looked up.
    """
    names = normalize_lights(lights)
    ext = normalize_image_ext(image_ext)
    _check_run_settings(mode, batch_size, num_gpus)
    dataset = read_dataset_csv(path)
    log = collect_dataset_problems(
        dataset,
        images_dir=images_dir,
        lights=names,
        image_ext=ext,
        mode=mode,
        batch_size=batch_size,
        num_gpus=num_gpus,
        files=FileIndex() if check_images else None,
    )
    log.raise_if_any()
    return dataset


def _check_run_settings(mode: str, batch_size: int | None, num_gpus: int) -> None:
    problems = []
    if mode not in MODES:
        problems.append(Problem("mode", f"'{mode}' is not a dataset mode", f"use one of {', '.join(MODES)}"))
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1:
        problems.append(Problem("num_gpus", f"{num_gpus!r} is not a GPU count", "give a whole number >= 1"))
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)):
        problems.append(
            Problem(
                "batch_size (dataset.classify.batch_size)",
                f"{batch_size!r} is not a whole number",
                "give a whole number >= 2",
            )
        )
    if problems:
        raise DatasetError(problems)


def collect_dataset_problems(
    dataset: DatasetCsv,
    *,
    images_dir: Path,
    lights: Sequence[str],
    image_ext: str,
    mode: Mode = "train",
    batch_size: int | None = None,
    num_gpus: int = 1,
    files: FileIndex | None = None,
) -> ProblemLog:
    """Every row, class and batch problem of an already-read CSV; images are looked up through `files`.

    `lights` and `image_ext` must already be normalised (`normalize_lights`, `normalize_image_ext`). Sharing
    one FileIndex across several CSVs of a workspace lists each image folder once.
    """
    log = ProblemLog(dataset.path)
    if not dataset.rows:
        log.add(
            "empty datasets",
            Problem(str(dataset.path), "has a header but no data rows", "add at least one data row"),
        )
        return log
    rules = _RowRules(dataset.path, Path(images_dir), tuple(lights), image_ext, files, log)
    first_row_of_sample: dict[tuple[str, str, str], int] = {}
    for number, row in enumerate(dataset.rows, start=1):
        rules.check(number, row)
        _check_duplicate(dataset, number, first_row_of_sample, log)
    if mode == "train":
        _check_both_classes(dataset, log, why="training with fpratio_sampling needs both classes")
    if batch_size is not None:
        _check_batch_size(dataset, batch_size, num_gpus, log)
    return log


class _RowRules:
    """The per-row checks of one CSV: path cells, object_name, label and the image files."""

    def __init__(
        self,
        csv_path: Path,
        images_dir: Path,
        lights: tuple[str, ...],
        image_ext: str,
        files: FileIndex | None,
        log: ProblemLog,
    ) -> None:
        self.csv_path = csv_path
        self.images_dir = str(images_dir)
        self.lights = lights
        self.image_ext = image_ext
        self.files = files
        self.log = log

    def where(self, number: int, column: str) -> str:
        return f"{self.csv_path}: row {number}, column {column}"

    def check(self, number: int, row: Mapping[str, str]) -> None:
        object_name_ok = self._check_object_name(number, row["object_name"])
        self._check_label(number, row["label"])
        for column in PATH_COLUMNS:
            if self._check_path_cell(number, column, row[column]) and object_name_ok and self.files is not None:
                self._check_images(number, column, row[column], row["object_name"])

    def _check_path_cell(self, number: int, column: str, value: str) -> bool:
        side = "test (inspected)" if column == "input_path" else "golden (reference)"
        where = self.where(number, column)
        if not value.strip():
            self.log.add(
                "empty paths",
                Problem(
                    where,
                    f"{column} is empty",
                    f"write the directory of the {side} image, relative to images_dir {self.images_dir}",
                ),
            )
        elif PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute():
            self.log.add("absolute paths", Problem(where, f"{column} '{value}' is absolute", self._relative_fix(value)))
        elif "\\" in value:
            self.log.add(
                "paths with backslashes",
                Problem(
                    where,
                    f"{column} '{value}' uses backslashes",
                    f"write '{value.replace(chr(92), '/')}' (TAO runs on Linux: '/' separates folders)",
                ),
            )
        elif value != value.strip():
            self.log.add(
                "paths with surrounding spaces",
                Problem(where, f"{column} {value!r} has surrounding spaces", f"write '{value.strip()}'"),
            )
        elif PurePosixPath(value).suffix.lower() in IMAGE_SUFFIXES:
            self.log.add(
                "image files in path columns",
                Problem(
                    where,
                    f"{column} '{value}' names an image file, not a directory",
                    self._flat_path_fix(column, value),
                ),
            )
        else:
            return True
        return False

    def _relative_fix(self, value: str) -> str:
        root = os.path.normpath(self.images_dir)
        candidate = os.path.normpath(value)
        if os.path.isabs(root) and os.path.commonpath([root, candidate]) == root and candidate != root:
            return (
                f"write '{os.path.relpath(candidate, root)}': paths are relative to images_dir {root} "
                "(absolute host paths do not exist inside the TAO container)"
            )
        return (
            f"write the directory relative to images_dir {root} "
            "(absolute host paths do not exist inside the TAO container)"
        )

    def _flat_path_fix(self, column: str, value: str) -> str:
        file = PurePosixPath(value)
        object_name = _strip_light_suffix(file.stem, self.lights)
        return (
            f"write the directory '{file.parent}' in {column} and the stem '{object_name}' in object_name: "
            f"TAO builds the file name as {{object_name}}_{{light}}{self.image_ext}"
        )

    def _check_object_name(self, number: int, value: str) -> bool:
        where = self.where(number, "object_name")
        if not value.strip():
            self.log.add(
                "empty object names",
                Problem(
                    where,
                    "object_name is empty",
                    "write the component id (the image file stem before _<light>)",
                ),
            )
            return False
        if value != value.strip():
            self.log.add(
                "object names with surrounding spaces",
                Problem(where, f"object_name {value!r} has surrounding spaces", f"write '{value.strip()}'"),
            )
            return False
        suffix = PurePosixPath(value).suffix.lower()
        has_ext = bool(suffix) and (suffix in IMAGE_SUFFIXES or suffix == self.image_ext.lower())
        stem = value[: -len(suffix)] if has_ext else value
        bare = _strip_light_suffix(stem, self.lights)
        if bare != value:
            carried = {
                (True, True): "the light suffix and extension",
                (True, False): "an extension",
                (False, True): "the light suffix",
            }[(has_ext, bare != stem)]
            self.log.add(
                "object names with a light suffix or extension",
                Problem(
                    where,
                    f"object_name '{value}' carries {carried}",
                    f"write '{bare}': TAO appends _{{light}}{self.image_ext} from the spec",
                ),
            )
            return False
        return True

    def _check_label(self, number: int, label: str) -> None:
        where = self.where(number, "label")
        if label == PASS_LABEL:
            return
        if not label.strip():
            self.log.add("empty labels", Problem(where, "label is empty", "write PASS or a lower-case defect type"))
        elif label.strip().upper() == PASS_LABEL:
            self.log.add(
                "PASS labels in the wrong case",
                Problem(
                    where,
                    f"label {label!r} is not the byte-exact PASS, so TAO counts it as a defect",
                    "write PASS in upper case" + ("" if label == label.strip() else ", without spaces"),
                ),
            )
        elif label != label.strip().lower():
            self.log.add(
                "labels not lower-case and stripped",
                Problem(
                    where,
                    f"defect label {label!r} is not lower-case and stripped",
                    f"write '{label.strip().lower()}' (every label but PASS is lower-case, without spaces)",
                ),
            )

    def _check_images(self, number: int, column: str, directory: str, object_name: str) -> None:
        assert self.files is not None
        folder = os.path.join(self.images_dir, directory)
        for light in self.lights:
            name = f"{object_name}_{light}{self.image_ext}"
            image = os.path.normpath(os.path.join(folder, name))
            if self.files.is_file(image):
                continue
            kind = "missing image files"
            fix = "" if self.log.is_full(kind) else self._missing_image_fix(column, directory, object_name, light)
            what = (
                f"image {image} does not exist ({column} '{directory}', object_name '{object_name}', light '{light}')"
            )
            self.log.add(kind, Problem(self.where(number, column), what, fix))

    def _missing_image_fix(self, column: str, directory: str, object_name: str, light: str) -> str:
        assert self.files is not None
        name = f"{object_name}_{light}{self.image_ext}"
        for prefix in IMAGE_ROOT_PREFIXES:
            if self.files.is_file(os.path.join(self.images_dir, prefix, directory, name)):
                # Row-independent wording, so one fix can stand for thousands of such rows.
                root = os.path.join(self.images_dir, prefix.rstrip("/"))
                return (
                    f"prepend '{prefix}' to the path exactly once (the image exists under {root}), or "
                    f"validate against images_dir {root} if every path of this CSV is relative to it"
                )
        for prefix in IMAGE_ROOT_PREFIXES:
            if directory.startswith(prefix) and self.files.is_file(
                os.path.join(self.images_dir, directory[len(prefix) :], name)
            ):
                return (
                    f"remove the leading '{prefix}' from the path: this CSV's paths are relative to "
                    f"images_dir {self.images_dir}, which already is the image root"
                )
        folder = os.path.normpath(os.path.join(self.images_dir, directory))
        listing = self.files.names(folder)
        if listing is None:
            return f"directory {folder} does not exist: fix {column} (relative to images_dir {self.images_dir})"
        stem = f"{object_name}_{light}"
        same_stem = sorted(entry for entry in listing if os.path.splitext(entry)[0] == stem)
        if same_stem:
            found_ext = os.path.splitext(same_stem[0])[1]
            return f"set image_ext (dataset.classify.image_ext) to '{found_ext}': the images exist with that extension"
        same_object = sorted(entry for entry in listing if entry.startswith(f"{object_name}_"))
        if same_object:
            return f"{same_object[0]} exists: check the light names {list(self.lights)} and object_name"
        return f"add the image, or correct {column} and object_name of this row"


def _strip_light_suffix(stem: str, lights: Sequence[str]) -> str:
    for light in lights:
        if stem.endswith(f"_{light}"):
            return stem[: -len(light) - 1]
    return stem


def _check_duplicate(
    dataset: DatasetCsv, number: int, first_row_of_sample: dict[tuple[str, str, str], int], log: ProblemLog
) -> None:
    row = dataset.rows[number - 1]
    cells = (row["input_path"].strip(), row["golden_path"].strip(), row["object_name"].strip())
    if not all(cells):
        return
    sample = (os.path.normpath(cells[0]), os.path.normpath(cells[1]), cells[2])
    first = first_row_of_sample.setdefault(sample, number)
    if first == number:
        return
    first_label, label = dataset.rows[first - 1]["label"], row["label"]
    what = f"duplicates row {first} (input_path '{cells[0]}', golden_path '{cells[1]}', object_name '{cells[2]}')"
    if first_label == label:
        fix = f"remove row {number} or row {first}"
    else:
        what += f" with a different label ({label!r} vs {first_label!r})"
        fix = f"keep one of rows {first} and {number}, with the right label"
    log.add("duplicate rows", Problem(f"{dataset.path}: row {number}", what, fix))


def _check_both_classes(dataset: DatasetCsv, log: ProblemLog, *, why: str) -> None:
    counts = dataset.label_counts()
    described = ", ".join(f"{label or '<empty>'} {count}" for label, count in counts.items())
    where = f"{dataset.path}: column label"
    if PASS_LABEL not in counts:
        log.add(
            "class problems",
            Problem(where, f"has no PASS rows (labels: {described})", f"add PASS rows: {why}"),
        )
    if not any(is_defect(label) and label.strip() for label in counts):
        log.add(
            "class problems",
            Problem(where, f"has only PASS rows ({described})", f"add defect rows (any label but PASS): {why}"),
        )


def check_both_classes(dataset: DatasetCsv, *, why: str) -> list[Problem]:
    """Problems when the CSV lacks PASS rows or defect rows; `why` (what needs both) goes into the fix."""
    log = ProblemLog(dataset.path)
    _check_both_classes(dataset, log, why=why)
    return log.problems()


def _check_batch_size(dataset: DatasetCsv, batch_size: int, num_gpus: int, log: ProblemLog) -> None:
    where = f"{dataset.path}: batch_size (dataset.classify.batch_size)"
    if batch_size < 2:
        log.add(
            "batch problems",
            Problem(where, f"batch_size {batch_size} is below 2", "set batch_size to 2 or more"),
        )
        return
    rows = len(dataset.rows)
    per_gpu = rows // num_gpus
    if batch_size > per_gpu:
        fix = (
            f"lower batch_size to at most {per_gpu}, or add rows"
            if per_gpu >= 2
            else f"add rows: batch_size {batch_size} on {num_gpus} GPU(s) needs {batch_size * num_gpus}"
        )
        what = (
            f"batch_size {batch_size} exceeds the {per_gpu} rows per GPU ({rows} rows / {num_gpus} GPU(s)); "
            "TAO stops with 'Dataset size is smaller than the total batch size'"
        )
        log.add("batch problems", Problem(where, what, fix))


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
