"""The lips part as the speech parts them: an edit's inner-lip gaps are the source's, scaled.

`manipulator.editing.keep_speech` gives an edit the source's mouth opening (expr channel 0: the gap between the
middle inner-lip points), times one factor. The other inner-lip points are the expression channels': an emotion
that raises the upper lip (disgust) or stretches it (a smile) also parts its sides. Measured on the real-face
panel (astronaut, disgusted): the decoded middle gap follows the source's exactly (Pearson 1.000), but where the
source's lips are closed (middle gap 0.004-0.011 eye distances) the output re-tracks at 0.10-0.26 — the parted
sides read as an open mouth — and lip_r falls to 0.52. So the gap at every inner-lip pair (upper and lower point
of one column, corners excluded) is set to the source's at that pair times the same factor, by the least change
of the mesh in the expression coefficients (as `facemodel.eyelids` does for the eyes; exact for the mesh model,
whose decode is linear in them). The lips' shape (their middle line, the corners, the width) stays the edit's;
the opening, pair by pair, is the speech's. FaceMesh-topology models only (a FLAME mesh has no such pairs).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from facemodel.eyelids import N_UPPER, free_channels, frontal, is_facemesh, least_change, linear_measure, upper_face
from facemodel.geometry import frame_blocks
from facemodel.render import INNER_LIPS_LOWER, INNER_LIPS_UPPER, LIP_COLUMNS, MOUTH_CORNERS

# the inner-lip columns beside the middle one (whose gap is expr channel 0's, set by keep_speech); the corners
# are shared points
UPPER = [p for p in INNER_LIPS_UPPER[1:-1] if p != INNER_LIPS_UPPER[5]]
LOWER = [p for p in INNER_LIPS_LOWER[1:-1] if p != INNER_LIPS_LOWER[5]]
TOLERANCE = 1e-4  # eye distances: gaps this close to the wanted ones are left as they are
THIN_MIN = 0.6  # a stretched lip keeps at least this share of its rest thickness


def _gaps(verts: np.ndarray) -> np.ndarray:
    """(T, 8) vertical inner-lip gaps (lower minus upper point) of decoded frontal meshes, in pixels."""
    return verts[:, LOWER, 1] - verts[:, UPPER, 1]


def unit_of(model, face: Mapping[str, np.ndarray]) -> float:
    """The distance between the eye centres at the clip's mean expression, head pose removed (decoded)."""
    mean = np.asarray(face["expr"], np.float64).mean(axis=0, keepdims=True)
    centres, _ = model.eyes(model.decode(frontal(face, mean)).astype(np.float64))
    return float(np.linalg.norm(centres[0, 0] - centres[0, 1]))


def gaps_of(model, face: Mapping[str, np.ndarray], expr: np.ndarray, unit: float = 0.0) -> np.ndarray:
    """(T, 8) inner-lip gaps of `expr` on `face`'s identity, head pose removed, in distances between the eye
    centres of the clip's mean expression (`unit`, computed when 0: one unit for every frame, so the gaps stay
    linear in `expr`)."""
    unit = unit or unit_of(model, face)
    blocks = frame_blocks(len(expr))  # memory bounded on long videos
    return np.concatenate([_gaps(model.decode(frontal(face, expr[b])).astype(np.float64)) for b in blocks]) / unit


def follow_speech(model, face: Mapping[str, np.ndarray], edited: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """(`edited` whose inner-lip gaps are the source's times `scale` at every pair, the share of frames changed)
    for raw (T, D) expressions of `face`; channel 0 (the middle gap, set by keep_speech) is not moved, and on
    models with more channels than the lip and upper-face measures the eyes' openings at every lid pair and the
    brows' heights are held (facemodel.eyelids.upper_face: what open_eyes limits)."""
    if not is_facemesh(model):
        return np.asarray(edited, np.float32), 0.0
    unit = unit_of(model, face)
    source, edited = np.asarray(face["expr"], np.float64), np.asarray(edited, np.float64)
    missing = scale * gaps_of(model, face, source, unit) - gaps_of(model, face, edited, unit)  # (T, 8)
    changed = np.abs(missing).max(axis=1) > TOLERANCE
    if not changed.any():
        return edited.astype(np.float32), 0.0
    # the lids' openings and the brows' heights stay as open_eyes left them (this least change once raised the
    # ends of an angry upper lid over its middle, and lowered brows to a quarter of their height: past open_eyes'
    # half)
    held = free_channels(face) > missing.shape[1] + N_UPPER  # least_change meets them all

    def measures(verts):
        gaps = _gaps(verts) / unit
        return np.concatenate([gaps, upper_face(model, verts)], 1) if held else gaps

    jac, metric = linear_measure(model, face, measures)
    if held:
        missing = np.concatenate([missing, np.zeros((len(missing), jac.shape[1] - missing.shape[1]))], 1)
    return (edited + missing @ least_change(jac, metric).T).astype(np.float32), float(changed.mean())


def keep_lip_volume(rest: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """`moved` (..., >= 468, 2) FaceMesh points with each lip thinned where it is stretched: a lip drawn wider than
    at `rest` (mouth corner to mouth corner) is, column by column, at most its rest thickness over that stretch
    (its area kept; at least THIN_MIN of it), its rings pulled towards the inner contour along the column. A lip
    the edit made thinner, and a mouth no wider than at rest (a pout may thicken it), are left as they are; the
    inner contour (the speech) never moves."""
    out = moved.copy()
    a, b = MOUTH_CORNERS
    width_rest = np.linalg.norm(rest[..., a, :] - rest[..., b, :], axis=-1)
    width = np.linalg.norm(out[..., a, :] - out[..., b, :], axis=-1)
    stretch = (width / np.maximum(width_rest, 1e-12))[..., None]
    for inner, *rings in LIP_COLUMNS:
        outer = rings[-1]
        thick_rest = np.linalg.norm(rest[..., outer, :] - rest[..., inner, :], axis=-1)
        thick = np.linalg.norm(out[..., outer, :] - out[..., inner, :], axis=-1)
        want = np.maximum(thick_rest / np.maximum(stretch, 1.0), THIN_MIN * thick_rest)
        factor = np.where(stretch > 1.0, np.minimum(want / np.maximum(thick, 1e-12), 1.0), 1.0)[..., None]
        base = out[..., inner, :]
        for ring in rings:
            out[..., ring, :] = (base + (out[..., ring, :] - base) * factor).astype(out.dtype)
    return out
