"""The six DeepPCB defect types painted into binarised test images, and the nuisance that makes PASS hard.

A painter finds a site where its defect type can exist (a trace to cut, a narrow gap to bridge, a copper
edge to bite or grow a spur from, open laminate for a stray blob, solid copper for a pin hole), paints the
defect and returns the new image with the mask of the pixels it changed. Every defect changes at least
`MIN_CHANGED_PIXELS` pixels, the threshold the DeepPCB workspace uses to call a tile NG, and a painter
grows its defect or tries another site until it does. Images follow the DeepPCB polarity: copper is dark
(below 128) and laminate bright. `nuisance` reproduces what separates a real PASS test image from its
golden: registration shift of a few pixels and binarisation noise along copper edges. Everything is drawn
from the caller's numpy Generator, so the same generator state gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from aoi_pipeline.errors import DatasetError, Problem
from aoi_pipeline.synth.boards import COPPER, LAMINATE

DEFECT_TYPES = ("open", "short", "mousebite", "spur", "copper", "pin_hole")
MIN_CHANGED_PIXELS = 12

_SITE_ATTEMPTS = 60
# A disc of this radius covers MIN_CHANGED_PIXELS pixels wherever it sits on the pixel grid.
_SMALLEST_RADIUS = 2.3
_SMALLEST_EXTENT = math.floor(_SMALLEST_RADIUS)
# Directional painters work on row runs; these views turn every direction into "rows, growing rightwards".
_ORIENTATIONS = ((False, False), (False, True), (True, False), (True, True))


class _NoSite(Exception):
    """The tile cannot host the defect whatever the random draw: stop trying at once."""


@dataclass(frozen=True)
class _Runs:
    """Maximal runs of True along the rows of a mask: row, start column, stop column (exclusive)."""

    rows: np.ndarray
    starts: np.ndarray
    stops: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray) -> _Runs:
        height, width = mask.shape
        padded = np.zeros((height, width + 2), dtype=np.int8)
        padded[:, 1:-1] = mask
        steps = np.diff(padded, axis=1)
        rows, starts = np.nonzero(steps == 1)
        _, stops = np.nonzero(steps == -1)
        return cls(rows, starts, stops)

    @property
    def lengths(self) -> np.ndarray:
        return self.stops - self.starts

    def in_row(self, row: int) -> list[tuple[int, int]]:
        selected = self.rows == row
        return list(zip(self.starts[selected].tolist(), self.stops[selected].tolist(), strict=True))


@dataclass
class _View:
    """The copper mask seen in one orientation, with its row runs of copper and of laminate, computed once."""

    copper: np.ndarray
    transpose: bool = False
    flip: bool = False
    _runs: dict[bool, _Runs] = field(default_factory=dict)
    _interiors: dict[tuple[bool, int], np.ndarray] = field(default_factory=dict)

    @classmethod
    def oriented(cls, copper: np.ndarray, transpose: bool, flip: bool) -> _View:
        view = copper.T if transpose else copper
        return cls(view[:, ::-1] if flip else view, transpose, flip)

    def runs(self, of_copper: bool) -> _Runs:
        if of_copper not in self._runs:
            self._runs[of_copper] = _Runs.of(self.copper if of_copper else ~self.copper)
        return self._runs[of_copper]

    def interior(self, of_copper: bool, margin: int) -> np.ndarray:
        """Pixels whose whole (2*margin+1)^2 neighbourhood is copper (or laminate) and inside the image."""
        key = (of_copper, margin)
        if key not in self._interiors:
            self._interiors[key] = _erode(self.copper if of_copper else ~self.copper, margin)
        return self._interiors[key]

    def back(self, mask: np.ndarray) -> np.ndarray:
        """A mask drawn in this view, in the image's own orientation."""
        mask = mask[:, ::-1] if self.flip else mask
        return mask.T if self.transpose else mask


@dataclass(frozen=True)
class _Scale:
    """Defect dimensions grow with the tile: DeepPCB's 160 px tiles carry larger defects than 64 px ones."""

    factor: float
    size: int

    @classmethod
    def of(cls, image: np.ndarray) -> _Scale:
        size = min(image.shape)
        return cls(float(np.clip(size / 64.0, 0.5, 3.0)), size)

    def between(self, rng: np.random.Generator, low: float, high: float) -> float:
        return float(rng.uniform(low * self.factor, high * self.factor))


Painter = Callable[[_View, np.random.Generator, _Scale], np.ndarray | None]


def paint_defect(image: np.ndarray, defect_type: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect into a copy of `image`; return (new image, bool mask of the changed pixels).

    `image` is a uint8 H x W binarised tile (copper dark). Raises `DatasetError` when the tile has no site
    for that defect type after many tries (e.g. a pin hole in a tile without solid copper).
    """
    _check_image(image)
    if defect_type not in _PAINTERS:
        raise ValueError(f"unknown defect type {defect_type!r}; expected one of {', '.join(DEFECT_TYPES)}")
    painter, directional, adds_copper = _PAINTERS[defect_type]
    copper = image < 128
    scale = _Scale.of(image)
    views = {
        orientation: _View.oriented(copper, *orientation)
        for orientation in (_ORIENTATIONS if directional else _ORIENTATIONS[:1])
    }
    for _ in range(_SITE_ATTEMPTS):
        view = views[_ORIENTATIONS[int(rng.integers(len(views)))]]
        try:
            drawn = painter(view, rng, scale)
        except _NoSite:
            break
        if drawn is None:
            continue
        change = view.back(drawn) & (~copper if adds_copper else copper)
        if int(change.sum()) >= MIN_CHANGED_PIXELS:
            painted = image.copy()
            painted[change] = COPPER if adds_copper else LAMINATE
            return painted, painted != image
    raise DatasetError(
        Problem(
            where=f"{image.shape[0]}x{image.shape[1]} tile with {int(copper.sum())} copper pixels",
            what=f"no site for a {defect_type} defect of at least {MIN_CHANGED_PIXELS} pixels "
            f"after {_SITE_ATTEMPTS} tries",
            fix="use a source tile with more copper structure (traces, gaps, solid copper) or another defect type",
        )
    )


def nuisance(
    image: np.ndarray, rng: np.random.Generator, *, max_shift: int = 2, edge_noise: float = 0.02
) -> np.ndarray:
    """A new image with what a PASS scan adds to its golden: shift and edge noise, no defect.

    The registration shift is uniform in [-max_shift, max_shift] pixels per axis (edges replicated); the
    binarisation noise flips each pixel on a copper edge with probability `edge_noise`.
    """
    _check_image(image)
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if not 0.0 <= edge_noise < 1.0:
        raise ValueError(f"edge_noise must be in [0, 1), got {edge_noise}")
    height, width = image.shape
    shift_y, shift_x = (int(value) for value in rng.integers(-max_shift, max_shift + 1, size=2))
    padded = np.pad(image, max_shift, mode="edge")
    shifted = padded[
        max_shift - shift_y : max_shift - shift_y + height, max_shift - shift_x : max_shift - shift_x + width
    ]
    copper = shifted < 128
    edge = np.zeros_like(copper)
    edge[1:, :] |= copper[1:, :] != copper[:-1, :]
    edge[:-1, :] |= copper[:-1, :] != copper[1:, :]
    edge[:, 1:] |= copper[:, 1:] != copper[:, :-1]
    edge[:, :-1] |= copper[:, :-1] != copper[:, 1:]
    flips = edge & (rng.random(copper.shape) < edge_noise)
    noisy = shifted.copy()
    noisy[flips & copper] = LAMINATE
    noisy[flips & ~copper] = COPPER
    return noisy


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError("expected a uint8 H x W (single channel) image")


def _paint_open(view: _View, rng: np.random.Generator, scale: _Scale) -> np.ndarray | None:
    """Cut a trace running down the view: clear its copper across a few consecutive rows."""
    runs = view.runs(of_copper=True)
    height, width = view.copper.shape
    widest = max(4, round(0.2 * scale.size))
    candidates = np.flatnonzero(
        (runs.starts > 0) & (runs.stops < width) & (runs.lengths >= 2) & (runs.lengths <= widest)
    )
    if candidates.size == 0:
        return None
    pick = int(candidates[rng.integers(candidates.size)])
    top, start, stop = int(runs.rows[pick]), int(runs.starts[pick]), int(runs.stops[pick])
    gap = max(2, round(scale.between(rng, 1.5, 3.0)))
    # A trace is long across the cut; a dot or a short stub cut in two is no open.
    if _run_length_through(view.copper[:, (start + stop) // 2], top) < 2 * (stop - start) + gap:
        return None
    cut = np.zeros_like(view.copper)
    for grown in range(gap, gap + 4):
        if top < 1 or top + grown >= height:
            return None
        spans = _follow_run(runs, top, grown, start, stop, widest)
        if spans is None:
            return None
        last_start, last_stop = spans[-1]
        # The trace must go on beyond both ends of the cut, or this only trims a trace end.
        if not view.copper[top - 1, start:stop].any() or not view.copper[top + grown, last_start:last_stop].any():
            return None
        cut[:] = False
        for row, (span_start, span_stop) in enumerate(spans, start=top):
            cut[row, span_start:span_stop] = True
        if cut.sum() >= MIN_CHANGED_PIXELS:
            return cut
    return None


def _follow_run(runs: _Runs, top: int, rows: int, start: int, stop: int, widest: int) -> list[tuple[int, int]] | None:
    """The copper run in each of `rows` rows from `top` that continues the run [start, stop) downwards."""
    spans = []
    for row in range(top, top + rows):
        touching = [(a, b) for a, b in runs.in_row(row) if a <= stop and b >= start]
        if len(touching) != 1 or touching[0][1] - touching[0][0] > widest:
            return None
        start, stop = touching[0]
        spans.append((start, stop))
    return spans


def _paint_short(view: _View, rng: np.random.Generator, scale: _Scale) -> np.ndarray | None:
    """Bridge a narrow laminate gap between two copper features with a copper strap a few rows thick."""
    gaps = view.runs(of_copper=False)
    height, width = view.copper.shape
    widest = max(4, round(0.2 * scale.size))
    candidates = np.flatnonzero(
        (gaps.starts > 0) & (gaps.stops < width) & (gaps.lengths >= 2) & (gaps.lengths <= widest)
    )
    if candidates.size == 0:
        return None
    pick = int(candidates[rng.integers(candidates.size)])
    row, start, stop = int(gaps.rows[pick]), int(gaps.starts[pick]), int(gaps.stops[pick])
    thickness = max(2, round(scale.between(rng, 1.5, 3.0)))
    # A drilled hole is also laminate ringed by copper; a real gap runs on along the features it separates.
    middle = (start + stop) // 2
    if _run_length_through(~view.copper[:, middle], row) < (stop - start) + 2 * thickness + 2:
        return None
    # Two features face each other across a gap of steady width; a chord near a hole's rim narrows fast.
    for other in (row - thickness, row + thickness):
        if not 0 <= other < height or not _similar_gap(gaps, other, middle, stop - start, width):
            return None
    strap = np.zeros_like(view.copper)
    for grown in range(thickness, thickness + 4):
        first = max(0, row - grown // 2)
        strap[first : min(height, first + grown), start:stop] = True
        if (strap & ~view.copper).sum() >= MIN_CHANGED_PIXELS:
            return strap
    return None


def _similar_gap(gaps: _Runs, row: int, column: int, length: int, width: int) -> bool:
    """Whether the laminate run through (row, column) is bounded by copper and about `length` long."""
    for start, stop in gaps.in_row(row):
        if start <= column < stop:
            bounded = start > 0 and stop < width
            return bounded and abs((stop - start) - length) <= max(2, 0.3 * length)
    return False


def _run_length_through(line: np.ndarray, index: int) -> int:
    """Length of the run of True in a 1-D mask that contains `index` (0 when line[index] is False)."""
    if not line[index]:
        return 0
    before = line[:index][::-1]
    after = line[index + 1 :]
    up = int(np.argmin(before)) if not before.all() else before.size
    down = int(np.argmin(after)) if not after.all() else after.size
    return up + down + 1


def _paint_mousebite(view: _View, rng: np.random.Generator, scale: _Scale) -> np.ndarray | None:
    """Bite one to three round notches out of the left edge of a copper feature."""
    runs = view.runs(of_copper=True)
    height = view.copper.shape[0]
    radius = scale.between(rng, 1.5, 2.6) + 0.6
    thick_enough = runs.lengths >= 2 * radius + 2
    candidates = np.flatnonzero((runs.starts > 0) & thick_enough)
    if candidates.size == 0:
        return None
    pick = int(candidates[rng.integers(candidates.size)])
    row, edge = int(runs.rows[pick]), int(runs.starts[pick])
    spacing = max(2, round(1.7 * radius))
    wanted = int(rng.integers(1, 4))
    bites = np.zeros_like(view.copper)
    for count in range(1, 5):
        bite_row = row + (count - 1) * spacing
        if bite_row >= height:
            return None
        edge_here = [a for a, b in runs.in_row(bite_row) if abs(a - edge) <= 2 and b - a >= 2 * radius + 2]
        if not edge_here:
            return None
        edge = edge_here[0]
        dys, dxs = _ellipse_offsets(0.0, 0.3 * radius - 0.5, radius, radius, 0.0)
        rows, columns = bite_row + dys, edge + dxs
        inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < bites.shape[1])
        bites[rows[inside], columns[inside]] = True
        if count >= wanted and (bites & view.copper).sum() >= MIN_CHANGED_PIXELS:
            return bites
    return None


def _paint_spur(view: _View, rng: np.random.Generator, scale: _Scale) -> np.ndarray | None:
    """Grow a thin copper finger rightwards from a copper edge into open laminate, tapering at its tip."""
    gaps = view.runs(of_copper=False)
    height, width = view.copper.shape
    thickness = max(2, round(scale.between(rng, 1.5, 2.5)))
    length = max(4, round(scale.between(rng, 4.0, 8.0)))
    clearance = max(2, round(2 * scale.factor))
    candidates = np.flatnonzero((gaps.starts > 0) & (gaps.lengths >= length + clearance))
    if candidates.size == 0:
        return None
    pick = int(candidates[rng.integers(candidates.size)])
    row, start = int(gaps.rows[pick]), int(gaps.starts[pick])
    for grown in range(length, length + 8):
        reach = min(width, start + grown + clearance)
        if start + grown > width or row + thickness > height:
            return None
        if not view.copper[row : row + thickness, start - 1].all():
            return None
        surroundings = view.copper[max(0, row - 1) : min(height, row + thickness + 1), start:reach]
        if surroundings.any():
            return None
        finger = np.zeros_like(view.copper)
        finger[row, start : start + grown] = True
        taper = grown - max(1, grown // 3)
        finger[row + 1 : row + thickness, start : start + taper] = True
        if finger.sum() >= MIN_CHANGED_PIXELS:
            return finger
    return None


def _paint_copper(view: _View, rng: np.random.Generator, scale: _Scale) -> np.ndarray | None:
    """Drop an irregular copper blob on open laminate, clear of every copper feature."""
    radius = max(_SMALLEST_RADIUS, scale.between(rng, 1.8, 3.0) + 0.8)
    clearance = max(2, round(1.5 * scale.factor))
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        shift_y, shift_x = rng.uniform(-0.6, 0.6, size=2) * radius
        stretch = float(rng.uniform(1.0, 1.6))
        part = radius * float(rng.uniform(0.6, 1.0))
        parts.append(_ellipse_offsets(shift_y, shift_x, part * stretch, part / stretch, rng.uniform(0, math.pi)))
    offsets = (np.concatenate([dy for dy, _ in parts]), np.concatenate([dx for _, dx in parts]))
    return _place(view, offsets, inside_copper=False, clearance=clearance, rng=rng)


def _paint_pin_hole(view: _View, rng: np.random.Generator, scale: _Scale) -> np.ndarray | None:
    """Punch a small round or oval hole into solid copper, leaving copper all around it."""
    radius = max(_SMALLEST_RADIUS, scale.between(rng, 1.5, 2.5) + 0.8)
    stretch = float(rng.uniform(1.0, 1.5))
    shift_y, shift_x = rng.uniform(-0.5, 0.5, size=2)
    offsets = _ellipse_offsets(shift_y, shift_x, radius * stretch, radius / stretch, rng.uniform(0, math.pi))
    return _place(view, offsets, inside_copper=True, clearance=1, rng=rng)


def _place(
    view: _View,
    offsets: tuple[np.ndarray, np.ndarray],
    *,
    inside_copper: bool,
    clearance: int,
    rng: np.random.Generator,
) -> np.ndarray | None:
    """Stamp a shape (pixel offsets around a centre) where it and `clearance` pixels around it fit."""
    if not view.interior(inside_copper, _SMALLEST_EXTENT + clearance).any():
        raise _NoSite
    dys, dxs = offsets
    extent = int(max(np.abs(dys).max(), np.abs(dxs).max()))
    centre = _interior_point(view.interior(inside_copper, extent + clearance), rng)
    if centre is None:
        return None
    shape = np.zeros_like(view.copper)
    shape[centre[0] + dys, centre[1] + dxs] = True
    return shape


def _ellipse_offsets(
    shift_y: float, shift_x: float, semi_major: float, semi_minor: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (dy, dx) from a centre pixel of the pixels inside an ellipse centred at (shift_y, shift_x)."""
    reach = math.ceil(max(semi_major, semi_minor) + max(abs(shift_y), abs(shift_x))) + 1
    dys, dxs = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    rel_y, rel_x = dys - shift_y, dxs - shift_x
    cos, sin = math.cos(angle), math.sin(angle)
    along, across = rel_x * cos + rel_y * sin, -rel_x * sin + rel_y * cos
    inside = (along / semi_major) ** 2 + (across / semi_minor) ** 2 <= 1.0
    return dys[inside], dxs[inside]


def _interior_point(interior: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """A random pixel of `interior` as (row, column), or None when it is empty."""
    points = np.flatnonzero(interior)
    if points.size == 0:
        return None
    row, column = divmod(int(points[rng.integers(points.size)]), interior.shape[1])
    return row, column


def _erode(mask: np.ndarray, margin: int) -> np.ndarray:
    """Square erosion; outside the image counts as not-in-mask."""
    window = 2 * margin + 1
    padded = np.pad(mask, margin, constant_values=False)
    rows = np.lib.stride_tricks.sliding_window_view(padded, window, axis=1).all(axis=-1)
    # all() over an axis of an array gives an array (numpy types it as "array or scalar").
    return cast(np.ndarray, np.lib.stride_tricks.sliding_window_view(rows, window, axis=0).all(axis=-1))


# defect type -> (painter, needs the four orientations, paints copper onto laminate)
_PAINTERS: dict[str, tuple[Painter, bool, bool]] = {
    "open": (_paint_open, True, False),
    "short": (_paint_short, True, True),
    "mousebite": (_paint_mousebite, True, False),
    "spur": (_paint_spur, True, True),
    "copper": (_paint_copper, False, True),
    "pin_hole": (_paint_pin_hole, False, False),
}
