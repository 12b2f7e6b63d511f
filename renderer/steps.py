"""The renderer's training step, shared by `renderer.train` and `evaluation.bench`.

One step generates `batch_size` runs of K consecutive frames in order (each frame from the conditioning of
`n_g` frames and the previous `n_g - 1` generated frames), takes a G step on them (plus the optional SCMCL
terms), then a D step on the same, detached fakes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
import torch.nn.functional as F

from renderer.data import Batch
from renderer.losses import feature_matching, lsgan
from renderer.networks import SIZES


def roi_size(image_size: int) -> int:
    """Side of the mouth / eyes crops the ROI discriminators see: 72 px at 256, at least 8."""
    return max(8, round(72 * image_size / 256))


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
    is what DistributedDataParallel needs. `cfg` needs size, lambda_l1, lambda_feat and lambda_mouth."""

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


def build_optimizers(nets: dict, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
    """Adam for the generator and one Adam over every discriminator."""
    opt_g = torch.optim.Adam(nets["generator"].parameters(), lr=lr, betas=betas)
    d_params = [p for name, net in nets.items() if name.startswith("disc") for p in net.parameters()]
    return {"generator": opt_g, "discriminators": torch.optim.Adam(d_params, lr=lr, betas=betas)}


def train_step(
    nets: dict,
    optims: dict,
    losses: RendererLosses,
    batch: Batch,
    n_g: int,
    autocast: Callable[[], AbstractContextManager],
    scmcl=None,
    rng: np.random.Generator | None = None,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """One G step and one D step on a batch of runs; returns the logs, the G loss and the detached fakes
    (B, K, 3, S, S). `autocast()` opens the forward passes' autocast context; `scmcl(generator, rng,
    perceptual)` (renderer.scmcl.ScmclImageTerms) adds the SCMCL image-level terms to the G loss."""
    cond = batch.cond[:, n_g - 1 :].flatten(0, 1)
    real = batch.real.flatten(0, 1)
    centres = {"disc_mouth": batch.mouth.flatten(0, 1)}
    if "disc_eyes" in nets:
        centres["disc_eyes"] = eye_centres(cond)
    with autocast():  # G step
        fake = generate_run(nets["generator"], batch, n_g)
        g_loss, logs = losses.generator(cond, fake.flatten(0, 1), real, centres)
        if scmcl is not None:
            extra_loss, extra_logs = scmcl(nets["generator"], rng, losses.perceptual)
            g_loss = g_loss + extra_loss
            logs |= extra_logs
    optims["generator"].zero_grad(set_to_none=True)
    g_loss.backward()
    optims["generator"].step()
    with autocast():  # D step, on the same fakes
        d_loss, d_logs = losses.discriminator(cond, fake.detach().flatten(0, 1), real, centres)
    optims["discriminators"].zero_grad(set_to_none=True)
    d_loss.backward()
    optims["discriminators"].step()
    return logs | d_logs, g_loss.detach(), fake.detach()
