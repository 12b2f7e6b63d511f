"""Editing benchmarks: blending a face into a full frame, the whole edit (manipulate + render + blend), the warp
renderer."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from common.emotions import NEUTRAL
from common.formats import Clip
from common.video import read_frames
from facemodel import load_face_model
from facemodel.geometry import aligned_points, aligned_to_frame
from facemodel.mesh import fit_basis
from facemodel.topology import mediapipe_triangles
from manipulator.editing import edit_expr
from manipulator.models import SIZES as MSIZES
from manipulator.models import build_manipulator
from postprocessing.blend import METHODS, soft_erode
from postprocessing.edit_video import edit_video
from postprocessing.run import paste
from preprocessing.clip_pass import fit_clip, init_face_worker, track_clip
from preprocessing.run import PreprocessConfig
from preprocessing.sources import discover
from preprocessing.toy_mead.build import ToyMeadConfig, build_toy_mead
from renderer.networks import SIZES as RSIZES
from renderer.networks import Generator
from renderer.refine.inference import RefineRenderer
from renderer.refine.net import SIZES as RSIZES_REFINE
from renderer.refine.net import RefineNet
from renderer.warp import WarpRenderer


def bench_postprocess(n: int = 30) -> dict:
    """Blending frames/s: a 256x256 aligned face warped into a 1280x720 frame and blended, per method."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:256, :256]
    weight = soft_erode(((xx - 128) ** 2 / 90**2 + (yy - 140) ** 2 / 110**2 <= 1).astype(np.uint8) * 255, 16)
    out = {}
    for method in METHODS:
        t = time.perf_counter()
        for i in range(n):
            a = 1.4 + 0.01 * np.sin(i)
            m = np.array([[a, 0.05, 500.0 + i], [-0.05, a, 150.0]])
            paste(frame, face, weight, m, method)
        fps = n / (time.perf_counter() - t)
        out[method] = {"frame": "1280x720", "face": 256, "frames_per_s": round(fps, 1)}
        print(f"postprocess {method}: {fps:.1f} frames/s (256 face into 1280x720)", flush=True)
    return out


def bench_edit(frames: int = 90) -> dict:
    """Edit frames/s: manipulate (small) + render (demo renderer, tiny at 128) + blend (pyramid) of a
    synthetic clip, with random-initialised networks (the cost does not depend on the weights)."""
    nets = build_manipulator(51, 7, "small", True)
    x = np.random.default_rng(0).normal(size=(frames, 51)).astype(np.float32)
    style = nets["mapping"](torch.randn(1, MSIZES["small"].latent_dim), torch.tensor([3]))[0].detach().numpy()
    gen = Generator(RSIZES["tiny"], 3).eval()
    frame = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:256, :256]
    weight = soft_erode((((xx - 128) / 80) ** 2 + ((yy - 140) / 100) ** 2 <= 1).astype(np.uint8) * 255, 16)
    m = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    t = time.perf_counter()
    with torch.no_grad():
        edit_expr(nets["generator"], x, 10, style)
        t_edit = time.perf_counter()
        prev = torch.zeros(1, 6, 128, 128)
        for _ in range(frames):
            out = gen(torch.rand(1, 27, 128, 128), prev, torch.ones(1, 1, 128, 128))
            prev = torch.cat([prev[:, 3:], out], 1)
            face = (out[0].permute(1, 2, 0).numpy() * 127.5 + 127.5).clip(0, 255).astype(np.uint8)
            face = cv2.resize(face, (256, 256), interpolation=cv2.INTER_CUBIC)
            paste(frame, face, weight, m)
    total = time.perf_counter() - t
    rate = frames / total
    print(
        f"edit (manipulate small + render tiny@128 + pyramid blend at 256): {rate:.1f} frames/s "
        f"(manipulation {1000 * (t_edit - t) / frames:.1f} ms/frame)",
        flush=True,
    )
    return {
        "frames": frames,
        "frames_per_s": round(rate, 1),
        "manipulate_ms_per_frame": round(1000 * (t_edit - t) / frames, 2),
    }


def bench_warp() -> dict:
    """The warp renderer on a generated toy clip (1 actor, 1 sentence, 512x512, 25 fps; tracked and fitted as
    preprocessing does): render frames/s on one thread at 512 and at 256 (the same clip's frames and meshes
    halved), and the whole edit of the 512 clip (manipulate + warp + encode, with the side-by-side video) on
    all cores, against the clip's duration. The edit adds a fixed offset to the fitted expression (the time
    does not depend on which edit). Also the warp refiner's inference frames/s (tiny at 128, small at 256)."""
    with tempfile.TemporaryDirectory() as tmp:
        toy, out = Path(tmp) / "toy", Path(tmp) / "out"
        build_toy_mead(
            ToyMeadConfig(out=str(toy), actors=1, sentences=1, emotions=[NEUTRAL], size=512, fps=25.0, workers=1)
        )
        src = discover(toy)[0]
        defaults = PreprocessConfig()
        cfg = {k: getattr(defaults, k) for k in PreprocessConfig.__dataclass_fields__}
        track_clip(src, str(out), cfg, "test", "bench")
        clip = Clip(out / src.rel_dir)
        basis = fit_basis([aligned_points(clip.track())], ["A"], mediapipe_triangles(), 8, "bench")
        basis.save(Path(tmp) / "basis.npz")
        init_face_worker("mesh", str(Path(tmp) / "basis.npz"))
        fit_clip(src.rel_dir, str(out), "bench", "mesh", 4)
        model = load_face_model("mesh", Path(tmp) / "basis.npz")
        face = dict(clip.face())
        expr = face["expr"].copy()
        expr[:, 1:4] += 1.5 * expr[:, 1:4].std(0)
        face["expr"] = expr
        frames = read_frames(clip.meta.source_video)
        plan = WarpRenderer().plan(model, clip, face)
        track = clip.track()
        result = {"frames": clip.n_frames}
        cv2.setNumThreads(1)
        for size in (512, 256):
            k = 512 // size
            m = [np.diag([1.0 / k, 1.0 / k]) @ aligned_to_frame(track, t) for t in range(clip.n_frames)]
            imgs = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
            plan.frame(0, imgs[0], m[0])
            t0 = time.perf_counter()
            for t, img in enumerate(imgs):
                plan.frame(t, img, m[t])
            fps = clip.n_frames / (time.perf_counter() - t0)
            result[f"render_{size}_frames_per_s"] = round(fps, 1)
            print(f"warp render at {size}x{size}, one thread: {fps:.1f} frames/s", flush=True)
        cv2.setNumThreads(0)
        crop = clip.faces.read(0)
        for size_name, px in (("tiny", 128), ("small", 256)):  # the refiner (random weights: the same cost)
            refiner = RefineRenderer(RefineNet(RSIZES_REFINE[size_name]).eval(), px, "bench", torch.device("cpu"))
            refiner.refine(crop, plan.src[0], plan.dst[0], plan.triangles)
            t0 = time.perf_counter()
            for t in range(10):
                refiner.refine(crop, plan.src[t], plan.dst[t], plan.triangles)
            fps = 10 / (time.perf_counter() - t0)
            result[f"refine_{size_name}_{px}_frames_per_s"] = round(fps, 1)
            threads = torch.get_num_threads()
            print(f"warp_refine: refiner {size_name} at {px} px: {fps:.1f} frames/s ({threads} threads)", flush=True)
        nets = build_manipulator(expr.shape[1], 7, "small", True)
        style = nets["mapping"](torch.randn(1, MSIZES["small"].latent_dim), torch.tensor([3]))[0].detach().numpy()
        t0 = time.perf_counter()
        with torch.no_grad():
            edit_expr(nets["generator"], face["expr"], 10, style)
        edit_video(clip, face, WarpRenderer(), model, Path(tmp) / "edit.mp4", side_by_side=True, name="bench")
        total = time.perf_counter() - t0
    duration = clip.n_frames / clip.meta.fps
    speed = duration / total
    print(
        f"whole edit of a 512x512 {clip.meta.fps:g} fps clip ({clip.n_frames} frames, {duration:.1f} s; manipulate + "
        f"warp + encode + side-by-side, {os.cpu_count()} cores): {total:.1f} s = {speed:.2f}x real time",
        flush=True,
    )
    return result | {"edit_512_s": round(total, 2), "clip_s": round(duration, 2), "x_real_time": round(speed, 2)}
