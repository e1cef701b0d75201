"""Procedural golden tiles: binary, deterministic, varied, and holding the parts of a PCB."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from aoi_pipeline.synth.boards import MIN_TILE_SIZE, golden_tile


def laminate_islands(tile: np.ndarray) -> int:
    """Laminate regions (4-connected) that do not reach the tile border: drill holes ringed by copper."""
    laminate = tile == 255
    seen = np.zeros_like(laminate)
    height, width = laminate.shape
    islands = 0
    for start in zip(*np.nonzero(laminate), strict=True):
        if seen[start]:
            continue
        seen[start] = True
        queue, touches_border = deque([start]), False
        while queue:
            y, x = queue.popleft()
            touches_border |= y in (0, height - 1) or x in (0, width - 1)
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and laminate[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        islands += not touches_border
    return islands


def has_solid_block(tile: np.ndarray, side: int) -> bool:
    """Whether some side x side window is copper everywhere (ground fill or a large pad)."""
    copper = (tile == 0).astype(np.int32)
    window = np.lib.stride_tricks.sliding_window_view(copper, (side, side))
    return bool((window.sum(axis=(-1, -2)) == side * side).any())


@pytest.mark.parametrize("size", [32, 64, 160])
def test_tile_is_binary_square_uint8_with_copper_and_laminate(size: int) -> None:
    for seed in range(5):
        tile = golden_tile(size, np.random.default_rng(seed))
        assert tile.shape == (size, size)
        assert tile.dtype == np.uint8
        assert set(np.unique(tile).tolist()) == {0, 255}


def test_same_generator_state_gives_the_same_tile_and_other_seeds_differ() -> None:
    first = golden_tile(64, np.random.default_rng(7))
    again = golden_tile(64, np.random.default_rng(7))
    assert first.tobytes() == again.tobytes()
    others = {golden_tile(64, np.random.default_rng(seed)).tobytes() for seed in range(20)}
    assert len(others) == 20


def test_successive_tiles_from_one_generator_differ() -> None:
    rng = np.random.default_rng(0)
    tiles = [golden_tile(64, rng).tobytes() for _ in range(10)]
    assert len(set(tiles)) == 10


def test_tiles_vary_in_copper_share_and_carry_vias_and_solid_copper() -> None:
    tiles = [golden_tile(64, np.random.default_rng(seed)) for seed in range(40)]
    shares = np.array([(tile == 0).mean() for tile in tiles])
    assert shares.min() > 0.0
    assert shares.max() < 1.0
    assert shares.max() - shares.min() > 0.2
    # Vias are copper rings around a drilled hole: an island of laminate that does not reach the border.
    assert sum(laminate_islands(tile) > 0 for tile in tiles) >= 5
    # Ground fill and pads give solid copper areas, where a pin hole can land.
    assert sum(has_solid_block(tile, 9) for tile in tiles) >= 10


def test_tile_below_the_minimum_size_is_refused() -> None:
    with pytest.raises(ValueError, match=str(MIN_TILE_SIZE)):
        golden_tile(MIN_TILE_SIZE - 1, np.random.default_rng(0))
