"""Left-right mirror of expression coefficients, for any face-model backend, and the symmetric part of an edit.

Measured (the real-face panel, `evaluation.panel`): the manipulator's edits wink — decoding its output gives a
left eye at 0.3× its opening for angry and a right eye at 0.5× for happy while the other stays open, on the toy
actors' own test clips as on held-out faces, frontal or turned; the source and its reconstruction are symmetric
(|log(left/right)| ≤ 0.08) and so are the training clips of happy (the toy set's one asymmetric emotion is W002's
angry, −0.41). An emotion's edit is a symmetric change of the face; the mirror group makes that a constraint:
the edit's change Δ = edited − source is replaced by ½(Δ + mirror(Δ)), which keeps the source's own asymmetry
(a lopsided mouth while speaking stays) and drops the asymmetric part of the change.

The mirror is measured on the backend's own `decode`: each expression channel is moved alone from the clip's
mean expression on the model's mean face (identity and head pose removed); the mesh change is mirrored across
the face's symmetry plane (each vertex taking the change of the vertex nearest its mirror image) and fitted
back with least squares: a (D, D) map `M` with mirror(expr) ≈ expr @ M.T. A basis fitted on few faces need not
hold the mirror of each of its directions (the mesh model's basis is fitted on frames and their mirror images
for that reason, `facemodel.mesh.fit_basis`): the fit's residual is returned and recorded with each edit, and the
symmetric part is what the basis can express.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.spatial import cKDTree

from facemodel.geometry import PER_CLIP, frames_of


def symmetry_plane(verts: np.ndarray, iterations: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(partner (V,), centre (3,), lateral unit axis (3,)) of a roughly symmetric mesh (V, 3) in any pose: start from
    the x axis, pair each vertex with the vertex nearest its mirror image, then take the axis along which the
    pairs differ most and the centre of their midpoints, and repeat (a head turned or tilted by a few degrees
    is a tilted plane, not a vertical one)."""
    verts = np.asarray(verts, np.float64)
    tree = cKDTree(verts)
    axis, centre = np.array([1.0, 0.0, 0.0]), verts.mean(axis=0)
    for _ in range(iterations):
        partner = tree.query(reflect(verts, centre, axis))[1]
        diff = verts - verts[partner]
        _, _, vt = np.linalg.svd(diff, full_matrices=False)
        axis = vt[0] * np.sign(vt[0] @ axis)
        centre = 0.5 * (verts + verts[partner]).mean(axis=0)
    return tree.query(reflect(verts, centre, axis))[1].astype(np.int64), centre, axis


def reflect(points: np.ndarray, centre: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Points (..., 3) reflected in the plane through `centre` normal to the unit `axis`."""
    return points - 2.0 * ((points - centre) @ axis)[..., None] * axis


def mirror_offsets(offsets: np.ndarray, partner: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Mesh changes (..., V, 3) mirrored: each vertex takes its partner's change, reflected across the plane."""
    out = np.asarray(offsets, np.float64)[..., partner, :]
    return out - 2.0 * (out @ axis)[..., None] * axis


def channel_probe(face: Mapping[str, np.ndarray], mean_face: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(face.npz arrays of D + 1 frames, the steps (D,)): the clip's mean expression, then each expression channel
    moved alone by its spread over the clip (at least 1e-3), head pose removed; on the model's mean face
    (`mean_face`: identity zero) or on `face`'s own."""
    expr = np.asarray(face["expr"], np.float64)
    dim = expr.shape[1]
    step = np.maximum(expr.std(axis=0), 1e-3)
    first = frames_of(dict(face), slice(0, 1))
    probe = {
        k: (np.zeros_like(v) if mean_face else v) if k in PER_CLIP else np.repeat(v, dim + 1, axis=0)
        for k, v in first.items()
    }
    probe["expr"] = np.repeat(expr.mean(axis=0, keepdims=True), dim + 1, axis=0).astype(np.float32)
    probe["expr"][1:] += np.diag(step).astype(np.float32)
    probe["pose"] = np.zeros_like(probe["pose"])
    return probe, step


def mirror_map(model, face: Mapping[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """(M, residual): mirror(expr) ≈ expr @ M.T for `model` (any FaceModel), probed around the clip's mean
    expression on the model's mean face (identity zero: its symmetry defines the mirror), head pose removed;
    residual = ‖A·M − mirror(A)‖ / ‖mirror(A)‖ over the channels' mesh changes A."""
    probe, step = channel_probe(face, mean_face=True)
    dim = len(step)
    verts = model.decode(probe).astype(np.float64)
    # the backend's own pairing when it has one (the mesh model's: on the mean shape its basis was fitted with;
    # nearest-neighbour pairs move with the lips, and a few lip vertices paired otherwise undo the closure)
    if hasattr(model, "symmetry"):
        partner, _, axis = model.symmetry()
    else:  # the plane of the model's neutral face (zero expression), which an edit's mean does not tilt
        neutral = {k: v if k in PER_CLIP else v[:1] for k, v in probe.items()}
        neutral["expr"] = np.zeros_like(neutral["expr"])
        partner, _, axis = symmetry_plane(model.decode(neutral)[0].astype(np.float64))
    changes = (verts[1:] - verts[:1]) / step[:, None, None]  # (D, V, 3): one channel each
    a = changes.reshape(dim, -1).T  # (3V, D)
    b = mirror_offsets(changes, partner, axis).reshape(dim, -1).T
    m, *_ = np.linalg.lstsq(a, b, rcond=None)  # a @ m ≈ b: channel k's change mirrored = sum_j m[j, k] channel j
    residual = float(np.linalg.norm(a @ m - b) / max(np.linalg.norm(b), 1e-12))
    return m, residual  # coefficients c mirror to m @ c, i.e. rows: expr @ m.T


def symmetrise(model, face: Mapping[str, np.ndarray], edited: np.ndarray) -> tuple[np.ndarray, float]:
    """(the edit of `face`'s expression made symmetric, the mirror fit's residual) for `model` (any FaceModel)."""
    mirror, residual = mirror_map(model, face)
    return symmetric_edit(face["expr"], edited, mirror), residual


def symmetric_edit(source: np.ndarray, edited: np.ndarray, m: np.ndarray) -> np.ndarray:
    """source + ½(Δ + mirror(Δ)), Δ = edited − source, for (T, D) expressions and the mirror map `m`."""
    delta = np.asarray(edited, np.float64) - np.asarray(source, np.float64)
    return (np.asarray(source, np.float64) + 0.5 * (delta + delta @ m.T)).astype(np.float32)
