"""Emotion classifier for the evaluation, trained only on the original clips of the train split:

  python -m evaluation.classifier --data data/processed/toy_mead [--out runs/eval/classifier] [--steps 600]

Input: windows of the tracked expression sequence (face.npz `expr` without the mouth channel, normalised
with the dataset's statistics); a clip's prediction is the mean of its windows' probabilities. The model
is a small 1-D conv net. It is kept apart from everything the methods train: its own run dir, its own
seed, and it records the source videos it was trained on and refuses to score any of them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.cli import parse_cli
from common.config import arg
from common.errors import UserError, cli_entry
from common.formats import Clip, expression_channels, read_clip_index
from common.fsutil import atomic_write_bytes
from manipulator.expr_norm import Normaliser

WINDOW = 15
FILE = "classifier.pt"


@dataclass
class ClassifierConfig:
    data: str = arg(help="preprocessed dataset (its train split is used)")
    out: str = arg("runs/eval/classifier", "run dir for classifier.pt and info.json")
    steps: int = arg(600, "training steps")


class ExprClassifier(nn.Module):
    def __init__(self, expr_dim: int, n_classes: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(expr_dim - 1, width, 3, padding=1),
            nn.GELU(),
            nn.Conv1d(width, width, 3, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(width, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) normalised expr windows (channel 0 is dropped: it is speech, not emotion)."""
        return self.net(expression_channels(x).transpose(1, 2))


def windows(expr: np.ndarray, size: int = WINDOW, hop: int = 5) -> np.ndarray:
    t = len(expr)
    if t < size:
        expr = np.concatenate([expr, np.repeat(expr[-1:], size - t, 0)])
        t = size
    starts = np.arange(0, t - size + 1, hop)
    return np.stack([expr[s : s + size] for s in starts]).astype(np.float32)


class EmotionClassifier:
    def __init__(
        self, net: ExprClassifier, norm: Normaliser, emotions: list[str], trained_on: set[str], checkpoint: str = ""
    ):
        self.net, self.norm, self.emotions, self.trained_on = net.eval(), norm, emotions, trained_on
        self.checkpoint = checkpoint  # the file it was loaded from (the evaluation's cache stamps its content)

    @classmethod
    def load(cls, run_dir: str | Path) -> EmotionClassifier:
        path = Path(run_dir) / FILE
        if not path.is_file():
            raise UserError(f"{path}: no emotion classifier; train it (python -m evaluation.classifier --data …)")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        net = ExprClassifier(len(ckpt["expr_mean"]), len(ckpt["emotions"]))
        net.load_state_dict(ckpt["state"])
        norm = Normaliser(np.array(ckpt["expr_mean"], np.float32), np.array(ckpt["expr_std"], np.float32))
        return cls(net, norm, list(ckpt["emotions"]), set(ckpt["trained_on"]), str(path))

    def check_unseen(self, source_video: str | Path) -> None:
        if str(Path(source_video).resolve()) in self.trained_on:
            raise UserError(
                f"{source_video}: the emotion classifier was trained on this video; evaluate on "
                "clips it has not seen (another split)"
            )

    @torch.no_grad()
    def probabilities(self, expr: np.ndarray) -> np.ndarray:
        """Raw expr (T, D) -> (n_emotions,) mean window probabilities."""
        x = torch.from_numpy(windows(self.norm.forward(expr)))
        return torch.softmax(self.net(x), 1).mean(0).numpy()

    def predict(self, expr: np.ndarray, source_video: str | Path) -> str:
        self.check_unseen(source_video)
        return self.emotions[int(np.argmax(self.probabilities(expr)))]


def train(data_dir: Path, out: Path, steps: int = 600, seed: int = 1234) -> dict:
    index = read_clip_index(data_dir)
    norm = Normaliser.from_index(data_dir)
    train_clips = [c for c in index["clips"] if c["split"] == "train" and c.get("emotion")]
    if not train_clips:
        raise UserError(f"{data_dir}: no labelled train-split clips to train the emotion classifier on")
    emotions = sorted({c["emotion"] for c in train_clips})
    xs, ys, videos = [], [], []
    for c in train_clips:
        clip = Clip(data_dir / c["dir"])
        w = windows(norm.forward(clip.face()["expr"]))
        xs.append(w)
        ys.append(np.full(len(w), emotions.index(c["emotion"])))
        videos.append(str(Path(clip.meta.source_video).resolve()))
    x, y = torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)).long()
    torch.manual_seed(seed)
    net = ExprClassifier(x.shape[2], len(emotions))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=gen)
        loss = nn.functional.cross_entropy(net(x[idx] + 0.05 * torch.randn(x[idx].shape, generator=gen)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf = EmotionClassifier(net, norm, emotions, set(videos))
    held_out = [c for c in index["clips"] if c["split"] != "train" and c.get("emotion") in emotions]
    correct = [
        clf.predict(Clip(data_dir / c["dir"]).face()["expr"], Clip(data_dir / c["dir"]).meta.source_video)
        == c["emotion"]
        for c in held_out
    ]
    info = {
        "emotions": emotions,
        "train_clips": len(train_clips),
        "held_out_clips": len(held_out),
        "held_out_accuracy": float(np.mean(correct)) if correct else None,
    }
    buf = io.BytesIO()
    torch.save(
        {
            "state": net.state_dict(),
            "emotions": emotions,
            "expr_mean": norm.mean.tolist(),
            "expr_std": norm.std.tolist(),
            "trained_on": sorted(set(videos)),
            "info": info,
        },
        buf,
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / FILE, buf.getvalue())
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(ClassifierConfig, argv, prog="python -m evaluation.classifier", doc=__doc__)
    info = train(Path(cfg.data), Path(cfg.out), cfg.steps)
    acc = info["held_out_accuracy"]
    print(
        f"emotion classifier: {len(info['emotions'])} emotions, {info['train_clips']} train clips; "
        f"accuracy on {info['held_out_clips']} held-out original clips: "
        f"{'n/a' if acc is None else f'{acc:.3f}'} -> {cfg.out}/{FILE}"
    )


if __name__ == "__main__":
    main()
