"""A landmark rig on the MediaPipe FaceMesh topology: speech visemes, emotion actions, blinks, head motion.

Displacements are defined in *face units*: origin at the mouth centre, x along the eye line (towards the
image right), y perpendicular (down), unit = distance between the iris centres. Each action channel has a
basis field (N, 2) over the 468 mesh landmarks; the jaw moves the lower lip only while the lips are not
closed (`lip_close` gates it), which keeps bilabials shut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.geometry import rotation_matrix
from facemodel.eyelids import keep_lid_margins
from facemodel.render import EYE_RINGS, INNER_LIPS_LOWER, INNER_LIPS_UPPER

# Speech channels first (jaw must stay channel 0), then FACS action units (the number in each comment), the
# blink (AU45) and the head pose.
RIG_NAMES = (
    "jaw",  # AU26/27 jaw drop
    "lip_round",  # AU18/22 lip pucker, funneler (speech)
    "lip_spread",  # speech spread vowels
    "lip_close",  # bilabial closure (speech)
    "brow_inner_raise",  # AU1
    "brow_outer_raise",  # AU2
    "brow_lower",  # AU4
    "upper_lid_raise",  # AU5
    "cheek_raise",  # AU6
    "lid_tighten",  # AU7
    "nose_wrinkle",  # AU9
    "upper_lip_raise",  # AU10
    "lip_corner_pull",  # AU12
    "lip_corner_depress",  # AU15
    "chin_raise",  # AU17
    "lip_stretch",  # AU20
    "lip_tighten",  # AU23
    "lip_press",  # AU24
    "blink",  # AU45
    "lid_droop",  # AU41/43: the upper lids lowered (heavy, drooping eyes)
    "head_yaw",
    "head_pitch",
    "head_roll",
    "head_tx",
    "head_ty",
)
RIG = {name: i for i, name in enumerate(RIG_NAMES)}
RIG_VERSION = 2  # recorded in dataset.json: a set drawn by another rig is another set (2: lid margins kept)
LID_DROOP = 0.4  # share of the eye a unit lid_droop closes
MIN_LID_GAP = 0.012  # face units: the narrowest an eye gets from the actions (a blink closes it fully)
N_MESH = 468  # landmarks driven by the rig; 468..477 are the irises, moved with their eye

# FaceMesh landmark groups ("right" = the subject's right = image left).
LIPS_UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_LOWER_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
LIPS_UPPER_INNER = INNER_LIPS_UPPER
LIPS_LOWER_INNER = INNER_LIPS_LOWER
MOUTH_CORNERS = [61, 291, 78, 308]
# the lids and the mesh rings next to them (facemodel.render.EYE_RINGS: upper lids, then lower lids, right first)
(RIGHT_EYE_UPPER, RIGHT_EYE_UPPER_OUTER, _), (LEFT_EYE_UPPER, LEFT_EYE_UPPER_OUTER, _) = EYE_RINGS[:2]
(RIGHT_EYE_LOWER, RIGHT_EYE_LOWER_OUTER, _), (LEFT_EYE_LOWER, LEFT_EYE_LOWER_OUTER, _) = EYE_RINGS[2:]
RIGHT_BROW = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 156, 193, 35, 124]
LEFT_BROW = [300, 293, 334, 296, 336, 285, 295, 282, 283, 276, 383, 417, 265, 353]
EYE_CORNERS = ((33, 133), (263, 362))  # (outer, inner) of the right and the left eye
RIGHT_IRIS = list(range(468, 473))
LEFT_IRIS = list(range(473, 478))
CHIN = 152

UPPER_LIP = sorted(set(LIPS_UPPER_OUTER + LIPS_UPPER_INNER) - set(MOUTH_CORNERS))
LOWER_LIP = sorted(set(LIPS_LOWER_OUTER + LIPS_LOWER_INNER) - set(MOUTH_CORNERS))
ALL_LIPS = sorted(set(UPPER_LIP + LOWER_LIP + MOUTH_CORNERS))


@dataclass
class FaceFrame:
    """The face-unit frame of a portrait: pixels = origin + iod * (q_x * ex + q_y * ey)."""

    origin: np.ndarray  # (2,) mouth centre in pixels
    ex: np.ndarray  # (2,) unit vector along the eye line
    ey: np.ndarray  # (2,) unit vector down the face
    iod: float  # inter-iris distance in pixels

    @classmethod
    def from_landmarks(cls, lm: np.ndarray) -> FaceFrame:
        right, left = lm[468, :2], lm[473, :2]
        iod = float(np.linalg.norm(left - right))
        ex = (left - right) / iod
        ey = np.array([-ex[1], ex[0]])
        origin = 0.5 * (lm[13, :2] + lm[14, :2])
        return cls(origin, ex, ey, iod)

    def to_face(self, pts: np.ndarray) -> np.ndarray:
        d = pts[:, :2] - self.origin
        return np.stack([d @ self.ex, d @ self.ey], axis=1) / self.iod

    def delta_to_pixels(self, dq: np.ndarray) -> np.ndarray:
        return self.iod * (dq[:, :1] * self.ex + dq[:, 1:2] * self.ey)


def _gauss(q: np.ndarray, centre: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-np.sum((q - centre) ** 2, axis=1) / (2 * sigma**2))


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _near(q: np.ndarray, idx: list[int], sigma: float) -> np.ndarray:
    """Weight of every point by its distance to the nearest point of a group (1 on the group)."""
    d2 = ((q[:, None, :] - q[None, idx, :]) ** 2).sum(-1).min(axis=1)
    return np.exp(-d2 / (2 * sigma**2))


def _lid_gap(q: np.ndarray, upper: list[int], lower: list[int]) -> np.ndarray:
    """For each upper-lid point, the vertical distance down to the lower lid at the same x."""
    order = np.argsort(q[lower, 0])
    xs, ys = q[lower, 0][order], q[lower, 1][order]
    return np.interp(q[upper, 0], xs, ys) - q[upper, 1]


def build_basis(q: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel displacement fields (N_MESH, 2) in face units for unit activation.

    The action units are sized so that 1.0 is a strong, clearly visible action (MEAD's level 3).
    """
    q = q[:N_MESH]
    n = len(q)
    zero = lambda: np.zeros((n, 2))  # noqa: E731
    lips, upper, lower = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    lips[ALL_LIPS], upper[UPPER_LIP], lower[LOWER_LIP] = True, True, True
    upper_outer = np.zeros(n, bool)
    upper_outer[LIPS_UPPER_OUTER[1:-1]] = True
    lower_outer = np.zeros(n, bool)
    lower_outer[LIPS_LOWER_OUTER[1:-1]] = True
    around_mouth = np.where(lips, 1.0, _near(q, ALL_LIPS, 0.18))
    # Left/right without a jump at the midline (points there move with both sides, and not sideways).
    side = np.clip(q[:, 0] / 0.1, -1.0, 1.0)
    basis: dict[str, np.ndarray] = {}

    # Jaw: the chin and lower face drop (more at the chin, less towards the jaw angles).
    jaw = zero()
    lower_face = _smoothstep(-0.05, 0.45, q[:, 1]) * (1 - 0.4 * _smoothstep(0.5, 1.3, np.abs(q[:, 0])))
    lower_face[lips] = 0.0
    jaw[:, 1] = 0.22 * lower_face
    jaw[:, 0] = -0.05 * q[:, 0] * lower_face
    jaw[upper, 1] = -0.015
    basis["jaw_face"] = jaw
    # ... and the lower lip follows it unless the lips are closed (gated by lip_close in `pose`).
    # The lower lip opens as a curve (most in the middle), so the opening is an oval, not a box of teeth.
    jaw_lips = zero()
    half_w = 0.5 * abs(q[291, 0] - q[61, 0])
    jaw_lips[lower, 1] = 0.22 * (1 - 0.6 * _smoothstep(0.0, 1.0, np.abs(q[lower, 0]) / half_w) ** 1.5)
    jaw_lips[MOUTH_CORNERS, 1] = 0.045
    basis["jaw_lips"] = jaw_lips

    rnd = zero()
    rnd[:, 0] = -0.32 * q[:, 0] * around_mouth * (np.abs(q[:, 0]) < 0.8)
    rnd[LIPS_UPPER_INNER[2:-2], 1] = -0.008  # a small rounded aperture; the jaw makes the opening
    rnd[LIPS_LOWER_INNER[2:-2], 1] = 0.012
    basis["lip_round"] = rnd

    spread = zero()
    spread[:, 0] = 0.22 * q[:, 0] * around_mouth
    spread[LIPS_UPPER_INNER[2:-2], 1] = 0.008
    basis["lip_spread"] = spread

    press = zero()
    press[LIPS_UPPER_INNER, 1] = 0.01
    press[LIPS_LOWER_INNER, 1] = -0.01
    basis["lip_close"] = press

    # Brows and lids.
    brows = RIGHT_BROW + LEFT_BROW
    lids_up = RIGHT_EYE_UPPER + LEFT_EYE_UPPER
    lids_low = RIGHT_EYE_LOWER[1:-1] + LEFT_EYE_LOWER[1:-1]  # the lid actions leave the eye corners in place
    # The brows move the skin around them but not the lid margins (those are the lid actions' own).
    brow_w = _near(q, brows, 0.16) * (q[:, 1] < -0.7) * (1 - _near(q, lids_up + lids_low, 0.07))
    innerness = 1.0 - _smoothstep(0.15, 0.75, np.abs(q[:, 0]))
    outerness = _smoothstep(0.3, 0.9, np.abs(q[:, 0]))
    lids_up_outer = RIGHT_EYE_UPPER_OUTER + LEFT_EYE_UPPER_OUTER
    lids_low_outer = RIGHT_EYE_LOWER_OUTER + LEFT_EYE_LOWER_OUTER

    au1 = zero()  # inner brows up and slightly together: the oblique "worried" brow
    au1[:, 1] = -0.16 * brow_w * innerness
    au1[:, 0] = -0.02 * side * brow_w * innerness
    au1[lids_up_outer, 1] += -0.015
    basis["brow_inner_raise"] = au1

    au2 = zero()  # outer brows up, arching
    au2[:, 1] = -0.15 * brow_w * (0.35 + 0.65 * outerness)
    au2[lids_up_outer, 1] += -0.03
    basis["brow_outer_raise"] = au2

    au4 = zero()  # brows down and together, the upper lid fold follows
    au4[:, 1] = 0.11 * brow_w * (0.55 + 0.45 * innerness)
    au4[:, 0] = -0.035 * side * brow_w * innerness * _smoothstep(0.0, 0.25, np.abs(q[:, 0]))  # never crossing
    au4[lids_up_outer, 1] += 0.04
    au4[lids_up, 1] += 0.02
    basis["brow_lower"] = au4

    au5 = zero()  # upper lid raised: white above the iris
    au5[lids_up, 1] = -0.05
    au5[lids_up_outer, 1] = -0.04
    basis["upper_lid_raise"] = au5

    cheeks = np.zeros(n)
    for sx in (-1.0, 1.0):
        cheeks += _gauss(q, np.array([sx * 0.55, -0.6]), 0.28) * _smoothstep(-0.1, 0.1, sx * q[:, 0])
    au6 = zero()  # cheeks up, lower lids pushed up, crow's feet
    au6[:, 1] = -0.07 * cheeks
    au6[lids_low, 1] += -0.035
    au6[lids_low_outer, 1] += -0.03
    au6[lids_up, 1] += 0.01
    basis["cheek_raise"] = au6

    au7 = zero()  # lids tightened: the lower lid rises and straightens, the upper drops a little
    au7[lids_low, 1] = -0.045
    au7[lids_low_outer, 1] = -0.02
    au7[lids_up, 1] = 0.02
    basis["lid_tighten"] = au7

    au9 = zero()  # nose wrinkle: nose wings and upper lip up, inner brows pulled down
    au9[:, 1] = -0.07 * _gauss(q, np.array([0.0, -0.42]), 0.22) * (q[:, 1] < 0.0)
    au9[:, 1] += 0.05 * brow_w * innerness
    au9[upper, 1] += -0.03
    au9[lids_low, 1] += -0.02
    basis["nose_wrinkle"] = au9

    au10 = zero()  # upper lip raised (most beside the centre: the squared upper lip), nasolabial deepened
    above = q[:, 1] < 0.02
    au10[:, 1] = -0.08 * _gauss(q, np.array([0.0, -0.12]), 0.35) * above
    au10[upper, 1] = -0.085 * (0.7 + 0.3 * _smoothstep(0.0, 0.2, np.abs(q[upper, 0])))
    au10[lower, 1] = 0.0
    basis["upper_lip_raise"] = au10

    au12 = zero()  # lip corners pulled up and out, the cheeks go with them
    au15 = zero()  # lip corners pulled down
    au20 = zero()  # lip corners pulled out, lips thinned
    for corner in (61, 291):
        on_side = _smoothstep(-0.1, 0.1, np.sign(q[corner, 0]) * q[:, 0])
        w = _gauss(q, q[corner], 0.3) * on_side
        au12[:, 0] += 0.12 * np.sign(q[corner, 0]) * w
        au12[:, 1] += -0.13 * w
        au12[:, 1] += -0.05 * _gauss(q, np.array([np.sign(q[corner, 0]) * 0.65, -0.55]), 0.3) * on_side
        w15 = _gauss(q, q[corner], 0.24) * on_side
        au15[:, 1] += 0.11 * w15
        au15[:, 0] += -0.015 * np.sign(q[corner, 0]) * w15
        w20 = _gauss(q, q[corner], 0.32) * on_side
        au20[:, 0] += 0.11 * np.sign(q[corner, 0]) * w20
        au20[:, 1] += 0.03 * w20
    au20[upper_outer, 1] += 0.015
    au20[lower_outer, 1] += -0.015
    basis["lip_corner_pull"] = au12
    basis["lip_corner_depress"] = au15
    basis["lip_stretch"] = au20

    au17 = zero()  # chin boss and lower lip pushed up: the lower lip bulges, the mouth arches
    chin = _smoothstep(0.1, 0.45, q[:, 1]) * (1 - _smoothstep(0.3, 0.8, np.abs(q[:, 0])))
    au17[:, 1] = -0.06 * chin
    centre_w = 1 - _smoothstep(0.1, 0.4, np.abs(q[:, 0]))
    au17[lips, 1] += -0.03 * centre_w[lips]
    au17[lower_outer, 1] += -0.02 * centre_w[lower_outer]
    basis["chin_raise"] = au17

    au23 = zero()  # lips tightened: narrower, thinner red
    au23[:, 0] = -0.1 * q[:, 0] * around_mouth * (np.abs(q[:, 0]) < 0.8)
    au23[upper_outer, 1] += 0.025
    au23[lower_outer, 1] += -0.03
    basis["lip_tighten"] = au23

    au24 = zero()  # lips pressed together, the chin pushed up a little
    au24[LIPS_UPPER_INNER, 1] = 0.012
    au24[LIPS_LOWER_INNER, 1] = -0.012
    au24[upper_outer, 1] += 0.02
    au24[lower_outer, 1] += -0.03
    au24[:, 1] += -0.02 * chin
    basis["lip_press"] = au24

    return basis


class Rig:
    """Poses one portrait's landmarks from rig parameters."""

    def __init__(self, landmarks: np.ndarray):
        """landmarks: (478, 3) FaceMesh landmarks of the neutral (relaxed) face in pixels (z in pixel scale)."""
        self.rest = landmarks.astype(np.float64)
        self.frame = FaceFrame.from_landmarks(self.rest)
        self.q = self.frame.to_face(self.rest[:N_MESH])
        self.basis = build_basis(self.q)
        centre = self.rest[:N_MESH].mean(axis=0)
        centre[2] += 0.8 * self.frame.iod  # rotate about a point inside the head, not on the skin
        self.head_centre = centre

    def expression_delta(self, params: np.ndarray) -> np.ndarray:
        """(N_MESH, 2) pixel displacement of the mesh landmarks for one frame's rig parameters."""
        p = params
        dq = p[RIG["jaw"]] * self.basis["jaw_face"]
        dq = dq + p[RIG["jaw"]] * (1.0 - p[RIG["lip_close"]]) * self.basis["jaw_lips"]
        for name in RIG_NAMES[1 : RIG["blink"]]:
            dq = dq + p[RIG[name]] * self.basis[name]
        eyes = (
            (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_EYE_UPPER_OUTER),
            (LEFT_EYE_UPPER, LEFT_EYE_LOWER, LEFT_EYE_UPPER_OUTER),
        )
        # Drooping lids (AU41) close a share of the eye as the other actions left it (AU5/AU7 move both lids);
        # however strongly the actions add up, an upper lid never passes below its lower lid; a blink then
        # closes what is left.
        for up, low, up_outer in eyes:
            self._close(dq, up, low, up_outer, LID_DROOP * p[RIG["lid_droop"]])
            gap = _lid_gap(self.q + dq, up, low)
            dq[up, 1] -= np.maximum(MIN_LID_GAP - gap, 0.0)
            self._close(dq, up, low, up_outer, p[RIG["blink"]])
        # the lid margins keep their lashes' width: the brow and lid fields above stretched the band between a lid
        # and the ring next to it 2-2.7x (surprise, sadness, fear) or turned it over (anger, disgust)
        dq = keep_lid_margins(self.q, self.q + dq) - self.q
        return self.frame.delta_to_pixels(dq)

    def _close(self, dq: np.ndarray, up: list[int], low: list[int], up_outer: list[int], amount: float) -> None:
        """Lower one upper lid (and its fold) by `amount` of the eye's current opening, in place."""
        if amount <= 0:
            return
        gap = _lid_gap(self.q + dq, up, low)
        dq[up, 1] += min(amount, 1.0) * 0.92 * gap
        dq[up_outer, 1] += min(amount, 1.0) * 0.45 * float(np.mean(gap))

    def head_transform(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R (3, 3), translation (2,) pixels) of the head for one frame."""
        r = rotation_matrix(params[RIG["head_yaw"]], params[RIG["head_pitch"]], params[RIG["head_roll"]])
        shift = self.frame.iod * (params[RIG["head_tx"]] * self.frame.ex + params[RIG["head_ty"]] * self.frame.ey)
        return r, shift

    def move_rigid(self, pts: np.ndarray, params: np.ndarray, strength: float = 1.0) -> np.ndarray:
        """Apply (a fraction of) the head motion to 3D points (M, 3) -> (M, 2) pixels."""
        r, shift = self.head_transform(params)
        moved = (pts - self.head_centre) @ r.T + self.head_centre
        return pts[:, :2] + strength * (moved[:, :2] + shift - pts[:, :2])

    def pose(self, params: np.ndarray) -> np.ndarray:
        """All 478 landmarks (x, y) in pixels for one frame; irises move rigidly with their eye's corners (lids
        opening or closing over an eyeball do not move it)."""
        pts = self.rest.copy()
        delta = self.expression_delta(params)
        pts[:N_MESH, :2] += delta
        for iris, corners in ((RIGHT_IRIS, EYE_CORNERS[0]), (LEFT_IRIS, EYE_CORNERS[1])):
            pts[iris, :2] += delta[list(corners)].mean(axis=0)
        return self.move_rigid(pts, params)
