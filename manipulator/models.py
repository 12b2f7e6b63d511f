"""StarGAN-v2 networks on windows of expression coefficients (NED's design), with named size presets.

- Generator G(x, s): style tiled over time and concatenated, MLP, BiLSTM, MLP -> absolute coefficients.
- MappingNetwork F(z, y): shared MLP, one head per emotion -> style (NED's; LSCMC dropped it).
- StyleEncoder E(x): MLP, BiLSTM, MLP, mean over time -> style.
- Discriminator D(x, y): the same trunk, one output per emotion, mean over time; returns D's logit for y.
Shapes: x (B, T, D) float32 (normalised coefficients), s (B, style_dim), y (B,) int64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ManipulatorSize:
    g_hidden: int  # generator MLP width; BiLSTM hidden = g_hidden (x2 directions)
    e_hidden: int  # style encoder / discriminator width
    lstm_layers: int
    style_dim: int
    latent_dim: int
    mapping_hidden: int


SIZES = {
    "ned": ManipulatorSize(512, 256, 2, 16, 4, 64),  # NED's sizes
    "small": ManipulatorSize(128, 64, 1, 16, 4, 64),  # CPU demo
    "tiny": ManipulatorSize(32, 32, 1, 8, 4, 16),  # tests
}


def _he_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _mlp(widths: list[int], last_relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if last_relu or i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """`residual=True` predicts x + Δ instead of NED's absolute coefficients: identical networks, but the
    identity map is the starting point, so short CPU trainings keep the speech and the face's details."""

    def __init__(self, expr_dim: int, size: ManipulatorSize, residual: bool = False):
        super().__init__()
        self.residual = residual
        h = size.g_hidden
        self.pre = _mlp([expr_dim + size.style_dim, h, h])
        self.lstm = nn.LSTM(h, h, size.lstm_layers, batch_first=True, bidirectional=True)
        self.post = _mlp([2 * h, 2 * h, 2 * h, expr_dim], last_relu=False)
        _he_init(self)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = self.pre(torch.cat([x, s[:, None].expand(-1, x.shape[1], -1)], dim=-1))
        h, _ = self.lstm(h)
        out = self.post(h)
        return x + out if self.residual else out


class _Trunk(nn.Module):
    """MLP -> BiLSTM -> MLP over time, mean over time (style encoder and discriminator)."""

    def __init__(self, expr_dim: int, size: ManipulatorSize, out_dim: int):
        super().__init__()
        h = size.e_hidden
        self.pre = _mlp([expr_dim, 2 * h, h])
        self.lstm = nn.LSTM(h, h // 2, size.lstm_layers, batch_first=True, bidirectional=True)
        self.post = _mlp([h, h // 2, max(h // 4, out_dim), out_dim], last_relu=False)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.pre(x))
        return self.post(h).mean(dim=1)


class StyleEncoder(nn.Module):
    def __init__(self, expr_dim: int, size: ManipulatorSize):
        super().__init__()
        self.trunk = _Trunk(expr_dim, size, size.style_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


class Discriminator(nn.Module):
    def __init__(self, expr_dim: int, size: ManipulatorSize, n_classes: int):
        super().__init__()
        self.trunk = _Trunk(expr_dim, size, n_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).gather(1, y[:, None])[:, 0]


class MappingNetwork(nn.Module):
    def __init__(self, size: ManipulatorSize, n_classes: int):
        super().__init__()
        h = size.mapping_hidden
        self.shared = _mlp([size.latent_dim, h, h, h])
        self.heads = nn.ModuleList([_mlp([h, h, size.style_dim], last_relu=False) for _ in range(n_classes)])
        _he_init(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(z)
        styles = torch.stack([head(h) for head in self.heads], dim=1)  # (B, n_classes, style_dim)
        return styles[torch.arange(len(y), device=y.device), y]


def build_manipulator(expr_dim: int, n_classes: int, size_name: str, residual: bool = False) -> dict[str, nn.Module]:
    size = SIZES[size_name]
    return {
        "generator": Generator(expr_dim, size, residual),
        "mapping": MappingNetwork(size, n_classes),
        "style": StyleEncoder(expr_dim, size),
        "discriminator": Discriminator(expr_dim, size, n_classes),
    }
