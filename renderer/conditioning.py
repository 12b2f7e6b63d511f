"""Conditioning images rendered on the fly from a clip's face-model parameters (original or edited).

Per frame, at the renderer's image size: NMFC (3), eye gaze (3), shaded shape (3) -> 9 channels in [0, 1].
The eye openings come from the decoded face model; the pupils are the tracked irises shifted by how far
the decoded eye centre moved between the source and the edited parameters (NED's rule), so an edit that
narrows the eyes shrinks the disks but keeps the gaze. Face models provide `decode`, `triangles`,
`nmfc_colors`, `eyes(verts)` and `mouth_centre(verts)` (both backends). The compositing mask is the clip's
own face mask (`masks/`), as in NED.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from common.formats import Clip
from facemodel.geometry import aligned_points
from facemodel.render import eye_image_from, mediapipe_eyes, render_mesh


def gaze(model, verts: np.ndarray, src_verts: np.ndarray, tracked: np.ndarray):
    """Per frame and eye: pupil centres (T, 2, 2), iris radii (T, 2), openings (T, 2), in crop pixels.

    Pupils are the tracked irises moved by the displacement of the face model's eye centre between the
    source and the edited parameters; the openings are the edited model's (NED's rule).
    """
    tracked_eyes = [mediapipe_eyes(lm) for lm in tracked]
    pupils = np.stack([e[0] for e in tracked_eyes])
    radii = np.stack([e[1] for e in tracked_eyes])
    centres, openings = model.eyes(verts)
    src_centres, _ = model.eyes(src_verts)
    return pupils + (centres - src_centres), radii, openings


class ClipConditioner:
    """Renders the conditioning of one clip's frames (source parameters, or an edit of them)."""

    def __init__(self, model, clip: Clip, size: int, face: dict[str, np.ndarray] | None = None):
        self.model, self.clip, self.size = model, clip, size
        self.scale = size / clip.meta.crop_size
        src_face = clip.face()
        src_verts = model.decode(src_face)
        self.verts = src_verts if face is None else model.decode(face)
        tracked = aligned_points(clip.track())
        self.pupils, self.radii, self.openings = gaze(model, self.verts, src_verts, tracked)
        self.mouth = model.mouth_centre(self.verts) * self.scale  # (T, 2) image pixels

    @property
    def n_frames(self) -> int:
        return len(self.verts)

    def render(self, t: int, jitter: np.ndarray | None = None) -> np.ndarray:
        """(9, S, S) float32 in [0, 1]; `jitter` = 2x3 similarity applied in image pixels (augmentation)."""
        verts = self.verts[t] * self.scale
        pupils, radii, openings = self.pupils[t] * self.scale, self.radii[t] * self.scale, self.openings[t] * self.scale
        if jitter is not None:
            s = np.sqrt(abs(np.linalg.det(jitter[:, :2])))
            verts = verts.copy()
            verts[:, :2] = verts[:, :2] @ jitter[:, :2].T + jitter[:, 2]
            verts[:, 2] *= s
            pupils, radii, openings = pupils @ jitter[:, :2].T + jitter[:, 2], radii * s, openings * s
        cond = render_mesh(verts.astype(np.float32), self.model.triangles, self.model.nmfc_colors, self.size)
        eyes = eye_image_from(pupils, radii, openings, self.size).astype(np.float32) / 255.0
        return np.concatenate([cond.nmfc, eyes, cond.shape], axis=-1).transpose(2, 0, 1).astype(np.float32)

    def render_range(self, frames: Sequence[int], jitter: np.ndarray | None = None) -> np.ndarray:
        """(N, 9, S, S); indices below 0 repeat frame 0 (the window padding at a clip's start)."""
        return np.stack([self.render(max(int(t), 0), jitter) for t in frames])

    def face(self, t: int) -> np.ndarray:
        """Frame t's aligned face as (3, S, S) float32 in [-1, 1]."""
        img = resize_square(self.clip.faces.read(t), self.size)
        return img.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0

    def mask(self, t: int) -> np.ndarray:
        """Frame t's face mask as (1, S, S) float32 in [0, 1]."""
        return (resize_square(self.clip.masks.read(t), self.size).astype(np.float32) / 255.0)[None]


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """A square image at `size` (area filter down, cubic up; itself when already that size)."""
    if image.shape[0] == size:
        return image
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def random_jitter(rng: np.random.Generator, size: int, translate: float = 0.01, scale: float = 0.01) -> np.ndarray:
    """NED's conditioning augmentation: translate ±1 %, scale 0.99-1.01, about the image centre."""
    s = 1.0 + rng.uniform(-scale, scale)
    tx, ty = rng.uniform(-translate, translate, 2) * size
    c = size / 2
    return np.array([[s, 0.0, c - s * c + tx], [0.0, s, c - s * c + ty]])
