"""Speed benchmarks with printed numbers and a JSON report: `python -m evaluation.bench [--only NAME]`.

Sections grow with the pipeline; each measures one stage on data it generates. Currently:
- raster: rasterize + interpolate (NMFC colours) frames/s at 256x256 for a ~900-triangle mesh and at
  224x224 for a ~10k-triangle mesh, on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.errors import cli_entry
from common.fsutil import atomic_write_text
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


SECTIONS: dict[str, Callable[[], dict]] = {"raster": bench_raster}


def machine_info() -> dict:
    import torch

    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run only these sections")
    parser.add_argument("--out", default="runs/bench/bench.json", help="JSON report path")
    args = parser.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    names = args.only or sorted(SECTIONS)
    report = {"machine": machine_info(), **{name: SECTIONS[name]() for name in names}}
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
