"""FSGAN face segmentation (`segmentation=fsgan`), as NED uses it, from the user's licensed weight file.

The network is FSGAN's 3-class UNet (background, face, hair; filters 64…1024, BatchNorm in the encoder,
bilinear upsampling with a 1x1 projection, no BatchNorm in the decoder), written here with the parameter
names of `lfw_figaro_unet_256_2_0_segmentation_v1.pth` ({'state_dict': …, 'arch': …}), loaded strictly. The
original declares the 1x1 projection as an `nn.Conv1d` with a (1, 1) kernel, which current PyTorch no longer
runs on images; a 1x1 `Conv2d` with the same name and weight shape is equivalent.

NED's use: 256x256 RGB in [0, 1] (no normalisation), face = argmax == 1, soft erosion (kernel 21, threshold
0.6) keeping its hard output, then the largest connected component; an empty mask reuses the previous one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoint import state_dict_mismatch
from common.errors import FormatError, UserError

WEIGHTS_FILE = "lfw_figaro_unet_256_2_0_segmentation_v1.pth"
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "segmentation" / WEIGHTS_FILE
SOURCE = "FSGAN (https://github.com/YuvalNirkin/fsgan, download_fsgan_models.py; request form)"
FACE_CLASS = 1


class UnetConv2(nn.Module):
    def __init__(self, c_in: int, c_out: int, batchnorm: bool):
        super().__init__()

        def block(a: int, b: int) -> nn.Sequential:
            if batchnorm:
                return nn.Sequential(nn.Conv2d(a, b, 3, 1, 1), nn.BatchNorm2d(b), nn.ReLU(True))
            return nn.Sequential(nn.Conv2d(a, b, 3, 1, 1), nn.ReLU(True))

        self.conv1, self.conv2 = block(c_in, c_out), block(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UnetUp(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = UnetConv2(c_in, c_out, False)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)
        self.conv1d = nn.Conv2d(c_in, c_out, 1)  # `nn.Conv1d(c_in, c_out, (1, 1))` in the original

    def forward(self, skip: torch.Tensor, deeper: torch.Tensor) -> torch.Tensor:
        up = self.conv1d(self.up(deeper))
        offset = up.shape[2] - skip.shape[2]
        skip = F.pad(skip, 2 * [offset // 2, offset // 2])
        return self.conv(torch.cat([skip, up], 1))


class UNet(nn.Module):
    def __init__(self, n_classes: int = 3, feature_scale: int = 1):
        super().__init__()
        f = [c // feature_scale for c in (64, 128, 256, 512, 1024)]
        self.conv1, self.conv2 = UnetConv2(3, f[0], True), UnetConv2(f[0], f[1], True)
        self.conv3, self.conv4 = UnetConv2(f[1], f[2], True), UnetConv2(f[2], f[3], True)
        self.center = UnetConv2(f[3], f[4], True)
        self.up_concat4, self.up_concat3 = UnetUp(f[4], f[3]), UnetUp(f[3], f[2])
        self.up_concat2, self.up_concat1 = UnetUp(f[2], f[1]), UnetUp(f[1], f[0])
        self.final = nn.Conv2d(f[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.conv1(x)
        c2 = self.conv2(F.max_pool2d(c1, 2))
        c3 = self.conv3(F.max_pool2d(c2, 2))
        c4 = self.conv4(F.max_pool2d(c3, 2))
        center = self.center(F.max_pool2d(c4, 2))
        up = self.up_concat4(c4, center)
        up = self.up_concat3(c3, up)
        up = self.up_concat2(c2, up)
        return self.final(self.up_concat1(c1, up))


def missing_weights_message(path: Path) -> str:
    return (
        f"segmentation=fsgan needs FSGAN's segmentation weights, not found at {path}; get {WEIGHTS_FILE} from "
        f"{SOURCE} and place it there (or set segmentation_weights=PATH), or use segmentation=hull"
    )


def load_unet(path: str | Path) -> UNet:
    path = Path(path)
    if not path.is_file():
        raise UserError(missing_weights_message(path))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise FormatError(f"{path}: not a readable PyTorch checkpoint ({exc.__class__.__name__}: {exc})") from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if state is None:
        raise FormatError(f"{path}: expected a dict with 'state_dict' (FSGAN's checkpoint format)")
    net = UNet()
    problem = state_dict_mismatch(net.state_dict(), state)
    if problem:
        raise FormatError(f"{path}: not FSGAN's segmentation UNet: {problem}")
    net.load_state_dict(state, strict=True)
    return net.eval()


def soft_erosion_kernel(size: int = 21) -> np.ndarray:
    """NED/FSGAN SoftErosion kernel: a cone (max distance - distance), normalised to sum 1."""
    r = size // 2
    yy, xx = np.mgrid[:size, :size]
    dist = np.sqrt((xx - r) ** 2 + (yy - r) ** 2)
    kernel = dist.max() - dist
    return (kernel / kernel.sum()).astype(np.float32)


def face_mask(labels: np.ndarray, previous: np.ndarray | None = None, kernel: int = 21, threshold: float = 0.6):
    """Class map (H, W) -> uint8 face mask: soft erosion (hard output), largest connected component."""
    face = (labels == FACE_CLASS).astype(np.float32)
    eroded = cv2.filter2D(face, -1, soft_erosion_kernel(kernel), borderType=cv2.BORDER_CONSTANT) >= threshold
    n, comp, stats, _ = cv2.connectedComponentsWithStats(eroded.astype(np.uint8), connectivity=8)
    if n <= 1:
        return previous.copy() if previous is not None else np.zeros(labels.shape, np.uint8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return ((comp == largest) * 255).astype(np.uint8)


class FaceSegmenter:
    def __init__(self, weights: str | Path = "", device: str = "cpu", batch_size: int = 8):
        self.net = load_unet(weights or DEFAULT_WEIGHTS).to(device)
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def labels(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> (N, S, S) class maps (run at 256x256, as trained)."""
        size = crops.shape[1]
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(255).to(self.device)
        if size != 256:
            x = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
        logits = self.net(x)
        if size != 256:
            logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
        return logits.argmax(1).cpu().numpy()

    def masks(self, crops: Iterable[np.ndarray]) -> list[np.ndarray]:
        """Face masks (uint8 0/255) of consecutive frames; an empty one repeats the previous frame's."""
        out: list[np.ndarray] = []
        batch: list[np.ndarray] = []

        def flush():
            for lab in self.labels(np.stack(batch)):
                out.append(face_mask(lab, out[-1] if out else None))
            batch.clear()

        for crop in crops:
            batch.append(crop)
            if len(batch) == self.batch_size:
                flush()
        if batch:
            flush()
        return out
