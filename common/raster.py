"""Z-buffered triangle rasterizer with barycentric attribute interpolation (numba, CPU, no pytorch3d).

Conventions
- Vertices are in screen space: `verts[:, 0]` = x (column) and `verts[:, 1]` = y (row) in pixels, with
  pixel (row i, column j) centred at (x = j + 0.5, y = i + 0.5); `verts[:, 2]` = depth, **smaller is
  nearer**. Projection (orthographic for DECA, weak perspective for the mesh model) is done by the caller,
  so screen-space barycentrics are the correct interpolation weights.
- A pixel is covered when its centre lies inside or on the edge of the triangle. Both windings are drawn
  (no back-face culling: callers render closed-front face meshes); degenerate triangles are skipped.
- Outputs: `face_idx` (H, W) int32 (-1 = background), `bary` (H, W, 3) float32, `depth` (H, W) float32.

The kernels compile once per process (cached on disk by numba), then run at thousands of frames/s for
face meshes; see `python -m evaluation.bench --only raster`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np


@dataclass
class Fragments:
    face_idx: np.ndarray  # (H, W) int32, -1 where no triangle covers the pixel
    bary: np.ndarray  # (H, W, 3) float32 barycentric weights of the covering triangle's vertices
    depth: np.ndarray  # (H, W) float32, +inf where empty

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: pixels covered by the mesh."""
        return self.face_idx >= 0


@numba.njit(cache=True, nogil=True)
def _rasterize_kernel(verts, faces, face_idx, bary, depth):  # pragma: no cover - compiled
    height, width = face_idx.shape
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0, z0 = verts[a, 0], verts[a, 1], verts[a, 2]
        x1, y1, z1 = verts[b, 0], verts[b, 1], verts[b, 2]
        x2, y2, z2 = verts[c, 0], verts[c, 1], verts[c, 2]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0.0 or not math.isfinite(area):
            continue
        inv_area = 1.0 / area
        # Pixel centres j + 0.5 inside [min_x, max_x]  <=>  j in [ceil(min_x - 0.5), floor(max_x - 0.5)].
        j0 = max(int(math.ceil(min(x0, x1, x2) - 0.5)), 0)
        j1 = min(int(math.floor(max(x0, x1, x2) - 0.5)), width - 1)
        i0 = max(int(math.ceil(min(y0, y1, y2) - 0.5)), 0)
        i1 = min(int(math.floor(max(y0, y1, y2) - 0.5)), height - 1)
        for i in range(i0, i1 + 1):
            py = i + 0.5
            for j in range(j0, j1 + 1):
                px = j + 0.5
                # Edge functions, each normalised by the signed area: all >= 0 inside for either winding.
                w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) * inv_area
                if w0 < 0.0:
                    continue
                w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) * inv_area
                if w1 < 0.0:
                    continue
                w2 = ((x0 - px) * (y1 - py) - (x1 - px) * (y0 - py)) * inv_area
                if w2 < 0.0:
                    continue
                norm = w0 + w1 + w2
                w0 /= norm
                w1 /= norm
                w2 /= norm
                z = w0 * z0 + w1 * z1 + w2 * z2
                if z < depth[i, j]:
                    depth[i, j] = z
                    face_idx[i, j] = f
                    bary[i, j, 0] = w0
                    bary[i, j, 1] = w1
                    bary[i, j, 2] = w2


@numba.njit(cache=True, nogil=True)
def _interpolate_kernel(attrs, faces, face_idx, bary, out):  # pragma: no cover - compiled
    height, width = face_idx.shape
    n_channels = attrs.shape[1]
    for i in range(height):
        for j in range(width):
            f = face_idx[i, j]
            if f < 0:
                continue
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
            w0, w1, w2 = bary[i, j, 0], bary[i, j, 1], bary[i, j, 2]
            for k in range(n_channels):
                out[i, j, k] = w0 * attrs[a, k] + w1 * attrs[b, k] + w2 * attrs[c, k]


def _check_mesh(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    verts = np.ascontiguousarray(verts, dtype=np.float32)
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must be (V, 3), got {verts.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(f"faces index outside [0, {len(verts)})")
    return verts, faces


def rasterize(verts: np.ndarray, faces: np.ndarray, height: int, width: int) -> Fragments:
    """Rasterize one mesh. verts: (V, 3) screen-space x, y, depth; faces: (F, 3) vertex indices."""
    verts, faces = _check_mesh(verts, faces)
    face_idx = np.full((height, width), -1, np.int32)
    bary = np.zeros((height, width, 3), np.float32)
    depth = np.full((height, width), np.inf, np.float32)
    _rasterize_kernel(verts, faces, face_idx, bary, depth)
    return Fragments(face_idx, bary, depth)


def interpolate(attrs: np.ndarray, faces: np.ndarray, frags: Fragments, background: float = 0.0) -> np.ndarray:
    """Per-pixel attributes: attrs (V, C) -> (H, W, C) float32; `background` where nothing is drawn."""
    attrs = np.ascontiguousarray(attrs, dtype=np.float32)
    if attrs.ndim == 1:
        attrs = attrs[:, None]
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    height, width = frags.face_idx.shape
    out = np.full((height, width, attrs.shape[1]), background, np.float32)
    _interpolate_kernel(attrs, faces, frags.face_idx, frags.bary, out)
    return out


def render(
    verts: np.ndarray, faces: np.ndarray, attrs: np.ndarray, height: int, width: int, background: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterize and interpolate in one call: returns (image (H, W, C) float32, mask (H, W) bool)."""
    frags = rasterize(verts, faces, height, width)
    return interpolate(attrs, faces, frags, background), frags.mask
