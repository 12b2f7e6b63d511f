"""Losses of the SCMCL metric, as free functions on (B, dim) embeddings.

Row i of `anchors` (neutral frames) and row i of `positives` (their DTW-matched emotional frames) belong
together; all other rows of the batch are negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distance(anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """D[i, j] = ||positives[i] - anchors[j]||_2, shape (B, B)."""
    return torch.cdist(positives, anchors)


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE with negative-L2 logits: cross-entropy of each positive against all anchors (LSCMC, τ=1)."""
    logits = -pairwise_distance(anchors, positives) / temperature
    target = torch.arange(len(anchors), device=anchors.device)
    return F.cross_entropy(logits, target)


def consistency_softmax(d_visual: torch.Tensor, d_audio: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """LSCMC: mean |softmax_row(-D_visual) - softmax_row(-D_audio)| (both similarity structures agree)."""
    return (F.softmax(-d_visual / temperature, dim=1) - F.softmax(-d_audio / temperature, dim=1)).abs().mean()


def consistency_affine(
    d_visual: torch.Tensor, d_audio: torch.Tensor, phi: torch.nn.Module, max_audio: float | None = None
) -> torch.Tensor:
    """SCMCL: mean |φ(D_visual) - D_audio| over the batch's distance matrices; with `max_audio`, over the
    pairs whose audio distance is at most that (the near range, where retrieved pairs live: on full B x B
    matrices ~98 % of the pairs are far ones, and φ fitted there is wrong for near ones). No near pair: 0."""
    err = (phi(d_visual) - d_audio).abs()
    if max_audio is None:
        return err.mean()
    near = (d_audio <= max_audio).to(err.dtype)
    return (err * near).sum() / near.sum().clamp_min(1.0)


def retrieval_accuracy(anchors: torch.Tensor, positives: torch.Tensor) -> float:
    """Fraction of positives whose nearest anchor is their own."""
    nearest = pairwise_distance(anchors, positives).argmin(dim=1)
    return float((nearest == torch.arange(len(anchors), device=anchors.device)).float().mean())
