"""Manipulator objectives as free functions: NED's (LSGAN, style, cycle, mouth) and SCMCL's (paired,
correlation). `compute_d_loss` / `compute_g_loss` follow the StarGAN v2 split; weights are `lambda_*`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.formats import expression_channels, mouth_channel
from manipulator.data import ScmclBatch


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pearson correlation over time per sample: a, b (B, T) -> (B,)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def mouth_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - Pearson of the mouth-opening channel over time, x, y (B, T, D), batch mean: 0 when identical, 2 when
    negated."""
    return (1.0 - pearson(mouth_channel(x), mouth_channel(y))).mean()


def lsgan_real(logits: torch.Tensor) -> torch.Tensor:
    return ((logits - 1.0) ** 2).mean()


def lsgan_fake(logits: torch.Tensor) -> torch.Tensor:
    return (logits**2).mean()


def compute_d_loss(nets, x_real, y_org, y_trg, s_trg) -> tuple[torch.Tensor, dict[str, float]]:
    """D step: source reals are always the real term (NED); fakes G(x, s_trg) with the target label."""
    real = lsgan_real(nets["discriminator"](x_real, y_org))
    with torch.no_grad():
        fake_x = nets["generator"](x_real, s_trg)
    fake = lsgan_fake(nets["discriminator"](fake_x, y_trg))
    return real + fake, {"d/real": real.item(), "d/fake": fake.item()}


def paired_loss(
    fake: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, valid: torch.Tensor, form: str = "cosine"
) -> torch.Tensor:
    """Paired loss to retrieved same-speech target windows, weighted per sample by 1/(1 + d_a).

    fake, target (B, T, D); the mouth-opening channel is left to the mouth loss. `cosine`: per-frame 1 - cos
    over the other channels (the later SCMCL code); `l1`: mean |fake - target| (LSCMC). The weighted sum is divided by
    the number of valid targets (not by the sum of the weights), so the weight is an absolute confidence:
    a batch of far pairs pulls less than a batch of close ones.
    """
    if form == "cosine":
        cos = F.cosine_similarity(expression_channels(fake), expression_channels(target), dim=-1)
        per_sample = (1.0 - cos).mean(dim=1)
    elif form == "l1":
        per_sample = (expression_channels(fake) - expression_channels(target)).abs().mean(dim=(1, 2))
    else:
        raise ValueError(f"unknown paired loss form {form!r}")
    return (weight * valid * per_sample).sum() / valid.sum().clamp_min(1.0)


def visual_distance(f_expr, a: torch.Tensor, b: torch.Tensor, window: int) -> torch.Tensor:
    """d_v = ||f(a) - f(b)|| per sample, on the windows' last `window` frames (their anchor): (B,)."""
    return (f_expr(a[:, -window:]) - f_expr(b[:, -window:])).norm(dim=-1)


def correlation_terms(
    f_expr, phi, fake: torch.Tensor, other: torch.Tensor, d_audio: torch.Tensor, window: int
) -> torch.Tensor:
    """|φ(d_v(fake, other)) - d_a| per sample (B,): the correlation term before averaging (the diagnosis
    evaluates it at the real target, the source and along the path between them)."""
    return (phi(visual_distance(f_expr, fake, other, window)) - d_audio).abs()


def correlation_loss(
    f_expr, phi, fake: torch.Tensor, other: torch.Tensor, d_audio: torch.Tensor, valid: torch.Tensor, window: int
) -> torch.Tensor:
    """|φ(d_v) - d_a| with d_v = ||f(fake) - f(other)|| on the windows' last `window` frames (their anchor),
    averaged over the `valid` pairs.

    `other` is the source window (the later SCMCL code; the neutral pivot of an emotion -> emotion pair) or the
    retrieved window (LSCMC's description).
    """
    per_sample = correlation_terms(f_expr, phi, fake, other, d_audio, window)
    return (per_sample * valid).sum() / valid.sum().clamp_min(1.0)


def compute_g_loss(
    nets, cfg, x_real, y_trg, s_trg, scmcl: ScmclBatch | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """G step of one branch (latent or reference): adversarial, style, cycle, mouth; plus the SCMCL terms when
    `scmcl` is given: the paired loss, and the correlation loss when it carries a φ."""
    fake = nets["generator"](x_real, s_trg)
    adv = lsgan_real(nets["discriminator"](fake, y_trg))
    sty = (nets["style"](fake) - s_trg).abs().mean()
    s_org = nets["style"](x_real)
    rec = nets["generator"](fake, s_org)
    cyc = (rec - x_real).abs().mean()
    mouth = mouth_loss(x_real, fake) + mouth_loss(fake, rec)
    total = adv + cfg.lambda_sty * sty + cfg.lambda_cyc * cyc + cfg.lambda_mouth * mouth
    terms = {"g/adv": adv.item(), "g/sty": sty.item(), "g/cyc": cyc.item(), "g/mouth": mouth.item()}
    if scmcl is not None:
        pair = paired_loss(fake, scmcl.target, scmcl.weight, scmcl.valid, cfg.paired_form)
        total = total + cfg.lambda_paired * pair
        terms["g/paired"] = pair.item()
        if scmcl.phi is not None:
            corr = correlation_loss(
                scmcl.f_expr, scmcl.phi, fake, scmcl.correlation_other, scmcl.d_audio, scmcl.corr_valid, scmcl.window
            )
            weight, grads = balanced_weight(cfg.lambda_paired * pair, corr, fake, cfg.lambda_corr, cfg)
            total = total + weight * corr
            terms |= {"g/corr": corr.item(), "g/lambda_corr": weight} | grads
    return total, terms


def balanced_weight(
    paired: torch.Tensor, corr: torch.Tensor, fake: torch.Tensor, lambda_corr: float, cfg
) -> tuple[float, dict[str, float]]:
    """The correlation term's weight for this step: `lambda_corr`, lowered where its gradient on the generated
    windows would exceed `corr_max_grad_ratio` times the (weighted) paired term's, so it cannot drown the
    paired term (measured on main: 24x at lambda 1). Also the two gradient norms, for the logs."""
    if not fake.requires_grad:  # nothing to balance (a constructed generator)
        return float(lambda_corr), {}
    g_pair = torch.autograd.grad(paired, fake, retain_graph=True, allow_unused=True)[0]
    g_corr = torch.autograd.grad(corr, fake, retain_graph=True, allow_unused=True)[0]
    n_pair = float(g_pair.norm()) if g_pair is not None else 0.0
    n_corr = float(g_corr.norm()) if g_corr is not None else 0.0
    weight = float(lambda_corr)
    ratio = getattr(cfg, "corr_max_grad_ratio", None)
    if ratio is not None and n_corr > 0:
        weight = min(weight, ratio * n_pair / n_corr)
    return weight, {"g/grad_paired": n_pair, "g/grad_corr": weight * n_corr}
