"""Same-sentence pairs and their DTW alignment, stored in one dataset-level file (`pairs.npz`).

Each neutral clip is paired with the clip of the same sentence in every other emotion of the same actor:
rule `same_number` (the same clip number, as in MEAD), or `json` (a file
`{actor: {emotion: {neutral_clip_id: emotion_clip_id}}}`). Each pair is aligned with librosa's DTW on
frame-rate MFCCs (Euclidean cost, standard steps); the warping path is stored as two monotone int32 index
arrays into a flat buffer:

  src, dst        (P,) clip dirs relative to the dataset root (neutral, emotion)
  actor, emotion  (P,) labels
  offsets         (P + 1,) int64: pair p's path is rows offsets[p]:offsets[p+1]
  path_src, path_dst  (L,) int32 frame indices; path_src[i] <-> path_dst[i]
  cost            (P,) float32 mean DTW cost along the path
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.emotions import NEUTRAL
from common.errors import FormatError, UserError
from common.formats import Clip
from common.fsutil import atomic_write_bytes
from preprocessing.audio_features import frame_features

PAIRS_FILE = "pairs.npz"


@dataclass(frozen=True)
class ClipRef:
    rel_dir: str
    actor: str
    emotion: str
    clip_id: str


def find_pairs(
    clips: Sequence[ClipRef], rule: str = "same_number", pairs_file: str = ""
) -> list[tuple[ClipRef, ClipRef]]:
    """(neutral, emotion) clip pairs of the same actor and sentence."""
    by_key = {(c.actor, c.emotion, c.clip_id): c for c in clips}
    table = {}
    if rule == "json":
        path = Path(pairs_file)
        if not path.is_file():
            raise UserError(f"pairs=json needs pairs_file=<json>; {path} not found")
        table = json.loads(path.read_text())
    elif rule != "same_number":
        raise UserError(f"unknown pairing rule {rule!r}: use same_number or json")
    pairs = []
    for src in clips:
        if src.emotion != NEUTRAL:
            continue
        emotions = sorted({c.emotion for c in clips if c.actor == src.actor and c.emotion != NEUTRAL})
        for emotion in emotions:
            same_number = src.clip_id
            dst_id = table.get(src.actor, {}).get(emotion, {}).get(src.clip_id) if rule == "json" else same_number
            dst = by_key.get((src.actor, emotion, dst_id)) if dst_id is not None else None
            if dst is not None:
                pairs.append((src, dst))
    return pairs


def dtw_path(features_a: np.ndarray, features_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Monotone warping path (ia, ib) from (0, 0) to (Na-1, Nb-1) and its mean step cost."""
    import librosa

    cost, path = librosa.sequence.dtw(X=features_a.T, Y=features_b.T, metric="euclidean")
    path = path[::-1]
    return path[:, 0].astype(np.int32), path[:, 1].astype(np.int32), float(cost[-1, -1] / len(path))


def clip_features(clip_dir: Path) -> np.ndarray:
    clip = Clip(clip_dir)
    return frame_features(clip.audio(), clip.meta.fps_exact, clip.n_frames)


def align_pairs(root: Path, pairs: Sequence[tuple[ClipRef, ClipRef]], progress=None) -> dict[str, np.ndarray]:
    """DTW-align every pair; features are computed once per clip."""
    cache: dict[str, np.ndarray] = {}

    def feats(ref: ClipRef) -> np.ndarray:
        if ref.rel_dir not in cache:
            cache[ref.rel_dir] = clip_features(root / ref.rel_dir)
        return cache[ref.rel_dir]

    offsets, path_src, path_dst, costs = [0], [], [], []
    for src, dst in pairs:
        a, b, c = dtw_path(feats(src), feats(dst))
        path_src.append(a)
        path_dst.append(b)
        costs.append(c)
        offsets.append(offsets[-1] + len(a))
        if progress is not None:
            progress.update(1)
    empty = np.zeros(0, np.int32)
    return {
        "src": np.array([s.rel_dir for s, _ in pairs], dtype=str),
        "dst": np.array([d.rel_dir for _, d in pairs], dtype=str),
        "actor": np.array([s.actor for s, _ in pairs], dtype=str),
        "emotion": np.array([d.emotion for _, d in pairs], dtype=str),
        "offsets": np.array(offsets, np.int64),
        "path_src": np.concatenate(path_src) if path_src else empty,
        "path_dst": np.concatenate(path_dst) if path_dst else empty,
        "cost": np.array(costs, np.float32),
    }


def save_pairs(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_pairs(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: not found (preprocess a MEAD-style dataset in train mode)")
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def pair_path(pairs: dict[str, np.ndarray], p: int) -> tuple[np.ndarray, np.ndarray]:
    """The warping path of pair p as (src frame indices, dst frame indices)."""
    lo, hi = pairs["offsets"][p], pairs["offsets"][p + 1]
    return pairs["path_src"][lo:hi], pairs["path_dst"][lo:hi]
