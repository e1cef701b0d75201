"""The six defect painters and the PASS nuisance, checked against what each defect means on a PCB."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aoi_pipeline.errors import DatasetError
from aoi_pipeline.synth.boards import golden_tile
from aoi_pipeline.synth.defects import DEFECT_TYPES, MIN_CHANGED_PIXELS, nuisance, paint_defect

DEEPPCB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "deeppcb-aoi"
ADDS_COPPER = {"short", "spur", "copper"}
REMOVES_COPPER = {"open", "mousebite", "pin_hole"}


def painted_examples(defect_type: str, count: int, size: int = 64) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(original, painted, mask) for the first `count` generated tiles that have a site for the type."""
    examples = []
    rng = np.random.default_rng(123)
    for seed in range(200):
        original = golden_tile(size, np.random.default_rng(seed))
        kept = original.copy()
        try:
            painted, mask = paint_defect(original, defect_type, rng)
        except DatasetError:
            continue
        assert np.array_equal(original, kept), "the input image was modified"
        examples.append((original, painted, mask))
        if len(examples) == count:
            return examples
    raise AssertionError(f"fewer than {count} of 200 tiles took a {defect_type} defect")


def neighbours(mask: np.ndarray, *, diagonal: bool = False) -> np.ndarray:
    """Pixels outside `mask` that touch it."""
    padded = np.pad(mask, 1)
    grown = mask.copy()
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if diagonal:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    height, width = mask.shape
    for dy, dx in steps:
        grown |= padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
    return grown & ~mask


def copper_components(image: np.ndarray) -> int:
    copper = image < 128
    seen = np.zeros_like(copper)
    height, width = copper.shape
    count = 0
    for start in zip(*np.nonzero(copper), strict=True):
        if seen[start]:
            continue
        count += 1
        seen[start] = True
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for ny in (y - 1, y, y + 1):
                for nx in (x - 1, x, x + 1):
                    if 0 <= ny < height and 0 <= nx < width and copper[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
    return count


@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_painter_changes_enough_pixels_exactly_inside_its_mask(defect_type: str) -> None:
    for original, painted, mask in painted_examples(defect_type, 12):
        assert painted.shape == original.shape and painted.dtype == np.uint8
        assert mask.dtype == bool and mask.shape == original.shape
        assert np.array_equal(painted != original, mask)
        assert mask.sum() >= MIN_CHANGED_PIXELS
        assert set(np.unique(painted).tolist()) <= {0, 255}


@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_painter_adds_or_removes_copper_as_its_defect_type_means(defect_type: str) -> None:
    for original, painted, mask in painted_examples(defect_type, 8):
        assert defect_type in ADDS_COPPER | REMOVES_COPPER
        if defect_type in ADDS_COPPER:
            assert (original[mask] == 255).all() and (painted[mask] == 0).all()
        else:
            assert (original[mask] == 0).all() and (painted[mask] == 255).all()


def test_pin_hole_is_enclosed_by_copper() -> None:
    for _, painted, mask in painted_examples("pin_hole", 8):
        assert (painted[neighbours(mask)] == 0).all()


def test_spurious_copper_is_an_island_on_laminate() -> None:
    for original, painted, mask in painted_examples("copper", 8):
        assert (original[neighbours(mask, diagonal=True)] == 255).all()
        assert copper_components(painted) == copper_components(original) + 1


def test_short_and_spur_grow_from_existing_copper_without_new_islands() -> None:
    for defect_type in ("short", "spur"):
        for original, painted, mask in painted_examples(defect_type, 8):
            assert (original[neighbours(mask)] == 0).any()
            assert copper_components(painted) <= copper_components(original)


def bridged_lines(original: np.ndarray, mask: np.ndarray) -> int:
    """Rows or columns where the mask's run has copper right beyond both of its ends."""
    count = 0
    for view_original, view_mask in ((original, mask), (original.T, mask.T)):
        for row in np.nonzero(view_mask.any(axis=1))[0]:
            span = np.nonzero(view_mask[row])[0]
            left, right = span.min() - 1, span.max() + 1
            contiguous = span.size == right - left - 1
            inside = left >= 0 and right < view_mask.shape[1]
            if contiguous and inside and view_original[row, left] == 0 and view_original[row, right] == 0:
                count += 1
    return count


def test_short_spans_a_gap_with_copper_at_both_ends() -> None:
    for original, _, mask in painted_examples("short", 8):
        assert bridged_lines(original, mask) >= 1


def test_spur_is_attached_at_one_end_only() -> None:
    for original, _, mask in painted_examples("spur", 8):
        assert bridged_lines(original, mask) == 0


def test_mousebite_and_open_eat_into_copper_from_its_edge() -> None:
    for defect_type in ("mousebite", "open"):
        for original, _, mask in painted_examples(defect_type, 8):
            assert (original[neighbours(mask)] == 255).any()


def test_same_seed_same_bytes_and_other_seeds_differ() -> None:
    golden = golden_tile(64, np.random.default_rng(3))
    for defect_type in ("open", "copper", "spur"):
        first, _ = paint_defect(golden, defect_type, np.random.default_rng(11))
        again, _ = paint_defect(golden, defect_type, np.random.default_rng(11))
        assert first.tobytes() == again.tobytes()
        others = {paint_defect(golden, defect_type, np.random.default_rng(seed))[0].tobytes() for seed in range(8)}
        assert len(others) > 1


def test_no_site_is_a_dataset_error_naming_the_type() -> None:
    blank = np.full((64, 64), 255, dtype=np.uint8)
    with pytest.raises(DatasetError, match="pin_hole"):
        paint_defect(blank, "pin_hole", np.random.default_rng(0))
    solid = np.zeros((64, 64), dtype=np.uint8)
    with pytest.raises(DatasetError, match="copper"):
        paint_defect(solid, "copper", np.random.default_rng(0))


def test_unknown_type_and_wrong_image_are_refused() -> None:
    golden = golden_tile(64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="bridge"):
        paint_defect(golden, "bridge", np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        paint_defect(golden.astype(np.float32), "open", np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        paint_defect(np.stack([golden] * 3, axis=-1), "open", np.random.default_rng(0))


def test_painters_work_on_real_deeppcb_pass_tiles() -> None:
    if not DEEPPCB.is_dir():
        pytest.skip("../shared/data/deeppcb-aoi is absent: the real-tile check needs it")
    tiles = sorted((DEEPPCB / "images").glob("b000410*/test/T*_SolderLight.png"))[:6]
    images = [np.array(Image.open(path).convert("L")) for path in tiles]
    rng = np.random.default_rng(0)
    for defect_type in DEFECT_TYPES:
        painted_any = False
        for image in images:
            try:
                painted, mask = paint_defect(image, defect_type, rng)
            except DatasetError:
                continue
            assert np.array_equal(painted != image, mask) and mask.sum() >= MIN_CHANGED_PIXELS
            painted_any = True
        assert painted_any, f"no real tile took a {defect_type} defect"


def test_nuisance_without_noise_is_a_pure_shift_within_max_shift() -> None:
    golden = golden_tile(64, np.random.default_rng(5))
    margin = 3
    for seed in range(6):
        moved = nuisance(golden, np.random.default_rng(seed), max_shift=margin, edge_noise=0.0)
        inner = moved[margin:-margin, margin:-margin]
        matches = [
            (dy, dx)
            for dy in range(-margin, margin + 1)
            for dx in range(-margin, margin + 1)
            if np.array_equal(inner, golden[margin - dy : 64 - margin - dy, margin - dx : 64 - margin - dx])
        ]
        assert matches, "the result is not the golden shifted by at most max_shift pixels"


def test_nuisance_noise_only_flips_pixels_on_copper_edges() -> None:
    golden = golden_tile(64, np.random.default_rng(6))
    noisy = nuisance(golden, np.random.default_rng(0), max_shift=0, edge_noise=0.5)
    copper = golden == 0
    on_edge = neighbours(copper) | neighbours(~copper)
    flipped = noisy != golden
    assert flipped.any()
    assert not (flipped & ~on_edge).any()


def test_nuisance_identity_settings_and_determinism() -> None:
    golden = golden_tile(64, np.random.default_rng(8))
    assert np.array_equal(nuisance(golden, np.random.default_rng(0), max_shift=0, edge_noise=0.0), golden)
    first = nuisance(golden, np.random.default_rng(4))
    assert first.tobytes() == nuisance(golden, np.random.default_rng(4)).tobytes()
    with pytest.raises(ValueError, match="max_shift"):
        nuisance(golden, np.random.default_rng(0), max_shift=-1)
    with pytest.raises(ValueError, match="edge_noise"):
        nuisance(golden, np.random.default_rng(0), edge_noise=1.5)
