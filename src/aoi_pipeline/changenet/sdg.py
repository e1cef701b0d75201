"""The `sdg` action of `aoi-changenet`: procedural synthetic NG samples in the AnomalyGen output layout.

From the PASS rows of a Visual ChangeNet CSV (golden, test) and an allocation `{defect_type: count}`, paint
one defect of each requested type into a PASS test image (the golden is never touched) and write what the
reference's AnomalyGen stage writes, so the loop ingests either the same way:
`reconstructed_image/<T>+<A>_<idx>.png` (the synthetic NG), `original_image/<T>+<A>_<idx>.png` (its golden,
paired 1:1 by file name), `original_mask/<T>+<A>_<idx>.png` (changed pixels, white), `SDG_result.csv` (one row
per sample), `allocation.json` (the requested allocation) and `timing_summary.json`. `<T>` is the texture,
`<A>` the defect type (the label the caller derives from the file name) and `<idx>` a five-digit index per
type. Images are read as single-channel grey; the painters treat pixels below 128 as copper.

Spec keys, all under `sdg:` (relative paths resolve against the spec file's folder):
  pairs_csv    (required) CSV with `input_path, golden_path, label, object_name`; only rows labelled PASS
               are used as sources.
  images_dir   (required) the root the CSV's directories are relative to.
  allocation   (required) mapping of defect type (open, short, mousebite, spur, copper, pin_hole) to a
               positive count; exactly that many samples of each type are generated, or the action fails.
  results_dir  (required, or the top-level `results_dir` + `/sdg`) where the outputs go; existing outputs
               there are never overwritten.
  light        (default SolderLight) the light name in the image file names.
  image_ext    (default .png) the extension of the source images.
  seed         (default 0) same seed, same sources and spec: same images, masks and SDG_result.csv.
  texture      (default PCB) the `<T>` of the output file names.
Sources are visited in a seeded order; when a source has no site for a defect type (a pin hole needs solid
copper), the next source is tried, and the action fails only when no source can take that type.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aoi_pipeline.core.dataset import (
    IMAGE_SUFFIXES,
    PASS_LABEL,
    image_files,
    read_dataset_csv,
    write_dataset_csv,
)
from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.errors import DatasetError, Problem, SpecError
from aoi_pipeline.synth.defects import DEFECT_TYPES, paint_defect

RECONSTRUCTED_DIR = "reconstructed_image"
ORIGINAL_DIR = "original_image"
MASK_DIR = "original_mask"
RESULT_CSV = "SDG_result.csv"
ALLOCATION_JSON = "allocation.json"
TIMING_JSON = "timing_summary.json"
OUTPUT_NAMES = (RECONSTRUCTED_DIR, ORIGINAL_DIR, MASK_DIR, RESULT_CSV, ALLOCATION_JSON, TIMING_JSON)
RESULT_COLUMNS = (
    "image",
    "original_image",
    "mask",
    "defect_type",
    "source_input_path",
    "source_golden_path",
    "source_object_name",
    "changed_pixels",
    "seed",
    "guardrail_pass",
)
REQUIRED_KEYS = ("pairs_csv", "images_dir", "allocation", "results_dir")
OPTIONAL_KEYS = {"light": "SolderLight", "image_ext": ".png", "seed": 0, "texture": "PCB"}
MAX_LISTED_MISSING = 20

_TEXTURE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_LIGHT = re.compile(r"[^\s/\\]+")


@dataclass(frozen=True)
class SdgSpec:
    """A validated SDG request; paths are absolute."""

    pairs_csv: Path
    images_dir: Path
    allocation: dict[str, int]
    results_dir: Path
    light: str = "SolderLight"
    image_ext: str = ".png"
    seed: int = 0
    texture: str = "PCB"

    def sample_name(self, defect_type: str, index: int) -> str:
        return f"{self.texture}+{defect_type}_{index:05d}.png"


@dataclass(frozen=True)
class SdgSummary:
    """What one run generated: samples per defect type (equal to the allocation) and where."""

    results_dir: Path
    generated: dict[str, int]
    sources_used: int
    seconds: float


@dataclass(frozen=True)
class _Source:
    row: dict[str, str]
    test_file: Path
    golden_file: Path


@dataclass(frozen=True)
class _Sample:
    name: str
    defect_type: str
    source: _Source
    painted: np.ndarray
    golden: np.ndarray
    mask: np.ndarray


def load_sdg_spec(path: Path) -> SdgSpec:
    """Read and validate an SDG spec file (see the module docstring for its keys)."""
    path = Path(path)
    return parse_sdg_spec(load_spec(path), spec_path=path)


def run_sdg(spec: dict[str, Any], *, spec_path: Path) -> None:
    """The `aoi-changenet sdg` action: validate `spec` (already loaded, overrides applied) and generate."""
    summary = generate(parse_sdg_spec(spec, spec_path=spec_path))
    by_type = ", ".join(f"{kind} {count}" for kind, count in summary.generated.items())
    total = sum(summary.generated.values())
    print(
        f"SDG: requested={total}, generated={total} by type ({by_type}) from {summary.sources_used} PASS "
        f"source pair(s) in {summary.seconds:.2f} s; written to {summary.results_dir}"
    )


def parse_sdg_spec(spec: Mapping[str, Any], *, spec_path: Path) -> SdgSpec:
    """Validate the shape of an SDG spec; one SpecError listing every problem."""
    base = Path(spec_path).resolve().parent
    where = f"{spec_path}"
    if not isinstance(spec, Mapping):
        raise SpecError.at(where, f"the spec is a {type(spec).__name__}, not a mapping", "write an `sdg:` block")
    problems: list[Problem] = []
    unknown_top = sorted(str(key) for key in spec if key not in ("sdg", "results_dir"))
    for key in unknown_top:
        problems.append(
            Problem(f"{where}: {key}", "is not a key of an SDG spec", "remove it; the sdg action reads `sdg.*`")
        )
    block = spec.get("sdg")
    if not isinstance(block, Mapping):
        problems.append(
            Problem(
                f"{where}: sdg",
                "is missing" if block is None else f"is a {type(block).__name__}, not a mapping",
                "add an `sdg:` block with pairs_csv, images_dir, allocation and results_dir",
            )
        )
        raise SpecError(problems)
    values = {**OPTIONAL_KEYS, **block}
    if "results_dir" not in block and isinstance(spec.get("results_dir"), str | Path):
        values["results_dir"] = str(Path(spec["results_dir"]) / "sdg")
    for key in sorted(str(key) for key in block if key not in REQUIRED_KEYS and key not in OPTIONAL_KEYS):
        allowed = ", ".join((*REQUIRED_KEYS, *OPTIONAL_KEYS))
        problems.append(Problem(f"{where}: sdg.{key}", "is not an SDG key", f"remove it; known keys: {allowed}"))
    for key in REQUIRED_KEYS:
        if values.get(key) in (None, ""):
            problems.append(Problem(f"{where}: sdg.{key}", "is missing", _REQUIRED_FIX[key]))
    paths = _paths(values, base, where, problems)
    allocation = _allocation(values.get("allocation"), where, problems)
    light, texture, seed = values["light"], values["texture"], values["seed"]
    _check_names(light, texture, where, problems)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(Problem(f"{where}: sdg.seed", f"{seed!r} is not an integer >= 0", "e.g. seed: 42"))
    image_ext = _image_ext(values["image_ext"], where, problems)
    if problems:
        raise SpecError(problems, summary=f"the SDG spec {where} is invalid")
    return SdgSpec(
        pairs_csv=paths["pairs_csv"],
        images_dir=paths["images_dir"],
        allocation=allocation,
        results_dir=paths["results_dir"],
        light=light,
        image_ext=image_ext,
        seed=seed,
        texture=texture,
    )


def _paths(values: Mapping[str, Any], base: Path, where: str, problems: list[Problem]) -> dict[str, Path]:
    """The spec's paths resolved against the spec file's folder; a value that is not a path is a problem."""
    paths = {}
    for key in ("pairs_csv", "images_dir", "results_dir"):
        value = values.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str | Path):
            problems.append(Problem(f"{where}: sdg.{key}", f"{value!r} is not a path", _REQUIRED_FIX[key]))
            continue
        paths[key] = (base / Path(value).expanduser()).resolve()
    return paths


def _check_names(light: Any, texture: Any, where: str, problems: list[Problem]) -> None:
    """The light and texture become parts of file names: refuse what cannot be one."""
    if not isinstance(light, str) or not _LIGHT.fullmatch(light):
        problems.append(
            Problem(
                f"{where}: sdg.light",
                f"{light!r} is not a light name",
                "e.g. SolderLight (no spaces or slashes)",
            )
        )
    if not isinstance(texture, str) or not _TEXTURE.fullmatch(texture):
        problems.append(
            Problem(
                f"{where}: sdg.texture",
                f"{texture!r} cannot be the <T> of <T>+<A>_<idx>.png",
                "use letters, digits, '-' or '_' only, e.g. PCB",
            )
        )


_REQUIRED_FIX = {
    "pairs_csv": "give the CSV of (golden, test) pairs whose PASS rows are the sources",
    "images_dir": "give the folder the CSV's input_path/golden_path directories are relative to",
    "allocation": "give a mapping of defect type to count, e.g. {open: 3, spur: 5}; types: " + ", ".join(DEFECT_TYPES),
    "results_dir": "give the folder for the outputs (or a top-level results_dir)",
}


def _allocation(raw: Any, where: str, problems: list[Problem]) -> dict[str, int]:
    if raw in (None, ""):
        return {}
    if not isinstance(raw, Mapping) or not raw:
        problems.append(
            Problem(f"{where}: sdg.allocation", f"{raw!r} is not a non-empty mapping", _REQUIRED_FIX["allocation"])
        )
        return {}
    allocation = {}
    for key, count in raw.items():
        if key not in DEFECT_TYPES:
            problems.append(
                Problem(
                    f"{where}: sdg.allocation.{key}",
                    "is not a defect type the procedural SDG can paint",
                    f"use one of {', '.join(DEFECT_TYPES)} (lower case)",
                )
            )
        elif isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            problems.append(
                Problem(
                    f"{where}: sdg.allocation.{key}",
                    f"count {count!r} is not a positive integer",
                    "give a whole number >= 1, or remove the type from the allocation",
                )
            )
        else:
            allocation[key] = count
    return allocation


def _image_ext(raw: Any, where: str, problems: list[Problem]) -> str:
    ext = raw.strip() if isinstance(raw, str) else ""
    ext = ext if ext.startswith(".") or not ext else f".{ext}"
    if ext.lower() not in IMAGE_SUFFIXES:
        problems.append(
            Problem(
                f"{where}: sdg.image_ext",
                f"{raw!r} is not an image extension",
                f"use the source images' extension, one of {', '.join(sorted(IMAGE_SUFFIXES))}",
            )
        )
    return ext


def generate(sdg: SdgSpec) -> SdgSummary:
    """Generate the allocation into `sdg.results_dir`; nothing is written unless every sample succeeded."""
    started = time.perf_counter()
    sources = _sources(sdg)
    _refuse_existing_outputs(sdg)
    # Sources are taken in one seeded order; each sample starts after the source the previous one used, so
    # a run spreads over as many boards as can take its defects.
    order = [sources[int(k)] for k in np.random.default_rng([sdg.seed, 0]).permutation(len(sources))]
    cursor = 0
    samples: list[_Sample] = []
    seconds_by_type: dict[str, float] = {}
    for type_number, defect_type in enumerate(DEFECT_TYPES):
        type_started = time.perf_counter()
        for index in range(sdg.allocation.get(defect_type, 0)):
            rng = np.random.default_rng([sdg.seed, 1, type_number, index])
            sample, used = _paint(sdg, defect_type, index, order, cursor, rng)
            samples.append(sample)
            cursor = (used + 1) % len(order)
        if defect_type in sdg.allocation:
            seconds_by_type[defect_type] = time.perf_counter() - type_started
    _write(sdg, samples, seconds_by_type, time.perf_counter() - started)
    generated = {kind: sum(1 for s in samples if s.defect_type == kind) for kind in sdg.allocation}
    used = len({sample.source.test_file for sample in samples})
    return SdgSummary(sdg.results_dir, generated, used, time.perf_counter() - started)


def _sources(sdg: SdgSpec) -> list[_Source]:
    """PASS rows of the pairs CSV whose test and golden images both exist."""
    missing = [
        Problem(f"sdg.{key}", f"{path} does not exist", _REQUIRED_FIX[key])
        for key, path, exists in (
            ("pairs_csv", sdg.pairs_csv, sdg.pairs_csv.is_file()),
            ("images_dir", sdg.images_dir, sdg.images_dir.is_dir()),
        )
        if not exists
    ]
    if missing:
        raise DatasetError(missing)
    table = read_dataset_csv(sdg.pairs_csv)
    sources, absent = [], []
    for number, row in enumerate(table.rows, start=1):
        if row["label"] != PASS_LABEL:
            continue
        test_file, golden_file = image_files(
            row, images_dir=sdg.images_dir, lights=(sdg.light,), image_ext=sdg.image_ext
        )
        gone = [str(path) for path in (test_file, golden_file) if not path.is_file()]
        if gone:
            absent.append(
                Problem(
                    f"sdg.pairs_csv ({sdg.pairs_csv}): row {number}",
                    f"image missing: {', '.join(gone)}",
                    "fix the row's paths or object_name, or sdg.images_dir, sdg.light and sdg.image_ext",
                )
            )
        else:
            sources.append(_Source(row, test_file, golden_file))
    if absent:
        listed = absent[:MAX_LISTED_MISSING]
        if len(absent) > len(listed):
            more = f"{len(absent) - len(listed)} more PASS rows have missing images"
            listed.append(Problem(f"sdg.pairs_csv ({sdg.pairs_csv})", more, "fix them like the rows above"))
        raise DatasetError(listed, summary=f"{len(absent)} PASS source rows have missing images")
    if not sources:
        raise DatasetError.at(
            f"sdg.pairs_csv ({sdg.pairs_csv})",
            f"none of its {len(table.rows)} rows is labelled PASS: no defect-free source to paint on",
            "give a CSV with PASS (golden, test) pairs (label exactly PASS), e.g. the seed training set",
        )
    return sources


def _refuse_existing_outputs(sdg: SdgSpec) -> None:
    present = [name for name in OUTPUT_NAMES if (sdg.results_dir / name).exists()]
    if present:
        raise DatasetError.at(
            f"sdg.results_dir ({sdg.results_dir})",
            f"already holds SDG outputs ({', '.join(present)}); a new run never mixes with an old one",
            "give a new results_dir, or delete the old outputs first",
        )


def _paint(
    sdg: SdgSpec, defect_type: str, index: int, order: list[_Source], cursor: int, rng: np.random.Generator
) -> tuple[_Sample, int]:
    """One sample on the first source from `cursor` on that has a site for the defect, and its position."""
    for step in range(len(order)):
        position = (cursor + step) % len(order)
        source = order[position]
        try:
            painted, mask = paint_defect(_load(source.test_file), defect_type, rng)
        except DatasetError:
            continue
        golden = _load(source.golden_file)
        name = sdg.sample_name(defect_type, index)
        return _Sample(name, defect_type, source, painted, golden, mask), position
    raise DatasetError.at(
        f"sdg.pairs_csv ({sdg.pairs_csv})",
        f"none of its {len(order)} PASS source images has a site for a {defect_type} defect",
        f"add PASS pairs with suitable copper structure, or drop {defect_type} from sdg.allocation",
    )


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("L"))


def _write(sdg: SdgSpec, samples: list[_Sample], seconds_by_type: dict[str, float], seconds: float) -> None:
    """Images first, the result CSV and the allocation last: a crash never leaves a CSV claiming them."""
    for folder in (RECONSTRUCTED_DIR, ORIGINAL_DIR, MASK_DIR):
        (sdg.results_dir / folder).mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in samples:
        Image.fromarray(sample.painted).save(sdg.results_dir / RECONSTRUCTED_DIR / sample.name)
        Image.fromarray(sample.golden).save(sdg.results_dir / ORIGINAL_DIR / sample.name)
        Image.fromarray(sample.mask).save(sdg.results_dir / MASK_DIR / sample.name)
        rows.append(
            {
                "image": f"{RECONSTRUCTED_DIR}/{sample.name}",
                "original_image": f"{ORIGINAL_DIR}/{sample.name}",
                "mask": f"{MASK_DIR}/{sample.name}",
                "defect_type": sample.defect_type,
                "source_input_path": sample.source.row["input_path"],
                "source_golden_path": sample.source.row["golden_path"],
                "source_object_name": sample.source.row["object_name"],
                "changed_pixels": str(int(sample.mask.sum())),
                "seed": str(sdg.seed),
                # AnomalyGen marks images its guardrail blocked with 0; procedural images are never blocked.
                "guardrail_pass": "1",
            }
        )
    total = len(samples)
    atomic_write_json(
        sdg.results_dir / TIMING_JSON,
        {
            "samples": total,
            "seconds_total": round(seconds, 4),
            "seconds_per_sample": round(seconds / total, 6) if total else 0.0,
            "seconds_by_type": {kind: round(value, 4) for kind, value in seconds_by_type.items()},
        },
    )
    write_dataset_csv(sdg.results_dir / RESULT_CSV, RESULT_COLUMNS, rows)
    atomic_write_json(sdg.results_dir / ALLOCATION_JSON, dict(sdg.allocation))
