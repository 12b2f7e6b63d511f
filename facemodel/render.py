"""Conditioning images shared by every face-model backend: NMFC, shaded shape, face mask, eye gaze.

All images are at the aligned crop size; vertices come in aligned crop pixels (x right, y down, depth
smaller = nearer), as the backends' `decode` returns them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common.geometry import lambert_shade, vertex_normals
from common.raster import interpolate, rasterize
from facemodel.topology import vertex_indices

FACE_OVAL = vertex_indices(
    """
    10 338 297 332 284 251 389 356 454 323 361 288 397 365 379 378 400 377
    152 148 176 149 150 136 172 58 132 93 234 127 162 21 54 103 67 109
    """
)
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
RIGHT_IRIS, LEFT_IRIS = list(range(468, 473)), list(range(473, 478))
INNER_LIPS_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]  # mouth corner to mouth corner
INNER_LIPS_LOWER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
# The lips in columns from the inner contour outwards, point by point (mouth corners excluded, right to left as
# INNER_LIPS_*): (inner contour, two rings inside the lip, the outer contour = the vermilion's border).
LIP_COLUMNS = (
    (
        [191, 80, 81, 82, 13, 312, 311, 310, 415],
        [183, 42, 41, 38, 12, 268, 271, 272, 407],
        [184, 74, 73, 72, 11, 302, 303, 304, 408],
        [185, 40, 39, 37, 0, 267, 269, 270, 409],
    ),
    (
        [95, 88, 178, 87, 14, 317, 402, 318, 324],
        [96, 89, 179, 86, 15, 316, 403, 319, 325],
        [77, 90, 180, 85, 16, 315, 404, 320, 307],
        [146, 91, 181, 84, 17, 314, 405, 321, 375],
    ),
)
MOUTH_CORNERS = (61, 291)  # the outer contour's corners
# The mesh around each eye in chains from the lid outwards, point by point: (lid, first ring, second ring). The
# band from the lid to the first ring is the lid margin (lashes and their shadow); upper lids, then lower lids
# (corners included), the right eye (the subject's) first.
EYE_RINGS = (
    ([246, 161, 160, 159, 158, 157, 173], [247, 30, 29, 27, 28, 56, 190], [113, 225, 224, 223, 222, 221, 189]),
    ([466, 388, 387, 386, 385, 384, 398], [467, 260, 259, 257, 258, 286, 414], [342, 445, 444, 443, 442, 441, 413]),
    (
        [33, 7, 163, 144, 145, 153, 154, 155, 133],
        [130, 25, 110, 24, 23, 22, 26, 112, 243],
        [226, 31, 228, 229, 230, 231, 232, 233, 244],
    ),
    (
        [263, 249, 390, 373, 374, 380, 381, 382, 362],
        [359, 255, 339, 254, 253, 252, 256, 341, 463],
        [446, 261, 448, 449, 450, 451, 452, 453, 464],
    ),
)


@dataclass
class Conditioning:
    nmfc: np.ndarray  # (S, S, 3) float32 in [0, 1]
    shape: np.ndarray  # (S, S, 3) float32 in [0, 1]
    mask: np.ndarray  # (S, S) float32 in [0, 1]


def render_mesh(verts: np.ndarray, triangles: np.ndarray, nmfc_colors: np.ndarray, size: int) -> Conditioning:
    """NMFC and shaded-shape images of one posed mesh, and its coverage as the mask."""
    frags = rasterize(verts, triangles, size, size)
    nmfc = interpolate(nmfc_colors, triangles, frags)
    shade = lambert_shade(vertex_normals(verts, triangles))
    shape = np.repeat(interpolate(shade, triangles, frags), 3, axis=-1)
    return Conditioning(nmfc, shape, frags.mask.astype(np.float32))


def hull_mask(landmarks: np.ndarray, size: int, erode_frac: float = 0.02, blur_frac: float = 0.02) -> np.ndarray:
    """Soft face-region mask (S, S) uint8 from the face-oval landmarks: filled, eroded, blurred edges.

    The oval is filled (no holes at the mouth or eyes); erosion keeps the edge inside the face so that
    blending never pulls in background; the blur makes the edge soft, as NED's soft erosion does.
    """
    canvas = np.zeros((size, size), np.uint8)
    poly = np.round((landmarks[FACE_OVAL, :2] - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(canvas, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    erode = max(1, round(erode_frac * size))
    canvas = cv2.erode(canvas, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1)))
    blur = max(0.5, blur_frac * size)
    return cv2.GaussianBlur(canvas, (0, 0), blur)


def mediapipe_eyes(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per eye (right, left): pupil centre (2, 2), iris radius (2,) and lid opening (2,) from 478 FaceMesh points."""
    centres, radii, openings = [], [], []
    for iris, eye in ((RIGHT_IRIS, RIGHT_EYE), (LEFT_IRIS, LEFT_EYE)):
        centre = landmarks[iris[0], :2]
        centres.append(centre)
        radii.append(float(np.linalg.norm(landmarks[iris[1:], :2] - centre, axis=1).mean()))
        pts = landmarks[eye, :2]
        openings.append(float(np.abs(pts[12, 1] - pts[4, 1])))  # upper lid (159/386) to lower lid (145/374)
    return np.array(centres), np.array(radii), np.array(openings)


def eye_image_from(centres: np.ndarray, radii: np.ndarray, openings: np.ndarray, size: int) -> np.ndarray:
    """Eye-gaze image (S, S, 3) uint8: red disks at the pupils on black (NED's input).

    The radius is the iris radius, capped by half the eye opening, so closing eyes shrink the disks.
    """
    image = np.zeros((size, size, 3), np.uint8)
    for centre, radius, opening in zip(centres, radii, openings, strict=True):
        radius = min(float(radius), 0.5 * float(opening))
        if radius < 0.5:
            continue
        c = np.round((np.asarray(centre) - 0.5) * 16).astype(np.int32)
        cv2.circle(image, (int(c[0]), int(c[1])), int(round(radius * 16)), (255, 0, 0), -1, cv2.LINE_AA, shift=4)
    return image


def eye_image(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The eye-gaze image of 478 FaceMesh landmarks (pixels of an image of `size`)."""
    return eye_image_from(*mediapipe_eyes(landmarks), size)
