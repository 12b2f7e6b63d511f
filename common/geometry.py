"""Mesh geometry helpers shared by both face models: normals, shading, projection, a synthetic mesh."""

from __future__ import annotations

import numpy as np


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals. verts (V, 3), faces (F, 3) -> (V, 3) float32."""
    v = verts.astype(np.float64)
    tri = v[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(length, 1e-12)).astype(np.float32)


def lambert_shade(
    normals: np.ndarray, light_dir: tuple[float, float, float] = (0.0, 0.0, -1.0), ambient: float = 0.25
) -> np.ndarray:
    """Per-vertex grey shading in [0, 1]: ambient + diffuse * max(0, n . l). normals (V, 3) -> (V,)."""
    light = np.asarray(light_dir, np.float64)
    light = light / np.linalg.norm(light)
    diffuse = np.clip(np.abs(normals @ light), 0.0, 1.0)  # abs: mesh winding may face either way
    return (ambient + (1.0 - ambient) * diffuse).astype(np.float32)


def normalize_coords(verts: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> np.ndarray:
    """Map coordinates to [0, 1] per axis (the NMFC colour code when lo/hi are the mean face's bounds)."""
    lo = verts.min(axis=0) if lo is None else lo
    hi = verts.max(axis=0) if hi is None else hi
    return ((verts - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation R = Rz(roll) @ Rx(pitch) @ Ry(yaw) (radians), (3, 3) float64 with det 1."""
    cy, sy, cp, sp, cr, sr = (
        np.cos(yaw),
        np.sin(yaw),
        np.cos(pitch),
        np.sin(pitch),
        np.cos(roll),
        np.sin(roll),
    )
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def to_screen(verts: np.ndarray, scale: float, center: tuple[float, float]) -> np.ndarray:
    """Orthographic projection to pixels: x right, y down (image rows), depth = z (smaller nearer)."""
    out = np.empty_like(verts, dtype=np.float32)
    out[:, 0] = center[0] + scale * verts[:, 0]
    out[:, 1] = center[1] - scale * verts[:, 1]
    out[:, 2] = verts[:, 2]
    return out


def ellipsoid_grid(n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """A face-sized half-ellipsoid grid mesh facing the camera (-z), for tests, demos and benchmarks.

    Returns verts (n_rows * n_cols, 3) float32 in [-1, 1] x [-1.3, 1.3] and faces (2 (n_rows-1)(n_cols-1), 3).
    """
    u, v = np.meshgrid(np.linspace(-1, 1, n_cols), np.linspace(-1, 1, n_rows))
    x, y = u * 0.9, v * 1.2
    z = -0.6 * np.sqrt(np.clip(1.0 - u**2 * 0.8 - v**2 * 0.8, 0.0, None))
    verts = np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(np.float32)
    idx = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    # Winding chosen so that vertex_normals point towards the camera (-z).
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    return verts, faces.astype(np.int32)
