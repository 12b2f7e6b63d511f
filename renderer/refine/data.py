"""The refiner's input and its training pairs.

Training pairs come from the training clips of every identity: the aligned crop of frame t is warped (the warp
renderer's own `warp_face`) from frame t's tracked mesh to the tracked mesh of frame t' of the same clip
(|t - t'| <= `max_gap`), and the network learns to turn that into the real crop of frame t'. Its input is the
warped crop, the warp's stretch map (log area change per triangle), and the edited mouth and eye openings and
face hull (7 channels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.errors import UserError
from common.formats import Clip, read_clip_index
from facemodel.geometry import aligned_points
from facemodel.render import hull_mask
from renderer.conditioning import resize_square
from renderer.warp import EYES, INNER_LIPS, control_points, polygon_alpha, stretch_map, triangles, warp_face


def refine_inputs(warped: np.ndarray, src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(7, S, S) float32 network input for one aligned crop: `warped` (S, S, 3) uint8 and the control points
    (468 + ring, 2) it was warped from / to, in the crop's pixels."""
    s = warped.shape[0]
    eyes = np.maximum(*(polygon_alpha(dst[eye], 0, 0, s, s) for eye in EYES))
    planes = [
        stretch_map(src, dst, tris, s) / 2.0,
        polygon_alpha(dst[INNER_LIPS], 0, 0, s, s),
        eyes,
        hull_mask(dst, s).astype(np.float32) / 255.0,
    ]
    rgb = warped.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    return np.concatenate([rgb, np.stack(planes)], 0).astype(np.float32)


class PairData:
    """Warp pairs (frame t warped to frame t''s mesh -> real frame t') from the clips of every identity."""

    def __init__(self, data_dir: str | Path, splits: tuple[str, ...], image_size: int, max_gap: int):
        self.root = Path(data_dir)
        index = read_clip_index(self.root)
        self.dirs = [c["dir"] for c in index["clips"] if c["split"] in splits]
        if not self.dirs:
            raise UserError(f"{data_dir}: no clips in split(s) {', '.join(splits)}")
        self.size, self.max_gap = image_size, max_gap
        self.tris = triangles()
        self._points: dict[int, np.ndarray] = {}
        self.n_frames = np.array([Clip(self.root / d).n_frames for d in self.dirs], np.float64)

    def points(self, c: int) -> np.ndarray:
        """(T, 468 + ring, 2) control points of clip c from its tracked landmarks, aligned-crop pixels."""
        if c not in self._points:
            tracked = aligned_points(Clip(self.root / self.dirs[c]).track())[..., :2]
            self._points[c] = np.stack([control_points(p) for p in tracked])
        return self._points[c]

    def pair(self, c: int, t: int, u: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input (7, S, S), real crop of frame u (3, S, S) in [-1, 1], its face mask (1, S, S))."""
        clip = Clip(self.root / self.dirs[c])
        pts = self.points(c)
        scale = self.size / clip.meta.crop_size
        image = resize_square(clip.faces.read(t), self.size)
        src, dst = pts[t] * scale, pts[u] * scale
        warped = warp_face(image, src, dst, self.tris)
        real = resize_square(clip.faces.read(u), self.size).astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        mask = resize_square(clip.masks.read(u), self.size).astype(np.float32)[None] / 255.0
        return refine_inputs(warped, src, dst, self.tris), real, mask

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, ...]:
        """A batch (x (B, 7, S, S), real (B, 3, S, S), mask (B, 1, S, S)) of pairs, clips drawn in proportion
        to their length."""
        xs, reals, masks = [], [], []
        for c in rng.choice(len(self.dirs), batch_size, p=self.n_frames / self.n_frames.sum()):
            n = int(self.n_frames[c])
            t = int(rng.integers(0, n))
            u = int(np.clip(t + rng.integers(-self.max_gap, self.max_gap + 1), 0, n - 1))
            x, real, mask = self.pair(int(c), t, u)
            xs.append(x)
            reals.append(real)
            masks.append(mask)
        return tuple(torch.from_numpy(np.stack(a)) for a in (xs, reals, masks))
