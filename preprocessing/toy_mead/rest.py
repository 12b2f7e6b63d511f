"""The neutral rest face of a portrait: its own expression relaxed before any animation.

A portrait that smiles with an open mouth would smile in every clip (a real-face judge calls all of them
happy), so the rig starts from a relaxed face instead: the lips are closed (the jaw comes up, the upper
lip down a little) and smiling lip corners come back down and in to a neutral mouth. The warp still samples
the original photo: the teeth between the parted lips are squeezed to nothing, and reappear (drawn) only
when speech opens the mouth.
"""

from __future__ import annotations

import cv2
import numpy as np

from preprocessing.toy_mead.rig import (
    ALL_LIPS,
    LIPS_LOWER_INNER,
    LIPS_LOWER_OUTER,
    LIPS_UPPER_INNER,
    LIPS_UPPER_OUTER,
    LOWER_LIP,
    N_MESH,
    UPPER_LIP,
    FaceFrame,
    _gauss,
    _near,
    _smoothstep,
    build_basis,
)

NEUTRAL_MOUTH_WIDTH = 0.84  # outer lip corners apart, in inter-iris distances (a relaxed adult mouth)
NEUTRAL_CORNER_DROP = 0.02  # relaxed corners sit this far below the lip line (face units, y down)
CLOSED_GAP = 0.004  # the inner lips stay this far apart so no triangle of the warp folds over
UPPER_SHARE = 0.3  # share of the closing done by the upper lip (the jaw does the rest)
LIP_VOLUME = 0.7  # share of the closing that the outer lip contours follow
SMILE_LIFT = 0.13  # lip-corner lift (above the lip line, face units) of a full smile
CHEEK_RELAX = 0.5  # AU6 (cheek raise) undone per unit of smile: a smiling photo's cheeks and lower lids come down
RELAX_DEPRESS = 1.0  # AU15 (lip corner depressor) added per unit of smile
FOLD_BLUR = 0.25  # blur (in inter-iris distances) that softens a smile's folds beside the mouth


def _closing(q: np.ndarray) -> np.ndarray:
    """(N, 2) displacement that closes parted lips: the jaw and lower lip up, the upper lip down."""
    up, low = q[LIPS_UPPER_INNER[1:-1]], q[LIPS_LOWER_INNER[1:-1]]
    gap = np.maximum(low[:, 1] - up[:, 1] - CLOSED_GAP, 0.0)
    xs = 0.5 * (up[:, 0] + low[:, 0])
    order = np.argsort(xs)
    gap_at = lambda x: np.interp(x, xs[order], gap[order], left=0.0, right=0.0)  # noqa: E731
    centre = float(gap.max())
    d = np.zeros_like(q)
    if centre <= 0.0:
        return d
    lower = np.zeros(len(q), bool)
    lower[LOWER_LIP] = True
    upper = np.zeros(len(q), bool)
    upper[UPPER_LIP] = True
    # The jaw closes the lower face (more at the chin, less towards the jaw angles) ...
    jaw = _smoothstep(-0.05, 0.45, q[:, 1]) * (1 - 0.4 * _smoothstep(0.5, 1.3, np.abs(q[:, 0])))
    near_lower = _near(q, LOWER_LIP, 0.12) * (q[:, 1] > 0)
    skin = np.maximum(jaw, near_lower)
    d[:, 1] = -(1 - UPPER_SHARE) * centre * skin
    # ... the lips meet exactly, column by column; the skin above the upper lip follows it briefly.
    d[lower, 1] = -(1 - UPPER_SHARE) * gap_at(q[lower, 0])
    d[upper, 1] = UPPER_SHARE * gap_at(q[upper, 0])
    # A smile stretches the lips thin: the outer contours follow only partly, which gives them back volume.
    d[LIPS_LOWER_OUTER[1:-1], 1] *= LIP_VOLUME
    d[LIPS_UPPER_OUTER[1:-1], 1] *= LIP_VOLUME
    above = (q[:, 1] < q[UPPER_LIP, 1].min()) & ~upper
    d[above, 1] = UPPER_SHARE * centre * _near(q, UPPER_LIP, 0.08)[above]
    return d


def _relax_corners(q: np.ndarray) -> np.ndarray:
    """(N, 2) displacement that brings a smiling mouth to a neutral one: the lip contact line flattened (its
    corners down to the centre's height, never lifted) and the mouth narrowed to a neutral width."""
    d = np.zeros_like(q)
    centre_x = float(np.mean(q[[13, 14], 0]))
    contact = [61, *LIPS_UPPER_INNER, 291]  # corners and the (closed) contact line between them
    xs, ys = q[contact, 0], q[contact, 1]
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    line_y = float(np.mean(q[[13, 14], 1]))
    half_w = 0.5 * (xs[-1] - xs[0])
    target = line_y + NEUTRAL_CORNER_DROP * ((xs - centre_x) / half_w) ** 2
    lift = np.maximum(target - ys, 0.0)
    near = np.where(np.isin(np.arange(len(q)), ALL_LIPS), 1.0, _near(q, ALL_LIPS, 0.14))
    d[:, 1] = np.interp(q[:, 0], xs, lift) * near * (q[:, 1] > -0.4)
    shrink = min(1.0, NEUTRAL_MOUTH_WIDTH / (2 * half_w))
    for corner in (61, 291):
        w = _gauss(q, q[corner], 0.3) * _smoothstep(-0.1, 0.1, np.sign(q[corner, 0] - centre_x) * (q[:, 0] - centre_x))
        d[:, 0] += (q[corner, 0] - centre_x) * (shrink - 1.0) * w
    return d


def smile_amount(landmarks: np.ndarray) -> float:
    """How much the portrait smiles, 0 (corners at the lip line) to about 1 (a broad smile), measured with its
    lips closed: the lift of the lip corners above the middle of the lip line, in units of SMILE_LIFT."""
    q = FaceFrame.from_landmarks(landmarks).to_face(landmarks[:N_MESH])
    closed = q + _closing(q)
    lift = np.mean(closed[[13, 14], 1]) - np.mean(closed[[61, 291], 1])
    return float(np.clip(lift / SMILE_LIFT, 0.0, 1.2))


def relaxed_texture(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The portrait's pixels for the relaxed face: the teeth between parted lips painted over with the lips'
    colours (inpainting), so none of the photo's teeth show once the mouth is closed, and a smile's folds
    beside the mouth softened in proportion to the smile (their shading alone reads as a smile)."""
    frame = FaceFrame.from_landmarks(landmarks)
    upper, lower = landmarks[LIPS_UPPER_INNER, :2], landmarks[LIPS_LOWER_INNER, :2]
    out = image
    if float(np.max(np.linalg.norm(upper - lower, axis=1))) >= 0.02 * frame.iod:
        mask = np.zeros(image.shape[:2], np.uint8)
        polygon = np.concatenate([upper, lower[::-1]]) - 0.5
        cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=4)
        radius = max(1, round(0.03 * frame.iod))  # wider would paint over a thin upper lip
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
        out = cv2.inpaint(out, mask, radius + 2, cv2.INPAINT_TELEA)
    smile = smile_amount(landmarks)
    if smile > 0.0:
        h, w = image.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w] + 0.5
        q = frame.to_face(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(h, w, 2)
        folds = np.zeros((h, w))
        for sx in (-1.0, 1.0):
            folds = np.maximum(
                folds, np.exp(-(((q[..., 0] - sx * 0.45) / 0.22) ** 2 + ((q[..., 1] + 0.25) / 0.3) ** 2))
            )
        alpha = (min(1.0, smile) * folds)[..., None]
        blurred = cv2.GaussianBlur(out.astype(np.float32), (0, 0), FOLD_BLUR * frame.iod)
        out = np.clip(out * (1 - alpha) + blurred * alpha + 0.5, 0, 255).astype(np.uint8)
    return out


def neutral_rest(landmarks: np.ndarray) -> np.ndarray:
    """(478, 3) landmarks of the portrait with its mouth relaxed (closed, corners neutral); z unchanged."""
    frame = FaceFrame.from_landmarks(landmarks)
    q = frame.to_face(landmarks[:N_MESH])
    d = _closing(q)
    smile = smile_amount(landmarks)
    d = d + _relax_corners(q + d)
    basis = build_basis(q)
    # Undo the smile's other marks: the cheeks and lower lids come down, the corners a little further (the
    # photo's smile shading still pulls a judge towards "happy").
    d = d + smile * (RELAX_DEPRESS * basis["lip_corner_depress"] - CHEEK_RELAX * basis["cheek_raise"])
    out = landmarks.astype(np.float64).copy()
    out[:N_MESH, :2] += frame.delta_to_pixels(d)
    return out
