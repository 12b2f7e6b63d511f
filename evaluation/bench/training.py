"""Training benchmarks: the trainers' own step functions (manipulator.steps, renderer.steps,
manipulator.metric.steps) with the trainers' default settings and optimizers, on random inputs, in the
autocast precision the engine picks by default (bf16 on a capable GPU, else fp32)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch

from common.distributed import autocast, resolve_precision
from manipulator.metric.data import InputSpec
from manipulator.metric.models import build_encoders
from manipulator.metric.steps import build_optimizer
from manipulator.metric.steps import train_step as metric_step
from manipulator.metric.train import MetricConfig
from manipulator.models import SIZES as MANIPULATOR_SIZES
from manipulator.models import build_manipulator
from manipulator.steps import NedBatch, loss_weights, ned_iteration
from manipulator.steps import build_optimizers as manipulator_optimizers
from manipulator.train import ManipulatorConfig
from renderer.data import Batch
from renderer.networks import build_renderer
from renderer.steps import RendererLosses, roi_size, train_step
from renderer.steps import build_optimizers as renderer_optimizers
from renderer.train import RendererConfig

EXPR_DIM = 51  # DECA-sized expression parameters


def _device() -> tuple[torch.device, torch.dtype | None, Callable[[], None]]:
    """The device, the engine's default autocast dtype on it, and a synchronize function."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    return device, resolve_precision("auto", device), torch.cuda.synchronize if cuda else (lambda: None)


def _seconds_per_step(step: Callable[[], object], steps: int, sync: Callable[[], None]) -> float:
    """Mean wall time of `steps` calls after one warm-up call."""
    step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - start) / steps


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"


def bench_manipulator(steps: int = 10) -> dict:
    """Manipulator training throughput (windows/s): manipulator.steps.ned_iteration (the D and G steps of
    the latent and the reference branch) per size preset, without the SCMCL terms."""
    device, dtype, sync = _device()
    out = {}
    for size, batch in (("ned", 64), ("small", 32), ("tiny", 8)):
        cfg = ManipulatorConfig(size=size, batch_size=batch)
        nets = {k: v.to(device) for k, v in build_manipulator(EXPR_DIM, len(cfg.emotions), size).items()}
        optims = manipulator_optimizers(nets, cfg.lr, (cfg.beta1, cfg.beta2))
        weights = loss_weights(cfg)
        window = (batch, cfg.seq_len_frames, EXPR_DIM)
        labels = partial(torch.randint, 0, len(cfg.emotions), (batch,), device=device)
        data = NedBatch(
            torch.randn(window, device=device),
            labels(),
            torch.randn(window, device=device),
            labels(),
            torch.randn(batch, MANIPULATOR_SIZES[size].latent_dim, device=device),
        )

        def step(nets=nets, optims=optims, weights=weights, data=data):
            with autocast(device, dtype):
                ned_iteration(nets, optims, weights, data)

        rate = batch / _seconds_per_step(step, steps, sync)
        precision = "bf16" if dtype else "fp32"
        out[size] = {"batch": batch, "windows_per_s": round(rate, 1), "device": str(device), "precision": precision}
        print(f"manipulator {size} (batch {batch}) on {device} ({precision}): {rate:.0f} windows/s", flush=True)
    return out


def bench_renderer(steps: int = 3, frames: int = 8) -> dict:
    """Renderer training step time (renderer.steps.train_step: batch 1, K sequential frames, image + mouth D)
    and inference frames/s for the `tiny` and `ned` presets at 256 and the demo's tiny at 128; channels-last
    on CUDA, as the trainer."""
    device, dtype, sync = _device()
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    out = {}
    for size, s, k in (("tiny", 256, 4), ("ned", 256, 4), ("tiny", 128, 3)):
        cfg = RendererConfig(size=size, image_size=s, frames_per_step=k)
        n_g = cfg.n_frames_g
        raw = build_renderer(size, n_g, cfg.mouth_d, cfg.eyes_d)
        nets = {n: v.to(device, memory_format=fmt) for n, v in raw.items()}
        optims = renderer_optimizers(nets, cfg.lr, (cfg.beta1, cfg.beta2))
        losses = RendererLosses(cfg, nets, None, roi_size(s))
        mask = torch.zeros(cfg.batch_size, k, 1, s, s, device=device)
        mask[..., s // 8 : -s // 8, s // 8 : -s // 8] = 1
        batch = Batch(
            torch.rand(cfg.batch_size, k + n_g - 1, 9, s, s, device=device),
            torch.rand(cfg.batch_size, k, 3, s, s, device=device) * 2 - 1,
            mask,
            torch.full((cfg.batch_size, k, 2), s / 2, device=device),
        )
        step = partial(train_step, nets, optims, losses, batch, n_g, partial(autocast, device, dtype))
        step_s = _seconds_per_step(step, steps, sync)
        gen = nets["generator"].eval()
        cond, prev = torch.rand(1, 9 * n_g, s, s, device=device), torch.zeros(1, 3 * (n_g - 1), s, s, device=device)
        with torch.no_grad(), autocast(device, dtype):
            infer_s = _seconds_per_step(partial(gen, cond, prev, mask[:1, 0]), frames, sync)
        label, fps = f"{size}_{s}", 1 / infer_s
        out[label] = {
            "train_step_s": round(step_s, 3),
            "frames_per_step": k,
            "infer_frames_per_s": round(fps, 1),
            "device": _device_name(device),
            "precision": "bf16" if dtype else "fp32",
        }
        print(
            f"renderer {label} on {out[label]['device']} ({out[label]['precision']}): train step {step_s:.3f} s "
            f"({k} frames), inference {fps:.1f} frames/s",
            flush=True,
        )
    return out


def bench_metric(steps: int = 10, batch: int = 64) -> dict:
    """Metric training throughput (pairs/s) per encoder size: manipulator.metric.steps.train_step with the audio
    (log-mel) and expression encoders, InfoNCE (configs/metric/base.yaml's inputs)."""
    device, dtype, sync = _device()
    out = {}
    for size in ("small", "base"):
        cfg = MetricConfig(modalities=["audio", "expr"], size=size, inputs=InputSpec(audio_kind="mel", audio_ms=50.0))
        nets = {
            k: v.to(device) for k, v in build_encoders(cfg.modalities, cfg.size, cfg.embed_dim, EXPR_DIM, "mel").items()
        }
        opt = build_optimizer(nets, cfg.lr, cfg.weight_decay)
        hops = round(cfg.inputs.audio_ms / 10)  # 10 ms log-mel hops
        mel = torch.randn(2, batch, cfg.inputs.n_mels, hops)
        expr = torch.randn(2, batch, cfg.inputs.expr_window, EXPR_DIM)
        inputs = {"audio": (mel[0], mel[1]), "expr": (expr[0], expr[1])}
        step = partial(metric_step, cfg, nets, opt, inputs, 0, device, partial(autocast, device, dtype))
        rate = batch / _seconds_per_step(step, steps, sync)
        precision = "bf16" if dtype else "fp32"
        print(f"metric ({size}, audio + expr, batch {batch}) on {device} ({precision}): {rate:.0f} pairs/s", flush=True)
        out[size] = {"batch": batch, "pairs_per_s": round(rate, 1), "device": str(device), "precision": precision}
    return out
