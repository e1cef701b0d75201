"""Whether the images of a workspace share one colour mode (grey or colour), read from their headers only.

The reference runtime turns a light into one grey channel unless any training image is colour, so a single
RGB image among grey ones silently makes the whole model three-channel. The data check reads each image's
header (no pixels are decoded) and reports a mix, naming the files of the smaller group with their CSV rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from aoi_pipeline.core.dataset import DatasetCsv
from aoi_pipeline.errors import Problem

# Single-channel modes (Pillow names); every other mode is read as colour. Kept equal to the runtime's.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_LISTED_FILES = 5


@dataclass(frozen=True)
class ImageUse:
    """One image file a CSV row refers to: the CSV, its 1-based data row, and the file."""

    csv: str
    row: int
    path: str


def row_images(dataset: DatasetCsv, images_dir: str, lights: Sequence[str], image_ext: str) -> Iterable[ImageUse]:
    """Every test and golden image of every row (for every light), as `ImageUse`s."""
    for number, row in enumerate(dataset.rows, start=1):
        object_name = row.get("object_name", "").strip()
        for column in ("input_path", "golden_path"):
            directory = row.get(column, "").strip()
            if not (directory and object_name):
                continue
            for light in lights:
                path = os.path.join(images_dir, directory, f"{object_name}_{light}{image_ext}")
                yield ImageUse(str(dataset.path), number, path)


def mixed_mode_problems(uses: Iterable[ImageUse]) -> list[Problem]:
    """One problem when the images mix grey and colour modes, naming the files of the smaller group."""
    groups: dict[str, list[tuple[ImageUse, str]]] = {"grey": [], "colour": []}
    seen: set[str] = set()
    for use in uses:
        if use.path in seen:
            continue
        seen.add(use.path)
        mode = _mode(use.path)
        if mode is not None:
            groups["grey" if mode in GREY_MODES else "colour"].append((use, mode))
    if not groups["grey"] or not groups["colour"]:
        return []
    minority = min(groups, key=lambda name: len(groups[name]))
    majority = "colour" if minority == "grey" else "grey"
    listed = "; ".join(
        f"{use.path} ({mode}, {use.csv} row {use.row})" for use, mode in groups[minority][:_LISTED_FILES]
    )
    more = len(groups[minority]) - _LISTED_FILES
    listed += f"; and {more} more" if more > 0 else ""
    return [
        Problem(
            "images (grey and colour mixed)",
            f"{len(groups['grey'])} grey and {len(groups['colour'])} colour images: one colour image makes the "
            f"whole model three-channel; the {minority} ones: {listed}",
            f"convert the {minority} images to {majority} (or all images to one mode), then run the check again",
        )
    ]


def _mode(path: str) -> str | None:
    """The image's mode from its header; None when it cannot be read (the existence check reports that)."""
    try:
        with Image.open(path) as image:
            return str(image.mode)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def dataset_images(
    datasets: Mapping[str, DatasetCsv], images_dir: str, lights: Sequence[str], image_ext: str
) -> list[ImageUse]:
    """The images of several CSVs, in CSV then row order."""
    return [use for dataset in datasets.values() for use in row_images(dataset, images_dir, lights, image_ext)]
