"""What a person rejects in an edited face, measured on pixels and re-tracked landmarks: a wink (one eye closing
more than the other, against the source) and a seam (an edge drawn where the edited region meets the frame).

Eye opening: the mean gap between three upper-lid and three lower-lid FaceMesh points of an eye over that eye's
corner distance. Eye symmetry of an edit: the median over frames of |Δ log(left opening / right opening)|
between the output and the source (a wink is about 1.5; the issue's acceptance is 0.15).

Seam: the edited region is where the output differs from the source by more than a few grey levels (its largest
connected part, convex hull); its boundary band is the hull dilated minus the hull eroded by `band` pixels.
The seam ratio is the mean gradient magnitude of the output in that band over the source's at the same pixels
(1.0: no new edge; the acceptance is 1.2).
"""

from __future__ import annotations

import cv2
import numpy as np

from evaluation.fer import grey

# (upper lid, lower lid) triples and (outer, inner) corners; "right" is the subject's right (image left)
RIGHT_EYE = ((160, 159, 158), (144, 145, 153), (33, 133))
LEFT_EYE = ((387, 386, 385), (373, 374, 380), (263, 362))
SEAM_DIFF = 6.0  # grey levels: a pixel the edit changed by more than this belongs to the edited region
SEAM_BAND = 2  # pixels each side of the boundary: a seam is a line; a wider band dilutes it (measured: a pasted
# patch 1.4 with 2, 1.3 with 3; a feathered warp 0.98 either way)


def eye_openings(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, ≥2) landmarks -> (T, 2) openings of the (right, left) eye, lid gap over corner distance."""
    pts = np.asarray(landmarks, np.float64)[..., :2]
    out = []
    for upper, lower, (outer, inner) in (RIGHT_EYE, LEFT_EYE):
        gap = np.linalg.norm(pts[:, list(upper)] - pts[:, list(lower)], axis=-1).mean(axis=1)
        width = np.linalg.norm(pts[:, outer] - pts[:, inner], axis=-1)
        out.append(gap / np.maximum(width, 1e-6))
    return np.stack(out, axis=1)


def eye_asymmetry(source: np.ndarray, output: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Median over frames of |log(L/R) of the output − log(L/R) of the source| for two (T, 478, ≥2) landmark
    tracks of the same frames; frames outside `valid` (T,) are left out; nan without frames."""
    keep = np.ones(len(source), bool) if valid is None else np.asarray(valid, bool)
    if not keep.any():
        return float("nan")
    floor = 1e-3  # a shut eye: its log stays finite (≈ −7 against an open one)

    def log_ratio(landmarks: np.ndarray) -> np.ndarray:
        right, left = np.maximum(eye_openings(landmarks[keep]), floor).T
        return np.log(left / right)

    return float(np.median(np.abs(log_ratio(output) - log_ratio(source))))


def _grey(image: np.ndarray) -> np.ndarray:
    return grey(np.asarray(image)).astype(np.float32)


def edited_region(source: np.ndarray, output: np.ndarray, diff: float = SEAM_DIFF) -> np.ndarray:
    """(H, W) bool: the convex hull of the largest connected part of the pixels the edit changed by more than
    `diff` grey levels (empty when nothing changed)."""
    changed = (np.abs(_grey(output) - _grey(source)) > diff).astype(np.uint8)
    changed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
    region = np.zeros(changed.shape, np.uint8)
    if n <= 1:
        return region.astype(bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    points = cv2.findNonZero((labels == biggest).astype(np.uint8))
    cv2.fillConvexPoly(region, cv2.convexHull(points), 1)
    return region.astype(bool)


def boundary_band(region: np.ndarray, band: int = SEAM_BAND) -> np.ndarray:
    """(H, W) bool: the pixels within `band` of the region's boundary, on either side."""
    mask = region.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    return (cv2.dilate(mask, kernel) > 0) & ~(cv2.erode(mask, kernel) > 0)


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    grey = _grey(image)
    return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))


def seam_ratio(
    source: np.ndarray, output: np.ndarray, region: np.ndarray | None = None, band: int = SEAM_BAND
) -> float:
    """Mean gradient magnitude of the output over the source's in the edited region's boundary band (the region
    from `edited_region` unless given); nan when the edit changed nothing."""
    region = edited_region(source, output) if region is None else np.asarray(region, bool)
    where = boundary_band(region, band)
    if not region.any() or not where.any():
        return float("nan")
    src = float(gradient_magnitude(source)[where].mean())
    return float(gradient_magnitude(output)[where].mean() / max(src, 1e-6))
