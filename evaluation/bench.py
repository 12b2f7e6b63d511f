"""Speed benchmarks with printed numbers and a JSON report: `python -m evaluation.bench [--only NAME]`.

Sections grow with the pipeline; each measures one stage on data it generates. Currently:
- raster: rasterize + interpolate (NMFC colours) frames/s at 256x256 for a ~900-triangle mesh and at
  224x224 for a ~10k-triangle mesh, on one thread.
- index: chunked vs dense top-k retrieval time and peak memory.
- manipulator: training windows/s per size preset.
- renderer: training step time and inference frames/s (tiny / ned at 256, the demo's tiny at 128).
- postprocess: blending frames/s per method (256 face into a 1280x720 frame).
- deca: DECA encode frames/s at batch 32 and NMFC/shape rendering of a FLAME-sized mesh.
- preprocess: ms per frame per step on a generated toy clip; metric: training pairs/s; edit: manipulate +
  render + blend frames/s. Every section runs in its own process and reports its peak memory (max RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

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


def _index_job(kind: str, n: int, k: int, dim: int, queue) -> None:
    """Child process: time one top-k computation and report its peak memory above the start."""
    import resource

    import torch

    from manipulator.metric.topk import chunked_topk, dense_topk

    gen = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if kind == "blocked":
        chunked_topk(queries, keys, k)
    else:
        dense_topk(queries, keys, k)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"seconds": round(seconds, 2), "peak_extra_mb": round((peak - base) / 1024, 1)})


def _measure_index(kind: str, n: int, k: int = 10, dim: int = 128) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_index_job, args=(kind, n, k, dim, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {"error": f"exit code {proc.exitcode} (out of memory?)"}
    return queue.get()


def bench_index(n_windows: int = 50_000, dense_sizes: tuple[int, ...] = (5_000, 10_000, 20_000, 30_000)) -> dict:
    """Retrieval index top-k (k=10, 128-d) for N windows per emotion: blocked vs a dense cdist matrix."""
    out = {"blocked": {}, "dense": {}}
    for n in sorted({*dense_sizes, n_windows}):
        out["blocked"][n] = _measure_index("blocked", n)
        print(f"index blocked top-k N={n}: {out['blocked'][n]}", flush=True)
    for n in dense_sizes:
        out["dense"][n] = _measure_index("dense", n)
        print(f"index dense cdist N={n}: {out['dense'][n]} (matrix alone {n * n * 4 / 2**20:.0f} MB)", flush=True)
    return out


def _manipulator_iteration(nets, opts, x, y, z, weights) -> None:
    """One NED iteration: two D steps and two G steps (as manipulator.train)."""
    import torch

    from manipulator.losses import compute_d_loss, compute_g_loss

    for _ in range(2):
        with torch.no_grad():
            s = nets["mapping"](z, y)
        d_loss, _ = compute_d_loss(nets, x, y, y, s)
        opts["discriminator"].zero_grad()
        d_loss.backward()
        opts["discriminator"].step()
    for _ in range(2):
        g_loss, _ = compute_g_loss(nets, weights, x, y, nets["mapping"](z, y))
        for o in opts.values():
            o.zero_grad()
        g_loss.backward()
        opts["generator"].step()


def bench_manipulator(steps: int = 10) -> dict:
    """Manipulator training throughput (windows/s): full NED iterations (2 D + 2 G steps) on random data."""
    import torch

    from manipulator.models import SIZES, build_manipulator

    weights = SimpleNamespace(lambda_sty=1.0, lambda_cyc=1.0, lambda_mouth=1.0)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = {}
    for size, batch in (("ned", 64), ("small", 32), ("tiny", 8)):
        nets = {k: v.to(device) for k, v in build_manipulator(51, 7, size).items()}
        opts = {k: torch.optim.Adam(v.parameters(), 1e-4, betas=(0.0, 0.99)) for k, v in nets.items()}
        x = torch.randn(batch, 10, 51, device=device)
        y = torch.randint(0, 7, (batch,), device=device)
        z = torch.randn(batch, SIZES[size].latent_dim, device=device)
        _manipulator_iteration(nets, opts, x, y, z, weights)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            _manipulator_iteration(nets, opts, x, y, z, weights)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = steps * batch / (time.perf_counter() - start)
        out[size] = {"batch": batch, "windows_per_s": round(rate, 1), "device": str(device)}
        print(f"manipulator {size} (batch {batch}) on {device}: {rate:.0f} windows/s", flush=True)
    return out


def _renderer_step(nets, losses, opt_g, opt_d, batch, device, dtype) -> None:
    """One renderer training step as renderer.train: sequential generation, G step, D step."""
    from common.distributed import autocast
    from renderer.train import generate_run

    cond, real = batch.cond[:, 2:].flatten(0, 1), batch.real.flatten(0, 1)
    centres = {"disc_mouth": batch.mouth.flatten(0, 1)}
    with autocast(device, dtype):
        fake = generate_run(nets["generator"], batch, 3)
        g, _ = losses.generator(cond, fake.flatten(0, 1), real, centres)
    opt_g.zero_grad()
    g.backward()
    opt_g.step()
    with autocast(device, dtype):
        d, _ = losses.discriminator(cond, fake.detach().flatten(0, 1), real, centres)
    opt_d.zero_grad()
    d.backward()
    opt_d.step()


def bench_renderer(steps: int = 3, frames: int = 8) -> dict:
    """Renderer training step time (batch 1, 4 sequential frames, image + mouth D) and inference frames/s
    at 256x256 for the `tiny` and `ned` presets; on CUDA in bf16 autocast with channels-last."""
    import torch

    from common.distributed import autocast
    from renderer.data import Batch
    from renderer.networks import build_renderer
    from renderer.train import RendererLosses

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    fmt = torch.channels_last if cuda else torch.contiguous_format
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out = {}
    for size, s, k in (("tiny", 256, 4), ("ned", 256, 4), ("tiny", 128, 3)):
        nets = {n: v.to(device, memory_format=fmt) for n, v in build_renderer(size, 3, True, False).items()}
        cfg = SimpleNamespace(size=size, lambda_l1=10.0, lambda_feat=10.0, lambda_mouth=1.0)
        losses = RendererLosses(cfg, nets, None, round(72 * s / 256))
        opt_g = torch.optim.Adam(nets["generator"].parameters(), 2e-4, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam([p for n, v in nets.items() if n != "generator" for p in v.parameters()], 2e-4)
        mask = torch.zeros(1, k, 1, s, s, device=device)
        mask[..., s // 8 : -s // 8, s // 8 : -s // 8] = 1
        batch = Batch(torch.rand(1, k + 2, 9, s, s, device=device), torch.rand(1, k, 3, s, s, device=device) * 2 - 1,
                      mask, torch.full((1, k, 2), s / 2, device=device))  # fmt: skip

        def step(nets=nets, losses=losses, opt_g=opt_g, opt_d=opt_d, batch=batch):
            _renderer_step(nets, losses, opt_g, opt_d, batch, device, dtype)

        step()  # warm-up
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        step_s = (time.perf_counter() - t) / steps
        gen = nets["generator"].eval()
        cond, prev = torch.rand(1, 27, s, s, device=device), torch.zeros(1, 6, s, s, device=device)
        with torch.no_grad(), autocast(device, dtype):
            gen(cond, prev, mask[:, 0])
            sync()
            t = time.perf_counter()
            for _ in range(frames):
                gen(cond, prev, mask[:, 0])
            sync()
        fps = frames / (time.perf_counter() - t)
        label = f"{size}_{s}"
        out[label] = {"train_step_s": round(step_s, 3), "frames_per_step": k, "infer_frames_per_s": round(fps, 1),
                      "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                      "precision": "bf16" if dtype else "fp32"}  # fmt: skip
        print(f"renderer {label} on {out[label]['device']} ({out[label]['precision']}): train step {step_s:.3f} s "
              f"({k} frames), inference {fps:.1f} frames/s", flush=True)  # fmt: skip
    return out


def bench_postprocess(n: int = 30) -> dict:
    """Blending frames/s: a 256x256 aligned face warped into a 1280x720 frame and blended, per method."""
    from postprocessing.blend import METHODS, soft_erode
    from postprocessing.run import paste

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


def bench_deca(batch: int = 32, repeats: int = 2) -> dict:
    """DECA encode frames/s (ResNet-50 coarse encoder at 224, batch 32; random weights cost the same as the
    licensed ones) and NMFC + shape rendering of a FLAME-sized mesh (~5k vertices, ~9.7k triangles) at 256."""
    import torch

    from common.distributed import autocast
    from DECA.encoders import ResnetEncoder
    from facemodel.render import render_mesh

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
    screens = [to_screen(verts @ rotation_matrix(0.3 * np.sin(k), 0.1, 0.0).T.astype(np.float32), 100, (128, 128))
               for k in range(batch)]  # fmt: skip
    render_mesh(screens[0], faces, colours, 256)
    t = time.perf_counter()
    for v in screens:
        render_mesh(v, faces, colours, 256)
    render_fps = batch / (time.perf_counter() - t)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"deca encode on {name}: {encode_fps:.1f} frames/s (batch {batch}); NMFC+shape render (CPU rasterizer, "
          f"{len(faces)} triangles at 256): {render_fps:.0f} frames/s", flush=True)  # fmt: skip
    return {"device": name, "batch": batch, "encode_frames_per_s": round(encode_fps, 1),
            "render_frames_per_s": round(render_fps, 1), "precision": "bf16" if dtype else "fp32"}  # fmt: skip


def bench_preprocess() -> dict:
    """Preprocessing ms per frame per step on one generated toy clip (1 actor, 1 sentence, 256 px, 30 fps)."""
    import tempfile

    from common.formats import Clip
    from facemodel.geometry import aligned_points
    from facemodel.mesh import fit_basis
    from facemodel.topology import mediapipe_triangles
    from preprocessing.clip_pass import fit_clip, init_face_worker, track_clip
    from preprocessing.run import PreprocessConfig
    from preprocessing.sources import discover
    from preprocessing.toy_mead.__main__ import main as toy_main

    with tempfile.TemporaryDirectory() as tmp:
        toy, out = Path(tmp) / "toy", Path(tmp) / "out"
        toy_main(["--out", str(toy), "--actors", "1", "--sentences", "1", "--emotions", "neutral", "--workers", "1"])
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
    print(f"preprocess: {tracked.n_frames} frames, {tracked.n_frames / total:.1f} frames/s in one process; ms/frame: "
          + ", ".join(f"{k} {v}" for k, v in steps.items()), flush=True)  # fmt: skip
    return {"frames": tracked.n_frames, "frames_per_s": round(tracked.n_frames / total, 1), "ms_per_frame": steps}


def bench_metric(steps: int = 10, batch: int = 64) -> dict:
    """Metric training throughput (pairs/s): audio (log-mel) + expression encoders, InfoNCE, small preset."""
    import torch

    from manipulator.metric.losses import info_nce
    from manipulator.metric.models import build_encoders

    nets = build_encoders(["audio", "expr"], "small", 128, 51, "mel")
    opt = torch.optim.Adam([p for n in nets.values() for p in n.parameters()], 3e-4)
    mel = torch.randn(batch * 2, 40, 5)
    expr = torch.randn(batch * 2, 5, 51)

    def step():
        a = nets["audio"](mel)
        e = nets["expr"](expr)
        loss = info_nce(a[:batch], a[batch:], 1.0) + info_nce(e[:batch], e[batch:], 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    rate = steps * batch / (time.perf_counter() - t)
    print(f"metric (small, audio + expr, batch {batch}): {rate:.0f} pairs/s", flush=True)
    return {"batch": batch, "pairs_per_s": round(rate, 1)}


def bench_edit(frames: int = 90) -> dict:
    """Edit frames/s: manipulate (small) + render (demo renderer, tiny at 128) + blend (pyramid) of a
    synthetic clip, with random-initialised networks (the cost does not depend on the weights)."""
    import torch

    from manipulator.editing import edit_expr
    from manipulator.models import SIZES as MSIZES
    from manipulator.models import build_manipulator
    from postprocessing.blend import soft_erode
    from postprocessing.run import paste
    from renderer.networks import SIZES as RSIZES
    from renderer.networks import Generator

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
            face = cv2_resize((out[0].permute(1, 2, 0).numpy() * 127.5 + 127.5).clip(0, 255).astype(np.uint8), 256)
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


def bench_evaluation(frames: int = 100) -> dict:
    """The published metrics' networks (random weights: the cost does not depend on them), per frame of
    256 aligned crops: ArcFace embedding (FAD / CSIM), FID-Inception features, SyncNet LSE on a 25 fps clip."""
    import torch

    from evaluation.arcface import ArcFace, ResNetFace18
    from evaluation.fid import FIDInception
    from evaluation.syncnet import SyncNet

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (frames, 256, 256, 3), dtype=np.uint8)
    sync_crops = rng.integers(0, 256, (frames, 224, 224, 3), dtype=np.uint8)
    audio = rng.normal(0, 0.1, int(frames / 25 * 16000)).astype(np.float32)
    out = {"device": device, "frames": frames}
    jobs = (("arcface", ArcFace(ResNetFace18()).to(device), lambda n: n.embed(crops)),
            ("fid_inception", FIDInception().to(device), lambda n: n.features(crops)),
            ("syncnet", SyncNet().to(device), lambda n: n.lse(sync_crops, 25.0, audio)))  # fmt: skip
    for name, net, work in jobs:
        work(net)  # warm-up (and CUDA kernels)
        t = time.perf_counter()
        work(net)
        rate = frames / (time.perf_counter() - t)
        out[name] = {"frames_per_s": round(rate, 1)}
        print(f"evaluation {name}: {rate:.1f} frames/s ({device})", flush=True)
    return out


def cv2_resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)


SECTIONS: dict[str, Callable[[], dict]] = {
    "raster": bench_raster,
    "index": bench_index,
    "manipulator": bench_manipulator,
    "renderer": bench_renderer,
    "postprocess": bench_postprocess,
    "deca": bench_deca,
    "preprocess": bench_preprocess,
    "metric": bench_metric,
    "edit": bench_edit,
    "evaluation": bench_evaluation,
}


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


def _section_job(name: str, queue) -> None:
    import resource

    result = SECTIONS[name]()
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    queue.put(result)


def _isolated(name: str) -> dict:
    """Run one section in a fresh process, so its peak memory (max RSS) is its own."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_section_job, args=(name, queue))
    proc.start()
    result = queue.get()
    proc.join()
    print(f"{name}: peak memory {result['peak_rss_mb']} MB", flush=True)
    return result


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run only these sections")
    parser.add_argument("--out", default="runs/bench/bench.json", help="JSON report path")
    args = parser.parse_args(argv)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    names = args.only or sorted(SECTIONS)
    report = {"machine": machine_info(), **{name: _isolated(name) for name in names}}
    atomic_write_text(Path(args.out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
