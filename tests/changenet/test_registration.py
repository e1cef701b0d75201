"""Registration of the golden onto the test image: the shift found, its application and the uncovered band."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aoi_pipeline.changenet.registration import estimate_shift, max_shift_pixels, register, shift_onto
from aoi_pipeline.synth.boards import golden_tile


def _tiles(count: int, size: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.stack([torch.from_numpy(golden_tile(size, rng)).float().div(255).unsqueeze(0) for _ in range(count)])


def test_the_shift_of_a_pcb_tile_is_found_exactly() -> None:
    golden = _tiles(6, 64, seed=0)
    shifts = [(2, -3), (0, 0), (-4, 1), (5, 5), (-1, 0), (0, -5)]
    test = torch.stack([torch.roll(g, s, dims=(1, 2)) for g, s in zip(golden, shifts, strict=True)])
    dy, dx = estimate_shift(test, golden, max_shift=5)
    assert list(zip(dy.tolist(), dx.tolist(), strict=True)) == shifts


def test_registered_golden_equals_the_test_image_inside_the_covered_area() -> None:
    golden = _tiles(2, 64, seed=1)
    test = torch.roll(golden, (3, -2), dims=(2, 3))
    aligned = register(test, golden, max_shift=4)
    assert torch.equal(aligned[:, :, 3:, :-2], test[:, :, 3:, :-2])
    # The band the shift uncovers takes the test image's values instead of invented copper.
    assert torch.equal(aligned[:, :, :3, :], test[:, :, :3, :])


def test_shift_onto_moves_each_pair_by_its_own_offset() -> None:
    golden = torch.arange(2 * 25, dtype=torch.float32).view(2, 1, 5, 5)
    test = torch.full_like(golden, -1.0)
    moved = shift_onto(test, golden, torch.tensor([1, 0]), torch.tensor([0, -2]))
    assert torch.equal(moved[0, 0, 1:], golden[0, 0, :-1]) and bool((moved[0, 0, 0] == -1).all())
    assert torch.equal(moved[1, 0, :, :-2], golden[1, 0, :, 2:]) and bool((moved[1, 0, :, -2:] == -1).all())


def test_a_blank_pair_stays_in_place() -> None:
    blank = torch.ones(1, 1, 32, 32)
    dy, dx = estimate_shift(blank, blank, max_shift=3)
    assert (dy.item(), dx.item()) == (0, 0)


@pytest.mark.parametrize(("fraction", "size", "expected"), [(0.0, 64, 0), (0.08, 64, 5), (0.08, 160, 13), (0.4, 8, 3)])
def test_the_search_radius_follows_the_image_side(fraction: float, size: int, expected: int) -> None:
    assert max_shift_pixels(fraction, size, size) == expected
