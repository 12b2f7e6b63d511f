"""Renderer losses: LSGAN, discriminator feature matching, and the VGG19 perceptual loss.

The VGG19 perceptual loss needs ImageNet VGG19 weights, which we never download. The loader reads the
torchvision file `vgg19-dcbb9e9d.pth` (a plain state dict, keys `features.N.weight/bias`, ...) from
`$TORCH_HOME/hub/checkpoints/` (torch hub's cache, where torchvision itself would look) or from a path
given in the config, and checks every key it needs and its shape.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
# torchvision's VGG19 `features`: channel widths per conv, "M" = max pool.
_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
_TAPS = (1, 6, 11, 20, 29)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 in torchvision's indexing
_TAP_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def lsgan(outputs: list[list[torch.Tensor]], real: bool) -> torch.Tensor:
    """Least-squares GAN loss over every scale's patch map (the last feature of each)."""
    target = 1.0 if real else 0.0
    return sum(((feats[-1].float() - target) ** 2).mean() for feats in outputs) / len(outputs)


def feature_matching(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]], n_layers: int) -> torch.Tensor:
    """Σ_scales Σ_layers (1/num_D)·(4/(n_layers+1))·L1(fake feature, real feature), as pix2pixHD/NED."""
    w = 4.0 / (n_layers + 1) / len(fake)
    total = torch.zeros((), device=fake[0][0].device)
    for f_scale, r_scale in zip(fake, real, strict=True):
        for f, r in zip(f_scale[:-1], r_scale[:-1], strict=True):
            total = total + w * F.l1_loss(f.float(), r.detach().float())
    return total


def vgg_features(cfg: list, last: int) -> nn.Sequential:
    """torchvision's VGG `features` for a layer config (widths, "M" = max pool), indices 0..last, so its
    state-dict keys (`features.N.weight`) load."""
    layers: list[nn.Module] = []
    c = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers[: last + 1])


def vgg19_features() -> nn.Sequential:
    """torchvision's `vgg19().features` up to relu5_1, with the same indices (so its keys load)."""
    return vgg_features(_VGG19_CFG, _TAPS[-1])


def vgg19_path(configured: str = "") -> Path:
    if configured:
        return Path(configured)
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def missing_vgg_message(path: Path) -> str:
    return (
        f"VGG19 weights not found at {path}. The perceptual loss needs torchvision's ImageNet VGG19 file "
        f"{VGG19_FILE} ({VGG19_URL}); place it there (or set perceptual_weights=PATH), or run with "
        f"perceptual=off."
    )


def load_vgg19(path: str | Path) -> nn.Sequential:
    """VGG19 features from a torchvision state-dict file; every needed key must be there with its shape."""
    path = Path(path)
    if not path.is_file():
        raise UserError(missing_vgg_message(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear message
        raise UserError(f"{path}: not a readable PyTorch state dict ({exc.__class__.__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    net = vgg19_features()
    wanted = {f"features.{k}": v for k, v in net.state_dict().items()}
    missing = [k for k in wanted if k not in state]
    if missing:
        raise UserError(
            f"{path}: not a VGG19 state dict; missing {', '.join(missing[:4])}{' …' if len(missing) > 4 else ''}"
        )
    bad = [k for k, v in wanted.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise UserError(
            f"{path}: wrong shape for {bad[0]}: {tuple(state[bad[0]].shape)}, expected {tuple(wanted[bad[0]].shape)}"
        )
    net.load_state_dict({k[len("features.") :]: state[k] for k in wanted}, strict=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 relu1_1…relu5_1 features (weights 1/32, 1/16, 1/8, 1/4, 1). Inputs in [-1, 1]."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.features = features
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x)
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        f, r = self._taps(fake), self._taps(real)
        return sum(w * F.l1_loss(a.float(), b.detach().float()) for w, a, b in zip(_TAP_WEIGHTS, f, r, strict=True))


def build_perceptual(mode: str, weights: str = "") -> PerceptualLoss | None:
    """perceptual: on = required (clear error when the file is missing), auto = when present, off = never."""
    if mode == "off":
        return None
    path = vgg19_path(weights)
    if mode == "auto" and not path.is_file():
        return None
    return PerceptualLoss(load_vgg19(path))
