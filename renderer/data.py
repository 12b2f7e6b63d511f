"""Renderer training data: random runs of consecutive frames of one identity's clips.

A sample is `frames_per_step` consecutive frames t0..t0+K-1 of one clip, with the conditioning of the
`n_frames_g - 1` frames before t0 as well (repeated frame 0 at a clip's start, as at inference).
Conditioning is rendered on the fly from face.npz; faces and masks are read from the clip's frame stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from common.formats import Clip, read_clip_index
from facemodel import face_model_for
from renderer.conditioning import ClipConditioner, random_jitter


@dataclass
class Batch:
    cond: torch.Tensor  # (B, K + n_g - 1, 9, S, S)
    real: torch.Tensor  # (B, K, 3, S, S) composited: face * mask - (1 - mask)
    mask: torch.Tensor  # (B, K, 1, S, S)
    mouth: torch.Tensor  # (B, K, 2) mouth centres in pixels (x, y)

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in (self.cond, self.real, self.mask, self.mouth)))


def identity_clips(data_dir: str | Path, actor: str, splits: tuple[str, ...]) -> list[str]:
    """Clip dirs (relative) of one actor in the given splits, from clips.json."""
    index = read_clip_index(Path(data_dir))
    actors = sorted({c.get("actor") for c in index["clips"] if c.get("actor")})
    if actor not in actors:
        raise UserError(f"{data_dir}: no clips of actor {actor!r}; actors: {', '.join(actors) or 'none'}")
    dirs = [c["dir"] for c in index["clips"] if c.get("actor") == actor and c["split"] in splits]
    if not dirs:
        raise UserError(f"{data_dir}: actor {actor!r} has no clips in split(s) {', '.join(splits)}")
    return dirs


class IdentityFrames:
    def __init__(
        self,
        data_dir: str | Path,
        actor: str,
        splits: tuple[str, ...],
        image_size: int,
        n_frames_g: int,
        augment: bool = True,
    ):
        self.root = Path(data_dir)
        self.dirs = identity_clips(data_dir, actor, splits)
        self.model = face_model_for(data_dir)
        self.size, self.n_g, self.augment = image_size, n_frames_g, augment
        self._cond: dict[int, ClipConditioner] = {}
        self.n_frames = np.array([Clip(self.root / d).n_frames for d in self.dirs])

    def __len__(self) -> int:
        return int(self.n_frames.sum())

    def conditioner(self, c: int) -> ClipConditioner:
        if c not in self._cond:
            self._cond[c] = ClipConditioner(self.model, Clip(self.root / self.dirs[c]), self.size)
        return self._cond[c]

    def sample(self, rng: np.random.Generator, batch_size: int, k: int) -> Batch:
        """`batch_size` runs of `k` consecutive frames, clips drawn in proportion to their length."""
        p = np.maximum(self.n_frames - k + 1, 0).astype(np.float64)
        if p.sum() == 0:
            raise UserError(f"{self.root}: every clip is shorter than {k} frames")
        conds, reals, masks, mouths = [], [], [], []
        for c in rng.choice(len(self.dirs), batch_size, p=p / p.sum()):
            cc = self.conditioner(int(c))
            t0 = int(rng.integers(0, cc.n_frames - k + 1))
            jitter = random_jitter(rng, self.size) if self.augment else None
            conds.append(cc.render_range(range(t0 - self.n_g + 1, t0 + k), jitter))
            m = np.stack([cc.mask(t) for t in range(t0, t0 + k)])
            f = np.stack([cc.face(t) for t in range(t0, t0 + k)])
            reals.append(f * m - (1.0 - m))
            masks.append(m)
            mouths.append(cc.mouth[t0 : t0 + k])
        return Batch(*(torch.from_numpy(np.stack(x).astype(np.float32)) for x in (conds, reals, masks, mouths)))
