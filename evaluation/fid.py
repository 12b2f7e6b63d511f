"""FID with pytorch-fid's Inception (pool3, 2048-d) from a user-placed weight file; never downloaded.

The file is `pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's release `fid_weights`: the TensorFlow FID
Inception graph ported to torchvision's InceptionV3 layout, 1008 logits, no aux head), read from
`$TORCH_HOME/hub/checkpoints/` or a path. Our module reproduces that layout in plain torch, so its state dict
keys are the file's (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_mean`, …, `fc.weight`), and the
FID variants of the blocks: TF's average pool leaves the zero padding out of its mean, and the last block
(Mixed_7c) max-pools its pool branch. Input as pytorch-fid feeds uint8 images: [0, 1], bilinear resize to
299 x 299 (align_corners=False), then 2x - 1.
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

FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
INPUT_SIZE = 299
FEATURE_DIM = 2048
_TF_CLASSES = 1008  # the TF graph's logits: the fc layer is unused but tells this file from torchvision's (1000)
_MIXED = tuple(f"Mixed_{n}" for n in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"))


def default_path() -> Path:
    return hub_checkpoint(FID_FILE)


def missing(path: Path | None) -> str | None:
    """Why FID is not available (None = it is); names the file and where it comes from."""
    source = "pytorch-fid's FID Inception weights, github.com/mseitzer/pytorch-fid releases"
    return missing_weights(Path(path) if path else default_path(), source)


class ConvBN(nn.Module):
    """Conv without bias, BatchNorm (TF's eps 1e-3), ReLU; the `conv` / `bn` names are the checkpoint's."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow's, divides by the number of real (unpadded) pixels."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block (Mixed_5b/c/d): 1x1, 5x5, double 3x3 and pooled branches -> 224 + pool_features channels."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(c_in, 64, 1)
        self.branch5x5_1 = ConvBN(c_in, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))], 1)


class BlockB(nn.Module):
    """35 -> 17 reduction (Mixed_6a): strided 3x3, strided double 3x3, max pool -> 480 + c_in channels."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = ConvBN(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17x17 block (Mixed_6b..e) with factorised 7x7 convolutions -> 768 channels."""

    def __init__(self, c_in: int, c7: int):
        super().__init__()
        self.branch1x1 = ConvBN(c_in, 192, 1)
        self.branch7x7_1 = ConvBN(c_in, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(c_in, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = conv(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))], 1)


class BlockD(nn.Module):
    """17 -> 8 reduction (Mixed_7a): strided 3x3, 7x7-then-strided-3x3, max pool -> 512 + c_in channels."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(c_in, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(c_in, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8x8 block (Mixed_7b/c) with split 1x3 / 3x1 branches -> 2048 channels.

    `max_pool`: the FID graph's Mixed_7c max-pools its pool branch (Mixed_7b averages, TF-style).
    """

    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(c_in, 320, 1)
        self.branch3x3_1 = ConvBN(c_in, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(c_in, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(s),
                self.branch3x3_2b(s),
                self.branch3x3dbl_3a(d),
                self.branch3x3dbl_3b(d),
                self.branch_pool(pooled),
            ],
            1,
        )


def to_inception_input(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, 299, 299) float32 in [-1, 1], as pytorch-fid prepares images."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 RGB images, got {images.shape} {images.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


class FIDInception(nn.Module):
    """pytorch-fid's FID InceptionV3 up to the final average pool (pool3)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, pool_features=32)
        self.Mixed_5c = BlockA(256, pool_features=64)
        self.Mixed_5d = BlockA(288, pool_features=64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, c7=128)
        self.Mixed_6c = BlockC(768, c7=160)
        self.Mixed_6d = BlockC(768, c7=160)
        self.Mixed_6e = BlockC(768, c7=192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, max_pool=False)
        self.Mixed_7c = BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, _TF_CLASSES)  # kept so that our keys are the file's; features() skips it
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> FIDInception:
        """The network with the weights of `path` (default: default_path()); FormatError for any other file."""
        path = Path(path) if path else default_path()
        why = missing(path)
        if why:
            raise UserError(f"FID: {why}")
        state = read_foreign_weights(path, f"pytorch-fid's FID Inception ({FID_FILE})")
        return load_foreign_weights(cls(), state, path, f"pytorch-fid's FID Inception ({FID_FILE})").to(device)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 299, 299) in [-1, 1] -> (B, 2048) averaged Mixed_7c activations."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in _MIXED:
            x = getattr(self, name)(x)
        return x.mean((2, 3))

    @torch.no_grad()
    def features(self, images: np.ndarray, batch: int = 32) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, 2048) float64 pool3 features (non-negative: post-ReLU means)."""
        device = self.fc.weight.device
        out = [np.zeros((0, FEATURE_DIM))]
        for start in range(0, len(images), batch):
            x = to_inception_input(images[start : start + batch]).to(device)
            out.append(self.pool3(x).double().cpu().numpy())
        return np.concatenate(out)


def fid(fake: np.ndarray, real: np.ndarray) -> float:
    """FID of two (N, 2048) feature sets (each N >= 2): Fréchet distance of their Gaussian fits."""
    return frechet_distance_of(fake, real)
