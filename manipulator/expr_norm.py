"""The expression normaliser: face.npz `expr` <-> the units the metric's and the manipulator's networks read.

`dataset`: (expr - mean) / std with the face model's train-split statistics (`expr_mean`, `expr_std` of the
dataset's `face_model_<backend>.npz`); `none`: the identity (raw coefficients, as NED). A trained run records
its normaliser in its checkpoint's extra data (`expr_norm`: `state_dict()`), and whoever uses the run's
networks reads it back from there (`from_extra`), so they see the numbers they were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.formats import read_clip_index
from facemodel import read_model_file

MODES = ("dataset", "none")
EXTRA_KEY = "expr_norm"  # checkpoints' extra data: {"mode", "mean", "std"}


@dataclass
class Normaliser:
    mean: np.ndarray  # (D,) float32
    std: np.ndarray  # (D,) float32
    mode: str = "dataset"

    @classmethod
    def from_index(cls, processed: str | Path, mode: str = "dataset") -> Normaliser:
        """A processed dataset's normaliser: its face model's train statistics (`dataset`) or the identity
        (`none`: raw coefficients, as NED)."""
        if mode not in MODES:
            raise ValueError(f"unknown expression normalisation {mode!r}; choose from {', '.join(MODES)}")
        stats = read_model_file(read_clip_index(Path(processed))["basis_file"])
        if mode == "none":
            return cls.identity(len(stats["expr_mean"]))
        return cls(stats["expr_mean"].astype(np.float32), stats["expr_std"].astype(np.float32), mode)

    @classmethod
    def identity(cls, dim: int) -> Normaliser:
        return cls(np.zeros(dim, np.float32), np.ones(dim, np.float32), "none")

    def state_dict(self) -> dict:
        """Plain data for a checkpoint's extra data (`from_state` reads it back)."""
        return {"mode": self.mode, "mean": self.mean.tolist(), "std": self.std.tolist()}

    def as_extra(self) -> dict:
        """The entry of a checkpoint's extra data that records this normaliser (`from_extra` reads it)."""
        return {EXTRA_KEY: self.state_dict()}

    @classmethod
    def from_state(cls, state: dict) -> Normaliser:
        return cls(np.array(state["mean"], np.float32), np.array(state["std"], np.float32), str(state["mode"]))

    @classmethod
    def from_extra(cls, extra: dict) -> Normaliser | None:
        """The normaliser a checkpoint's extra data records; None when it records none (metric runs before
        the record always used their dataset's statistics). Manipulator runs before the record kept
        `expr_mean`/`expr_std`: read as such."""
        if EXTRA_KEY in extra:
            return cls.from_state(extra[EXTRA_KEY])
        if "expr_mean" in extra and "expr_std" in extra:
            mean, std = np.array(extra["expr_mean"], np.float32), np.array(extra["expr_std"], np.float32)
            return cls(mean, std, "none" if not mean.any() and np.all(std == 1.0) else "dataset")
        return None

    @property
    def dim(self) -> int:
        return len(self.mean)

    def same_as(self, other: Normaliser) -> bool:
        """Whether both map coefficients to the same numbers."""
        return np.array_equal(self.mean, other.mean) and np.array_equal(self.std, other.std)

    def forward(self, expr: np.ndarray) -> np.ndarray:
        """Coefficients (..., D) -> normalised (..., D) float32."""
        return ((expr - self.mean) / self.std).astype(np.float32)

    def inverse(self, expr: np.ndarray) -> np.ndarray:
        """Normalised (..., D) -> coefficients (..., D) float32."""
        return (expr * self.std + self.mean).astype(np.float32)

    def to_other(self, other: Normaliser) -> Renormalise:
        """A module taking this normaliser's units to `other`'s: other.forward(self.inverse(x)), in torch."""
        scale = self.std / other.std
        shift = (self.mean - other.mean) / other.std
        return Renormalise(torch.from_numpy(scale.astype(np.float32)), torch.from_numpy(shift.astype(np.float32)))


class Renormalise(nn.Module):
    """x (..., D) -> x * scale + shift: one normaliser's units to another's (e.g. a manipulator trained on raw
    coefficients feeding the metric's expression encoder, trained on dataset-normalised ones)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift
