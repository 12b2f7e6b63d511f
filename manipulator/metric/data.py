"""Training data of the metric: DTW-aligned neutral<->emotion frame pairs from preprocessing, with the
audio, mouth crops and expression windows of each frame, drawn in batches within one (actor, emotion).

Every frame's inputs follow `manipulator.windows`: its audio is the `audio_ms` ending where the frame
ends; its expression window is the `expr_window` frames ending at it (edge-padded at the clip start).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from common.config import choice
from common.errors import UserError
from common.formats import AUDIO_SR, Clip, as_fraction, frame_to_sample, read_clip_index, select_clips
from facemodel.geometry import TEMPLATE_EYE_SPAN, TEMPLATE_EYE_Y
from manipulator.expr_norm import Normaliser
from manipulator.windows import audio_ending_at_frame, is_silent
from preprocessing.audio_features import HOP, hop_features
from preprocessing.pairs import load_pairs

# Mouth box in the aligned crop (fractions of the crop size), from the alignment template: the mouth
# centre sits about 0.8 outer-eye-corner spans below the eye line.
MOUTH_CENTRE_Y = TEMPLATE_EYE_Y + 0.8 * TEMPLATE_EYE_SPAN
MOUTH_BOX = 0.5
METRIC_SPLIT = "metric_split"  # the metric trains on its own split of clips.json (a protocol may set it)


@dataclass
class InputSpec:
    """How each modality's input is cut from a clip (shared by training, indexing and evaluation)."""

    audio_kind: str = choice("raw", ["raw", "mel"], "raw waveform (LSCMC) or log-mel context window")
    audio_ms: float = 80.0  # audio ending at the frame's end (raw: samples; mel: context of 10 ms hops)
    n_mels: int = 40
    visual_crop: str = choice("mouth", ["mouth", "face"])
    visual_size: int = 64
    expr_window: int = 5

    @property
    def audio_samples(self) -> int:
        return round(self.audio_ms * AUDIO_SR / 1000)

    @property
    def mel_hops(self) -> int:
        return max(1, round(self.audio_ms / 10))


@dataclass
class ClipData:
    rel_dir: str
    actor: str
    emotion: str
    split: str
    fps: Fraction
    n_frames: int
    audio: np.ndarray
    mel: np.ndarray | None
    expr: np.ndarray  # (T, D) float32, normalised (the bank's Normaliser: by default the face model's train statistics)
    crops: np.ndarray | None  # (T, S, S, 3) uint8


def has_clips(processed: str | Path, splits, key: str = "split") -> bool:
    """Whether clips.json lists any clip in these splits (a missing validation split disables validation)."""
    return bool(select_clips(read_clip_index(processed), splits, key=key))


def crop_box(size: int, kind: str) -> tuple[int, int, int, int]:
    if kind == "face":
        return 0, 0, size, size
    half = MOUTH_BOX * size / 2
    cx, cy = size / 2, MOUTH_CENTRE_Y * size
    return round(cx - half), round(cy - half), round(cx + half), round(cy + half)


class ClipBank:
    """Loads and keeps the clips of the requested splits in memory (audio, features, crops, expr)."""

    def __init__(
        self,
        processed: str | Path,
        splits: tuple[str, ...],
        spec: InputSpec,
        modalities: list[str],
        key: str = "split",
        norm: Normaliser | None = None,
    ):
        self.root = Path(processed)
        self.spec = spec
        index = read_clip_index(self.root)
        self.norm = norm or Normaliser.from_index(self.root)  # a trained run's own (stored_normaliser) when given
        entries = [c for c in select_clips(index, splits, key=key) if c.get("actor") and c.get("emotion")]
        if not entries:
            raise UserError(f"{self.root}: no clips with actor/emotion labels in split(s) {', '.join(splits)}")
        self.clips: list[ClipData] = []
        for entry in tqdm(entries, desc=f"loading {'+'.join(splits)} clips", unit="clip", mininterval=10):
            self.clips.append(self._load(entry, modalities))
        self.by_dir = {c.rel_dir: i for i, c in enumerate(self.clips)}

    def _load(self, entry: dict, modalities: list[str]) -> ClipData:
        clip = Clip(self.root / entry["dir"])
        audio = clip.audio()
        mel = None
        if "audio" in modalities and self.spec.audio_kind == "mel":
            mel = hop_features(audio, "logmel", self.spec.n_mels)
        crops = None
        if "visual" in modalities:
            x0, y0, x1, y1 = crop_box(clip.meta.crop_size, self.spec.visual_crop)
            size = self.spec.visual_size
            crops = np.stack(
                [cv2.resize(f[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA) for f in clip.faces]
            )
        expr = self.norm.forward(clip.face()["expr"])
        return ClipData(
            entry["dir"],
            entry["actor"],
            entry["emotion"],
            entry["split"],
            as_fraction(clip.meta.fps),
            clip.n_frames,
            audio,
            mel,
            expr,
            crops,
        )

    # -- per-frame inputs -------------------------------------------------------------------------------

    def audio_input(self, c: int, frame: int) -> np.ndarray:
        clip = self.clips[c]
        if self.spec.audio_kind == "raw":
            return audio_ending_at_frame(clip.audio, frame, clip.fps, self.spec.audio_samples)
        end = int(frame_to_sample(frame + 1, clip.fps))
        last = min((end - 1) // HOP, len(clip.mel) - 1)
        hops = np.clip(np.arange(last - self.spec.mel_hops + 1, last + 1), 0, len(clip.mel) - 1)
        return clip.mel[hops].T  # (n_mels, n_hops)

    def silent(self, c: int, frame: int) -> bool:
        """Whether the frame's anchor audio is silence (`manipulator.windows.is_silent`)."""
        clip = self.clips[c]
        return bool(is_silent(audio_ending_at_frame(clip.audio, frame, clip.fps, self.spec.audio_samples)))

    def visual_input(self, c: int, frame: int) -> np.ndarray:
        return self.clips[c].crops[frame].transpose(2, 0, 1).astype(np.float32) / 255.0

    def expr_input(self, c: int, frame: int) -> np.ndarray:
        idx = np.clip(np.arange(frame - self.spec.expr_window + 1, frame + 1), 0, None)
        return self.clips[c].expr[idx]

    def inputs(self, modality: str, refs: list[tuple[int, int]]) -> torch.Tensor:
        """Stacked inputs of `modality` for (clip index, frame) references."""
        get = {"audio": self.audio_input, "visual": self.visual_input, "expr": self.expr_input}[modality]
        return torch.from_numpy(np.stack([get(c, f) for c, f in refs]).astype(np.float32))


class PairSampler:
    """Batches of DTW-matched (neutral frame, emotional frame) pairs; batch k is a pure function of
    (seed, k, rank), so resuming needs no state. With `group_by="actor_emotion"` a batch comes from one
    actor and one target emotion (harder negatives); anchors of a batch are at least `min_gap` frames
    apart within a clip, so that near-duplicates are not used as negatives."""

    def __init__(
        self,
        bank: ClipBank,
        batch_size: int,
        group_by: str,
        min_gap: int,
        seed: int,
        rank: int = 0,
        skip_silent: bool = False,
    ):
        pairs = load_pairs(bank.root / "pairs.npz")
        rows = []
        for p in range(len(pairs["src"])):
            src, dst = bank.by_dir.get(str(pairs["src"][p])), bank.by_dir.get(str(pairs["dst"][p]))
            if src is None or dst is None:
                continue
            lo, hi = pairs["offsets"][p], pairs["offsets"][p + 1]
            group = f"{pairs['actor'][p]}/{pairs['emotion'][p]}" if group_by == "actor_emotion" else "all"
            for a, b in zip(pairs["path_src"][lo:hi], pairs["path_dst"][lo:hi], strict=True):
                rows.append((src, int(a), dst, int(b), group))
        if skip_silent:  # silence embeds to one point: such pairs teach nothing and pull φ towards d_a = 0
            rows = [r for r in rows if not bank.silent(r[0], r[1]) and not bank.silent(r[2], r[3])]
        if not rows:
            raise UserError(f"{bank.root}: no same-sentence pairs in these splits (pairs.npz)")
        self.src_clip = np.array([r[0] for r in rows])
        self.src_frame = np.array([r[1] for r in rows])
        self.dst_clip = np.array([r[2] for r in rows])
        self.dst_frame = np.array([r[3] for r in rows])
        names = sorted({r[4] for r in rows})
        group_of = np.array([names.index(r[4]) for r in rows])
        self.groups = [np.nonzero(group_of == g)[0] for g in range(len(names))]
        self.weights = np.array([len(g) for g in self.groups], np.float64) / len(rows)
        self.batch_size, self.min_gap, self.seed, self.rank = batch_size, min_gap, seed, rank

    def __len__(self) -> int:
        return len(self.src_clip)

    def batch(self, step: int) -> np.ndarray:
        """Row indices of batch `step` for this rank."""
        rng = np.random.default_rng([self.seed, step, self.rank])
        members = self.groups[rng.choice(len(self.groups), p=self.weights)]
        chosen: list[int] = []
        taken: dict[int, list[int]] = {}
        for row in rng.permutation(members):
            clip, frame = self.src_clip[row], self.src_frame[row]
            if any(abs(frame - f) < self.min_gap for f in taken.get(clip, [])):
                continue
            chosen.append(int(row))
            taken.setdefault(clip, []).append(frame)
            if len(chosen) == self.batch_size:
                break
        return np.array(chosen)

    def refs(self, rows: np.ndarray) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(anchor refs, positive refs) as (clip index, frame) lists."""
        anchors = list(zip(self.src_clip[rows].tolist(), self.src_frame[rows].tolist(), strict=True))
        positives = list(zip(self.dst_clip[rows].tolist(), self.dst_frame[rows].tolist(), strict=True))
        return anchors, positives
