"""Registration of a test image onto its golden before they are compared: phase correlation, integer shift.

An AOI scan is misregistered against its golden by a few pixels, and on dense traces such a shift changes more
pixels than a real defect does. The network therefore compares the test image with its golden *after* moving
the golden by the integer shift that best aligns the two: the peak of their phase correlation (the normalised
cross-power spectrum, which whitens the images so thin traces count as much as large copper areas) within
+-`max_shift` pixels per axis. The search runs without autograd and in fp32, a few FFT kernels per batch on
any device. Pixels the shifted golden does not cover take the test image's own values, so the border band
that a shift uncovers is never mistaken for missing or extra copper; residual sub-pixel misregistration is
left to the network (training augments it).
"""

from __future__ import annotations

import torch

#: Added to the correlation at zero shift so a blank or periodic tile with no clear peak stays in place.
ZERO_SHIFT_PREFERENCE = 1e-3


def max_shift_pixels(fraction: float, height: int, width: int) -> int:
    """The search radius in pixels for a share of the image side (0 = no registration)."""
    if fraction <= 0:
        return 0
    return max(1, min(round(fraction * min(height, width)), min(height, width) // 2 - 1))


def estimate_shift(test: torch.Tensor, golden: torch.Tensor, max_shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair, the integer (dy, dx) within +-`max_shift` that best moves `golden` onto `test`.

    `test` and `golden` are [B, C, H, W]; channels are averaged. Shifting golden by (dy, dx) means
    aligned[y, x] = golden[y - dy, x - dx]. Returns two long tensors of shape [B].
    """
    height, width = test.shape[-2:]
    with torch.no_grad(), torch.autocast(device_type=test.device.type, enabled=False):
        moving = golden.float().mean(dim=1)
        fixed = test.float().mean(dim=1)
        moving = moving - moving.mean(dim=(1, 2), keepdim=True)
        fixed = fixed - fixed.mean(dim=(1, 2), keepdim=True)
        cross = torch.fft.rfft2(fixed) * torch.conj(torch.fft.rfft2(moving))
        cross = cross / cross.abs().clamp_min(1e-6)
        correlation = torch.fft.irfft2(cross, s=(height, width))
        offsets = torch.cat(
            [torch.arange(0, max_shift + 1, device=test.device), torch.arange(-max_shift, 0, device=test.device)]
        )
        window = correlation[:, offsets.remainder(height)][:, :, offsets.remainder(width)]
        window[:, 0, 0] += ZERO_SHIFT_PREFERENCE
        best = window.flatten(1).argmax(dim=1)
        side = 2 * max_shift + 1
        return offsets[torch.div(best, side, rounding_mode="floor")], offsets[best % side]


def shift_onto(test: torch.Tensor, golden: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """`golden` moved by (dy, dx) per pair; pixels it does not cover take the test image's values."""
    batch, channels, height, width = golden.shape
    rows = torch.arange(height, device=golden.device).view(1, height, 1) - dy.view(-1, 1, 1)
    cols = torch.arange(width, device=golden.device).view(1, 1, width) - dx.view(-1, 1, 1)
    valid = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    index = (rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)).view(batch, 1, height * width)
    moved = golden.flatten(2).gather(2, index.expand(batch, channels, -1)).view(batch, channels, height, width)
    return torch.where(valid.unsqueeze(1), moved, test)


def register(test: torch.Tensor, golden: torch.Tensor, max_shift: int) -> torch.Tensor:
    """`golden` registered onto `test` (unchanged when `max_shift` is 0)."""
    if max_shift <= 0:
        return golden
    dy, dx = estimate_shift(test, golden, max_shift)
    return shift_onto(test, golden, dy, dx)
