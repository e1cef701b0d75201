"""The image cache, device augmentation and TAO's fpratio sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from changenet_workspace import build_workspace
from PIL import Image

from aoi_pipeline.changenet.data import (
    Augmentation,
    ImageLayout,
    augment,
    build_pair_cache,
    epoch_order,
    normalisation,
    ordered_lights,
)
from aoi_pipeline.core.dataset import read_dataset_csv

CPU = torch.device("cpu")


@pytest.mark.parametrize(("fpratio", "share"), [(0.25, 0.2), (1.0, 0.5), (0.1, 1 / 11)])
def test_fpratio_sampling_draws_defects_as_tao_weights_them(fpratio: float, share: float) -> None:
    # 400 PASS and 100 defect rows: defect weight (400 / 100) * fpratio, so the defect share of the draws is
    # fpratio / (1 + fpratio).
    labels = torch.cat([torch.zeros(400, dtype=torch.long), torch.ones(100, dtype=torch.long)])
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([labels[epoch_order(labels, fpratio, 50, generator)] for _ in range(40)])
    assert draws.numel() == 40 * 500
    assert draws.float().mean().item() == pytest.approx(share, abs=0.015)


def test_fpratio_zero_is_a_plain_shuffle_of_whole_batches() -> None:
    labels = torch.tensor([0] * 7 + [1] * 3)
    order = epoch_order(labels, 0.0, 4, torch.Generator().manual_seed(1))
    assert order.numel() == 12  # ceil(10 / 4) full batches
    assert sorted(order[:10].tolist()) == list(range(10))


def test_shared_geometry_is_identical_on_both_images() -> None:
    image = torch.randint(0, 256, (6, 1, 1, 16, 16), dtype=torch.uint8)
    pairs = torch.cat([image, image], dim=1)  # test == golden
    aug = Augmentation(hflip=0.5, vflip=0.5, rotate=1.0, quarter_turns=(1, 2, 3))
    out = augment(pairs, aug, torch.Generator().manual_seed(3), color_channels=False)
    assert torch.equal(out[:, 0], out[:, 1])
    # Flips and quarter turns only move pixels: every output is one of the 8 symmetries of its input.
    for original, augmented in zip(image[:, 0].float() / 255, out[:, 0], strict=True):
        candidates = [torch.rot90(v, k, dims=(1, 2)) for v in (original, original.flip(2)) for k in range(4)]
        assert any(torch.allclose(augmented, c, atol=1e-5) for c in candidates)


def test_shift_and_brightness_are_independent_per_image() -> None:
    image = torch.randint(0, 256, (8, 1, 1, 32, 32), dtype=torch.uint8)
    pairs = torch.cat([image, image], dim=1)
    aug = Augmentation(shift=0.05, color=1.0, brightness=0.3)
    out = augment(pairs, aug, torch.Generator().manual_seed(4), color_channels=False)
    differs = [(out[i, 0] - out[i, 1]).abs().max().item() > 1e-3 for i in range(8)]
    assert all(differs)


def test_augmentation_is_off_unless_augment_is_true() -> None:
    config = {"augment": False, "random_flip": {"enable": True, "hflip_probability": 1.0}}
    assert Augmentation.from_spec(config, shift_fraction=0.03) == Augmentation()
    on = Augmentation.from_spec({**config, "augment": True, "with_random_crop": True}, shift_fraction=0.03)
    assert on.hflip == 1.0 and on.shift == 0.03 and not on.blur


def test_cache_decodes_once_resizes_and_stacks_lights(tmp_path: Path) -> None:
    ws = build_workspace(tmp_path / "ws", pairs=4, size=32)
    dataset = read_dataset_csv(ws.train_csv)
    layout = ImageLayout(lights=("SolderLight",), image_ext=".png", width=16, height=16)
    cache = build_pair_cache(dataset, images_dir=ws.images, layout=layout, device=CPU, detect_color=True)
    assert cache.pairs.shape == (4, 2, 1, 16, 16) and cache.pairs.dtype == torch.uint8
    assert not cache.layout.color
    assert cache.labels.tolist() == [int(row["label"] != "PASS") for row in dataset.rows]
    golden = Image.open(ws.images / dataset.rows[1]["golden_path"] / "T00_SolderLight.png")
    expected = np.asarray(golden.convert("L").resize((16, 16), Image.Resampling.BILINEAR))
    assert np.array_equal(cache.pairs[1, 1, 0].numpy(), expected)


def test_one_colour_image_makes_the_cache_colour(tmp_path: Path) -> None:
    ws = build_workspace(tmp_path / "ws", pairs=3, size=32)
    dataset = read_dataset_csv(ws.train_csv)
    path = ws.images / dataset.rows[0]["input_path"] / "T00_SolderLight.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(path)
    layout = ImageLayout(lights=("SolderLight",), image_ext=".png", width=32, height=32)
    cache = build_pair_cache(dataset, images_dir=ws.images, layout=layout, device=CPU, detect_color=True)
    assert cache.layout.color and cache.pairs.shape[2] == 3
    assert cache.pairs[0, 0, :, 5, 5].tolist() == [200, 10, 10]
    grey = build_pair_cache(dataset, images_dir=ws.images, layout=layout, device=CPU)  # imposed grey
    assert grey.pairs.shape[2] == 1
    assert grey.pairs[0, 0, 0, 5, 5].item() == round(0.299 * 200 + 0.587 * 10 + 0.114 * 10)


def test_lights_follow_input_map_order_and_grey_uses_mean_statistics() -> None:
    assert ordered_lights({"UniformLight": 2, "LowAngleLight": 0, "SolderLight": 1}) == (
        "LowAngleLight",
        "SolderLight",
        "UniformLight",
    )
    layout = ImageLayout(lights=("A", "B"), image_ext=".png", width=8, height=8)
    mean, std = normalisation([0.3, 0.6, 0.9], [0.1, 0.2, 0.3], layout)
    assert mean == pytest.approx([0.6, 0.6]) and std == pytest.approx([0.2, 0.2])


def test_a_16_bit_grey_image_is_scaled_not_clipped(tmp_path: Path) -> None:
    ws = build_workspace(tmp_path / "ws", pairs=2, size=32)
    dataset = read_dataset_csv(ws.train_csv)
    path = ws.images / dataset.rows[0]["input_path"] / "T00_SolderLight.png"
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    Image.fromarray(ramp).save(path)
    layout = ImageLayout(lights=("SolderLight",), image_ext=".png", width=32, height=32)
    cache = build_pair_cache(dataset, images_dir=ws.images, layout=layout, device=CPU, detect_color=True)
    row = cache.pairs[0, 0, 0, 0].numpy()
    assert row[0] == 0 and row[-1] == 255
    assert np.array_equal(row, np.rint(ramp[0] / 257).astype(np.uint8)), "16-bit values were clipped at 255"


def test_a_decompression_bomb_names_the_file_and_the_csv_row(tmp_path: Path, monkeypatch) -> None:
    from aoi_pipeline.errors import DatasetError

    ws = build_workspace(tmp_path / "ws", pairs=2, size=32)
    dataset = read_dataset_csv(ws.train_csv)
    path = ws.images / dataset.rows[1]["input_path"] / "T00_SolderLight.png"
    Image.new("L", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # 64 x 64 is over twice the limit, 32 x 32 is not
    layout = ImageLayout(lights=("SolderLight",), image_ext=".png", width=32, height=32)
    with pytest.raises(DatasetError) as caught:
        build_pair_cache(dataset, images_dir=ws.images, layout=layout, device=CPU)
    message = str(caught.value)
    assert str(path) in message and f"{ws.train_csv}: row 2" in message and "DecompressionBombError" in message
