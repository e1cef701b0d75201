"""Synthetic AOI workspaces: procedural boards written in the layout of the DeepPCB-AOI workspace.

`write_workspace` draws boards of golden tiles, derives a test image for every tile (registration jitter and
edge noise for PASS, plus one or two painted defects of one of the six DeepPCB types for NG), and writes
`images/<board>/{test,golden}/<tile>_<light><ext>` with the four Visual ChangeNet CSVs (seed training,
validation, KPI, mining pool). Boards never straddle two CSVs; the board shares follow DeepPCB (about 5% seed
training, 9% validation, 27% KPI, the rest in the pool), and the seed training set is skewed the same way:
pin holes and spurs appear at most once each there, while the pool holds plenty of them, so an improvement
loop has something real to find. The workspace is built in a hidden sibling folder and renamed into place,
so a failed run leaves nothing behind; the same spec always gives the same bytes.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image

from aoi_pipeline.core.dataset import PASS_LABEL, ordered_label_counts, write_dataset_csv
from aoi_pipeline.core.workspace import KPI, MINING_POOL, TRAINING, VALIDATION, Workspace
from aoi_pipeline.errors import ConfigError, DatasetError, Problem
from aoi_pipeline.synth.boards import golden_tile
from aoi_pipeline.synth.defects import DEFECT_TYPES, MIN_CHANGED_PIXELS, nuisance, paint_defect

CSV_COLUMNS = ("input_path", "golden_path", "label", "object_name", "boardname", "defect_count")
IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg")
MIN_BOARDS = 4
# Below this size the larger defect types (pin holes in solid copper, shorts) rarely find room on a tile.
MIN_DEFECT_TILE_SIZE = 32
RARE_IN_SEED = ("pin_hole", "spur")

# Board share of each set, as in DeepPCB-AOI; the mining pool takes the boards left over.
_BOARD_SHARES = ((TRAINING, 0.05), (VALIDATION, 0.09), (KPI, 0.27))
_TWO_DEFECTS_SHARE = 0.2
_GOLDEN_REDRAWS = 25
_EDGE_NOISE = 0.02


@dataclass(frozen=True)
class SynthSpec:
    """What to generate: boards of `tiles_per_board` square tiles of `size` px, `defect_share` of them NG."""

    boards: int = 40
    size: int = 64
    seed: int = 0
    tiles_per_board: int = 16
    defect_share: float = 0.35
    light: str = "SolderLight"
    image_ext: str = ".png"


@dataclass(frozen=True)
class SynthSummary:
    """What was written: the workspace root, rows per set and label counts per set (PASS first)."""

    root: Path
    rows: dict[str, int]
    label_counts: dict[str, dict[str, int]]


@dataclass(frozen=True)
class _Tile:
    board: str
    name: str
    label: str
    defect_count: int

    def row(self) -> dict[str, str]:
        return {
            "input_path": f"{self.board}/test",
            "golden_path": f"{self.board}/golden",
            "label": self.label,
            "object_name": self.name,
            "boardname": self.board,
            "defect_count": str(self.defect_count),
        }


def write_workspace(out: Path, spec: SynthSpec) -> SynthSummary:
    """Write a synthetic workspace into `out`, which must not exist yet or be an empty folder."""
    spec = _checked(spec)
    out = Path(os.path.abspath(Path(out).expanduser()))
    _refuse_non_empty(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        sets = _plan(spec)
        _write_into(staging, spec, sets)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    label_counts = {name: ordered_label_counts(tile.label for tile in tiles) for name, tiles in sets.items()}
    return SynthSummary(root=out, rows={name: len(tiles) for name, tiles in sets.items()}, label_counts=label_counts)


def _checked(spec: SynthSpec) -> SynthSpec:
    problems = []
    fix_int = "give a whole number"

    def need(ok: bool, name: str, what: str, fix: str) -> None:
        if not ok:
            problems.append(Problem(f"SynthSpec.{name}", f"{getattr(spec, name)!r} {what}", fix))

    for name in ("boards", "size", "seed", "tiles_per_board"):
        value = getattr(spec, name)
        need(isinstance(value, int) and not isinstance(value, bool), name, "is not an integer", fix_int)
    if not problems:
        need(spec.boards >= MIN_BOARDS, "boards", f"is below {MIN_BOARDS}", "one board per set at least")
        need(
            spec.size >= MIN_DEFECT_TILE_SIZE, "size", f"is below {MIN_DEFECT_TILE_SIZE} px", "give a larger tile size"
        )
        need(spec.seed >= 0, "seed", "is negative", "give a seed >= 0")
        need(spec.tiles_per_board >= 2, "tiles_per_board", "is below 2", "give 2 or more tiles per board")
    need(
        isinstance(spec.defect_share, int | float) and 0 < spec.defect_share < 1,
        "defect_share",
        "is not a share strictly between 0 and 1",
        "give the share of NG tiles, e.g. 0.35",
    )
    light_ok = isinstance(spec.light, str) and spec.light != "" and not any(c in spec.light for c in "/\\ \t")
    need(light_ok, "light", "is not a light name", "give a name without spaces or slashes, e.g. SolderLight")
    ext = spec.image_ext if str(spec.image_ext).startswith(".") else f".{spec.image_ext}"
    need(
        ext.lower() in IMAGE_EXTENSIONS,
        "image_ext",
        "is not a supported image extension",
        f"use one of {', '.join(IMAGE_EXTENSIONS)}",
    )
    if problems:
        raise ConfigError(problems, summary="the synthetic workspace spec is invalid")
    values = {field.name: getattr(spec, field.name) for field in fields(spec)}
    return SynthSpec(**{**values, "image_ext": ext.lower(), "defect_share": float(spec.defect_share)})


def _refuse_non_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        kind = "folder is not empty" if out.is_dir() else "path is a file"
        raise DatasetError.at(
            str(out),
            f"the {kind}; a synthetic workspace is only written into a new or empty folder",
            "give a new folder, or delete this one first if it holds nothing you need",
        )


def _plan(spec: SynthSpec) -> dict[str, list[_Tile]]:
    """Boards per set and the label of every tile, in set order."""
    rng = np.random.default_rng([spec.seed, 0])
    boards = [f"b{index:04d}" for index in range(spec.boards)]
    order = rng.permutation(spec.boards)
    counts = {name: max(1, round(share * spec.boards)) for name, share in _BOARD_SHARES}
    counts[MINING_POOL] = spec.boards - sum(counts.values())
    tile_names = _tile_names(spec.tiles_per_board)
    sets: dict[str, list[_Tile]] = {}
    first = 0
    for name in (TRAINING, VALIDATION, KPI, MINING_POOL):
        members = sorted(boards[int(index)] for index in order[first : first + counts[name]])
        first += counts[name]
        slots = [(board, tile) for board in members for tile in tile_names]
        labels = _labels(len(slots), spec.defect_share, skewed=name == TRAINING, rng=rng)
        sets[name] = [
            _Tile(board, tile, label, 0 if label == PASS_LABEL else 1 + int(rng.random() < _TWO_DEFECTS_SHARE))
            for (board, tile), label in zip(slots, labels, strict=True)
        ]
    return sets


def _tile_names(count: int) -> list[str]:
    """Grid ids `T<row><col>` like DeepPCB-AOI's 4x4 cut; wider grids get more digits per coordinate."""
    columns = int(np.ceil(np.sqrt(count)))
    digits = len(str(columns - 1))
    return [f"T{index // columns:0{digits}d}{index % columns:0{digits}d}" for index in range(count)]


def _labels(slots: int, defect_share: float, *, skewed: bool, rng: np.random.Generator) -> list[str]:
    """PASS or a defect type per slot: every set holds both classes, defect types come round-robin."""
    defects = min(slots - 1, max(1, round(defect_share * slots)))
    if skewed:
        common = [kind for kind in DEFECT_TYPES if kind not in RARE_IN_SEED]
        # The rare types appear once each only where the common ones still outnumber them.
        rare = list(RARE_IN_SEED) if defects >= 2 * len(RARE_IN_SEED) + 1 else []
        kinds = rare + [common[index % len(common)] for index in rng.permutation(defects - len(rare))]
    else:
        cycle = [DEFECT_TYPES[int(index)] for index in rng.permutation(len(DEFECT_TYPES))]
        kinds = [cycle[index % len(cycle)] for index in range(defects)]
    labels = [PASS_LABEL] * slots
    for slot, kind in zip(rng.choice(slots, size=defects, replace=False), rng.permutation(kinds), strict=True):
        labels[int(slot)] = str(kind)
    return labels


def _write_into(root: Path, spec: SynthSpec, sets: dict[str, list[_Tile]]) -> None:
    workspace = Workspace.at(root)
    boards: dict[str, list[_Tile]] = {}
    for tiles in sets.values():
        for tile in tiles:
            boards.setdefault(tile.board, []).append(tile)
    for number, board in enumerate(sorted(boards)):
        rng = np.random.default_rng([spec.seed, 1, number])
        _write_board(workspace.images_dir / board, boards[board], spec, rng)
    for name, tiles in sets.items():
        write_dataset_csv(workspace.csv_path(name), CSV_COLUMNS, (tile.row() for tile in tiles))
    (root / "README.md").write_text(_readme(spec, sets), encoding="utf-8")


def _write_board(folder: Path, tiles: Sequence[_Tile], spec: SynthSpec, rng: np.random.Generator) -> None:
    (folder / "test").mkdir(parents=True)
    (folder / "golden").mkdir()
    max_shift = max(1, round(spec.size / 32))
    for tile in tiles:
        golden, test = _tile_pair(tile, spec.size, max_shift, rng)
        file_name = f"{tile.name}_{spec.light}{spec.image_ext}"
        _save(golden, folder / "golden" / file_name)
        _save(test, folder / "test" / file_name)


def _tile_pair(tile: _Tile, size: int, max_shift: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A golden tile and its test image; a golden with no room for the tile's defect is drawn again."""
    for _ in range(_GOLDEN_REDRAWS):
        golden = golden_tile(size, rng)
        test = nuisance(golden, rng, max_shift=max_shift, edge_noise=_EDGE_NOISE)
        try:
            for _ in range(tile.defect_count):
                test, _ = paint_defect(test, tile.label, rng)
        except DatasetError:
            continue
        return golden, test
    raise DatasetError.at(
        f"{tile.board}/{tile.name}",
        f"no generated golden tile of {size} px could take a {tile.label} defect in {_GOLDEN_REDRAWS} draws",
        "use a larger tile size",
    )


def _save(image: np.ndarray, path: Path) -> None:
    """1-bit PNG/BMP like DeepPCB-AOI; JPEG cannot hold 1-bit images, so it gets 8-bit grey at quality 95."""
    if path.suffix in (".jpg", ".jpeg"):
        Image.fromarray(image).save(path, quality=95)
    else:
        Image.fromarray(image >= 128).save(path)


def _readme(spec: SynthSpec, sets: dict[str, list[_Tile]]) -> str:
    layout = Workspace.at(Path("/"))
    table = []
    for name, tiles in sets.items():
        labels = ", ".join(f"{label} {count}" for label, count in ordered_label_counts(t.label for t in tiles).items())
        boards = len({tile.board for tile in tiles})
        csv_name = layout.csv_path(name).relative_to(layout.root).as_posix()
        table.append(f"| {csv_name} | {boards} | {len(tiles)} | {labels} |")
    image = f"<tile>_{spec.light}{spec.image_ext}"
    paragraphs = [
        "Procedural PCB tiles in the layout of the DeepPCB-AOI workspace, for demos, tests and trying the "
        "improvement loop without production data. Golden tiles hold traces, pads, vias and ground fill "
        "(copper black, laminate white). Every PASS test image is its golden with a registration shift of up "
        f"to {max(1, round(spec.size / 32))} px and binarisation noise on copper edges; every NG test image "
        "also carries one or two painted defects of its label's type (open, short, mousebite, spur, copper, "
        f"pin_hole), each changing at least {MIN_CHANGED_PIXELS} pixels.",
        f"Spec: boards={spec.boards}, size={spec.size}, seed={spec.seed}, "
        f"tiles_per_board={spec.tiles_per_board}, "
        f"defect_share={spec.defect_share}, light={spec.light}, image_ext={spec.image_ext}. The same spec "
        "writes the same bytes.",
    ]
    notes = [
        "Boards never straddle two files. The seed training set is small and skewed on purpose: pin holes "
        "and spurs appear at most once each there, while the mining pool holds plenty of them.",
        f"Images: `images/<board>/test/{image}` (input) and `images/<board>/golden/{image}`, "
        f"{spec.size}x{spec.size} px. CSV columns: `{', '.join(CSV_COLUMNS)}` (paths are directories "
        f"relative to `images/`). Matching spec settings: `dataset.classify.image_ext: {spec.image_ext}`, "
        f"`input_map: {{{spec.light}: 0}}`, `num_input: 1`.",
    ]
    lines = ["# Synthetic AOI workspace", ""]
    for paragraph in paragraphs:
        lines += [textwrap.fill(paragraph, width=100), ""]
    defaults = SynthSpec()
    # The command line sets boards, size, seed and image_ext only; other specs are reproduced through the API.
    if (spec.tiles_per_board, spec.defect_share, spec.light) == (
        defaults.tiles_per_board,
        defaults.defect_share,
        defaults.light,
    ):
        command = f"aoi-pipeline data synth OUT --boards {spec.boards} --size {spec.size} --seed {spec.seed}"
        lines += ["```", f"{command} --image-ext {spec.image_ext}", "```", ""]
    lines += ["## Layout", "", "| file | boards | rows | labels |", "|---|---|---|---|", *table, ""]
    for paragraph in notes:
        lines += [textwrap.fill(paragraph, width=100, break_on_hyphens=False, break_long_words=False), ""]
    return "\n".join(lines)
