"""The reference Visual ChangeNet classify network: a small Siamese CNN, shift-tolerant difference modules.

Real AOI pairs are misregistered: a PASS tile often differs from its golden by a shift of several pixels on
dense traces, in more pixels than a real defect changes. Both difference modules therefore compare each test
feature with the *nearest* golden feature inside a small window (and each golden feature with the nearest test
feature, so missing copper counts as much as extra copper), instead of the feature at the same position.
`euclidean` turns those distance maps into a few pooled statistics and a linear head; `learnable` feeds the
aligned feature differences, the distance maps and the test context through a small learned convolution per
scale (`learnable_difference_modules` scales, finest first). Both end in a 2-class head trained with
cross-entropy (`siamese_score` = softmax probability of class 1), or, for `euclidean` with the `contrastive`
loss, in one distance mapped into [0, 1]. The pooled vector in front of the head is the pair's embedding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DIFFERENCE_MODULES = ("learnable", "euclidean")
LOSSES = ("ce", "contrastive")
MAX_SCALES = 4

#: Encoder width of the stem (stride 2) and of each compared scale (strides 4, 8, 16, 32).
STEM_WIDTH = 16
SCALE_WIDTHS = (32, 64, 96, 128)
#: Search radius in feature cells per scale: +-8 px at strides 4 and 8, +-16 and +-32 px beyond.
SEARCH_RADII = (2, 1, 1, 1)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the network's shape and its outputs; stored in every checkpoint."""

    in_channels: int
    difference_module: str = "learnable"
    num_scales: int = MAX_SCALES
    embed_dec: int = 30
    top_k: int = 5
    loss: str = "ce"
    margin: float = 2.0

    def __post_init__(self) -> None:
        if self.difference_module not in DIFFERENCE_MODULES:
            raise ValueError(f"difference_module must be one of {DIFFERENCE_MODULES}, not {self.difference_module!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        if self.loss == "contrastive" and self.difference_module != "euclidean":
            raise ValueError("the contrastive loss needs difference_module 'euclidean'")
        if not 1 <= self.num_scales <= MAX_SCALES:
            raise ValueError(f"num_scales must be within 1..{MAX_SCALES}, not {self.num_scales}")
        if self.in_channels < 1 or self.embed_dec < 1 or self.top_k < 1 or self.margin <= 0:
            raise ValueError(f"invalid model configuration {self}")

    @property
    def scales_used(self) -> int:
        """Compared scales: `learnable_difference_modules` for learnable, all of them for euclidean."""
        return self.num_scales if self.difference_module == "learnable" else MAX_SCALES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def conv_bn_relu(in_channels: int, out_channels: int, *, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """The shared (Siamese) feature extractor: a stem at stride 2, then one stage per compared scale."""

    def __init__(self, in_channels: int, num_scales: int) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, STEM_WIDTH, stride=2)
        widths = (STEM_WIDTH, *SCALE_WIDTHS[:num_scales])
        self.stages = nn.ModuleList(
            nn.Sequential(conv_bn_relu(widths[i], widths[i + 1], stride=2), conv_bn_relu(widths[i + 1], widths[i + 1]))
            for i in range(num_scales)
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = self.stem(images)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def nearest_in_window(query: torch.Tensor, reference: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every position of `query`, the `reference` feature within +-`radius` cells closest to it.

    Returns (matched reference features [B, C, H, W], squared distance to them averaged over channels
    [B, 1, H, W]). The search runs without autograd, three kernels per offset into one cost volume (an
    unfolded volume moves more bytes and ran slower on an H100 as well as on a CPU); gradients flow through
    the single gather of the matched features. Exact ties keep the unshifted position.
    """
    batch, channels, height, width = query.shape
    side = 2 * radius + 1
    padded = F.pad(reference, (radius, radius, radius, radius), mode="replicate")
    with torch.no_grad():
        distances = _cost_volume(query.detach(), padded.detach(), side)
        distances[side * side // 2] -= 1e-6
        best = distances.argmin(dim=0)
        rows = torch.arange(height, device=query.device).view(1, height, 1) + torch.div(
            best, side, rounding_mode="floor"
        )
        cols = torch.arange(width, device=query.device).view(1, 1, width) + best % side
        index = (rows * (width + 2 * radius) + cols).view(batch, 1, height * width).expand(batch, channels, -1)
    matched = padded.flatten(2).gather(2, index).view(batch, channels, height, width)
    distance = (query - matched).square().mean(dim=1, keepdim=True)
    return matched, distance


def _cost_volume(query: torch.Tensor, padded: torch.Tensor, side: int) -> torch.Tensor:
    """Squared distances [side*side, B, H, W] from each query feature to the reference feature at each
    offset of the window (row-major), summed over channels in fp32."""
    batch, _, height, width = query.shape
    distances = torch.empty(side * side, batch, height, width, device=query.device)
    for row in range(side):
        for col in range(side):
            window = padded[:, :, row : row + height, col : col + width]
            torch.sum((query - window).square_(), dim=1, dtype=torch.float32, out=distances[row * side + col])
    return distances


def pool(maps: torch.Tensor, top_k: int) -> torch.Tensor:
    """Per channel: the mean of the `top_k` strongest positions and the mean of all positions, [B, 2C]."""
    flat = maps.flatten(2).float()
    k = min(top_k, flat.shape[-1])
    strongest = flat.topk(k, dim=-1).values.mean(dim=-1)
    return torch.cat([strongest, flat.mean(dim=-1)], dim=1)


class LearnableDifference(nn.Module):
    """One scale of the learnable module: aligned differences both ways, distances and context, convolved."""

    def __init__(self, channels: int, embed_dec: int, radius: int, top_k: int) -> None:
        super().__init__()
        self.radius, self.top_k = radius, top_k
        self.mix = conv_bn_relu(3 * channels + 2, embed_dec, kernel=1)
        self.refine = conv_bn_relu(embed_dec, embed_dec)

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        golden_at_test, test_to_golden = nearest_in_window(test, golden, self.radius)
        test_at_golden, golden_to_test = nearest_in_window(golden, test, self.radius)
        stacked = torch.cat(
            [
                (test - golden_at_test).abs(),
                (golden - test_at_golden).abs(),
                test,
                test_to_golden,
                golden_to_test,
            ],
            dim=1,
        )
        return pool(self.refine(self.mix(stacked)), self.top_k)


class EuclideanDifference(nn.Module):
    """One scale of the euclidean module: pooled nearest-feature distances both ways (no parameters)."""

    def __init__(self, radius: int, top_k: int) -> None:
        super().__init__()
        self.radius, self.top_k = radius, top_k

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        _, test_to_golden = nearest_in_window(test, golden, self.radius)
        _, golden_to_test = nearest_in_window(golden, test, self.radius)
        return torch.log1p(pool(torch.cat([test_to_golden, golden_to_test], dim=1), self.top_k))


class ChangeNetClassifier(nn.Module):
    """Siamese classifier of (test, golden) pairs. `forward` returns (head output, embedding).

    The head output is [B, 2] logits for the `ce` loss and a [B] non-negative distance for `contrastive`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        scales = config.scales_used
        self.encoder = Encoder(config.in_channels, scales)
        if config.difference_module == "learnable":
            self.differences = nn.ModuleList(
                LearnableDifference(SCALE_WIDTHS[i], config.embed_dec, SEARCH_RADII[i], config.top_k)
                for i in range(scales)
            )
            embedding_dim = 2 * config.embed_dec * scales
            self.head: nn.Module = nn.Sequential(
                nn.Linear(embedding_dim, config.embed_dec),
                nn.ReLU(inplace=True),
                nn.Linear(config.embed_dec, 2),
            )
        else:
            self.differences = nn.ModuleList(EuclideanDifference(SEARCH_RADII[i], config.top_k) for i in range(scales))
            embedding_dim = 4 * scales
            self.head = nn.Linear(embedding_dim, 1 if config.loss == "contrastive" else 2)
        self.embedding_dim = embedding_dim
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = test.shape[0]
        features = self.encoder(torch.cat([test, golden], dim=0))
        embedding = torch.cat(
            [module(f[:batch], f[batch:]) for module, f in zip(self.differences, features, strict=True)],
            dim=1,
        )
        # The head runs in fp32 even under autocast: bf16 logits would tie many near-equal scores.
        with torch.autocast(device_type=embedding.device.type, enabled=False):
            head_output = self.head(embedding.float())
        if self.config.loss == "contrastive":
            head_output = F.softplus(head_output.squeeze(1).float())
        return head_output, embedding

    def describe(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """A pair descriptor for k-NN mining: what the test image looks like and how it differs from its golden.

        The difference embedding alone is all zeros for a pair that matches its golden (most PASS pairs), and
        cosine similarity is undefined there; the pooled encoder features of the test image give every pair an
        appearance, and the two halves are normalised separately so neither drowns the other.
        """
        batch = test.shape[0]
        features = self.encoder(torch.cat([test, golden], dim=0))
        appearance = torch.cat([f[:batch].float().mean(dim=(2, 3)) for f in features], dim=1)
        change = torch.cat(
            [module(f[:batch], f[batch:]) for module, f in zip(self.differences, features, strict=True)], dim=1
        ).float()
        return torch.cat([F.normalize(appearance, dim=1), F.normalize(change, dim=1)], dim=1)

    def scores(self, head_output: torch.Tensor) -> torch.Tensor:
        """`siamese_score` in [0, 1], higher = more defect-like."""
        if self.config.loss == "contrastive":
            return head_output / (head_output + self.config.margin)
        return torch.softmax(head_output.float(), dim=1)[:, 1]

    def loss(self, head_output: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with `cls_weight`, or TAO's contrastive loss with `train_margin_euclid`."""
        if self.config.loss == "contrastive":
            target = labels.float()
            pull = (1.0 - target) * head_output.square()
            push = target * (self.config.margin - head_output).clamp(min=0).square()
            return (pull + push).mean()
        return F.cross_entropy(head_output.float(), labels, weight=class_weights)
