"""LPIPS (v0.1, VGG) from user-placed weights; never downloaded.

Two files: torchvision's ImageNet VGG16 (`vgg16-397923af.pth`, from `$TORCH_HOME/hub/checkpoints/` or a
path) and LPIPS's linear heads (`vgg.pth` of the lpips package, `lpips/weights/v0.1/`: found in an installed
lpips package without importing it — it imports torchvision — or given as a path). Our module: input in
[-1, 1], LPIPS's scaling layer, VGG16 relu1_2 / relu2_2 / relu3_3 / relu4_3 / relu5_3 (torchvision indices
3, 8, 15, 22, 29), unit-normalised channels, squared difference, 1x1 heads, spatial mean, summed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.checkpoint import state_dict_mismatch
from common.errors import FormatError, UserError
from renderer.losses import vgg_features

VGG16_FILE = "vgg16-397923af.pth"
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)
_CHANNELS = (64, 128, 256, 512, 512)


def vgg16_features() -> nn.Sequential:
    return vgg_features(_VGG16_CFG, _TAPS[-1])


def default_paths() -> tuple[Path, Path | None]:
    vgg = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    spec = importlib.util.find_spec("lpips")
    heads = None
    if spec is not None and spec.submodule_search_locations:
        heads = Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / "vgg.pth"
    return vgg, heads


def missing(vgg: Path, heads: Path | None) -> str | None:
    """Why LPIPS is not available ('' = it is); names the files and where they come from."""
    gone = []
    if not vgg.is_file():
        gone.append(f"{vgg} (torchvision's ImageNet VGG16)")
    if heads is None or not heads.is_file():
        gone.append(
            f"{heads or 'lpips/weights/v0.1/vgg.pth'} (the lpips package's linear heads: pip install --no-deps lpips)"
        )
    return "missing " + "; ".join(gone) if gone else None


class LPIPS(nn.Module):
    def __init__(self, features: nn.Sequential, heads: nn.ModuleList):
        super().__init__()
        self.features, self.heads = features.eval(), heads.eval()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def load(cls, vgg: str | Path | None = None, heads: str | Path | None = None) -> LPIPS:
        d_vgg, d_heads = default_paths()
        vgg, heads = Path(vgg) if vgg else d_vgg, Path(heads) if heads else d_heads
        why = missing(vgg, heads)
        if why:
            raise UserError(f"LPIPS: {why}")
        features = vgg16_features()
        state = torch.load(vgg, map_location="cpu", weights_only=True)
        wanted = {f"features.{k}": v for k, v in features.state_dict().items()}
        problem = state_dict_mismatch(wanted, {k: state[k] for k in wanted if k in state})
        if problem:
            raise FormatError(f"{vgg}: not torchvision's VGG16: {problem}")
        features.load_state_dict({k[len("features.") :]: state[k] for k in wanted})
        lins = nn.ModuleList(nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False)) for c in _CHANNELS)
        head_state = torch.load(heads, map_location="cpu", weights_only=True)
        wanted_heads = {f"lin{i}.model.1.weight": lins[i][1].weight for i in range(5)}
        problem = state_dict_mismatch(wanted_heads, head_state)
        if problem:
            raise FormatError(f"{heads}: not LPIPS v0.1 VGG heads: {problem}")
        for i in range(5):
            lins[i][1].weight.data.copy_(head_state[f"lin{i}.model.1.weight"])
        return cls(features, lins)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x / (torch.sqrt((x * x).sum(1, keepdim=True)) + 1e-10))
        return out

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [-1, 1] -> (N,) distances."""
        fa, fb = self._taps(a), self._taps(b)
        return sum(head((x - y) ** 2).mean((1, 2, 3)) for head, x, y in zip(self.heads, fa, fb, strict=True))

    def masked(self, fake: list[np.ndarray], real: list[np.ndarray], masks: list[np.ndarray]) -> float:
        """Mean distance of paired (H, W, 3) uint8 faces, each pixel outside its (H, W) bool mask set to 0 in both
        (differences outside the face do not count)."""
        to_t = lambda img, m: torch.from_numpy(img * m[..., None] / 127.5 - 1.0).permute(2, 0, 1).float()  # noqa: E731
        fake_t = torch.stack([to_t(x, m) for x, m in zip(fake, masks, strict=True)])
        real_t = torch.stack([to_t(x, m) for x, m in zip(real, masks, strict=True)])
        dev = self.shift.device  # --device cuda puts the network there
        return float(self(fake_t.to(dev), real_t.to(dev)).mean())
