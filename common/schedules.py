"""Schedules as pure functions of the step, so that a resumed run continues exactly (nothing is mutated)."""

from __future__ import annotations

import math

import torch


def lr_at(
    step: int,
    base_lr: float,
    kind: str = "constant",
    warmup_steps: int = 0,
    total_steps: int = 0,
    min_lr_ratio: float = 0.0,
    decay_every: int = 0,
    gamma: float = 0.5,
) -> float:
    """Learning rate at `step`.

    kind: `constant`, `cosine` (to min_lr_ratio * base_lr at total_steps), `linear` (same end point) or
    `step` (multiply by gamma every decay_every steps). A linear warm-up from 0 over warmup_steps comes first.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant":
        return base_lr
    if kind == "step":
        return base_lr * gamma ** (step // decay_every) if decay_every > 0 else base_lr
    if kind in ("cosine", "linear"):
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
        return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * shape)
    raise ValueError(f"unknown schedule kind {kind!r}: use constant, cosine, linear or step")


def ramp(step: int, start: int, end: int, value_from: float, value_to: float) -> float:
    """Linear ramp of a loss weight: value_from before `start`, value_to after `end`."""
    if step <= start:
        return value_from
    if step >= end:
        return value_to
    return value_from + (value_to - value_from) * (step - start) / (end - start)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply a scheduled learning rate to every parameter group (times the group's `lr_scale`, if it has one)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
