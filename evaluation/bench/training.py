"""Training benchmarks: the trainers' own step functions (manipulator.steps, renderer.steps,
manipulator.metric.steps, renderer.refine.step) with the trainers' default settings and optimizers, on random
inputs, in the autocast precision the engine picks by default (bf16 on a capable GPU, else fp32).

Each stage is timed as the experiment configs run it, so that `scripts/train.sh --plan` does not underestimate
it: the manipulator without SCMCL (ned_baseline.yaml), with the paired term (scmcl.yaml) and with the
correlation term too (scmcl.lambda_corr > 0, mead.yaml); each metric stage's modalities, with the consistency
term where the joint stages turn it on; the renderer with the VGG19 perceptual loss (perceptual=auto/on), without
it (off), and with SCMCL's image-level terms (renderer/scmcl.yaml). The frozen metric networks of the SCMCL terms
are the metric's default size (base). VGG19's weights are a file the user places: without it the perceptual
loss runs a random-weight VGG19 of the same architecture (the same cost), and the output says so. Not timed:
the data side (window retrieval, rendering the SCMCL terms' conditioning from edited parameters).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from common.distributed import autocast, resolve_precision
from common.experiment import manipulator_variant, metric_variant, renderer_variant
from manipulator.data import ScmclBatch
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
from renderer.losses import PerceptualLoss, build_perceptual, vgg19_features, vgg19_path
from renderer.networks import COND_CHANNELS, build_renderer
from renderer.refine.net import IN_CHANNELS as REFINER_IN_CHANNELS
from renderer.refine.net import SIZES as REFINER_SIZES
from renderer.refine.net import RefineNet
from renderer.refine.step import build_optimizer as refiner_optimizer
from renderer.refine.step import train_step as refiner_step
from renderer.refine.train import RefinerConfig
from renderer.scmcl import ScmclImageTerms
from renderer.steps import RendererLosses, roi_size, train_step
from renderer.steps import build_optimizers as renderer_optimizers
from renderer.train import RendererConfig

EXPR_DIM = 51  # DECA-sized expression parameters
METRIC = MetricConfig()  # the frozen metric of the SCMCL terms: the schema's size (base), embedding and inputs


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


def _frozen_metric(modalities: list[str], device: torch.device) -> dict[str, torch.nn.Module]:
    """Encoders and φ of the metric's default size, frozen in eval mode as manipulator.metric.load_metric gives them."""
    nets = build_encoders(modalities, METRIC.size, METRIC.embed_dim, EXPR_DIM, METRIC.inputs.audio_kind)
    return {k: v.to(device).eval().requires_grad_(False) for k, v in nets.items()}


def _scmcl_batch(cfg: ManipulatorConfig, device: torch.device) -> ScmclBatch | None:
    """Random retrieved pairs for the SCMCL terms `cfg` turns on (None: off), with the frozen expression encoder
    and φ when the correlation term is on, through ScmclBatch.with_metric as the trainer builds them."""
    if not cfg.scmcl.enabled:
        return None
    window, ones = (cfg.batch_size, cfg.seq_len_frames, EXPR_DIM), torch.ones(cfg.batch_size)
    pairs = ScmclBatch(torch.randn(window), torch.randn(window), torch.rand(cfg.batch_size), ones / 2, ones, ones)
    if cfg.scmcl.lambda_corr <= 0:
        return pairs.with_metric(device, None, None, cfg.scmcl.visual_ref, 0)
    nets = _frozen_metric(["expr"], device)
    return pairs.with_metric(device, nets["expr"], nets["phi_expr"], cfg.scmcl.visual_ref, METRIC.inputs.expr_window)


def bench_manipulator(
    steps: int = 10, sizes: tuple[tuple[str, int], ...] = (("ned", 64), ("small", 32), ("tiny", 8))
) -> dict:
    """Manipulator training throughput (windows/s): manipulator.steps.ned_iteration (the D and G steps of
    the latent and the reference branch) per size preset, for each way the configs run it (variants: NED's
    objective, + SCMCL's paired term, + its correlation term; `windows_per_s` is NED's objective)."""
    device, dtype, sync = _device()
    precision = "bf16" if dtype else "fp32"
    out = {}
    for size, batch in sizes:
        rates = {}
        for scmcl, lambda_corr in ((False, 0.0), (True, 0.0), (True, 1.0)):
            cfg = ManipulatorConfig(size=size, batch_size=batch)
            cfg.scmcl.enabled, cfg.scmcl.lambda_corr = scmcl, lambda_corr
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
            terms = _scmcl_batch(cfg, device)

            def step(nets=nets, optims=optims, weights=weights, data=data, terms=terms):
                with autocast(device, dtype):
                    ned_iteration(nets, optims, weights, data, terms)

            rates[manipulator_variant(scmcl, lambda_corr)] = round(batch / _seconds_per_step(step, steps, sync), 1)
        out[size] = {
            "batch": batch,
            "windows_per_s": rates["ned"],
            "variants": rates,
            "device": str(device),
            "precision": precision,
        }
        each = ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
        print(f"manipulator {size} (batch {batch}) on {device} ({precision}): windows/s {each}", flush=True)
    return out


def _perceptual(device: torch.device) -> tuple[PerceptualLoss, str]:
    """The renderer's VGG19 perceptual loss: from the user's weights file, else random weights (the same cost)."""
    loss = build_perceptual("auto")
    what = "vgg19"
    if loss is None:
        loss = PerceptualLoss(vgg19_features().eval().requires_grad_(False))
        what = f"vgg19 with random weights ({vgg19_path()} absent; the same architecture and cost)"
    return loss.to(device), what


class _RandomImagePairs(ScmclImageTerms):
    """SCMCL's image-level terms as the renderer trainer adds them (ScmclImageTerms.__call__: the generator on
    edited conditioning, the frozen image encoder and φ, the paired loss) on one random sample, instead of
    retrieved pairs rendered from a manipulator run's edits (the data side, not timed)."""

    def __init__(self, cfg: RendererConfig, device: torch.device):  # no runs or index to load
        self.cfg, self.device, self.n_g = cfg, device, cfg.n_frames_g
        nets = _frozen_metric(["visual"], device)
        self.f_img, self.phi = nets["visual"], nets["phi_visual"]
        self.crop_kind, self.visual_size = METRIC.inputs.visual_crop, METRIC.inputs.visual_size
        b, s = cfg.scmcl.batch_size, cfg.image_size
        mask = torch.zeros(b, 1, s, s, device=device)
        mask[..., s // 8 : -s // 8, s // 8 : -s // 8] = 1
        image = partial(torch.rand, b, 3, s, s, device=device)
        cond = torch.rand(b, COND_CHANNELS * self.n_g, s, s, device=device)
        self.pairs = (cond, mask, image() * 2 - 1, image() * 2 - 1, torch.rand(b, device=device))

    def sample(self, rng: np.random.Generator):
        return self.pairs


def bench_renderer(
    steps: int = 3,
    frames: int = 8,
    presets: tuple[tuple[str, int, int], ...] = (("tiny", 256, 4), ("ned", 256, 4), ("tiny", 128, 3)),
) -> dict:
    """Renderer training step time (renderer.steps.train_step: batch 1, K sequential frames, image + mouth D)
    and inference frames/s for the `tiny` and `ned` presets at 256 and the demo's tiny at 128; channels-last
    on CUDA, as the trainer. Step time for each way the configs run it (variants: with the VGG19 perceptual
    loss, as perceptual=auto/on; without, as off; each with and without SCMCL's image-level terms, as
    renderer/scmcl.yaml); `train_step_s` is the base config's (VGG19, no SCMCL)."""
    device, dtype, sync = _device()
    fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    vgg, vgg_what = _perceptual(device)
    print(f"renderer perceptual loss: {vgg_what}", flush=True)
    rng = np.random.default_rng(0)
    out = {}
    for size, s, k in presets:
        cfg = RendererConfig(size=size, image_size=s, frames_per_step=k)
        n_g = cfg.n_frames_g
        raw = build_renderer(size, n_g, cfg.mouth_d, cfg.eyes_d)
        nets = {n: v.to(device, memory_format=fmt) for n, v in raw.items()}
        optims = renderer_optimizers(nets, cfg.lr, (cfg.beta1, cfg.beta2))
        mask = torch.zeros(cfg.batch_size, k, 1, s, s, device=device)
        mask[..., s // 8 : -s // 8, s // 8 : -s // 8] = 1
        batch = Batch(
            torch.rand(cfg.batch_size, k + n_g - 1, 9, s, s, device=device),
            torch.rand(cfg.batch_size, k, 3, s, s, device=device) * 2 - 1,
            mask,
            torch.full((cfg.batch_size, k, 2), s / 2, device=device),
        )
        image_terms = _RandomImagePairs(cfg, device)
        times = {}
        for perceptual, scmcl in (("auto", False), ("off", False), ("auto", True), ("off", True)):
            losses = RendererLosses(cfg, nets, vgg if perceptual != "off" else None, roi_size(s))
            extra = image_terms if scmcl else None
            step = partial(train_step, nets, optims, losses, batch, n_g, partial(autocast, device, dtype), extra, rng)
            times[renderer_variant(perceptual, scmcl)] = round(_seconds_per_step(step, steps, sync), 3)
        gen = nets["generator"].eval()
        cond, prev = torch.rand(1, 9 * n_g, s, s, device=device), torch.zeros(1, 3 * (n_g - 1), s, s, device=device)
        with torch.no_grad(), autocast(device, dtype):
            infer_s = _seconds_per_step(partial(gen, cond, prev, mask[:1, 0]), frames, sync)
        label, fps = f"{size}_{s}", 1 / infer_s
        out[label] = {
            "train_step_s": times["perceptual"],
            "variants": times,
            "perceptual": vgg_what,
            "frames_per_step": k,
            "infer_frames_per_s": round(fps, 1),
            "device": _device_name(device),
            "precision": "bf16" if dtype else "fp32",
        }
        each = ", ".join(f"{v:.3f} s {n}" for n, v in times.items())
        print(
            f"renderer {label} on {out[label]['device']} ({out[label]['precision']}): train step ({k} frames) "
            f"{each}; inference {fps:.1f} frames/s",
            flush=True,
        )
    return out


METRIC_STAGES = {  # configs/metric/<stage>.yaml: modalities and consistency term
    "audio": (["audio"], "none"),
    "expr": (["expr"], "none"),
    "visual": (["visual"], "none"),
    "joint": (["audio", "expr"], "affine"),
    "joint_visual": (["audio", "visual"], "affine"),
}


def _metric_inputs(modality: str, spec: InputSpec, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (anchors, positives) of one modality as manipulator.metric.steps.pair_inputs stacks them."""
    shape = {
        "audio": (spec.n_mels, spec.mel_hops),  # log-mel context of 10 ms hops
        "expr": (spec.expr_window, EXPR_DIM),
        "visual": (3, spec.visual_size, spec.visual_size),
    }[modality]
    x = torch.rand(2, batch, *shape) if modality == "visual" else torch.randn(2, batch, *shape)
    return x[0], x[1]


def bench_metric(steps: int = 10, batch: int = 64, sizes: tuple[str, ...] = ("small", "base")) -> dict:
    """Metric training throughput (pairs/s) per encoder size: manipulator.metric.steps.train_step for each stage
    of the metric configs (variants: its modalities, with the consistency term where the joint stages turn it on,
    timed past consistency_start), configs/metric/base.yaml's inputs; `pairs_per_s` is the joint stage's."""
    device, dtype, sync = _device()
    precision = "bf16" if dtype else "fp32"
    out = {}
    for size in sizes:
        rates = {}
        for modalities, consistency in METRIC_STAGES.values():
            cfg = MetricConfig(
                modalities=modalities,
                size=size,
                consistency=consistency,
                inputs=InputSpec(audio_kind="mel", audio_ms=50.0),
            )
            encoders = build_encoders(cfg.modalities, cfg.size, cfg.embed_dim, EXPR_DIM, "mel")
            nets = {k: v.to(device) for k, v in encoders.items()}
            opt = build_optimizer(nets, cfg.lr, cfg.weight_decay, cfg.phi_lr)
            inputs = {m: _metric_inputs(m, cfg.inputs, batch) for m in modalities}
            step = partial(
                metric_step, cfg, nets, opt, inputs, cfg.consistency_start, device, partial(autocast, device, dtype)
            )
            rates[metric_variant(modalities, consistency)] = round(batch / _seconds_per_step(step, steps, sync), 1)
        joint = metric_variant(*METRIC_STAGES["joint"])
        each = ", ".join(f"{k} {v:.0f}" for k, v in rates.items())
        print(f"metric ({size}, batch {batch}) on {device} ({precision}): pairs/s {each}", flush=True)
        out[size] = {
            "batch": batch,
            "pairs_per_s": rates[joint],
            "variants": rates,
            "device": str(device),
            "precision": precision,
        }
    return out


def bench_refiner(steps: int = 3, presets: tuple[tuple[str, int], ...] = (("tiny", 128), ("small", 256))) -> dict:
    """Warp refiner training step time (renderer.refine.step.train_step: a batch of warp pairs, L1 in the face
    mask, plus VGG19 when its weights are present, as the default perceptual=auto) for the demo's tiny at 128
    and the default small at 256, on random pairs (the data side, warping the pairs, is not timed)."""
    device, dtype, sync = _device()
    perceptual = build_perceptual("auto")
    if perceptual is not None:
        perceptual.to(device)
    out = {}
    for size, s in presets:
        cfg = RefinerConfig(size=size, image_size=s)
        net = RefineNet(REFINER_SIZES[size]).to(device)
        b = cfg.batch_size
        mask = torch.zeros(b, 1, s, s, device=device)
        mask[..., s // 8 : -s // 8, s // 8 : -s // 8] = 1
        pairs = (
            torch.rand(b, REFINER_IN_CHANNELS, s, s, device=device) * 2 - 1,
            torch.rand(b, 3, s, s, device=device) * 2 - 1,
            mask,
        )
        step = partial(
            refiner_step,
            net,
            refiner_optimizer(net, cfg.lr),
            pairs,
            cfg.lambda_l1,
            cfg.lambda_perceptual,
            perceptual,
            partial(autocast, device, dtype),
        )
        step_s = _seconds_per_step(step, steps, sync)
        label = f"{size}_{s}"
        out[label] = {
            "train_step_s": round(step_s, 3),
            "batch": b,
            "pairs_per_s": round(b / step_s, 1),
            "perceptual": "vgg19" if perceptual is not None else "off (no VGG19 weights)",
            "device": _device_name(device),
            "precision": "bf16" if dtype else "fp32",
        }
        print(
            f"refiner {label} (batch {b}, perceptual {out[label]['perceptual']}) on {out[label]['device']} "
            f"({out[label]['precision']}): train step {step_s:.3f} s",
            flush=True,
        )
    return out
