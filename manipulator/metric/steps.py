"""The SCMCL metric's training step, shared by `manipulator.metric.train` and `evaluation.bench`."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from manipulator.metric.data import ClipBank
from manipulator.metric.losses import consistency_affine, consistency_softmax, info_nce, pairwise_distance

Pairs = dict[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> (anchors, positives)


def pair_inputs(bank: ClipBank, modalities, anchors, positives) -> Pairs:
    """Each modality's stacked inputs for the (clip, frame) references of anchors and positives."""
    return {m: (bank.inputs(m, anchors), bank.inputs(m, positives)) for m in modalities}


def embed_pair(net: torch.nn.Module, anchors: torch.Tensor, positives: torch.Tensor, device: torch.device):
    """Embed anchors and positives in one forward pass (one set of BatchNorm statistics)."""
    emb = net(torch.cat([anchors, positives]).to(device))
    return emb[: len(anchors)], emb[len(anchors) :]


def compute_losses(cfg, nets, emb: Pairs, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and the named terms for logging."""
    terms: dict[str, torch.Tensor] = {}
    for m, (a, p) in emb.items():
        terms[f"nce/{m}"] = info_nce(a, p, cfg.temperature)
    if cfg.consistency != "none" and step >= cfg.consistency_start:
        d_audio = pairwise_distance(*emb["audio"])
        for m in cfg.modalities:
            if m == "audio":
                continue
            d_vis = pairwise_distance(*emb[m])
            if cfg.consistency == "affine":
                near = getattr(cfg, "consistency_max_audio", None)
                terms[f"consistency/{m}"] = consistency_affine(d_vis, d_audio, nets[f"phi_{m}"], near)
            else:
                terms[f"consistency/{m}"] = consistency_softmax(d_vis, d_audio, cfg.temperature)
    total = sum(v * (cfg.lambda_consistency if k.startswith("consistency") else 1.0) for k, v in terms.items())
    return total, terms


def build_optimizer(nets: dict, lr: float, weight_decay: float, phi_lr: float | None = None) -> torch.optim.Optimizer:
    """One AdamW over every encoder and φ. φ (two scalars) gets its own group at `phi_lr` (scaled by the same
    schedule, no weight decay): at an encoder fine-tuning rate it would stay the identity."""
    encoders = [p for name, net in nets.items() if not name.startswith("phi_") for p in net.parameters()]
    phis = [p for name, net in nets.items() if name.startswith("phi_") for p in net.parameters()]
    groups = [{"params": encoders, "lr_scale": 1.0}]
    if phis:
        groups.append({"params": phis, "lr_scale": (phi_lr or lr) / lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def train_step(
    cfg,
    nets: dict,
    opt: torch.optim.Optimizer,
    inputs: Pairs,
    step: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], Pairs]:
    """One update on a batch of pairs (`inputs` from pair_inputs); returns the loss, its terms and the
    embeddings. `cfg` needs modalities, temperature, consistency, consistency_start, lambda_consistency (and
    may set consistency_max_audio)."""
    with autocast():
        emb = {m: embed_pair(nets[m], *inputs[m], device) for m in cfg.modalities}
        loss, terms = compute_losses(cfg, nets, emb, step)
    opt.zero_grad(set_to_none=True)  # LSCMC and the SCMCL code never reset gradients; we do
    loss.backward()
    opt.step()
    return loss, terms, emb
