"""Image quality of rendered faces and the one rule by which every average of measurements is taken; the
renderer's reconstruction check (`renderer.evaluate`) and the evaluation's rows and report use both.

PSNR and SSIM compare a real and a generated image inside a mask (the face). The averaging rule:
- NaN means "not measured" (an empty mask, a network whose file is missing): skipped;
- a failed item (e.g. an output whose face the re-tracker lost) counts at the metric's worst value, whatever
  it holds, so that failing can never score better than any measurement;
- +inf is a measurement (identical pixels) and stays.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from skimage.metrics import structural_similarity


def masked_psnr(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 255) of two (H, W, 3) uint8 images over the pixels where the (H, W) bool mask is true (all
    channels); +inf for identical pixels, NaN for an empty mask (nothing measured)."""
    diff = real[mask].astype(np.float64) - fake[mask].astype(np.float64)
    if not diff.size:
        return float("nan")
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def masked_ssim(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the SSIM map (Gaussian window, sigma 1.5) of two (H, W, 3) uint8 images over the (H, W) bool mask;
    NaN for an empty mask."""
    if not mask.any():
        return float("nan")
    _, ssim_map = structural_similarity(
        real,
        fake,
        channel_axis=2,
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    return float(ssim_map.mean(axis=2)[mask].mean())


def scored(values: Iterable[float], failed: Iterable[bool] | None = None, worst: float = float("nan")) -> np.ndarray:
    """The values an average counts (float64): NaN (not measured) dropped, a failed item replaced by `worst`."""
    v = np.asarray(list(values), np.float64)
    if failed is not None:
        v = np.where(np.asarray(list(failed), bool), worst, v)
    return v[~np.isnan(v)]


def mean_measured(values: Iterable[float], failed: Iterable[bool] | None = None, worst: float = float("nan")) -> float:
    """Mean under the module's rule (NaN skipped, failed items at `worst`, +inf kept); NaN when nothing counts."""
    v = scored(values, failed, worst)
    return float(v.mean()) if len(v) else float("nan")


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the measured values (NaN skipped)."""
    v = scored(values)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
