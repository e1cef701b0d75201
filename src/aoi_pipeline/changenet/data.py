"""Dataset CSV rows to a decoded image cache, augmentation on the device, and TAO's `fpratio_sampling`.

Every image of a split is decoded once (in `dataset.classify.workers` threads), resized to the spec's
`image_width` x `image_height` and kept as one uint8 tensor `[rows, 2, channels, height, width]` (test,
golden) on the training device, so a batch is an index into memory and never waits on a file. Lights are
stacked as channels in `input_map` order; a light is one grey channel unless any image of the training split
is in colour, then three. Augmentation runs on the device on whole batches: flips and 90-degree rotations
and the scale crop are drawn once per pair and applied to both images, because they change the view, not the
board; a few-pixel (sub-pixel) shift, brightness/contrast/saturation and blur are drawn per image, because
real pairs differ by exactly such misregistration and lighting drift.

`fpratio_sampling` follows TAO's `get_sampler`: each defect row gets weight `(n_pass / n_defect) * fpratio`
and each PASS row weight 1, and rows are drawn with replacement, so the expected defect share of a batch is
`fpratio / (1 + fpratio)` (0.2 -> 1 in 6). TAO would never draw a defect at `fpratio_sampling: 0`; the
reference reads 0 as "no re-weighting" and shuffles instead.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from aoi_pipeline.core.dataset import DatasetCsv, image_files, is_defect
from aoi_pipeline.errors import DatasetError

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L"})
BLUR_PROBABILITY = 0.3


@dataclass(frozen=True)
class ImageLayout:
    """How a row becomes model input: which lights, which files, which size, grey or colour."""

    lights: tuple[str, ...]
    image_ext: str
    width: int
    height: int
    color: bool = False

    @property
    def channels(self) -> int:
        return len(self.lights) * (3 if self.color else 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lights": list(self.lights),
            "image_ext": self.image_ext,
            "width": self.width,
            "height": self.height,
            "color": self.color,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageLayout:
        return cls(
            lights=tuple(data["lights"]),
            image_ext=str(data["image_ext"]),
            width=int(data["width"]),
            height=int(data["height"]),
            color=bool(data["color"]),
        )


@dataclass(frozen=True)
class PairCache:
    """A split decoded into memory: uint8 pairs [N, 2, C, H, W] and labels [N] (1 = defect) on one device."""

    pairs: torch.Tensor
    labels: torch.Tensor
    dataset: DatasetCsv
    layout: ImageLayout

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def ordered_lights(input_map: Mapping[str, Any]) -> tuple[str, ...]:
    """Light names in the order of their `input_map` index (the channel order)."""
    return tuple(name for name, _ in sorted(input_map.items(), key=lambda item: (int(item[1]), str(item[0]))))


def _decode(path: Path, size: tuple[int, int], color: bool | None, where: str = "") -> np.ndarray:
    """One image as uint8 [H, W] (grey) or [H, W, 3]; `color=None` keeps the file's own kind.

    16-bit grey images are scaled to 8 bits (not clipped: PIL's own conversion turns every value above 255
    into white). Any decode failure, a decompression bomb included, names the file and `where` (its CSV row).
    """
    try:
        image: Image.Image
        with Image.open(path) as image:
            image.load()
            keep_grey = image.mode in GREY_MODES if color is None else not color
            if image.mode in WIDE_GREY_MODES:
                image = Image.fromarray(_wide_grey_to_8_bits(np.asarray(image)))
            converted = image.convert("L" if keep_grey else "RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as error:
        raise DatasetError.at(
            f"{path}{f' ({where})' if where else ''}",
            f"cannot be decoded as an image ({type(error).__name__}: {error})",
            "replace the file with a readable PNG/JPEG of the part, or remove its row from the CSV",
        ) from None
    if converted.size != size:
        converted = converted.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(converted, dtype=np.uint8)


def _wide_grey_to_8_bits(array: np.ndarray) -> np.ndarray:
    """16-bit grey (0..65535) to 8 bits by the same scaling a viewer applies: 65535 becomes 255."""
    return np.clip(np.rint(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _as_channels(array: np.ndarray, color: bool) -> np.ndarray:
    """[C, H, W] with one (grey) or three (colour) channels; grey images are repeated, colour ones weighted
    to luminance as PIL's own 'L' conversion does."""
    if array.ndim == 2:
        return np.repeat(array[None], 3, axis=0) if color else array[None]
    if color:
        return np.moveaxis(array, -1, 0)
    luminance = array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(luminance), 0, 255).astype(np.uint8)[None]


def build_pair_cache(
    dataset: DatasetCsv,
    *,
    images_dir: Path,
    layout: ImageLayout,
    device: torch.device,
    detect_color: bool = False,
    workers: int = 1,
) -> PairCache:
    """Decode every image of `dataset` once into a `PairCache` on `device`.

    With `detect_color` (training) the layout's `color` is decided from the images: colour when any image is
    not grey. Otherwise (inference on a checkpoint) the layout's `color` is imposed on every image.
    """
    size = (layout.width, layout.height)
    files_per_row = [
        image_files(row, images_dir=images_dir, lights=layout.lights, image_ext=layout.image_ext)
        for row in dataset.rows
    ]
    unique = list(dict.fromkeys(path for files in files_per_row for path in files))
    imposed = None if detect_color else layout.color
    first_row: dict[Path, str] = {}
    for number, files in enumerate(files_per_row, start=1):
        for path in files:
            first_row.setdefault(path, f"{dataset.path}: row {number}")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        arrays = pool.map(lambda path: _decode(path, size, imposed, first_row[path]), unique)
        decoded = dict(zip(unique, arrays, strict=True))
    color = any(array.ndim == 3 for array in decoded.values()) if detect_color else layout.color
    layout = ImageLayout(layout.lights, layout.image_ext, layout.width, layout.height, color)
    lights = len(layout.lights)
    pairs = np.empty((len(dataset.rows), 2, layout.channels, layout.height, layout.width), dtype=np.uint8)
    for row_index, files in enumerate(files_per_row):
        for side in range(2):
            stacked = [_as_channels(decoded[path], color) for path in files[side * lights : (side + 1) * lights]]
            pairs[row_index, side] = np.concatenate(stacked, axis=0)
    labels = torch.tensor([int(is_defect(row["label"])) for row in dataset.rows], dtype=torch.long)
    return PairCache(pairs=torch.from_numpy(pairs).to(device), labels=labels.to(device), dataset=dataset, layout=layout)


def normalisation(mean: Sequence[float], std: Sequence[float], layout: ImageLayout) -> tuple[list[float], list[float]]:
    """Per-channel mean and std for the stacked input: the RGB values per light for colour, their average
    for grey."""
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise DatasetError.at(
            "dataset.classify.augmentation_config.rgb_input_mean/rgb_input_std",
            f"need three means and three positive stds, got {list(mean)} and {list(std)}",
            "set e.g. rgb_input_mean: [0.485, 0.456, 0.406] and rgb_input_std: [0.229, 0.224, 0.225]",
        )
    if layout.color:
        return [float(m) for m in mean] * len(layout.lights), [float(s) for s in std] * len(layout.lights)
    return [float(np.mean(mean))] * len(layout.lights), [float(np.mean(std))] * len(layout.lights)


class Normaliser:
    """uint8 or [0, 1] pairs to the network's normalised float input."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 1, -1, 1, 1)

    def __call__(self, unit_pairs: torch.Tensor) -> torch.Tensor:
        return (unit_pairs - self.mean) / self.std


@dataclass(frozen=True)
class Augmentation:
    """The spec's `augmentation_config`, as probabilities and ranges the device augmenter draws from."""

    hflip: float = 0.0
    vflip: float = 0.0
    rotate: float = 0.0
    quarter_turns: tuple[int, ...] = ()
    scale_range: tuple[float, float] | None = None
    shift: float = 0.0
    color: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    blur: bool = False

    @property
    def geometric(self) -> bool:
        return bool(self.hflip or self.vflip or (self.rotate and self.quarter_turns) or self.scale_range or self.shift)

    @classmethod
    def from_spec(cls, config: Mapping[str, Any], *, shift_fraction: float) -> Augmentation:
        """Read `dataset.classify.augmentation_config`; everything off when `augment` is false."""
        if not config.get("augment", False):
            return cls()
        flip = config.get("random_flip") or {}
        rotate = config.get("random_rotate") or {}
        color = config.get("random_color") or {}
        scale = config.get("with_scale_random_crop") or {}
        flip_on, rotate_on, color_on = (
            bool(flip.get("enable")),
            bool(rotate.get("enable")),
            bool(color.get("enable")),
        )
        turns = tuple(sorted({int(a) // 90 % 4 for a in rotate.get("angle_list", [90, 180, 270]) if int(a) % 90 == 0}))
        scale_range = tuple(float(v) for v in scale.get("scale_range", [1.0, 1.2]))
        return cls(
            hflip=float(flip.get("hflip_probability", 0.5)) if flip_on else 0.0,
            vflip=float(flip.get("vflip_probability", 0.5)) if flip_on else 0.0,
            rotate=float(rotate.get("rotate_probability", 0.5)) if rotate_on else 0.0,
            quarter_turns=tuple(t for t in turns if t) if rotate_on else (),
            scale_range=(scale_range[0], scale_range[-1]) if scale.get("enable") else None,
            shift=shift_fraction if config.get("with_random_crop") else 0.0,
            color=float(color.get("color_probability", 0.5)) if color_on else 0.0,
            brightness=float(color.get("brightness", 0.0)),
            contrast=float(color.get("contrast", 0.0)),
            saturation=float(color.get("saturation", 0.0)),
            blur=bool(config.get("with_random_blur")),
        )


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """A small constant tensor made once per device: a host-to-GPU copy every step would make the host wait
    for the GPU and stall the training pipeline."""
    return torch.tensor(values, dtype=torch.float32, device=device)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _chance(n: int, probability: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) < probability


def _geometry(
    aug: Augmentation, batch: int, height: int, width: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Affine sampling matrices [2 * batch, 2, 3]: a shared view change per pair, a shift per image."""
    ones = torch.ones(batch, device=device)
    flip_x = torch.where(_chance(batch, aug.hflip, generator, device), -ones, ones)
    flip_y = torch.where(_chance(batch, aug.vflip, generator, device), -ones, ones)
    turns = torch.zeros(batch, device=device)
    choices = [t for t in aug.quarter_turns if height == width or t == 2]
    if aug.rotate and choices:
        pick = torch.randint(len(choices), (batch,), generator=generator, device=device)
        table = _constant(tuple(float(c) for c in choices), device)
        turns = torch.where(_chance(batch, aug.rotate, generator, device), table[pick], turns)
    zoom = _uniform(batch, *aug.scale_range, generator, device) if aug.scale_range else ones
    angle = turns * (math.pi / 2)
    cos, sin = torch.cos(angle).round(), torch.sin(angle).round()
    shared = torch.stack(
        [
            torch.stack([cos * flip_x, -sin * flip_y], dim=1),
            torch.stack([sin * flip_x, cos * flip_y], dim=1),
        ],
        dim=1,
    ) / zoom.view(-1, 1, 1)
    linear = shared.repeat_interleave(2, dim=0)
    # One pixel is 2 / size in normalised coordinates; each image moves by up to `shift` of its side.
    shift = torch.stack(
        [
            _uniform(2 * batch, -2 * aug.shift, 2 * aug.shift, generator, device),
            _uniform(2 * batch, -2 * aug.shift, 2 * aug.shift, generator, device),
        ],
        dim=1,
    )
    return torch.cat([linear, shift.unsqueeze(-1)], dim=2)


def augment(
    pairs: torch.Tensor, aug: Augmentation, generator: torch.Generator, *, color_channels: bool
) -> torch.Tensor:
    """Augment uint8 pairs [B, 2, C, H, W] into float pairs in [0, 1] on their device."""
    device = pairs.device
    batch, _, channels, height, width = pairs.shape
    images = pairs.reshape(2 * batch, channels, height, width).float().div_(255.0)
    if aug.geometric:
        theta = _geometry(aug, batch, height, width, generator, device)
        grid = F.affine_grid(theta, [2 * batch, channels, height, width], align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    count = 2 * batch
    if aug.color:
        jitter = _chance(count, aug.color, generator, device).float().view(-1, 1, 1, 1)
        contrast = 1 + jitter * _uniform(count, -aug.contrast, aug.contrast, generator, device).view(-1, 1, 1, 1)
        brightness = 1 + jitter * _uniform(count, -aug.brightness, aug.brightness, generator, device).view(-1, 1, 1, 1)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * contrast + mean
        if color_channels and aug.saturation:
            saturation = 1 + jitter * _uniform(count, -aug.saturation, aug.saturation, generator, device).view(
                -1, 1, 1, 1
            )
            rgb = images.view(count, -1, 3, height, width)
            grey = (rgb * _constant((0.299, 0.587, 0.114), device).view(1, 1, 3, 1, 1)).sum(2, keepdim=True)
            images = (grey + (rgb - grey) * saturation.view(-1, 1, 1, 1, 1)).view(count, channels, height, width)
        images = (images * brightness).clamp_(0.0, 1.0)
    if aug.blur:
        amount = (
            _chance(count, BLUR_PROBABILITY, generator, device).float()
            * torch.rand(count, generator=generator, device=device)
        ).view(-1, 1, 1, 1)
        blurred = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
        images = torch.lerp(images, blurred, amount)
    return images.view(batch, 2, channels, height, width)


def to_unit(pairs: torch.Tensor) -> torch.Tensor:
    """uint8 pairs to floats in [0, 1] without augmentation (validation and inference)."""
    return pairs.float().div_(255.0)


def epoch_order(labels: torch.Tensor, fpratio: float, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Row indices for one training epoch: ceil(N / batch) full batches, drawn as TAO's weighted sampler does
    (with replacement, defect weight `(n_pass / n_defect) * fpratio`), or a plain shuffle at fpratio 0."""
    rows = int(labels.shape[0])
    batch = min(batch_size, rows)
    total = math.ceil(rows / batch) * batch
    defects = int(labels.sum().item())
    passes = rows - defects
    if fpratio > 0 and defects and passes:
        weights = torch.where(labels.bool(), (passes / defects) * fpratio, 1.0).double()
        return torch.multinomial(weights, total, replacement=True, generator=generator)
    order = torch.randperm(rows, generator=generator, device=labels.device)
    repeats = math.ceil(total / rows)
    return torch.cat([order] * repeats)[:total] if repeats > 1 else order[:total]
