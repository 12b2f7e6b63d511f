"""Evaluation benchmark: the published metrics' networks per frame (random weights cost the same)."""

from __future__ import annotations

import time

import numpy as np
import torch

from evaluation.arcface import ArcFace, ResNetFace18
from evaluation.fid import FIDInception
from evaluation.syncnet import SyncNet


def bench_evaluation(frames: int = 100) -> dict:
    """The published metrics' networks (random weights: the cost does not depend on them), per frame of
    256 aligned crops: ArcFace embedding (FAD / CSIM), FID-Inception features, SyncNet LSE on a 25 fps clip."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (frames, 256, 256, 3), dtype=np.uint8)
    sync_crops = rng.integers(0, 256, (frames, 224, 224, 3), dtype=np.uint8)
    audio = rng.normal(0, 0.1, int(frames / 25 * 16000)).astype(np.float32)
    out = {"device": device, "frames": frames}
    jobs = (
        ("arcface", ArcFace(ResNetFace18()).to(device), lambda n: n.embed(crops)),
        ("fid_inception", FIDInception().to(device), lambda n: n.features(crops)),
        ("syncnet", SyncNet().to(device), lambda n: n.lse(sync_crops, 25.0, audio)),
    )
    for name, net, work in jobs:
        work(net)  # warm-up (and CUDA kernels)
        t = time.perf_counter()
        work(net)
        rate = frames / (time.perf_counter() - t)
        out[name] = {"frames_per_s": round(rate, 1)}
        print(f"evaluation {name}: {rate:.1f} frames/s ({device})", flush=True)
    return out
