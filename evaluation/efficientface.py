"""Emotion CSIM (csim_emo): cosine similarity of EfficientFace (AffectNet-7) expression features between generated
faces and real faces of the target emotion, from user-placed weights (never downloaded).

Weights: `EfficientFace_Trained_on_AffectNet7.pth.tar`, the trained EfficientFace on AffectNet-7 linked from
zengqunzhao/EfficientFace's README ("Nov. 12, 2021 Update"; 63.70 % test accuracy), from
`$TORCH_HOME/hub/checkpoints/` or a path. Its layout follows that repository's main.py (8d19537, since cb08e56):
`torch.save({'state_dict': model.state_dict()})` of a `torch.nn.DataParallel` model, so the file is
{'state_dict': {'module.conv1.0.weight': …, …, 'module.fc.weight': (7, 1024), …}}, BatchNorm step counters
included. A flat state dict (the same weights re-saved, with or without `module.`) is read too.

Network: zengqunzhao/EfficientFace 8d195375fb6afe98e6e1e27f06ec6cc71eedfd18, models/EfficientFace.py
(`efficient_face()` = EfficientFace([4, 8, 4], [29, 116, 232, 464, 1024]), num_classes 7: a ShuffleNet-V2
trunk whose stage2 output, gated by models/modulator.py's Modulator (channel x spatial attention), is added to
LocalFeatureExtractor's output (four depthwise branches, one per 28 x 28 quadrant of the pooled stem).
Written here in torch with the same module and parameter names, so the file's state dict loads strictly.

Protocol followed: CDRL's evaluation code, jianmanlincjx/CDRL branch NED_CDRL
68db8a14cf9b94173c67996ca4d35f435559740d: metrics/csim.py (`calculate_csim_given_paths`), metrics/models.py
(`EfficientFace` with `x = self.fc(x)` commented out, `get_transforms`, `efficient_face`), run per emotion by
metrics/eval_crossID_driven.sh on `exp/cmp_*/real/<emotion>` vs `gen/<emotion>` (NED's aligned face crops):
- each face crop (PIL RGB) -> torchvision Resize(256) (shorter side 256, bilinear; a 256 x 256 crop is left as
  it is) -> CenterCrop(224) -> [0, 1] -> Normalize(mean=(0.57535914, 0.44928582, 0.40079932),
  std=(0.20735591, 0.18981615, 0.18132027)). These are the RAF-DB statistics of EfficientFace's main.py that CDRL
  copied; EfficientFace's test&vis/test.py lists other ones for AffectNet (0.5539…, 0.2484…) but CDRL, whose
  numbers we reproduce, does not use them;
- the network in eval mode; the feature is the 1024-d global mean of conv5 (after its BN + ReLU, so every
  feature is >= 0 and cosines lie in [0, 1]); the AffectNet-7 classifier `fc` is loaded but not applied;
- per actor: up to `--num_samples` 100 frames drawn at random (Python `random.sample`, `random.seed(1)`) from
  each side's frames of that actor, cosine similarity of every (real, generated) pair of them
  (torch `cosine_similarity(real[:, None], gen[None], dim=2).mean()`), averaged; then the mean over actors.
csim_emo does one (generated, real) set, e.g. one actor or clip; the caller averages over them. Deviations:
the draw uses NumPy's `default_rng(seed)` (real side first, then generated, as CDRL's order), not Python's
global `random` seeded 1, so the same files would not give CDRL's exact sample; our frames are the crops the
evaluation hands over (every n-th frame), not CDRL's image files.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from common.checkpoint import hub_checkpoint, load_foreign_weights, missing_weights, read_foreign_weights
from common.errors import UserError

EFFICIENTFACE_FILE = "EfficientFace_Trained_on_AffectNet7.pth.tar"
NUM_CLASSES = 7  # AffectNet-7
FEATURE_DIM = 1024
RESIZE, CROP = 256, 224  # CDRL's Resize(256) + CenterCrop(224)
MEAN = (0.57535914, 0.44928582, 0.40079932)  # CDRL's (= EfficientFace main.py's RAF-DB) normalisation
STD = (0.20735591, 0.18981615, 0.18132027)
REPEATS, WIDTHS = (4, 8, 4), (29, 116, 232, 464, 1024)  # efficient_face()
_WHAT = f"EfficientFace trained on AffectNet-7 ({EFFICIENTFACE_FILE})"


def default_path() -> Path:
    return hub_checkpoint(EFFICIENTFACE_FILE)


def missing(path: Path | None) -> str | None:
    """Why EfficientFace is not available (None = it is); names the file and where it comes from."""
    source = (
        f"EfficientFace of zengqunzhao/EfficientFace trained on AffectNet-7, {EFFICIENTFACE_FILE}: the "
        "'trained EfficientFace model' on AffectNet-7 linked from its README"
    )
    return missing_weights(Path(path) if path else default_path(), source)


def _bn_relu(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU()]


def _depthwise(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """3x3 grouped conv, one group per input channel (the original's depthwise_conv, padding 1, no bias)."""
    return nn.Conv2d(c_in, c_out, 3, stride, 1, groups=c_in, bias=False)


def _pointwise(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, bias=False)


class InvertedResidual(nn.Module):
    """ShuffleNet-V2 unit: stride 1 keeps half the channels and transforms the other half (branch2); stride 2
    concatenates a depthwise-downsampled branch1 with branch2; then the two halves are interleaved."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        half = c_out // 2
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(c_in, c_in, stride), nn.BatchNorm2d(c_in), _pointwise(c_in, half), *_bn_relu(half)
            )
        self.branch2 = nn.Sequential(
            _pointwise(c_in if stride > 1 else half, half),
            *_bn_relu(half),
            _depthwise(half, half, stride),
            nn.BatchNorm2d(half),
            _pointwise(half, half),
            *_bn_relu(half),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            keep, change = x.chunk(2, dim=1)
            out = torch.cat((keep, self.branch2(change)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        b, c, h, w = out.shape  # channel shuffle, 2 groups
        return out.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class LocalFeatureExtractor(nn.Module):
    """Four branches (conv{i}_1 stride 2, conv{i}_2; each followed by BN + ReLU), one per 28 x 28 quadrant of
    the (B, 29, 56, 56) stem output: 1 top-left, 2 bottom-left, 3 top-right, 4 bottom-right; reassembled in place."""

    QUADRANTS = ((0, 0), (1, 0), (0, 1), (1, 1))  # (row, column) of branch 1..4
    PATCH = 28

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.relu = nn.ReLU()
        for i in range(1, 5):
            setattr(self, f"conv{i}_1", _depthwise(c_in, c_out, 2))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(c_out))
            setattr(self, f"conv{i}_2", _depthwise(c_out, c_out))
            setattr(self, f"bn{i}_2", nn.BatchNorm2d(c_out))

    def branch(self, i: int, x: torch.Tensor) -> torch.Tensor:
        for step in ("1", "2"):
            x = self.relu(getattr(self, f"bn{i}_{step}")(getattr(self, f"conv{i}_{step}")(x)))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.PATCH
        out = {
            (r, c): self.branch(i, x[:, :, r * p : (r + 1) * p, c * p : (c + 1) * p])
            for i, (r, c) in enumerate(self.QUADRANTS, 1)
        }
        columns = [torch.cat((out[0, c], out[1, c]), dim=2) for c in (0, 1)]
        return torch.cat(columns, dim=3)


class Channel(nn.Module):
    """Channel gate: global average -> Linear(C, C/16) -> BN1d -> ReLU -> Linear(C/16, C), broadcast over space."""

    def __init__(self, c: int, reduction: int = 16):
        super().__init__()
        mid = c // reduction
        self.gate_c = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                gate_c_fc_0=nn.Linear(c, mid),
                gate_c_bn_1=nn.BatchNorm1d(mid),
                gate_c_relu_1=nn.ReLU(),
                gate_c_fc_final=nn.Linear(mid, c),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the original pools with a square window of the map's height: the global mean for square maps
        pooled = nn.functional.avg_pool2d(x, x.shape[2], stride=x.shape[2])
        return self.gate_c(pooled)[:, :, None, None].expand_as(x)


class Spatial(nn.Module):
    """Spatial gate: 1x1 reduce to C/16, two 3x3 convs dilated 4 (each BN + ReLU), 1x1 to one map."""

    def __init__(self, c: int, reduction: int = 16, n_dilated: int = 2, dilation: int = 4):
        super().__init__()
        mid = c // reduction
        layers = OrderedDict(
            gate_s_conv_reduce0=nn.Conv2d(c, mid, 1),
            gate_s_bn_reduce0=nn.BatchNorm2d(mid),
            gate_s_relu_reduce0=nn.ReLU(),
        )
        for i in range(n_dilated):
            layers[f"gate_s_conv_di_{i}"] = nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation)
            layers[f"gate_s_bn_di_{i}"] = nn.BatchNorm2d(mid)
            layers[f"gate_s_relu_di_{i}"] = nn.ReLU()
        layers["gate_s_conv_final"] = nn.Conv2d(mid, 1, 1)
        self.gate_s = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_s(x).expand_as(x)


class Modulator(nn.Module):
    """x * sigmoid(channel gate * spatial gate)."""

    def __init__(self, c: int):
        super().__init__()
        self.channel_att, self.spatial_att = Channel(c), Spatial(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.channel_att(x) * self.spatial_att(x)) * x


class EfficientFaceNet(nn.Module):
    """The original's EfficientFace([4, 8, 4], [29, 116, 232, 464, 1024], num_classes): (B, 3, 224, 224)
    normalised RGB -> (B, 1024) features (`forward`) or (B, num_classes) logits (`logits`)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, WIDTHS[0], 3, 2, 1, bias=False), *_bn_relu(WIDTHS[0]))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = WIDTHS[0]
        for name, n, c_out in zip(("stage2", "stage3", "stage4"), REPEATS, WIDTHS[1:4], strict=True):
            units = [InvertedResidual(c_in, c_out, 2)] + [InvertedResidual(c_out, c_out, 1) for _ in range(n - 1)]
            setattr(self, name, nn.Sequential(*units))
            c_in = c_out
        self.local = LocalFeatureExtractor(WIDTHS[0], WIDTHS[1])
        self.modulator = Modulator(WIDTHS[1])
        self.conv5 = nn.Sequential(_pointwise(c_in, WIDTHS[4]), *_bn_relu(WIDTHS[4]))
        self.fc = nn.Linear(WIDTHS[4], num_classes)  # kept so that our keys are the file's; features skip it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.modulator(self.stage2(x)) + self.local(x)
        return self.conv5(self.stage4(self.stage3(x))).mean((2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward(x))


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The network's state dict from the released file ({'state_dict': {'module.…': …}}) or a flat re-save."""
    return read_foreign_weights(path, _WHAT, inner="state_dict")


def center_crop_box(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision CenterCrop's (top, left)."""
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def resize_short_side(face: np.ndarray, short: int = RESIZE) -> np.ndarray:
    """torchvision Resize(short) on a PIL image: PIL bilinear (antialiased when shrinking), the longer side
    truncated; an image whose shorter side is already `short` is returned as it is."""
    h, w = face.shape[:2]
    if min(h, w) == short:
        return face
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)  # PIL's (width, height)
    return np.asarray(Image.fromarray(face).resize(size, Image.BILINEAR))


class EfficientFace(nn.Module):
    def __init__(self, net: EfficientFaceNet):
        super().__init__()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> EfficientFace:
        """The network with the weights of `path` (default: default_path()); one-line UserError / FormatError
        naming the file when it is missing or holds other keys or shapes."""
        path = Path(path) if path else default_path()
        why = missing(path)
        if why:
            raise UserError(f"EfficientFace: {why}")
        return cls(load_foreign_weights(EfficientFaceNet(), read_state(path), path, _WHAT)).to(device)

    def preprocess(self, faces: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB -> (B, 3, 224, 224) float: Resize(256), CenterCrop(224), ToTensor, Normalize."""
        crops = []
        for face in faces:
            face = resize_short_side(face)
            top, left = center_crop_box(*face.shape[:2], CROP)
            crops.append(face[top : top + CROP, left : left + CROP])
        x = torch.from_numpy(np.stack(crops)).to(self.mean.device).permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    @torch.no_grad()
    def features(self, faces: np.ndarray, batch: int = 64) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB face crops of any size (the evaluation's aligned 256 x 256 crops need no resize)
        -> (N, 1024) float32 EfficientFace features (CDRL's: the global mean of conv5, before the classifier)."""
        faces = np.asarray(faces)
        if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 RGB faces, got {faces.dtype} {faces.shape}")
        out = [np.zeros((0, FEATURE_DIM), np.float32)]
        for start in range(0, len(faces), batch):
            out.append(self.net(self.preprocess(faces[start : start + batch])).float().cpu().numpy())
        return np.concatenate(out)


def sample_indices(n: int, max_frames: int, rng: np.random.Generator) -> np.ndarray:
    """All of range(n) when n <= max_frames, else max_frames distinct indices drawn at random (sorted)."""
    if n <= max_frames:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_frames, replace=False))


def csim_emo_indices(n_generated: int, n_real: int, max_pairs: int = 100, seed: int = 0) -> tuple[np.ndarray, ...]:
    """The frames csim_emo uses: (generated indices, real indices), at most `max_pairs` of each; the real side
    is drawn first, as CDRL does."""
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    rng = np.random.default_rng(seed)
    real = sample_indices(n_real, max_pairs, rng)
    return sample_indices(n_generated, max_pairs, rng), real


def csim_emo(generated_feats: np.ndarray, real_feats: np.ndarray, max_pairs: int = 100, seed: int = 0) -> float:
    """Emotion CSIM of one generated set vs the real target-emotion set (CDRL's metrics/csim.py for one actor):
    up to `max_pairs` frames drawn from each side (CDRL's --num_samples 100: a cap on frames per side, so up to
    max_pairs**2 pairs), the mean cosine similarity over every (generated, real) pair of them. A set-to-set
    measure: it is 1 only when all features point one way, not for two equal sets of different features. A
    zero row counts as similarity 0 (as torch's cosine_similarity with its eps). Deterministic for a seed."""
    g, r = np.asarray(generated_feats, np.float64), np.asarray(real_feats, np.float64)
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1] or not len(g) or not len(r):
        raise ValueError(f"expected two non-empty (N, D) feature arrays of one D, got {g.shape} and {r.shape}")
    gi, ri = csim_emo_indices(len(g), len(r), max_pairs, seed)
    g, r = g[gi], r[ri]
    norms = np.linalg.norm(g, axis=1)[:, None] * np.linalg.norm(r, axis=1)[None]
    return float((g @ r.T / np.maximum(norms, 1e-12)).mean())
