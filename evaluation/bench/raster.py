"""Rasterizer benchmark: rasterize + interpolate (NMFC colours) frames/s on one thread."""

from __future__ import annotations

import time

import numpy as np

from common.geometry import ellipsoid_grid, normalize_coords, rotation_matrix, to_screen
from common.raster import interpolate, rasterize


def bench_raster(min_seconds: float = 2.0) -> dict:
    """Frames/s of rasterize + 3-channel interpolate for a moving mesh (kernels compiled beforehand)."""
    results = {}
    for label, grid, size in (("face_900tri_256", 22, 256), ("mesh_10k_224", 71, 224)):
        verts, faces = ellipsoid_grid(grid, grid)
        colours = normalize_coords(verts)
        poses = [rotation_matrix(0.4 * np.sin(k / 7), 0.1 * np.cos(k / 5), 0.0).astype(np.float32) for k in range(64)]
        screens = [to_screen(verts @ r.T, size * 0.4, (size / 2, size / 2)) for r in poses]
        interpolate(colours, faces, rasterize(screens[0], faces, size, size))  # compile / load the kernels
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            frags = rasterize(screens[n % len(screens)], faces, size, size)
            interpolate(colours, faces, frags)
            n += 1
        elapsed = time.perf_counter() - start
        results[label] = {
            "triangles": int(len(faces)),
            "size": size,
            "frames": n,
            "frames_per_s": round(n / elapsed, 1),
            "ms_per_frame": round(1000 * elapsed / n, 3),
        }
        print(f"raster {label}: {len(faces)} triangles at {size}x{size}: {n / elapsed:.0f} frames/s", flush=True)
    return results
