"""The reference Visual ChangeNet classify network: a small CNN that classifies a (test, golden) pair.

Both modules first register the golden onto the test image (`registration`: phase correlation, an integer
shift of up to `register_fraction` of the image side), because a real scan is misregistered by a few pixels
and on dense traces such a shift changes more pixels than a defect does.

`learnable` (the default) fuses the pair at the input: one encoder sees the test image, the registered golden
and their absolute difference as channels, so even its first full-resolution layer can tell a compact
defect from scattered binarisation noise along copper edges. Comparing separately encoded (Siamese)
features, as TAO's ChangeNet does with its large pretrained backbone, did not learn from a few hundred pairs
from scratch: at strides of 4 px and more a 12-pixel defect shrinks to one feature cell. Each of the
`learnable_difference_modules` scales (strides 2, 4, 8, 16; finest first) is projected to `embed_dec`
channels and pooled; a small head gives the 2-class logits. `backbone` picks the encoder: `small` (two
convolutions per scale, about 0.5M parameters, the CPU default) or `resnet` (two residual blocks per scale,
wider, about 6M parameters, for GPUs and data sets of many designs).

`euclidean` keeps TAO's parameter-free comparison: a shared (Siamese) encoder, then each test feature is
compared with the *nearest* golden feature inside a small window and vice versa (so missing copper counts as
much as extra copper); the pooled distances feed a linear head, or with the `contrastive` loss one distance
mapped into [0, 1]. The pooled vector in front of the head is the pair's embedding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from aoi_pipeline.changenet.registration import max_shift_pixels, register

DIFFERENCE_MODULES = ("learnable", "euclidean")
LOSSES = ("ce", "contrastive")
BACKBONES = ("small", "resnet")
MAX_SCALES = 4
#: Bumped when the network's layers change, so a checkpoint of another layout is refused with a clear message.
ARCHITECTURE_VERSION = 2

#: Siamese encoder (euclidean): width of the stem (stride 2) and of each compared scale (strides 4 .. 32).
STEM_WIDTH = 16
SCALE_WIDTHS = (32, 64, 96, 128)
#: Search radius in feature cells per scale (euclidean), left for local misregistration after the global one is
#: registered: +-8 px at strides 4 and 8, +-16 and +-32 px beyond.
SEARCH_RADII = (2, 1, 1, 1)
#: Fused encoders (learnable): stem width at full resolution and the width of each scale (strides 2 .. 16).
FUSED_WIDTHS = {"small": (16, (32, 64, 96, 128)), "resnet": (32, (48, 96, 192, 384))}
#: Registration search radius as a share of the image side: 5 px at 64 px, 13 px at 160 px.
DEFAULT_REGISTER_FRACTION = 0.08


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
    backbone: str = "small"
    register_fraction: float = DEFAULT_REGISTER_FRACTION
    version: int = ARCHITECTURE_VERSION

    def __post_init__(self) -> None:
        if self.difference_module not in DIFFERENCE_MODULES:
            raise ValueError(f"difference_module must be one of {DIFFERENCE_MODULES}, not {self.difference_module!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, not {self.backbone!r}")
        if not 0.0 <= self.register_fraction < 0.5:
            raise ValueError(f"register_fraction must be within [0, 0.5), not {self.register_fraction}")
        if self.version != ARCHITECTURE_VERSION:
            raise ValueError(
                f"the checkpoint holds network layout {self.version}; this runtime builds layout "
                f"{ARCHITECTURE_VERSION} (registered early-fusion encoder), so its weights cannot be loaded: "
                "train the model again with this version"
            )
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
        # Checkpoints written before the layout was versioned hold the Siamese learnable module (layout 1).
        return cls(**{"version": 1, **{key: value for key, value in data.items() if key in known}})


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


def mean_at_strongest(values: torch.Tensor, strength: torch.Tensor, top_k: int) -> torch.Tensor:
    """Per channel, the mean of `values` [B, C, H, W] at the `top_k` positions where `strength` [B, 1, H, W]
    is largest (the same positions for every channel), [B, C] in fp32."""
    batch, channels = values.shape[:2]
    flat_strength = strength.flatten(2).float()
    k = min(top_k, flat_strength.shape[-1])
    positions = flat_strength.topk(k, dim=-1).indices.expand(batch, channels, k)
    return values.flatten(2).gather(2, positions).float().mean(dim=-1)


class ResidualBlock(nn.Module):
    """A ResNet basic block: two 3x3 convolutions and a shortcut (projected when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(in_channels, out_channels, stride=stride),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x), inplace=True)


class FusedEncoder(nn.Module):
    """The learnable module's encoder of one fused pair: test, registered golden and |test - golden| as
    channels, a full-resolution stem, then one stage per scale (strides 2, 4, 8, 16)."""

    def __init__(self, in_channels: int, num_scales: int, backbone: str) -> None:
        super().__init__()
        stem_width, scale_widths = FUSED_WIDTHS[backbone]
        self.stem = conv_bn_relu(3 * in_channels, stem_width)
        widths = (stem_width, *scale_widths[:num_scales])
        if backbone == "resnet":
            stages = [
                nn.Sequential(
                    ResidualBlock(widths[i], widths[i + 1], 2), ResidualBlock(widths[i + 1], widths[i + 1], 1)
                )
                for i in range(num_scales)
            ]
        else:
            stages = [
                nn.Sequential(
                    conv_bn_relu(widths[i], widths[i + 1], stride=2), conv_bn_relu(widths[i + 1], widths[i + 1])
                )
                for i in range(num_scales)
            ]
        self.stages = nn.ModuleList(stages)
        self.widths = widths[1:]

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(torch.cat([test, golden, (test - golden).abs()], dim=1))
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class LearnableDifference(nn.Module):
    """One scale of the learnable module: the fused features projected to `embed_dec` channels and pooled."""

    def __init__(self, channels: int, embed_dec: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.project = conv_bn_relu(channels, embed_dec, kernel=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return pool(self.project(features), self.top_k)


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
    """Classifier of (test, golden) pairs. `forward` returns (head output, embedding).

    The head output is [B, 2] logits for the `ce` loss and a [B] non-negative distance for `contrastive`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        scales = config.scales_used
        self.encoder: nn.Module
        if config.difference_module == "learnable":
            self.encoder = FusedEncoder(config.in_channels, scales, config.backbone)
            self.differences = nn.ModuleList(
                LearnableDifference(width, config.embed_dec, config.top_k) for width in self.encoder.widths
            )
            embedding_dim = 2 * config.embed_dec * scales
            self.head: nn.Module = nn.Sequential(
                nn.Linear(embedding_dim, config.embed_dec),
                nn.ReLU(inplace=True),
                nn.Linear(config.embed_dec, 2),
            )
        else:
            self.encoder = Encoder(config.in_channels, scales)
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

    def registered(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """The golden registered onto the test image (see `registration`)."""
        height, width = test.shape[-2:]
        return register(test, golden, max_shift_pixels(self.config.register_fraction, height, width))

    def _features(self, test: torch.Tensor, golden: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-scale features of the test side (the fused pair for learnable) and the pooled embedding."""
        golden = self.registered(test, golden)
        if self.config.difference_module == "learnable":
            features = self.encoder(test, golden)
            embedding = torch.cat([module(f) for module, f in zip(self.differences, features, strict=True)], dim=1)
            return features, embedding
        batch = test.shape[0]
        both = self.encoder(torch.cat([test, golden], dim=0))
        embedding = torch.cat(
            [module(f[:batch], f[batch:]) for module, f in zip(self.differences, both, strict=True)], dim=1
        )
        return [f[:batch] for f in both], embedding

    def forward(self, test: torch.Tensor, golden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, embedding = self._features(test, golden)
        # The head runs in fp32 even under autocast: bf16 logits would tie many near-equal scores.
        with torch.autocast(device_type=embedding.device.type, enabled=False):
            head_output = self.head(embedding.float())
        if self.config.loss == "contrastive":
            head_output = F.softplus(head_output.squeeze(1).float())
        return head_output, embedding

    def describe(self, test: torch.Tensor, golden: torch.Tensor) -> torch.Tensor:
        """A pair descriptor for k-NN mining: what the pair looks like where it differs, and how it differs there.

        Per scale, the `top_k` positions where test and golden differ most (the nearest-feature distances both
        ways for euclidean, the pixel difference pooled to the scale's grid for learnable) are the difference
        region;
        the descriptor is the encoder features there and the signed change there (test minus its matched
        golden, less golden minus its matched test; the projected features for learnable), each half
        normalised so neither drowns the other. Features averaged over the whole tile, as before, described
        mostly the board design: a failure's nearest pool rows came from its own design half again as often
        as random rows did, and shared its PASS/defect class less often than with the region
        (benchmarks/README.md, "The mining descriptor").
        """
        golden = self.registered(test, golden)
        looks, changes = [], []
        if self.config.difference_module == "learnable":
            difference = (test - golden).abs().float().sum(dim=1, keepdim=True)
            for module, features in zip(self.differences, self.encoder(test, golden), strict=True):
                region = F.adaptive_avg_pool2d(difference, features.shape[-2:])
                projected = cast(LearnableDifference, module).project(features)
                looks.append(mean_at_strongest(features, region, self.config.top_k))
                changes.append(mean_at_strongest(projected, region, self.config.top_k))
        else:
            batch = test.shape[0]
            both = self.encoder(torch.cat([test, golden], dim=0))
            for radius, features in zip(SEARCH_RADII[: len(both)], both, strict=True):
                test_side, golden_side = features[:batch], features[batch:]
                matched_golden, added = nearest_in_window(test_side, golden_side, radius)
                matched_test, missing = nearest_in_window(golden_side, test_side, radius)
                looks.append(mean_at_strongest(test_side, added + missing, self.config.top_k))
                changes.append(
                    mean_at_strongest(test_side - matched_golden, added, self.config.top_k)
                    - mean_at_strongest(golden_side - matched_test, missing, self.config.top_k)
                )
        return torch.cat(
            [F.normalize(torch.cat(looks, dim=1), dim=1), F.normalize(torch.cat(changes, dim=1), dim=1)], dim=1
        )

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


def describe_network(config: ModelConfig, parameters: int) -> str:
    """One sentence on what the network is, for `reference_model.json` and the deployment handoff."""
    if config.difference_module == "learnable":
        shape = (
            f"{config.backbone} early-fusion CNN over (test, registered golden, |difference|), "
            f"{config.scales_used} scales, embed_dec {config.embed_dec}"
        )
    else:
        shape = f"Siamese CNN with parameter-free nearest-feature distances, {config.scales_used} scales"
    registration = (
        f"golden registered by phase correlation within {config.register_fraction:g} of the image side"
        if config.register_fraction > 0
        else "no registration"
    )
    return (
        f"reference runtime network: {shape}; {registration}; {parameters / 1e6:.2f}M parameters trained from "
        "random weights (the spec's model.backbone is not used)"
    )
