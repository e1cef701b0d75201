"""Full validation of a dataset CSV against its images: every row, class and batch problem in one error.

TAO fails late or silently on most violations (a lower-case `pass`, a wrong image extension, a path outside
the image root, a duplicated sample, a batch larger than the rows per GPU), so `validate_dataset` checks all
of them up front, lists at most `MAX_LISTED_PER_KIND` of each kind plus a count line, and raises one
`DatasetError`. Images are looked up through a `FileIndex`, one listing per folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal, get_args

from aoi_pipeline.core.dataset import (
    IMAGE_ROOT_PREFIXES,
    IMAGE_SUFFIXES,
    PASS_LABEL,
    PATH_COLUMNS,
    DatasetCsv,
    FileIndex,
    ProblemLog,
    is_defect,
    normalize_image_ext,
    normalize_lights,
    read_dataset_csv,
)
from aoi_pipeline.errors import DatasetError, Problem

Mode = Literal["train", "evaluate", "inference"]
MODES: tuple[str, ...] = get_args(Mode)


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
        elif os.path.normpath(value).split("/", 1)[0] == "..":
            self.log.add(
                "paths outside images_dir",
                Problem(
                    where,
                    f"{column} '{value}' resolves outside images_dir {self.images_dir}",
                    "keep every image inside the workspace, and write its directory relative to images_dir "
                    "without '..' (TAO mounts only the workspace)",
                ),
            )
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
