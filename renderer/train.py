"""Train a neural renderer for one identity:

  python -m renderer.train --config configs/renderer/base.yaml actor=W001 [key=value …]

Per step: `batch_size` runs of `frames_per_step` consecutive frames, generated one after the other, each from
the conditioning of `n_frames_g` frames and the previous `n_frames_g - 1` generated frames (zeros before the
run's first frame, as NED's `no_first_img`; previous outputs detached). Losses: LSGAN + feature matching on
a multi-scale image discriminator and a mouth-ROI discriminator (eyes optional), L1 on the composited
frame, VGG19 perceptual when its weights are present. With `scmcl.enabled` the SCMCL image-level terms are
added (see `renderer.scmcl`). The run dir is `<runs_root>/renderer/<actor>` unless `engine.name` is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.cli import parse_cli
from common.config import choice
from common.engine import Engine, EngineConfig, unwrap
from common.errors import ConfigError, cli_entry
from common.schedules import lr_at, set_lr
from renderer.data import Batch, IdentityFrames
from renderer.losses import build_perceptual, feature_matching, lsgan
from renderer.networks import SIZES, build_renderer
from renderer.scmcl import RendererScmclConfig, ScmclImageTerms


@dataclass
class RendererConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_steps=20000, log_every=50, ckpt_every=1000))
    data_dir: str = "data/processed/toy_mead"
    actor: str = ""  # the identity to train (required)
    splits: list[str] = field(default_factory=lambda: ["train"])
    val_split: str = "test"  # held-out clips of the same identity for the image grid
    size: str = choice("ned", list(SIZES))
    image_size: int = 256
    n_frames_g: int = 3
    frames_per_step: int = 4  # consecutive frames generated per sample (NED: max_frames_per_gpu)
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_schedule: str = choice("constant", ["constant", "linear", "cosine"])
    lambda_feat: float = 10.0  # feature matching and perceptual weight (NED)
    lambda_l1: float = 10.0
    lambda_mouth: float = 1.0  # mouth discriminator terms (GAN + FM)
    mouth_d: bool = True
    eyes_d: bool = False
    perceptual: str = choice("auto", ["auto", "on", "off"], "VGG19 loss: auto = when the weights are present")
    perceptual_weights: str = ""  # default $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth
    augment: bool = True
    channels_last: bool = True  # on CUDA only
    sample_every: int = 500  # TensorBoard image grid: conditioning | generated | real
    init_from: str = ""  # renderer run (or checkpoint) to start from, e.g. for the SCMCL fine-tuning
    scmcl: RendererScmclConfig = field(default_factory=RendererScmclConfig)


def roi_crops(x: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, S, S) -> (N, C, size, size) crops centred on `centres` (N, 2) (x, y), kept inside the image."""
    s = x.shape[-1]
    c = centres.detach().round().long().cpu().numpy()
    x0 = np.clip(c[:, 0] - size // 2, 0, s - size)
    y0 = np.clip(c[:, 1] - size // 2, 0, s - size)
    return torch.stack([x[i, :, y0[i] : y0[i] + size, x0[i] : x0[i] + size] for i in range(len(x))])


def eye_centres(cond: torch.Tensor) -> torch.Tensor:
    """Centre of the eye-gaze disks (channels 3:6) per image, (N, 2); the image centre when none is drawn."""
    w = cond[:, 3:6].sum(1)
    s = cond.shape[-1]
    grid = torch.arange(s, device=cond.device, dtype=torch.float32)
    total = w.sum((1, 2)).clamp_min(1e-6)
    cx = (w.sum(1) * grid).sum(1) / total
    cy = (w.sum(2) * grid).sum(1) / total
    empty = w.sum((1, 2)) < 1e-3
    return torch.where(empty[:, None], torch.full((len(w), 2), s / 2, device=cond.device), torch.stack([cx, cy], 1))


def generate_run(generator, batch: Batch, n_g: int) -> torch.Tensor:
    """Generate the K frames of each run in order; returns (B, K, 3, S, S)."""
    b, k = batch.real.shape[:2]
    s = batch.real.shape[-1]
    prev = torch.zeros(b, 3 * (n_g - 1), s, s, device=batch.real.device, dtype=batch.real.dtype)
    fakes = []
    for i in range(k):
        cond = batch.cond[:, i : i + n_g].flatten(1, 2)
        fake = generator(cond, prev, batch.mask[:, i])
        fakes.append(fake)
        prev = torch.cat([prev[:, 3:], fake.detach()], 1) if n_g > 1 else prev
    return torch.stack(fakes, 1)


class RendererLosses:
    """G and D objectives. Each discriminator sees real and fake in one forward pass (a batch concatenation;
    InstanceNorm keeps samples independent), and every forward is followed by exactly one backward, which
    is what DistributedDataParallel needs."""

    def __init__(self, cfg, nets: dict, perceptual, roi: int):
        self.cfg, self.nets, self.perceptual, self.roi = cfg, nets, perceptual, roi
        self.n_layers = SIZES[cfg.size].n_layers_d

    def _inputs(self, cond: torch.Tensor, img: torch.Tensor, centres: dict[str, torch.Tensor]):
        x = torch.cat([cond, img], 1)
        yield "disc_image", x, 1.0
        for name in ("disc_mouth", "disc_eyes"):
            if name in self.nets:
                yield name, roi_crops(x, centres[name], self.roi), self.cfg.lambda_mouth

    def _real_fake(self, cond, fake, real, centres):
        """Per discriminator: (name, weight, predictions on real, predictions on fake)."""
        n = len(real)
        both = zip(self._inputs(cond, real, centres), self._inputs(cond, fake, centres), strict=True)
        for (name, x_real, w), (_, x_fake, _) in both:
            pred = self.nets[name](torch.cat([x_real, x_fake], 0))
            yield name, w, [[f[:n] for f in scale] for scale in pred], [[f[n:] for f in scale] for scale in pred]

    def generator(self, cond, fake, real, centres) -> tuple[torch.Tensor, dict[str, float]]:
        """cond (N, 9, S, S), fake/real (N, 3, S, S) -> G loss (GAN + FM per D, L1, perceptual) and logs."""
        cfg = self.cfg
        l1 = F.l1_loss(fake.float(), real.float())
        g_loss = cfg.lambda_l1 * l1
        logs = {"g/l1": l1.item()}
        for name, w, pred_real, pred_fake in self._real_fake(cond, fake, real, centres):
            gan = lsgan(pred_fake, True)
            fm = feature_matching(pred_fake, pred_real, self.n_layers)  # real features detached inside
            g_loss = g_loss + w * (gan + cfg.lambda_feat * fm)
            tag = name.removeprefix("disc_")
            logs |= {f"g/gan_{tag}": gan.item(), f"g/fm_{tag}": fm.item()}
        if self.perceptual is not None:
            vgg = self.perceptual(fake, real)
            g_loss = g_loss + cfg.lambda_feat * vgg
            logs["g/vgg"] = vgg.item()
        return g_loss, logs

    def discriminator(self, cond, fake, real, centres) -> tuple[torch.Tensor, dict[str, float]]:
        """D loss: 0.5 (LSGAN(real, 1) + LSGAN(fake, 0)) per discriminator, summed. Pass a detached fake."""
        d_loss = torch.zeros((), device=fake.device)
        logs = {}
        for name, _, pred_real, pred_fake in self._real_fake(cond, fake, real, centres):
            dl = 0.5 * (lsgan(pred_real, True) + lsgan(pred_fake, False))
            d_loss = d_loss + dl
            logs[f"d/{name.removeprefix('disc_')}"] = dl.item()
        return d_loss, logs


def image_grid(batch: Batch, fake: torch.Tensor) -> np.ndarray:
    """Rows = frames of the first run; columns: NMFC | eye gaze | shape | generated | real (uint8 HWC)."""
    n_g = batch.cond.shape[1] - batch.real.shape[1] + 1
    rows = []
    for i in range(batch.real.shape[1]):
        c = batch.cond[0, i + n_g - 1].float().cpu()
        tiles = [c[0:3], c[3:6], c[6:9], (fake[0, i].float().cpu() + 1) / 2, (batch.real[0, i].float().cpu() + 1) / 2]
        rows.append(torch.cat(tiles, 2))
    grid = torch.cat(rows, 1).clamp(0, 1)
    return (grid.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _init_from(path: str, nets: dict, log) -> None:
    from pathlib import Path

    p = Path(path)
    ckpt_path = p if p.is_file() else latest_checkpoint(p / "checkpoints")
    if ckpt_path is None:
        raise ConfigError(f"init_from={path}: no renderer checkpoint there")
    state = load_checkpoint(ckpt_path)["nets"]
    for name, net in nets.items():
        if name in state:
            unwrap(net).load_state_dict(state[name])
    log.info("initialised from %s", ckpt_path)


def derived_defaults(cfg) -> dict:
    """Defaults that depend on other keys: the run name from the actor, and an SCMCL fine-tuning run starts
    from the identity's trained renderer."""
    out = {}
    if cfg.engine.name == "default" and cfg.actor:
        out["engine.name"] = f"{cfg.actor}{'_scmcl' if cfg.scmcl.enabled else ''}"
    if cfg.scmcl.enabled and not cfg.init_from and cfg.actor:
        out["init_from"] = f"{cfg.engine.runs_root}/renderer/{cfg.actor}"
    return out


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(RendererConfig, argv, prog="python -m renderer.train", doc=__doc__, derive=derived_defaults)
    if not cfg.actor:
        raise ConfigError("actor= is required: the renderer is trained per identity (e.g. actor=W001)")
    if cfg.n_frames_g < 1 or cfg.frames_per_step < 1:
        raise ConfigError("n_frames_g and frames_per_step must be at least 1")
    engine = Engine("renderer", cfg)
    data = IdentityFrames(cfg.data_dir, cfg.actor, tuple(cfg.splits), cfg.image_size, cfg.n_frames_g, cfg.augment)
    raw = build_renderer(cfg.size, cfg.n_frames_g, cfg.mouth_d, cfg.eyes_d)
    dev = engine.device
    fmt = torch.channels_last if (cfg.channels_last and dev.type == "cuda") else torch.contiguous_format
    for net in raw.values():
        net.to(dev, memory_format=fmt)
    nets = {name: engine.ddp(net) for name, net in raw.items()}
    betas = (cfg.beta1, cfg.beta2)
    opt_g = torch.optim.Adam(nets["generator"].parameters(), lr=cfg.lr, betas=betas)
    d_params = [p for name, net in nets.items() if name.startswith("disc") for p in net.parameters()]
    opt_d = torch.optim.Adam(d_params, lr=cfg.lr, betas=betas)
    optims = {"generator": opt_g, "discriminators": opt_d}
    start = engine.resume(nets, optims)
    if start == 0 and cfg.init_from:
        _init_from(cfg.init_from, nets, engine.log)
    perceptual = build_perceptual(cfg.perceptual, cfg.perceptual_weights)
    if perceptual is not None:
        perceptual.to(dev)
    roi = max(8, round(72 * cfg.image_size / 256))
    losses = RendererLosses(cfg, nets, perceptual, roi)
    scmcl = ScmclImageTerms(cfg, engine, data) if cfg.scmcl.enabled else None
    engine.log.info("renderer %s: %d clips, %d frames, %s at %d px, perceptual %s, SCMCL %s", cfg.actor,
                    len(data.dirs), len(data), cfg.size, cfg.image_size, "on" if perceptual else "off",
                    "on" if scmcl else "off")  # fmt: skip
    extra = {"actor": cfg.actor, "image_size": cfg.image_size, "n_frames_g": cfg.n_frames_g, "size": cfg.size}
    for step in engine.steps(start):
        for opt in optims.values():
            set_lr(opt, lr_at(step, cfg.lr, cfg.lr_schedule, 0, cfg.engine.max_steps, min_lr_ratio=0.0))
        rng = np.random.default_rng([cfg.engine.seed, step, engine.dist.rank])
        batch = data.sample(rng, cfg.batch_size, cfg.frames_per_step).to(dev)
        n_g = cfg.n_frames_g
        cond = batch.cond[:, n_g - 1 :].flatten(0, 1)
        real = batch.real.flatten(0, 1)
        centres = {"disc_mouth": batch.mouth.flatten(0, 1)}
        if "disc_eyes" in nets:
            centres["disc_eyes"] = eye_centres(cond)
        with engine.autocast():  # G step
            fake = generate_run(nets["generator"], batch, n_g)
            g_loss, logs = losses.generator(cond, fake.flatten(0, 1), real, centres)
            if scmcl is not None:
                extra_loss, extra_logs = scmcl(nets["generator"], rng, perceptual)
                g_loss = g_loss + extra_loss
                logs |= extra_logs
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        with engine.autocast():  # D step, on the same fakes
            d_loss, d_logs = losses.discriminator(cond, fake.detach().flatten(0, 1), real, centres)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        logs |= d_logs
        done = step + 1
        if done % cfg.engine.log_every == 0:
            engine.log_metrics(done, logs | {"g/total": g_loss.item(), "lr": opt_g.param_groups[0]["lr"]})
        if engine.is_main and (done % cfg.sample_every == 0 or done == cfg.engine.max_steps):
            engine.log_image("train/cond_generated_real", image_grid(batch, fake.detach()), done)
        engine.maybe_save(step, nets, optims, extra=extra)
    engine.close()


if __name__ == "__main__":
    main()
