"""Render a frame by a dense piecewise-affine warp of the portrait, plus a mouth interior where lips part.

Control points are the 468 mesh landmarks, two rings around the face (the skull moves fully with the
head, the outer ring partly: neck and shoulders) and a fixed frame border. The Delaunay triangulation of
the rest positions is rasterized at the posed positions with the rest positions as attributes, which gives
for every output pixel the portrait pixel to sample (one `common.raster` call plus `cv2.remap` per frame).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from common.raster import interpolate, rasterize
from facemodel.render import FACE_OVAL
from preprocessing.toy_mead.rig import (
    LIPS_LOWER_INNER,
    LIPS_LOWER_OUTER,
    LIPS_UPPER_INNER,
    LIPS_UPPER_OUTER,
    N_MESH,
    Rig,
)

CAVITY_RGB = np.array([58, 20, 24], np.float32)
THROAT_RGB = np.array([22, 6, 9], np.float32)
TONGUE_RGB = np.array([128, 56, 62], np.float32)
TEETH_RGB = np.array([214, 204, 186], np.float32)
LIP_TINT = 0.5  # how far the lips are pulled towards the lip colour
LIP_RGB = np.array([176, 92, 96], np.float32)  # a typical lip colour


class PortraitWarper:
    def __init__(self, image: np.ndarray, landmarks: np.ndarray, rig: Rig):
        """image: the portrait; landmarks: (478, 3) where its features are; rig: posing from the relaxed face."""
        self.image = image
        self.rig = rig
        h, w = image.shape[:2]
        rest = landmarks
        oval = rest[FACE_OVAL]
        centre = oval.mean(axis=0)
        self.rings = [(centre + s * (oval - centre), strength) for s, strength in ((1.3, 1.0), (1.9, 0.45))]
        border = self._border(h, w)
        src = np.concatenate([rest[:N_MESH, :2]] + [ring[:, :2] for ring, _ in self.rings] + [border])
        self.src = src.astype(np.float32)
        self.border = border
        self.triangles = Delaunay(self.src).simplices.astype(np.int32)
        # remap wants pixel-index coordinates (centre of pixel j at j); ours put it at j + 0.5
        self.lip_rgb = lip_colour(image, rest)
        self.identity_x, self.identity_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))

    @staticmethod
    def _border(h: int, w: int, n: int = 6) -> np.ndarray:
        """Fixed points on a rectangle well outside the frame, so every ring point stays inside the hull."""
        xs = np.linspace(-0.5 * w, 1.5 * w, n)
        ys = np.linspace(-0.5 * h, 1.5 * h, n)
        top = np.stack([xs, np.full(n, ys[0])], 1)
        bottom = np.stack([xs, np.full(n, ys[-1])], 1)
        left = np.stack([np.full(n - 2, xs[0]), ys[1:-1]], 1)
        right = np.stack([np.full(n - 2, xs[-1]), ys[1:-1]], 1)
        return np.concatenate([top, bottom, left, right])

    def control_points(self, posed: np.ndarray, params: np.ndarray) -> np.ndarray:
        rings = [self.rig.move_rigid(ring, params, strength) for ring, strength in self.rings]
        return np.concatenate([posed[:N_MESH, :2]] + rings + [self.border]).astype(np.float32)

    def render(self, posed: np.ndarray, params: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8: the portrait warped to `posed` landmarks (478, 2), mouth interior drawn."""
        h, w = self.image.shape[:2]
        dst = self.control_points(posed, params)
        verts = np.concatenate([dst, np.zeros((len(dst), 1), np.float32)], axis=1)
        frags = rasterize(verts, self.triangles, h, w)
        src = interpolate(self.src, self.triangles, frags)
        covered = frags.mask
        map_x = np.where(covered, src[..., 0] - 0.5, self.identity_x)
        map_y = np.where(covered, src[..., 1] - 0.5, self.identity_y)
        frame = cv2.remap(self.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frame = tint_lips(frame, posed, self.lip_rgb)
        return draw_mouth(frame, posed, self.rig.frame.ey, self.rig.frame.iod)


def lip_polygons(points: np.ndarray) -> list[np.ndarray]:
    """The red of the upper and of the lower lip: each between its outer and its inner contour."""
    return [
        np.concatenate([points[LIPS_UPPER_OUTER, :2], points[LIPS_UPPER_INNER[::-1], :2]]),
        np.concatenate([points[LIPS_LOWER_OUTER, :2], points[LIPS_LOWER_INNER[::-1], :2]]),
    ]


def lip_colour(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The portrait's lip colour: the most saturated (reddest) half of its lip pixels."""
    mask = _poly_alpha(image.shape[:2], lip_polygons(landmarks)) > 0.5
    pixels = image[mask].astype(np.float32)
    if len(pixels) < 4:
        return LIP_RGB
    redness = pixels[:, 0] - pixels[:, 1:].mean(axis=1)
    own = np.median(pixels[redness >= np.median(redness)], axis=0)
    return 0.5 * own + 0.5 * LIP_RGB * (own.mean() / LIP_RGB.mean())  # pale lips get some red


def tint_lips(frame: np.ndarray, posed: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Pull the posed lips towards the lip colour, keeping their shading: a smile stretched in the photo leaves
    its lips pale and thin, and neither a face tracker nor a viewer then sees where the lips are."""
    polygons = lip_polygons(posed)
    box = _patch_box(np.concatenate(polygons), frame.shape[:2])
    if box is None:
        return frame
    x0, y0, x1, y1 = box
    offset = np.array([x0, y0], np.float32)
    alpha = _poly_alpha((y1 - y0, x1 - x0), [p - offset for p in polygons])[..., None] * LIP_TINT
    patch = frame[y0:y1, x0:x1].astype(np.float32)
    luma = patch.mean(axis=2, keepdims=True) / max(float(rgb.mean()), 1.0)
    tinted = np.clip(rgb * luma, 0, 255)
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(patch * (1 - alpha) + tinted * alpha + 0.5, 0, 255).astype(np.uint8)
    return out


def _patch_box(points: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): the pixels around `points` (a 2 px margin), clipped to the frame; None if empty."""
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 3
    x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), min(int(x1), shape[1]), min(int(y1), shape[0])
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def _ramp(lo: float, hi: float, x: float) -> float:
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def _poly_alpha(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of polygons given in our pixel convention (sub-pixel precise)."""
    canvas = np.zeros(shape, np.uint8)
    pts = [np.round((p - 0.5) * 16).astype(np.int32) for p in polygons]
    cv2.fillPoly(canvas, pts, 255, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def draw_mouth(frame: np.ndarray, posed: np.ndarray, down: np.ndarray, iod: float) -> np.ndarray:
    """Mouth interior inside the inner lip contour: a shaded cavity, the tongue low in it, upper and lower teeth
    along the lips (all growing with the opening, receding into shade towards the corners)."""
    upper = posed[LIPS_UPPER_INNER, :2]
    lower = posed[LIPS_LOWER_INNER, :2]
    cavity = np.concatenate([upper, lower[::-1][1:-1]])
    gaps = np.linalg.norm(upper[2:-2] - lower[2:-2], axis=1)
    opening = float(np.max(gaps)) / iod
    cavity_alpha = _ramp(0.01, 0.03, opening)
    if cavity_alpha <= 0.0:
        return frame
    box = _patch_box(cavity, frame.shape[:2])
    if box is None:
        return frame
    x0, y0, x1, y1 = box
    offset = np.array([x0, y0], np.float32)
    shape = (y1 - y0, x1 - x0)
    a_cavity = _poly_alpha(shape, [cavity - offset]) * cavity_alpha
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    centre = 0.5 * (upper[0] + upper[-1])
    half_w = max(0.5 * float(np.linalg.norm(upper[-1] - upper[0])), 1.0)
    across = np.abs((xs - centre[0]) * down[1] - (ys - centre[1]) * down[0]) / half_w  # 0 centre, 1 corners
    shade = np.exp(-((across / 0.8) ** 4))[..., None]  # the sides of the mouth are in shadow
    # Cavity: lit near the lips, the throat dark behind.
    cavity_rgb = THROAT_RGB + (CAVITY_RGB - THROAT_RGB) * (0.35 + 0.65 * (1 - shade))
    # Tongue: a flat ellipse resting on the lower teeth, its back in the shade.
    mid_low = lower[len(lower) // 2]
    gap_px = opening * iod
    t_centre = mid_low - down * (0.05 * gap_px + 0.01 * iod)
    along = (xs - t_centre[0]) * down[1] - (ys - t_centre[1]) * down[0]
    depth = (xs - t_centre[0]) * down[0] + (ys - t_centre[1]) * down[1]
    t_half_h = max(0.2 * gap_px, 1.0)
    inside = (along / (0.5 * half_w)) ** 2 + (depth / t_half_h) ** 2
    a_tongue = np.clip((1.0 - inside) * 3.0, 0, 1) * _ramp(0.06, 0.14, opening)
    tongue_rgb = TONGUE_RGB * (0.7 + 0.3 * np.clip(depth / t_half_h + 0.5, 0, 1))[..., None]
    # Teeth show in proportion to the opening and fade in, so a barely parted mouth stays dark; they end before
    # the corners (only the front teeth show), the lower ones lower and narrower, mostly behind the lower lip.
    teeth_on = _ramp(0.03, 0.08, opening)
    tooth_up = min(0.05, 0.2 * opening) * iod * down
    tooth_low = min(0.025, 0.06 * opening) * iod * down
    front = np.clip((0.85 - across) / 0.25, 0, 1)
    a_up = _poly_alpha(shape, [np.concatenate([upper, (upper + tooth_up)[::-1]]) - offset]) * teeth_on * front
    a_low = _poly_alpha(shape, [np.concatenate([lower, (lower - tooth_low)[::-1]]) - offset]) * teeth_on * front**2
    # Teeth are shaded at their root and at their biting edge (depth below the line between the mouth corners).
    depth_down = ((xs - centre[0]) * down[0] + (ys - centre[1]) * down[1]) / max(float(np.linalg.norm(tooth_up)), 1.0)
    teeth_rgb = TEETH_RGB * (0.5 + 0.5 * shade) * (0.8 + 0.2 * np.sin(np.pi * np.clip(depth_down, 0, 1)))[..., None]
    patch = frame[y0:y1, x0:x1].astype(np.float32)
    a_c = a_cavity[..., None]
    inner = cavity_rgb
    for alpha, rgb in ((a_tongue, tongue_rgb), (a_low, teeth_rgb * 0.92), (a_up, teeth_rgb)):
        inner = inner * (1 - alpha[..., None]) + rgb * alpha[..., None]
    patch = patch * (1 - a_c) + inner * a_c
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
    return out
