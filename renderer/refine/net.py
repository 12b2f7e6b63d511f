"""The refiner network: a small U-Net whose output is a correction added to the warped crop."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IN_CHANNELS = 7  # warped RGB (3), stretch (1), mouth opening (1), eye openings (1), face hull (1)


@dataclass(frozen=True)
class RefinerSize:
    base: int  # width of the first level
    depth: int  # stride-2 levels


SIZES = {"tiny": RefinerSize(16, 3), "small": RefinerSize(32, 4)}


class RefineNet(nn.Module):
    """A small U-Net: (N, 7, S, S) inputs -> (N, 3, S, S) correction in [-1, 1] image units (S divisible by
    2**depth). The output layer is zero-initialised."""

    def __init__(self, size: RefinerSize):
        super().__init__()
        widths = [size.base * 2**i for i in range(size.depth + 1)]
        self.stem = nn.Sequential(nn.Conv2d(IN_CHANNELS, widths[0], 3, padding=1), nn.LeakyReLU(0.2, True))
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1], stride=2) for i in range(size.depth))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(size.depth)))
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for layer in self.down:
            skips.append(layer(skips[-1]))
        h = skips.pop()
        for layer in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = layer(torch.cat([h, skip], 1))
        return self.head(h)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(c_out, c_out, 3, 1, 1),
        nn.LeakyReLU(0.2, True),
    )


def apply(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Refined crops (N, 3, S, S) in [-1, 1]: the warped crop (x's first 3 channels) plus the network's
    correction."""
    return (x[:, :3] + net(x)).clamp(-1, 1)
