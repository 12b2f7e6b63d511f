"""Preprocessing benchmarks: the steps of the preprocessing pass on a generated toy clip, and DECA's
encoder plus the NMFC / shape rendering of a FLAME-sized mesh."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.distributed import autocast
from common.emotions import NEUTRAL
from common.formats import Clip
from common.geometry import ellipsoid_grid, normalize_coords, rotation_matrix, to_screen
from DECA.encoders import ResnetEncoder
from facemodel.geometry import aligned_points
from facemodel.mesh import fit_basis
from facemodel.render import render_mesh
from facemodel.topology import mediapipe_triangles
from preprocessing.clip_pass import fit_clip, init_face_worker, track_clip
from preprocessing.run import PreprocessConfig
from preprocessing.sources import discover
from preprocessing.toy_mead.build import ToyMeadConfig, build_toy_mead


def bench_deca(batch: int = 32, repeats: int = 2) -> dict:
    """DECA encode frames/s (ResNet-50 coarse encoder at 224, batch 32; random weights cost the same as the
    licensed ones) and NMFC + shape rendering of a FLAME-sized mesh (~5k vertices, ~9.7k triangles) at 256."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    net = ResnetEncoder(236).to(device).eval()
    x = torch.rand(batch, 3, 224, 224, device=device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.no_grad(), autocast(device, dtype):
        net(x)
        sync()
        t = time.perf_counter()
        for _ in range(repeats):
            net(x)
        sync()
    encode_fps = repeats * batch / (time.perf_counter() - t)
    verts, faces = ellipsoid_grid(71, 70)
    colours = normalize_coords(verts)
    screens = [
        to_screen(verts @ rotation_matrix(0.3 * np.sin(k), 0.1, 0.0).T.astype(np.float32), 100, (128, 128))
        for k in range(batch)
    ]
    render_mesh(screens[0], faces, colours, 256)
    t = time.perf_counter()
    for v in screens:
        render_mesh(v, faces, colours, 256)
    render_fps = batch / (time.perf_counter() - t)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(
        f"deca encode on {name}: {encode_fps:.1f} frames/s (batch {batch}); NMFC+shape render (CPU rasterizer, "
        f"{len(faces)} triangles at 256): {render_fps:.0f} frames/s",
        flush=True,
    )
    return {
        "device": name,
        "batch": batch,
        "encode_frames_per_s": round(encode_fps, 1),
        "render_frames_per_s": round(render_fps, 1),
        "precision": "bf16" if dtype else "fp32",
    }


def bench_preprocess() -> dict:
    """Preprocessing ms per frame per step on one generated toy clip (1 actor, 1 sentence, 256 px, 30 fps)."""
    with tempfile.TemporaryDirectory() as tmp:
        toy, out = Path(tmp) / "toy", Path(tmp) / "out"
        build_toy_mead(ToyMeadConfig(out=str(toy), actors=1, sentences=1, emotions=[NEUTRAL], workers=1))
        src = discover(toy)[0]
        defaults = PreprocessConfig()
        cfg = {k: getattr(defaults, k) for k in PreprocessConfig.__dataclass_fields__}
        tracked = track_clip(src, str(out), cfg, "test", "bench")

        clip = Clip(out / src.rel_dir)
        basis = fit_basis([aligned_points(clip.track())], ["A"], mediapipe_triangles(), 8, "bench")
        basis.save(Path(tmp) / "basis.npz")
        init_face_worker("mesh", str(Path(tmp) / "basis.npz"))
        fitted = fit_clip(src.rel_dir, str(out), "bench", "mesh", 4)
    steps = {k: round(1000 * v / tracked.n_frames, 2) for k, v in {**tracked.seconds, **fitted.seconds}.items()}
    total = sum(tracked.seconds.values()) + sum(fitted.seconds.values())
    print(
        f"preprocess: {tracked.n_frames} frames, {tracked.n_frames / total:.1f} frames/s in one process; ms/frame: "
        + ", ".join(f"{k} {v}" for k, v in steps.items()),
        flush=True,
    )
    return {"frames": tracked.n_frames, "frames_per_s": round(tracked.n_frames / total, 1), "ms_per_frame": steps}
