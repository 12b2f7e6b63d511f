"""The refiner's training step, shared by `python -m renderer.refine` and `evaluation.bench`: a batch of warp
pairs refined, L1 inside the real frame's face mask (plus VGG19 perceptual when its weights are loaded), one
Adam step."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

from renderer.refine.net import apply


def build_optimizer(net: nn.Module, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.999))


def masked_l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |a - b| over the pixels of `mask`: images (N, 3, S, S), mask (N, 1, S, S) in [0, 1]."""
    return (torch.abs(a - b) * mask).sum() / (3 * mask.sum()).clamp_min(1.0)


def train_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    lambda_l1: float,
    lambda_perceptual: float,
    perceptual: nn.Module | None,
    autocast: Callable[[], AbstractContextManager],
) -> tuple[dict[str, float], torch.Tensor]:
    """One step on `batch` = (x (B, 7, S, S) inputs, real (B, 3, S, S) in [-1, 1], mask (B, 1, S, S)) on the
    net's device. Returns the logged losses (`l1_warp`: the warp's own L1, which the refiner should beat) and
    the refined crops (B, 3, S, S)."""
    x, real, mask = batch
    with autocast():
        fake = apply(net, x)
        l1 = masked_l1(fake.float(), real, mask)
        loss = lambda_l1 * l1
        logs = {"l1": l1.item(), "l1_warp": masked_l1(x[:, :3], real, mask).item()}
        if perceptual is not None:
            vgg = perceptual(fake * mask, real * mask)
            loss = loss + lambda_perceptual * vgg
            logs["vgg"] = vgg.item()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logs | {"total": loss.item()}, fake
