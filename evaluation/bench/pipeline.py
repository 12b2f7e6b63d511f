"""Editing benchmarks: blending a face into a full frame, and the whole edit (manipulate + render + blend)."""

from __future__ import annotations

import time

import cv2
import numpy as np
import torch

from manipulator.editing import edit_expr
from manipulator.models import SIZES as MSIZES
from manipulator.models import build_manipulator
from postprocessing.blend import METHODS, soft_erode
from postprocessing.run import paste
from renderer.networks import SIZES as RSIZES
from renderer.networks import Generator


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
    print(f"edit (manipulate small + render tiny@128 + pyramid blend at 256): {rate:.1f} frames/s "
          f"(manipulation {1000 * (t_edit - t) / frames:.1f} ms/frame)", flush=True)  # fmt: skip
    return {
        "frames": frames,
        "frames_per_s": round(rate, 1),
        "manipulate_ms_per_frame": round(1000 * (t_edit - t) / frames, 2),
    }
