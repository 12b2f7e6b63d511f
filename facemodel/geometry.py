"""Landmark and affine geometry of the clip format: the aligned-crop template, (2, 3) affine maps between
frame, crop and aligned-crop pixels, the aligned crop of a frame and the tracked landmarks in it.

Pixel convention everywhere: the centre of pixel j is at j + 0.5 (OpenCV's is at j; `crop_frame` converts).
"""

from __future__ import annotations

import cv2
import numpy as np

# Rigid landmarks for the alignment (outer/inner eye corners, nose bridge and tip), and their template
# in units of the outer-eye-corner distance, origin at the corners' midpoint, y down (measured on frontal
# faces and symmetrised).
ALIGN_LANDMARKS = [33, 133, 362, 263, 168, 6, 1, 4]
ALIGN_TEMPLATE_UNITS = np.array(
    [
        [-0.5, 0.0],
        [-0.1907, 0.0259],
        [0.1907, 0.0259],
        [0.5, 0.0],
        [0.0, -0.0227],
        [0.0, 0.0598],
        [0.0, 0.4664],
        [0.0, 0.3964],
    ]
)
TEMPLATE_EYE_Y = 0.42  # eye line height, fraction of the crop size
TEMPLATE_EYE_SPAN = 0.36  # outer eye corner distance, fraction of the crop size


def align_template(crop_size: int) -> np.ndarray:
    """(8, 2) template positions of ALIGN_LANDMARKS in an aligned crop of `crop_size` pixels."""
    centre = np.array([0.5, TEMPLATE_EYE_Y]) * crop_size
    return centre + ALIGN_TEMPLATE_UNITS * TEMPLATE_EYE_SPAN * crop_size


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply (2, 3) or (T, 2, 3) affine(s) to (..., N, 2) points."""
    return pts @ np.swapaxes(m[..., :, :2], -1, -2) + m[..., None, :, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of (..., 2, 3) affine matrices."""
    lin = np.linalg.inv(m[..., :, :2])
    out = np.concatenate([lin, -(lin @ m[..., :, 2:])], axis=-1)
    return out


def compose(first_outer: np.ndarray, second_inner: np.ndarray) -> np.ndarray:
    """Affine composition outer ∘ inner for (2, 3) matrices (apply inner, then outer)."""
    full = np.vstack([first_outer, [0, 0, 1]]) @ np.vstack([second_inner, [0, 0, 1]])
    return full[:2]


def aligned_to_frame(track: dict[str, np.ndarray], t: int) -> np.ndarray:
    """(2, 3) affine: aligned-crop pixel -> source-frame pixel for frame t of a track.npz."""
    return compose(track["crop_to_frame"][t].astype(np.float64), invert_affine(track["align"][t].astype(np.float64)))


def crop_frame(frame: np.ndarray, crop_to_frame: np.ndarray, align: np.ndarray, crop_size: int) -> np.ndarray:
    """The aligned crop of one frame: frame -> crop -> aligned, in one resampling."""
    aligned_to_frame = compose(crop_to_frame, invert_affine(align))
    frame_to_aligned = invert_affine(aligned_to_frame)
    # cv2 uses pixel-index coordinates (centre of pixel j at j); ours put it at j + 0.5.
    shift = np.array([[1, 0, -0.5], [0, 1, -0.5]]) @ np.vstack([frame_to_aligned, [0, 0, 1]])
    m = shift @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    downscale = float(np.sqrt(abs(np.linalg.det(aligned_to_frame[:, :2]))))
    if downscale > 1.5:  # warpAffine has no area filter: low-pass first so large frames do not alias
        frame = cv2.GaussianBlur(frame, (0, 0), 0.5 * (downscale - 1))
    return cv2.warpAffine(frame, m, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def aligned_points(track: dict[str, np.ndarray], frames: slice = slice(None)) -> np.ndarray:
    """(T, 478, 3) landmarks in aligned-crop pixels (of `frames` only, when given); depth scaled by the
    alignment's scale."""
    align = track["align"][frames].astype(np.float64)
    xy = apply_affine(align, track["landmarks"][frames].astype(np.float64))
    scale = np.sqrt(np.abs(np.linalg.det(align[:, :, :2])))
    return np.concatenate([xy, (track["landmarks_z"][frames] * scale[:, None])[..., None]], axis=-1)


BLOCK = 1000  # frames per block in whole-clip array work: memory stays bounded for long videos


def frame_blocks(n: int, size: int = 0) -> list[slice]:
    """[0, n) as consecutive slices of at most `size` frames (default BLOCK)."""
    size = size or BLOCK
    return [slice(a, min(a + size, n)) for a in range(0, n, size)]


PER_CLIP = ("identity",)  # face.npz keys with one value per clip, not per frame


def frames_of(face: dict[str, np.ndarray], frames: slice) -> dict[str, np.ndarray]:
    """The face.npz arrays of `frames` only (per-clip arrays as they are)."""
    return {k: v if k in PER_CLIP else v[frames] for k, v in face.items()}
