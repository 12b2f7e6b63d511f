"""Encoders of the SCMCL metric: audio (raw waveform or log-mel context), visual (small in-repo ResNet on
aligned mouth/face crops) and expression windows, each to a tanh-bounded embedding; and the affine map φ
that puts visual distances on the audio scale. Sizes are named presets (`ned`-like `base`, and `tiny`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.errors import UserError
from manipulator.expr_norm import Normaliser


@dataclass(frozen=True)
class EncoderSize:
    audio_layers: int
    audio_channels: tuple[int, ...]  # channels per stage of the 1-D conv stack
    visual_channels: tuple[int, ...]  # ResNet stage widths
    expr_channels: int
    mel_channels: int


SIZES = {
    "base": EncoderSize(14, (64, 128, 256, 512), (64, 128, 256, 512), 256, 64),  # LSCMC's audio stack
    "small": EncoderSize(10, (32, 64, 128, 256), (32, 64, 128, 128), 128, 32),  # CPU experiments
    "tiny": EncoderSize(8, (16, 32, 64, 64), (16, 32, 64, 64), 64, 16),
}


def _stage_channels(layer: int, n_layers: int, stages: tuple[int, ...]) -> int:
    return stages[min(layer * len(stages) // n_layers, len(stages) - 1)]


class RawAudioEncoder(nn.Module):
    """LSCMC's raw-waveform encoder: N x [Conv1d k3, BN, ReLU], stride 2 on every other layer, mean over
    time, Linear, tanh. Input (B, n_samples) float in [-1, 1]."""

    def __init__(self, size: EncoderSize, dim: int):
        super().__init__()
        layers, c_in = [], 1
        for i in range(size.audio_layers):
            c_out = _stage_channels(i, size.audio_layers, size.audio_channels)
            layers += [
                nn.Conv1d(c_in, c_out, 3, stride=2 if i % 2 == 0 else 1, padding=1, bias=False),
                nn.BatchNorm1d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, dim)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.net(wav[:, None]).mean(dim=-1)))


class MelAudioEncoder(nn.Module):
    """Log-mel context window (B, n_mels, n_hops) -> conv2d stack -> pooled -> Linear -> tanh."""

    def __init__(self, size: EncoderSize, dim: int):
        super().__init__()
        c = size.mel_channels
        self.net = nn.Sequential(
            *[
                m
                for c_in, c_out in ((1, c), (c, 2 * c), (2 * c, 4 * c), (4 * c, 4 * c))
                for m in (
                    nn.Conv2d(c_in, c_out, 3, stride=(2, 1) if c_in != 1 else 1, padding=1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                )
            ]
        )
        self.head = nn.Linear(4 * c, dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.net(mel[:, None]).mean(dim=(-1, -2))))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class VisualEncoder(nn.Module):
    """A ResNet-18-shaped network (2 basic blocks per stage) for (B, 3, H, W) crops in [0, 1]."""

    def __init__(self, size: EncoderSize, dim: int):
        super().__init__()
        c0 = size.visual_channels[0]
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, 1, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True))
        blocks, c_in = [], c0
        for i, c in enumerate(size.visual_channels):
            blocks += [BasicBlock(c_in, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)]
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(img * 2.0 - 1.0))
        return torch.tanh(self.head(x.mean(dim=(-1, -2))))


class ExprEncoder(nn.Module):
    """The later SCMCL code's 3DMM branch, over a short window: (B, T_window, D) -> conv1d over time."""

    def __init__(self, size: EncoderSize, dim: int, expr_dim: int):
        super().__init__()
        c = size.expr_channels
        self.net = nn.Sequential(
            nn.Conv1d(expr_dim, c, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv1d(c, c, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv1d(c, c, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.head = nn.Linear(c, dim)

    def forward(self, expr: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.net(expr.transpose(1, 2)).mean(dim=-1)))


class AffineScale(nn.Module):
    """φ(d) = w·d + b, mapping visual distances onto the audio distance scale (SCMCL's ScaleLayer)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return self.weight * d + self.bias


def build_encoders(
    modalities: list[str], size_name: str, dim: int, expr_dim: int, audio_kind: str
) -> dict[str, nn.Module]:
    """The encoders for the requested modalities plus φ (one per visual modality), by name."""
    size = SIZES[size_name]
    nets: dict[str, nn.Module] = {}
    for m in modalities:
        if m == "audio":
            nets[m] = RawAudioEncoder(size, dim) if audio_kind == "raw" else MelAudioEncoder(size, dim)
        elif m == "visual":
            nets[m] = VisualEncoder(size, dim)
        elif m == "expr":
            nets[m] = ExprEncoder(size, dim, expr_dim)
        else:
            raise ValueError(f"unknown modality {m!r}")
        if m != "audio":
            nets[f"phi_{m}"] = AffineScale()
    return nets


def _newest(run_dir) -> tuple[Path, dict]:
    path = latest_checkpoint(Path(run_dir) / "checkpoints")
    if path is None:
        raise UserError(f"{run_dir}: no metric checkpoint; train the metric first (python -m manipulator.metric.train)")
    return path, load_checkpoint(path)


def stored_nets(run_dir) -> list[str]:
    """Names of the nets (encoders, `phi_*`) in the newest checkpoint of a metric run."""
    return sorted(_newest(run_dir)[1]["nets"])


def phi_trained(ckpt: dict, modality: str) -> bool:
    """Whether the checkpoint's φ of `modality` was trained: recorded by the metric's training (`phi_trained`);
    for checkpoints older than that record, inferred from the config (affine consistency, and the checkpoint's
    step past `consistency_start`)."""
    recorded = ckpt["extra"].get("phi_trained")
    if recorded is not None:
        return bool(recorded.get(modality, False))
    cfg = ckpt["config"]
    return cfg.get("consistency") == "affine" and int(ckpt["step"]) > int(cfg.get("consistency_start", 0))


def stored_normaliser(run_dir) -> Normaliser:
    """The expression normaliser the newest checkpoint of a metric run was trained with (its expression
    encoder's units). Runs from before it was recorded used their dataset's statistics: read from there."""
    path, ckpt = _newest(run_dir)
    norm = Normaliser.from_extra(ckpt["extra"])
    if norm is not None:
        return norm
    data_dir = Path(ckpt["config"]["data_dir"])
    if not data_dir.is_dir():
        raise UserError(f"{path}: records no expression normaliser and its dataset {data_dir} is not here; retrain it")
    return Normaliser.from_index(data_dir)


def load_metric(run_dir, names: list[str], device: torch.device | str = "cpu") -> tuple[dict[str, nn.Module], dict]:
    """Named nets (encoders, `phi_*`) from the newest checkpoint of a metric run, frozen in eval mode,
    and the run's config (plain data). Used by the index, the evaluation and the SCMCL terms. A `phi_*` that
    was never trained (softmax or no consistency, or a run stopped before `consistency_start`) is refused:
    it is the identity, which would put visual distances on the audio scale by accident."""
    path, ckpt = _newest(run_dir)
    cfg = ckpt["config"]
    missing = [n for n in names if n not in ckpt["nets"]]
    if missing:
        raise UserError(f"{path}: this metric run has no {', '.join(missing)} (modalities {cfg['modalities']})")
    for name in names:
        if name.startswith("phi_") and not phi_trained(ckpt, name[4:]):
            raise UserError(
                f"{path}: its {name} was never trained (consistency={cfg.get('consistency')}, "
                f"consistency_start={cfg.get('consistency_start')}, step {ckpt['step']}); the correlation "
                "loss needs a metric trained with consistency=affine past consistency_start"
            )
    modalities = [n for n in names if not n.startswith("phi_")] + [n[4:] for n in names if n.startswith("phi_")]
    built = build_encoders(
        sorted(set(modalities)),
        cfg["size"],
        cfg["embed_dim"],
        ckpt["extra"].get("expr_dim", 51),
        cfg["inputs"]["audio_kind"],
    )
    nets = {}
    for name in names:
        built[name].load_state_dict(ckpt["nets"][name])
        nets[name] = built[name].to(device).eval().requires_grad_(False)
    return nets, cfg
