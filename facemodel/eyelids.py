"""An edit never shuts the eyes: at most CLOSE_MAX (about a third) of the source's eye opening is taken away, and
(FaceMesh topology) no brow comes down onto its lid by more than BROW_DROP_MAX (half) of its height above it.

Measured: toy MEAD's anger, sadness, disgust and smiles narrow the rig's eyes to slits (true openings, over the
distance between the eye centres, neutral → emotion: W001 0.18 → angry 0.08, sad 0.04, happy 0.09; W002 0.11 →
angry 0.01, sad 0.02; `python -m preprocessing.toy_mead.fidelity`), which FaceMesh reads as eyes barely
narrowed. A manipulator trained on the true points (`landmarks=truth`) learns the slits and its edits, added to
a real face, shut the eyes (real-face panel: 0.12-0.18 → 0.01-0.07 for angry, sad and happy): what a person
rejects as a grimace. So where an edit closes an eye, the closing is capped at CLOSE_MAX of that frame's source
opening (a narrowed eye, a glare; measured on the panel, 0.5 and 0.35 give the same judge readings, and 0.35
keeps the eyes visibly open); widening (surprise, fear) is left as it is, and so is the source's own blinking.

Lid margins (`keep_lid_margins`, on meshes: the warp renderer and the toy MEAD rig use it): the band from each lid
to the mesh ring next to it carries the lashes and their shadow. A brow raised with the skin next to the lid
stretched it 2-2.7x (the rig's surprise, sadness and fear, and every edit learnt from them: a smeared dark lash
band), a brow lowered past the lid turned it over (anger, disgust: a fold drawn as dark streaks). The first ring
keeps MARGIN_STRETCH of the margin's length along it, the second ring stays RING_MIN of its band beyond the
first; lids and brows are where they were put, the skin between them takes the stretch.

Brow hair (`keep_brow_hair`, on meshes: the warp renderer uses it): FaceMesh puts a brow's lower edge mid-brow
and the second ring above each eye at the hair's lower fringe (thick or low brows reach it). A brow raised or
lowered with that band stretched drew the hair smeared onto the lid (real-face panel, every surprise: raised
brows over dark hollows): the second ring above each eye moves with the brow's lower edge above it (the hair
keeps its thickness), and the band between it and the lid margin takes the stretch.

Brows (`BROWS`, `brow_heights`): a manipulator trained on the rig's true points learns its anger at full strength,
the brows pressed onto the lids (real-face panel, Maher: brow-to-lid height 0.280 -> 0.091 eye distances), which
FaceMesh re-tracks as one eye narrower under head yaw (eye asymmetry 0.21); kept at half their height (0.164) the
anger still reads and the eyes stay symmetric (docs/renderers.md, session 16).

On the FaceMesh topology the opening is held at each eye's five middle lid pairs (`LID_PAIRS`), not the middle
one alone: toy-learnt anger narrows the eye by raising the lower lid, and the least change giving back the middle
gap lowered the upper lid's middle and raised its ends (+0.07 to +0.12 eye distances on the real-face panel),
which the warp drew as bright spikes on every angry lid.

The change is made in the expression coefficients, for any backend: the eye openings are linear in the
coefficients around the clip's mean expression (measured on the backend's `decode` and `eyes`, head pose
removed), and the correction is the smallest change of the mesh that gives the wanted openings. Channel 0 (the
mouth opening, docs/formats.md) is left alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from facemodel.geometry import PER_CLIP, frame_blocks, frames_of
from facemodel.render import EYE_RINGS
from facemodel.symmetry import channel_probe
from facemodel.topology import FACEMESH_468

MARGIN_STRETCH = (0.7, 1.3)  # a lid margin's length along its rest direction, of its rest length
RING_MIN = 0.3  # the band beyond the lid margin: at least this share of its rest length (never turned over)
CLOSE_MAX = 0.35  # the largest share of the source's eye opening an edit may close
BROW_DROP_MAX = 0.5  # the largest share of a brow's height above its lid an edit may take away
# the brows' lower edge (outer, middle, inner) over the upper lid's middle, right brow then left (FaceMesh)
BROWS = ((159, [46, 52, 55]), (386, [276, 282, 285]))
# each brow's whole lower edge, outer end to inner end, right brow then left (FaceMesh): keep_brow_hair
BROW_LOWER = ([46, 53, 52, 65, 55], [276, 283, 282, 295, 285])
# each eye's five middle (upper lid, lower lid) point pairs, outer to inner, right eye then left (FaceMesh)
LID_PAIRS = (
    [(161, 163), (160, 144), (159, 145), (158, 153), (157, 154)],
    [(388, 390), (387, 373), (386, 374), (385, 380), (384, 381)],
)
N_UPPER = 2 * len(LID_PAIRS[0]) + 2 * len(BROWS[0][1])  # upper_face's measures
RIDGE = 1e-6  # relative ridge on the mesh metric (A^T A) of the coefficient correction


def frontal(face: Mapping[str, np.ndarray], expr: np.ndarray) -> dict[str, np.ndarray]:
    """`face`'s identity with the expressions `expr` (T, D), head pose removed: face.npz arrays to decode."""
    first = frames_of(dict(face), slice(0, 1))
    out = {k: v if k in PER_CLIP else np.repeat(np.asarray(v), len(expr), axis=0) for k, v in first.items()}
    out["expr"] = np.asarray(expr, np.float32)
    out["pose"] = np.zeros_like(out["pose"])
    return out


def openings(model, face: Mapping[str, np.ndarray], expr: np.ndarray) -> np.ndarray:
    """(T, 2) eye openings (right, left) of `expr` on `face`'s identity, head pose removed, in distances between
    the eye centres."""
    blocks = frame_blocks(len(expr))  # memory bounded on long videos
    return np.concatenate([eye_gaps(model, model.decode(frontal(face, expr[b])).astype(np.float64)) for b in blocks])


def eye_unit(model, verts: np.ndarray) -> np.ndarray:
    """(T, 1) distance between the eye centres of decoded meshes: the unit of every measure here."""
    centres, _ = model.eyes(verts)
    return np.linalg.norm(centres[:, 0] - centres[:, 1], axis=-1, keepdims=True)


def eye_gaps(model, verts: np.ndarray) -> np.ndarray:
    """(T, 2) eye openings of decoded meshes, in distances between the eye centres."""
    return model.eyes(verts)[1] / eye_unit(model, verts)


def linear_measure(model, face: Mapping[str, np.ndarray], measure) -> tuple[np.ndarray, np.ndarray]:
    """(J (D, M): d measure / d coefficient, A^T A (D, D): the mesh change metric), probed one channel at a time
    around the clip's mean expression (head pose removed); `measure` maps decoded meshes (N, V, 3), the first the
    mean expression's, to (N, M)."""
    probe, step = channel_probe(face, mean_face=False)
    verts = model.decode(probe).astype(np.float64)
    changes = ((verts[1:] - verts[:1]) / step[:, None, None]).reshape(len(step), -1)  # (D, 3V)
    values = measure(verts)
    return (values[1:] - values[:1]) / step[:, None], changes @ changes.T


def linear_eyes(model, face: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """linear_measure of the eye openings: (J (D, 2), A^T A (D, D))."""
    return linear_measure(model, face, lambda verts: eye_gaps(model, verts))


def lid_gaps(model, verts: np.ndarray) -> np.ndarray:
    """(T, 10) openings of each eye at its five middle lid pairs (LID_PAIRS, right eye then left; signed: lids
    pushed past each other are negative), in distances between the eye centres, of decoded meshes (FaceMesh)."""
    upper, lower = (np.concatenate([np.asarray(e)[:, k] for e in LID_PAIRS]) for k in (0, 1))
    return (verts[:, lower, 1] - verts[:, upper, 1]) / eye_unit(model, verts)


def brow_heights(model, verts: np.ndarray) -> np.ndarray:
    """(T, 6) heights of the brows' lower edge (outer, middle, inner; right brow, then left) above the middle of
    the upper lid below them, in distances between the eye centres, of decoded meshes (FaceMesh topology)."""
    heights = np.concatenate([verts[:, [lid], 1] - verts[:, brow, 1] for lid, brow in BROWS], axis=1)
    return heights / eye_unit(model, verts)


def upper_face(model, verts: np.ndarray) -> np.ndarray:
    """(T, N_UPPER) lid_gaps and brow_heights of decoded meshes (FaceMesh): what open_eyes limits."""
    return np.concatenate([lid_gaps(model, verts), brow_heights(model, verts)], 1)


def open_eyes(model, face: Mapping[str, np.ndarray], edited: np.ndarray) -> tuple[np.ndarray, float]:
    """(`edited` with no eye closed by more than CLOSE_MAX of the source's opening (on the FaceMesh topology: at
    each of its LID_PAIRS) and, on the FaceMesh topology, no brow lowered towards its lid by more than
    BROW_DROP_MAX of its height; the share of frames changed) for raw (T, D) expressions of `face`. Both limits
    are met together by the least change of the mesh; the measures within their limits are kept as they are."""
    source, edited = np.asarray(face["expr"], np.float64), np.asarray(edited, np.float64)
    brows = brows_measured(model, face)

    def measures(verts):
        return upper_face(model, verts) if brows else eye_gaps(model, verts)

    jac, metric = linear_measure(model, face, measures)
    decoded = (model.decode(frontal(face, source[b])).astype(np.float64) for b in frame_blocks(len(source)))
    at_source = np.concatenate([measures(verts) for verts in decoded])  # (T, 10 + 6) lid pairs, brows; or (T, 2)
    n_eye = 2 * len(LID_PAIRS[0]) if brows else 2
    floor = -CLOSE_MAX * np.maximum(at_source[:, :n_eye], 0.0)
    if brows:
        floor = np.concatenate([floor, -BROW_DROP_MAX * np.maximum(at_source[:, n_eye:], 0.0)], 1)
    change = (edited - source) @ jac  # signed: lids the edit pushes past each other close the eye, not reopen it
    missing = np.maximum(change, floor) - change  # (T, M) >= 0: the opening (the height) to give back
    capped = missing.max(axis=1) > 1e-6
    if not capped.any():
        return edited.astype(np.float32), 0.0
    return (edited + missing @ least_change(jac, metric).T).astype(np.float32), float(capped.mean())


def is_facemesh(model) -> bool:
    """Whether `model` decodes FaceMesh's 468-point topology (its brow and lip points are known)."""
    return getattr(model, "topology", None) == FACEMESH_468


def free_channels(face: Mapping[str, np.ndarray]) -> int:
    """The expression channels a least-change correction may use: all but channel 0 (the mouth's opening)."""
    return int(np.shape(face["expr"])[1]) - 1


def brows_measured(model, face: Mapping[str, np.ndarray]) -> bool:
    """Whether open_eyes holds each lid pair and the brows (N_UPPER measures): a FaceMesh-topology model with
    more free channels than that (fewer: the two eyes' middle openings only; least_change cannot meet more
    measures than it has channels)."""
    return is_facemesh(model) and free_channels(face) > N_UPPER


def least_change(jac: np.ndarray, metric: np.ndarray) -> np.ndarray:
    """K (D, M) such that c = K @ m is the least mesh change (metric A^T A (D, D)) of the coefficients whose
    measures (linear: J (D, M)) change by m; channel 0 (the mouth's opening) is neither used nor moved."""
    metric = metric.copy()
    metric[0], metric[:, 0] = 0.0, 0.0
    w = np.linalg.inv(metric + RIDGE * np.trace(metric) * np.eye(len(metric)))
    w[0], w[:, 0] = 0.0, 0.0
    return w @ jac @ np.linalg.pinv(jac.T @ w @ jac)


def keep_brow_hair(rest: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """`moved` (..., >= 468, 2) FaceMesh points with the second ring above each eye (EYE_RINGS) displaced as the
    brow's lower edge above it (BROW_LOWER; at `rest`, linearly between the two brow points on either side of the
    ring point's x, the nearer end's beyond them): the band under the brow moves with it; everything else stays
    where it is. Run keep_lid_margins after it."""
    out = moved.copy()
    for k, brow in enumerate(BROW_LOWER):
        ring = EYE_RINGS[k][2]
        shift = moved[..., brow, :] - rest[..., brow, :]  # (..., B, 2)
        bx, rx = rest[..., brow, 0], rest[..., ring, 0]  # (..., B), (..., R)
        a, b = bx[..., None, :-1], bx[..., None, 1:]  # each brow segment's ends, (..., 1, B - 1)
        span = np.where(np.abs(b - a) > 1e-9, b - a, 1e-9)
        t = (rx[..., None] - a) / span  # (..., R, B - 1): where the ring point's x falls on each segment
        inside = (t >= 0.0) & (t <= 1.0)
        nearer_first = np.abs(rx - bx[..., :1]) <= np.abs(rx - bx[..., -1:])
        seg = np.where(inside.any(-1), inside.argmax(-1), np.where(nearer_first, 0, len(brow) - 2))
        w = np.clip(np.take_along_axis(t, seg[..., None], -1), 0.0, 1.0)  # (..., R, 1)
        s0 = np.take_along_axis(shift, seg[..., None], -2)
        s1 = np.take_along_axis(shift, seg[..., None] + 1, -2)
        out[..., ring, :] = rest[..., ring, :] + (1 - w) * s0 + w * s1
    return out


def keep_lid_margins(rest: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """`moved` (..., >= 468, 2) FaceMesh points with the rings around the eyes (EYE_RINGS) moved along each chain's
    direction at `rest` so that no lid margin is longer or shorter than MARGIN_STRETCH of its `rest` length and
    the band beyond it keeps RING_MIN of its own (a motion across the chain is kept); lids, brows and everything
    else stay where they are."""
    out = moved.copy()
    for chain in EYE_RINGS:
        for (a, b), (lo, hi) in zip(((0, 1), (1, 2)), (MARGIN_STRETCH, (RING_MIN, np.inf)), strict=True):
            inner, outer = np.asarray(chain[a]), np.asarray(chain[b])
            v_rest = rest[..., outer, :] - rest[..., inner, :]
            length2 = np.maximum((v_rest * v_rest).sum(-1), 1e-12)
            ratio = ((out[..., outer, :] - out[..., inner, :]) * v_rest).sum(-1) / length2
            out[..., outer, :] += ((np.clip(ratio, lo, hi) - ratio)[..., None] * v_rest).astype(out.dtype)
    return out
