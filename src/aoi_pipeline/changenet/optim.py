"""TAO's optimisers and learning-rate policies for the reference runtime's training.

The optimiser is sgd (with momentum), adam or adamw as `train.optim.optim` names it, with the spec's learning
rate and weight decay (fused kernels on CUDA). The learning rate follows TAO's policies by 0-based epoch:
`linear` = lr * (1 - epoch / (num_epochs + 1)), `step` = lr * 0.1 ** (epoch // max(1, num_epochs // 3)).
"""

from __future__ import annotations

from typing import Any

import torch

from aoi_pipeline.changenet.runtime_spec import RuntimeSpec


def make_optimizer(model: torch.nn.Module, spec: RuntimeSpec, device: torch.device) -> torch.optim.Optimizer:
    """TAO's optimisers: sgd (momentum), adam, adamw (betas 0.9, 0.999), with `weight_decay`."""
    name = spec.value("train.optim.optim")
    lr = float(spec.value("train.optim.lr"))
    decay = float(spec.value("train.optim.weight_decay"))
    fused: dict[str, Any] = {"fused": True} if device.type == "cuda" else {}
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=float(spec.value("train.optim.momentum")), weight_decay=decay
        )
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay, **fused)
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=decay, **fused)


def lr_factor(policy: str, epoch: int, num_epochs: int) -> float:
    """TAO's schedules by 0-based epoch: linear decay to 1/(N+1), or a tenfold step every N//3 epochs."""
    if policy == "step":
        return 0.1 ** (epoch // max(1, num_epochs // 3))
    return 1.0 - epoch / float(num_epochs + 1)
