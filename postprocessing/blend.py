"""Blending a generated face into a frame: soft-eroded masks, Laplacian-pyramid blending (NED's default),
copy-paste and Poisson (seamless clone) as options.

Every method changes only pixels where the returned blend support is non-zero; `blend` guarantees that
pixels outside it are the original ones, bit for bit.
"""

from __future__ import annotations

import cv2
import numpy as np

METHODS = ("pyramid", "copy_paste", "poisson")


def soft_erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Feather a mask inwards: 0 on and outside its edge, rising linearly to 1 at `radius` pixels inside.

    mask: (H, W) uint8 or float in [0, 1] (thresholded at one half). Returns float32 (H, W) in [0, 1].
    Like NED's SoftErosion, the blend never reaches past the segmented face, so no background is pulled in.
    """
    m = mask.astype(np.float32)
    if m.max() > 1.0:
        m = m / 255.0
    hard = (m >= 0.5).astype(np.uint8)
    if radius <= 0:
        return hard.astype(np.float32)
    # distance to the nearest pixel outside the mask; pad so the image border counts as outside
    dist = cv2.distanceTransform(np.pad(hard, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    return np.clip((dist - 1.0) / radius, 0.0, 1.0).astype(np.float32)  # edge pixels (distance 1) get 0


def _gaussian_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    pyr = [x]
    for _ in range(levels):
        pyr.append(cv2.pyrDown(pyr[-1]))
    return pyr


def _up(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return cv2.pyrUp(x, dstsize=(shape[1], shape[0]))


def _laplacian_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    g = _gaussian_pyramid(x, levels)
    return [g[i] - _up(g[i + 1], g[i].shape) for i in range(levels)] + [g[-1]]


def pyramid_blend(a: np.ndarray, b: np.ndarray, weight: np.ndarray, levels: int = 4) -> np.ndarray:
    """Laplacian-pyramid blend: b where weight = 1, a where weight = 0. a, b (H, W, 3); weight (H, W) in [0, 1]."""
    levels = max(0, min(levels, int(np.log2(max(1, min(a.shape[:2])))) - 1))
    la = _laplacian_pyramid(a.astype(np.float32), levels)
    lb = _laplacian_pyramid(b.astype(np.float32), levels)
    gw = _gaussian_pyramid(weight.astype(np.float32), levels)
    out = la[-1] * (1 - gw[-1][..., None]) + lb[-1] * gw[-1][..., None]
    for i in range(levels - 1, -1, -1):
        w = gw[i][..., None]
        out = _up(out, la[i].shape) + la[i] * (1 - w) + lb[i] * w
    return out


def blend_support(weight: np.ndarray, levels: int) -> np.ndarray:
    """Pixels a pyramid blend of `levels` may change: the weight's support grown by the pyramid's reach."""
    reach = 2 ** (levels + 1) + 1
    support = (weight > 0).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
    return cv2.dilate(support, kernel) > 0


def blend(
    original: np.ndarray, generated: np.ndarray, weight: np.ndarray, method: str = "pyramid", levels: int = 4
) -> np.ndarray:
    """Blend `generated` into `original` (both (H, W, 3) uint8) with a soft weight (H, W) in [0, 1]."""
    if method not in METHODS:
        raise ValueError(f"unknown blend method {method!r}; known: {', '.join(METHODS)}")
    if not (weight > 0).any():
        return original.copy()
    if method == "copy_paste":
        w = weight[..., None]
        out = original.astype(np.float32) * (1 - w) + generated.astype(np.float32) * w
        support = weight > 0
    elif method == "pyramid":
        out = pyramid_blend(original, generated, weight, levels)
        support = blend_support(weight, levels)
    else:
        out = _poisson(original, generated, weight)
        support = blend_support(weight, 0)
    result = np.clip(np.round(out), 0, 255).astype(np.uint8)
    result[~support] = original[~support]
    return result


def _poisson(original: np.ndarray, generated: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """cv2.seamlessClone inside the mask, then feathered with the soft weight (NED's poisson option)."""
    hard = (weight > 0).astype(np.uint8) * 255
    ys, xs = np.nonzero(hard)
    h, w = original.shape[:2]
    if xs.min() == 0 or ys.min() == 0 or xs.max() >= w - 1 or ys.max() >= h - 1:
        hard = np.pad(hard[1:-1, 1:-1], 1)  # seamlessClone needs the mask inside the image
        ys, xs = np.nonzero(hard)
        if not len(xs):
            return original.astype(np.float32)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    centre = (x0 + (x1 - x0) // 2, y0 + (y1 - y0) // 2)  # OpenCV puts the patch's top-left at centre - size//2
    cloned = cv2.seamlessClone(generated[y0:y1, x0:x1], original, hard[y0:y1, x0:x1], centre, cv2.NORMAL_CLONE)
    wt = weight[..., None]
    return original.astype(np.float32) * (1 - wt) + cloned.astype(np.float32) * wt
