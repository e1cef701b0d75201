"""Procedural golden PCB tiles: binarised traces, pads, vias and ground fill, as an AOI scanner sees them.

A tile follows the polarity of the DeepPCB scans: copper is black (0) and bare laminate white (255). Traces
run in buses of parallel lines with Manhattan and 45-degree bends and keep a clearance from each other;
single traces end on a rectangular SMD pad or a via ring; ground fill covers part of some tiles and keeps a
clearance gap around every trace, pad and via that crosses it. Shapes are rasterised without anti-aliasing,
so a tile is binary from the start, and the same generator state always gives the same tile.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw

COPPER = 0
LAMINATE = 255
MIN_TILE_SIZE = 24

# Unit steps of the eight Manhattan/45-degree directions as (dx, dy), counter-clockwise from +x.
_DIRECTIONS = tuple((round(math.cos(k * math.pi / 4), 12), round(math.sin(k * math.pi / 4), 12)) for k in range(8))
_PLACEMENT_ATTEMPTS = 5
_MIN_COPPER_SHARE = 0.08

Point = tuple[float, float]


@dataclass(frozen=True)
class _Line:
    """A trace along a polyline with round ends and rounded joints."""

    path: tuple[Point, ...]
    width: int

    def draw(self, draw: ImageDraw.ImageDraw, grow: int = 0) -> None:
        width = self.width + 2 * grow
        draw.line(self.path, fill=1, width=width)
        # A disc on every vertex gives round ends and round joints (cheaper than Pillow's joint="curve").
        for vertex in self.path:
            _Disc(vertex, (width - 1) / 2).draw(draw)


@dataclass(frozen=True)
class _Disc:
    """A round pad, via body or drill hole."""

    centre: Point
    radius: float

    def draw(self, draw: ImageDraw.ImageDraw, grow: int = 0) -> None:
        x, y = self.centre
        radius = self.radius + grow
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=1)


@dataclass(frozen=True)
class _Box:
    """An axis-aligned SMD pad."""

    centre: Point
    half_w: float
    half_h: float

    def draw(self, draw: ImageDraw.ImageDraw, grow: int = 0) -> None:
        x, y = self.centre
        half_w, half_h = self.half_w + grow, self.half_h + grow
        draw.rectangle((x - half_w, y - half_h, x + half_w, y + half_h), fill=1)


_Shape = _Line | _Disc | _Box


@dataclass
class _Group:
    """Shapes placed together (a bus with its pad, a pad with its stub): copper shapes and drilled holes."""

    copper: list[_Shape] = field(default_factory=list)
    holes: list[_Disc] = field(default_factory=list)

    def via(self, centre: Point, outer: float) -> None:
        """A plated via: a copper ring around a drilled hole."""
        outer = max(outer, 3.0)
        self.copper.append(_Disc(centre, outer))
        self.holes.append(_Disc(centre, max(1.0, outer * 0.5)))


class _Tile:
    """The layers of one tile; copper = (fill minus clearance) plus features minus holes.

    Shapes are rasterised by Pillow (C code, no anti-aliasing); a numpy distance field per shape would cost
    more than the rest of a workspace together. A candidate group is rasterised with its clearance first and
    kept only if that band touches no copper already drawn, so traces never cross or touch.
    """

    def __init__(self, size: int, fill: np.ndarray, clearance: int) -> None:
        self.size = size
        self.fill = fill
        self.clearance_px = clearance
        self._features, self._clearance, self._holes = (Image.new("1", (size, size), 0) for _ in range(3))
        self._draw_features = ImageDraw.Draw(self._features)
        self._draw_clearance = ImageDraw.Draw(self._clearance)
        self._draw_holes = ImageDraw.Draw(self._holes)

    def place(self, make: Callable[[], _Group]) -> None:
        """Add the first candidate group whose clearance band touches no copper already drawn."""
        for _ in range(_PLACEMENT_ATTEMPTS):
            group = make()
            band = Image.new("1", (self.size, self.size), 0)
            band_draw = ImageDraw.Draw(band)
            for shape in group.copper:
                shape.draw(band_draw, self.clearance_px)
            if ImageChops.logical_and(band, self._features).getbbox() is not None:
                continue
            for shape in group.copper:
                shape.draw(self._draw_features)
                shape.draw(self._draw_clearance, self.clearance_px)
            for shape in group.holes:
                shape.draw(self._draw_holes)
            return

    def copper(self) -> np.ndarray:
        features, clearance, holes = (np.array(layer) for layer in (self._features, self._clearance, self._holes))
        return ((self.fill & ~clearance) | features) & ~holes


def golden_tile(size: int, rng: np.random.Generator) -> np.ndarray:
    """A PCB-like binarised golden tile, uint8 `size` x `size`, copper 0 and laminate 255."""
    if size < MIN_TILE_SIZE:
        raise ValueError(f"tile size {size} is below the minimum of {MIN_TILE_SIZE} pixels")
    clearance = max(2, round(0.045 * size))
    fill = _ground_fill(size, rng) if rng.random() < 0.55 else np.zeros((size, size), dtype=bool)
    tile = _Tile(size, fill, clearance)
    for _ in range(_pick(rng, (1, 2, 2, 3))):
        tile.place(lambda: _bus(size, rng))
    for _ in range(int(rng.integers(0, 3))):
        tile.place(lambda: _isolated_pad(size, rng))
    copper = tile.copper()
    # A nearly bare tile teaches nothing and gives most defect types no place to land.
    for _ in range(_PLACEMENT_ATTEMPTS):
        if copper.mean() >= _MIN_COPPER_SHARE:
            break
        tile.place(lambda: _bus(size, rng))
        copper = tile.copper()
    return np.where(copper, COPPER, LAMINATE).astype(np.uint8)


def _pick(rng: np.random.Generator, options: tuple[int, ...]) -> int:
    """One of `options`, uniformly; repeat an option to weight it (cheaper than Generator.choice on lists)."""
    return options[int(rng.integers(len(options)))]


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre x and y coordinates of a tile, shared read-only by every ground fill of that size."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    xs.setflags(write=False)
    ys.setflags(write=False)
    return xs, ys


def _ground_fill(size: int, rng: np.random.Generator) -> np.ndarray:
    """A copper pour bounded by an axis-aligned edge, often with a 45-degree notch cut into that edge."""
    xs, ys = _grid(size)
    depth = rng.uniform(0.2, 0.6) * size
    side = int(rng.integers(4))
    along = (xs, ys, size - 1 - xs, size - 1 - ys)[side]
    across = (ys, xs, size - 1 - ys, size - 1 - xs)[side]
    fill = along < depth
    if rng.random() < 0.6:
        notch = rng.uniform(0.1, 0.6) * size
        fill &= (depth - along) + np.abs(across - rng.uniform(0, size)) > notch
    return fill


def _bus(size: int, rng: np.random.Generator) -> _Group:
    """One to four parallel traces along a polyline with Manhattan or 45-degree bends."""
    group = _Group()
    width = max(2, round(rng.uniform(0.05, 0.11) * size))
    gap = max(2, round(rng.uniform(0.04, 0.09) * size))
    count = _pick(rng, (1, 1, 2, 2, 3, 4))
    vertices = _polyline(size, rng, ends_inside=count == 1 and rng.random() < 0.6)
    for index in range(count):
        offset = (index - (count - 1) / 2) * (width + gap)
        group.copper.append(_Line(_offset_polyline(vertices, offset), width))
    end = vertices[-1]
    if count == 1 and 0 <= end[0] < size and 0 <= end[1] < size:
        if rng.random() < 0.5:
            half_w, half_h = rng.uniform(0.8, 1.6, size=2) * width + 1
            group.copper.append(_Box(end, half_w, half_h))
        else:
            group.via(end, rng.uniform(0.07, 0.12) * size)
    return group


def _isolated_pad(size: int, rng: np.random.Generator) -> _Group:
    """A component pad or a via with a short stub trace, placed anywhere on the tile."""
    group = _Group()
    centre = (rng.uniform(0.15, 0.85) * size, rng.uniform(0.15, 0.85) * size)
    width = max(2, round(rng.uniform(0.05, 0.09) * size))
    dx, dy = _DIRECTIONS[int(rng.integers(8))]
    length = rng.uniform(0.15, 0.4) * size
    group.copper.append(_Line((centre, (centre[0] + dx * length, centre[1] + dy * length)), width))
    if rng.random() < 0.5:
        half_w, half_h = rng.uniform(0.06, 0.13, size=2) * size
        group.copper.append(_Box(centre, half_w, half_h))
    else:
        group.via(centre, rng.uniform(0.07, 0.13) * size)
    return group


def _polyline(size: int, rng: np.random.Generator, *, ends_inside: bool) -> list[Point]:
    """Vertices of a trace path entering from one tile edge, turning by 45 or 90 degrees between segments."""
    position = rng.uniform(0.15, 0.85) * size
    margin = 3.0
    start, heading = (
        ((position, -margin), 2),
        ((-margin, position), 0),
        ((position, size - 1 + margin), 6),
        ((size - 1 + margin, position), 4),
    )[int(rng.integers(4))]
    if rng.random() < 0.25:
        heading = (heading + _pick(rng, (-1, 1))) % 8
    vertices = [start]
    segments = _pick(rng, (1, 2, 2, 3))
    for index in range(segments):
        length = rng.uniform(0.25, 0.7) * size
        if index == segments - 1:
            length = rng.uniform(0.3, 0.6) * size if ends_inside else 1.6 * size
        dx, dy = _DIRECTIONS[heading]
        x, y = vertices[-1]
        vertices.append((x + dx * length, y + dy * length))
        heading = (heading + _pick(rng, (-1, 1, -1, 1, -2, 2))) % 8
    return vertices


def _offset_polyline(vertices: list[Point], offset: float) -> tuple[Point, ...]:
    """The polyline shifted sideways by `offset`, with mitred joints so parallel traces keep their pitch."""
    if offset == 0:
        return tuple(vertices)
    normals = []
    for (x0, y0), (x1, y1) in itertools.pairwise(vertices):
        length = math.hypot(x1 - x0, y1 - y0)
        normals.append((-(y1 - y0) / length, (x1 - x0) / length))
    shifted = []
    for index, (x, y) in enumerate(vertices):
        before = normals[max(index - 1, 0)]
        after = normals[min(index, len(normals) - 1)]
        scale = 1.0 + before[0] * after[0] + before[1] * after[1]
        shifted.append((x + offset * (before[0] + after[0]) / scale, y + offset * (before[1] + after[1]) / scale))
    return tuple(shifted)
