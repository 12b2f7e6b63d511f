"""The manipulator's training steps, shared by `manipulator.train` and `evaluation.bench`.

NED's StarGAN-v2 iteration: two D steps, then two G steps, one per branch. Latent branch: the target style
is the mapping network's s = F(z, y_trg); reference branch: s = E(x_ref), the style of another window whose
own label is y_trg. The latent G step updates G, F and E; the reference G step updates G only.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from manipulator.data import ScmclBatch
from manipulator.losses import compute_d_loss, compute_g_loss

BRANCHES = ("latent", "ref")
UPDATED_BY_G = {"latent": ("generator", "mapping", "style"), "ref": ("generator",)}


@dataclass
class NedBatch:
    """One iteration's inputs: source windows x (B, T, D) with labels y_org, reference windows x_ref with
    their labels y_trg (the target of both branches), latent codes z (B, latent_dim)."""

    x: torch.Tensor
    y_org: torch.Tensor
    x_ref: torch.Tensor
    y_trg: torch.Tensor
    z: torch.Tensor


def loss_weights(cfg) -> SimpleNamespace:
    """The loss weights compute_g_loss reads, flattened out of a manipulator config."""
    return SimpleNamespace(
        lambda_sty=cfg.lambda_sty,
        lambda_cyc=cfg.lambda_cyc,
        lambda_mouth=cfg.lambda_mouth,
        lambda_paired=cfg.scmcl.lambda_paired,
        lambda_corr=cfg.scmcl.lambda_corr,
        corr_max_grad_ratio=cfg.scmcl.corr_max_grad_ratio,
        paired_form=cfg.scmcl.paired_form,
    )


def build_optimizers(nets: dict, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
    """One Adam per network (generator, mapping, style, discriminator)."""
    return {name: torch.optim.Adam(net.parameters(), lr=lr, betas=betas) for name, net in nets.items()}


def target_style(nets: dict, batch: NedBatch, branch: str) -> torch.Tensor:
    """The branch's target style: F(z, y_trg) (latent) or E(x_ref) (reference)."""
    return nets["mapping"](batch.z, batch.y_trg) if branch == "latent" else nets["style"](batch.x_ref)


def discriminator_step(nets: dict, optims: dict, batch: NedBatch, branch: str) -> dict[str, float]:
    """One D update on reals x and fakes G(x, s) of the branch's style (computed without gradients)."""
    with torch.no_grad():
        s = target_style(nets, batch, branch)
    d_loss, terms = compute_d_loss(nets, batch.x, batch.y_org, batch.y_trg, s)
    optims["discriminator"].zero_grad(set_to_none=True)
    d_loss.backward()
    optims["discriminator"].step()
    return {f"{k}_{branch}": v for k, v in terms.items()}


def generator_step(
    nets: dict, optims: dict, weights, batch: NedBatch, branch: str, scmcl: ScmclBatch | None = None
) -> dict[str, float]:
    """One G update of the branch (see compute_g_loss; `scmcl` adds the paired and correlation terms)."""
    s = target_style(nets, batch, branch)
    g_loss, terms = compute_g_loss(nets, weights, batch.x, batch.y_trg, s, scmcl)
    for opt in optims.values():
        opt.zero_grad(set_to_none=True)
    g_loss.backward()
    for name in UPDATED_BY_G[branch]:
        optims[name].step()
    return {f"{k}_{branch}": v for k, v in terms.items()}


def ned_iteration(
    nets: dict, optims: dict, weights, batch: NedBatch, scmcl: ScmclBatch | None = None
) -> dict[str, float]:
    """One training iteration (both D steps, then both G steps); returns the loss terms per branch.
    Run it inside the caller's autocast context."""
    logs: dict[str, float] = {}
    for branch in BRANCHES:
        logs |= discriminator_step(nets, optims, batch, branch)
    for branch in BRANCHES:
        logs |= generator_step(nets, optims, weights, batch, branch, scmcl)
    return logs
