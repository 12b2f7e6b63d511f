"""ArcFace identity features from user-placed weights (never downloaded), for FAD and CSIM.

Weights: `resnet18_110.pth` of ronghuaiyang/arcface-pytorch (its README's pretrained model: `resnet_face18`
of models/resnet.py with use_se=False; saved from a DataParallel model, so keys may start with `module.`),
from `$TORCH_HOME/hub/checkpoints/` or a path. An InsightFace arcface_torch `backbone.pth` (iresnet18/34/50/
100/200 of recognition/arcface_torch/backbones/iresnet.py) given as a path is accepted too; the file's keys
pick the network and its depth.

Protocol followed (resnet18_110.pth): CDRL's evaluation code, jianmanlincjx/CDRL branch NED_CDRL
(68db8a1), metrics/models.py (`resnet_face18`, `ResNetFace.get_transforms`) with metrics/fid.py run as
`--model resnet_face18` by metrics/eval_crossID_driven.sh (the numbers its paper reports as FAD):
- each face crop -> grayscale (PIL 'L', ITU-R 601-2 luma) -> shorter side resized to 164 (bilinear,
  antialiased like PIL) -> centre crop 128 -> [-1, 1];
- the network in eval mode, its 512-d bn5 output; no flip concatenation (ronghuaiyang's test.py adds the
  mirrored image's features for LFW, CDRL does not), so features are not mirror-invariant;
- FAD = Fréchet distance (pytorch-fid formula) between the features of the generated faces of an emotion
  and those of the real faces of that emotion (`exp/.../gen/<emotion>` vs `real/<emotion>`).
CSIM deviates on purpose: CDRL's metrics/csim.py uses EfficientFace (an AffectNet expression net) and
averages cosine similarity over all pairs of up to 100 random real / generated frames per actor. Here CSIM
is the identity measure: cosine similarity of ArcFace features of each generated frame and the source
frame of the same index, averaged.
InsightFace backbones follow arcface_torch's inference.py: the whole crop resized to 112x112 RGB (antialiased
here; its cv2 resize is not, the same for 112 crops), [-1, 1], the 512-d `features` output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoint import hub_checkpoint, load_foreign_weights, missing_weights, read_foreign_weights
from common.errors import UserError
from evaluation.metrics import frechet_distance_of

ARCFACE_FILE = "resnet18_110.pth"
GRAY_RESIZE, GRAY_CROP = 164, 128  # CDRL's Resize(164) + CenterCrop(128) before resnet_face18
IRESNET_SIZE = 112
WIDTHS = (64, 128, 256, 512)
IRESNET_DEPTHS = {
    (2, 2, 2, 2): "iresnet18",
    (3, 4, 6, 3): "iresnet34",
    (3, 4, 14, 3): "iresnet50",
    (3, 13, 30, 3): "iresnet100",
    (6, 26, 60, 6): "iresnet200",
}
_LUMA = (0.299, 0.587, 0.114)  # PIL's RGB -> 'L'


def default_path() -> Path:
    return hub_checkpoint(ARCFACE_FILE)


def missing(path: Path | None) -> str | None:
    """Why ArcFace is not available (None = it is); names the file and where it comes from."""
    source = (
        f"ArcFace ResNet18 of ronghuaiyang/arcface-pytorch, {ARCFACE_FILE}: the pretrained model linked from "
        "its README; or an InsightFace arcface_torch backbone.pth given as a path"
    )
    return missing_weights(Path(path) if path else default_path(), source)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class IRBlock(nn.Module):
    """ronghuaiyang's IRBlock without SE: BN, conv, BN, PReLU, strided conv, BN, + shortcut, the same PReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn0, self.conv1, self.bn1 = nn.BatchNorm2d(c_in), _conv3x3(c_in, c_in), nn.BatchNorm2d(c_in)
        self.prelu = nn.PReLU()  # one slope, shared by both activations of the block
        self.conv2, self.bn2 = _conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        return self.prelu(out + (x if self.downsample is None else self.downsample(x)))


class IBasicBlock(nn.Module):
    """InsightFace's IBasicBlock: BN, conv, BN, PReLU (per channel), strided conv, BN, + shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1, self.conv1, self.bn2 = nn.BatchNorm2d(c_in), _conv3x3(c_in, c_out), nn.BatchNorm2d(c_out)
        self.prelu = nn.PReLU(c_out)
        self.conv2, self.bn3 = _conv3x3(c_out, c_out, stride), nn.BatchNorm2d(c_out)
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


def _stages(block: type[nn.Module], depths: tuple[int, ...], first_stride: int) -> list[nn.Sequential]:
    stages, c_in = [], WIDTHS[0]
    for i, (n, c_out) in enumerate(zip(depths, WIDTHS, strict=True)):
        stride = first_stride if i == 0 else 2
        stages.append(nn.Sequential(block(c_in, c_out, stride), *[block(c_out, c_out) for _ in range(n - 1)]))
        c_in = c_out
    return stages


class ResNetFace18(nn.Module):
    """ronghuaiyang's resnet_face18(use_se=False): (B, 1, 128, 128) in [-1, 1] -> (B, 512)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.prelu = nn.Conv2d(1, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        self.layer1, self.layer2, self.layer3, self.layer4 = _stages(IRBlock, (2, 2, 2, 2), first_stride=1)
        self.bn4 = nn.BatchNorm2d(512)  # the dropout that follows is the identity in eval mode: left out
        self.fc5, self.bn5 = nn.Linear(512 * 8 * 8, 512), nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.bn4(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        return self.bn5(self.fc5(x.flatten(1)))


class IResNet(nn.Module):
    """InsightFace arcface_torch iresnet: (B, 3, 112, 112) RGB in [-1, 1] -> (B, 512)."""

    def __init__(self, depths: tuple[int, int, int, int]):
        super().__init__()
        self.conv1, self.bn1, self.prelu = nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        self.layer1, self.layer2, self.layer3, self.layer4 = _stages(IBasicBlock, depths, first_stride=2)
        self.bn2 = nn.BatchNorm2d(512)
        self.fc, self.features = nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.bn2(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        return self.features(self.fc(x.flatten(1)))


def _network(state: dict) -> tuple[nn.Module, str]:
    """The network the checkpoint's keys describe, and its name for messages."""
    if "features.running_mean" not in state:
        return ResNetFace18(), "ronghuaiyang's ArcFace resnet_face18 (use_se=False)"
    depths = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    name = IRESNET_DEPTHS.get(depths, f"iresnet with blocks {depths}")
    return IResNet(depths), f"InsightFace arcface_torch {name}"


def _resize_short_side(x: torch.Tensor, short: int) -> torch.Tensor:
    """torchvision Resize(short) on a PIL image: shorter side -> short, longer side truncated, antialiased."""
    h, w = x.shape[-2:]
    size = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
    return x[..., top : top + size, left : left + size]


class ArcFace(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.eval()
        self.gray = isinstance(net, ResNetFace18)
        self.register_buffer("luma", torch.tensor(_LUMA).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> ArcFace:
        path = Path(path) if path else default_path()
        why = missing(path)
        if why:
            raise UserError(f"ArcFace: {why}")
        state = read_foreign_weights(path, "an ArcFace state dict")
        net, name = _network(state)
        return cls(load_foreign_weights(net, state, path, name)).to(device)

    def preprocess(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB -> the network's input: (B, 1, 128, 128) or (B, 3, 112, 112) in [-1, 1]."""
        x = faces.permute(0, 3, 1, 2).float()
        if self.gray:
            # PIL keeps 8-bit values after each step, hence the rounding
            x = (x * self.luma).sum(1, keepdim=True).round()
            x = _center_crop(_resize_short_side(x, GRAY_RESIZE).round().clamp(0, 255), GRAY_CROP)
        else:
            x = F.interpolate(x, size=(IRESNET_SIZE, IRESNET_SIZE), mode="bilinear", antialias=True)
        return x / 127.5 - 1.0

    @torch.no_grad()
    def embed(self, faces: np.ndarray, batch: int = 64) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB face crops -> (N, 512) float32 ArcFace features (not unit-normalised)."""
        faces = np.asarray(faces)
        if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 RGB faces, got {faces.dtype} {faces.shape}")
        device = self.luma.device
        out = [
            self.net(self.preprocess(torch.tensor(faces[i : i + batch], device=device))).float().cpu()
            for i in range(0, len(faces), batch)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, 512), np.float32)


def fad(fake: np.ndarray, real: np.ndarray) -> float:
    """Fréchet ArcFace Distance of two feature sets (N, D) and (M, D), N, M >= 2: generated vs real faces."""
    if np.shape(fake)[1:] != np.shape(real)[1:]:
        raise ValueError(f"feature sets of different shapes {np.shape(fake)} and {np.shape(real)}")
    return frechet_distance_of(fake, real)


def csim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of paired rows of (N, D) features (a zero row counts as similarity 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or not len(a):
        raise ValueError(f"expected two (N, D) feature arrays of one shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(((a * b).sum(1) / np.maximum(norms, 1e-12)).mean())
