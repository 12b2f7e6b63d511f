"""MTCNN face detection (`detector=mtcnn`, NED's detector) with the weights that ship in the facenet-pytorch wheel.

facenet-pytorch itself imports torchvision (for NMS and resizing), which would pull a CUDA build of torch;
so we only read its three weight files (`facenet_pytorch/data/{pnet,rnet,onet}.pt`, plain state dicts) and
run our own cascade: an image pyramid through P-Net (12x12 proposals), R-Net (24x24 refinement) and O-Net
(48x48, boxes + 5 landmarks), with box regression, squaring and non-maximum suppression between the stages
(thresholds 0.6 / 0.7 / 0.7, pyramid factor 0.709, as facenet-pytorch's defaults). Install the weights with
`pip install --no-deps facenet-pytorch` (done by `make setup`) or point `mtcnn_weights=DIR` at the files.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from common.checkpoint import state_dict_mismatch
from common.errors import FormatError, UserError


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), 1)


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """The trained dense layers expect (N, W, H, C) flattening (the weights come from Caffe)."""
    return x.permute(0, 3, 2, 1).contiguous().flatten(1)


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), 1)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), 1)


def default_weights_dir() -> Path | None:
    """facenet-pytorch's data folder, found without importing the package (which needs torchvision)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_nets(directory: str | Path | None = None) -> tuple[PNet, RNet, ONet]:
    d = Path(directory) if directory else default_weights_dir()
    if d is None:
        raise UserError(
            "detector=mtcnn needs MTCNN's weights: pip install --no-deps facenet-pytorch==2.6.0 (they "
            "ship inside the wheel; make setup does this), or set mtcnn_weights=DIR with "
            "pnet.pt, rnet.pt, onet.pt"
        )
    nets = []
    for name, net in (("pnet", PNet()), ("rnet", RNet()), ("onet", ONet())):
        path = d / f"{name}.pt"
        if not path.is_file():
            raise UserError(f"{path}: MTCNN weight file not found (facenet-pytorch's data folder)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        problem = state_dict_mismatch(net.state_dict(), state)
        if problem:
            raise FormatError(f"{path}: not facenet-pytorch's {name}: {problem}")
        net.load_state_dict(state)
        nets.append(net.eval())
    return tuple(nets)  # type: ignore[return-value]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (overlap = IoU, or intersection / min area)."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        denom = np.minimum(area[i], area[order[1:]]) if mode == "min" else area[i] + area[order[1:]] - inter
        order = order[1:][inter / denom <= threshold]
    return np.array(keep, dtype=np.int64)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, :4] = boxes[:, :4] + reg * np.stack([w, h, w, h], 1)
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + 0.5 * w - 0.5 * side
    out[:, 1] = boxes[:, 1] + 0.5 * h - 0.5 * side
    out[:, 2:4] = out[:, 0:2] + side[:, None]
    return out


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Resized patches (N, 3, size, size), normalised as MTCNN expects; outside the image is zero."""
    h, w = image.shape[:2]
    patches = []
    for x1, y1, x2, y2 in np.trunc(boxes[:, :4]).astype(int):
        patch = np.zeros((max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1), 3), np.float32)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2 + 1, w), min(y2 + 1, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        patches.append(cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA))
    x = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2)
    return (x - 127.5) * 0.0078125


@dataclass
class Detections:
    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2 in pixels
    probs: np.ndarray  # (N,)
    points: np.ndarray  # (N, 5, 2) eyes, nose, mouth corners


class MTCNN:
    def __init__(
        self,
        weights: str | Path | None = None,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ):
        self.pnet, self.rnet, self.onet = load_nets(weights)
        self.min_face_size, self.thresholds, self.factor = min_face_size, thresholds, factor

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> Detections:
        """Faces in one RGB uint8 image, most probable first."""
        img = image.astype(np.float32)
        h, w = img.shape[:2]
        empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        m = 12.0 / self.min_face_size
        scales, side = [], min(h, w) * m
        while side >= 12:
            scales.append(m * self.factor ** len(scales))
            side *= self.factor
        proposals = []
        for scale in scales:  # stage 1: P-Net over the pyramid
            sh, sw = int(h * scale + 1), int(w * scale + 1)
            x = torch.from_numpy(cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None]
            reg, prob = self.pnet((x - 127.5) * 0.0078125)
            score = prob[0, 1].numpy()
            ys, xs = np.nonzero(score >= self.thresholds[0])
            if not len(ys):
                continue
            q1 = np.stack([xs, ys], 1) * 2 + 1
            q2 = np.stack([xs, ys], 1) * 2 + 12
            boxes = np.concatenate([q1 / scale, q2 / scale, score[ys, xs, None], reg[0, :, ys, xs].numpy().T], 1)
            proposals.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        if not proposals:
            return empty
        boxes = np.concatenate(proposals)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        boxes = _square(_regress(boxes[:, :5], boxes[:, 5:9]))
        reg, prob = self.rnet(_crops(img, boxes, 24))  # stage 2
        keep = prob[:, 1].numpy() > self.thresholds[1]
        if not keep.any():
            return empty
        boxes = np.concatenate([boxes[keep, :4], prob[keep, 1, None].numpy()], 1)
        reg = reg[keep].numpy()
        k = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _square(_regress(boxes[k], reg[k]))
        reg, points, prob = self.onet(_crops(img, boxes, 48))  # stage 3
        keep = prob[:, 1].numpy() > self.thresholds[2]
        if not keep.any():
            return empty
        boxes = np.concatenate([boxes[keep, :4], prob[keep, 1, None].numpy()], 1)
        reg, points = reg[keep].numpy(), points[keep].numpy()
        w_, h_ = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        pts = np.stack(
            [boxes[:, None, 0] + points[:, :5] * w_[:, None] - 1, boxes[:, None, 1] + points[:, 5:] * h_[:, None] - 1],
            -1,
        )
        boxes = _regress(boxes, reg)
        k = nms(boxes[:, :4], boxes[:, 4], 0.7, "min")
        boxes, pts = boxes[k], pts[k]
        order = np.argsort(-boxes[:, 4])
        return Detections(boxes[order, :4], boxes[order, 4], pts[order])
