"""Conditioning images rendered on the fly from a clip's face-model parameters (original or edited).

Per frame, at the renderer's image size: NMFC (3), eye gaze (3), shaded shape (3) -> 9 channels in [0, 1].
The eyelids come from the decoded mesh; the pupils are the tracked irises shifted by how far the decoded eye
centre moved between the source and the edited parameters (NED's rule), so an edit that narrows the eyes
moves the lids but keeps the gaze. The compositing mask is the clip's own face mask (`masks/`), as in NED.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from common.formats import Clip
from preprocessing.clip_pass import aligned_points
from preprocessing.face_model.render import LEFT_EYE, LEFT_IRIS, RIGHT_EYE, RIGHT_IRIS, eye_image, render_mesh

# 20 outer-lip points of the FaceMesh topology; their median is the mouth centre (mouth discriminator ROI).
MOUTH_POINTS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]


def gaze_landmarks(verts: np.ndarray, src_verts: np.ndarray, tracked: np.ndarray) -> np.ndarray:
    """(T, 478, 2) landmarks for the eye image: decoded mesh (lids) + tracked irises moved with the eyes."""
    lm = tracked[:, :, :2].astype(np.float64).copy()
    lm[:, : verts.shape[1]] = verts[:, :, :2]
    for iris, eye in ((RIGHT_IRIS, RIGHT_EYE), (LEFT_IRIS, LEFT_EYE)):
        shift = verts[:, eye, :2].mean(axis=1) - src_verts[:, eye, :2].mean(axis=1)
        lm[:, iris] = tracked[:, iris, :2] + shift[:, None]
    return lm


class ClipConditioner:
    """Renders the conditioning of one clip's frames (source parameters, or an edit of them)."""

    def __init__(self, model, clip: Clip, size: int, face: dict[str, np.ndarray] | None = None):
        self.model, self.clip, self.size = model, clip, size
        self.scale = size / clip.meta.crop_size
        src_face = clip.face()
        src_verts = model.decode(src_face)
        self.verts = src_verts if face is None else model.decode(face)
        tracked = aligned_points(clip.track())
        self.landmarks = gaze_landmarks(self.verts, src_verts, tracked)
        self.mouth = np.median(self.verts[:, MOUTH_POINTS, :2], axis=1) * self.scale  # (T, 2) image pixels

    @property
    def n_frames(self) -> int:
        return len(self.verts)

    def render(self, t: int, jitter: np.ndarray | None = None) -> np.ndarray:
        """(9, S, S) float32 in [0, 1]; `jitter` = 2x3 similarity applied in image pixels (augmentation)."""
        verts = self.verts[t] * self.scale
        lm = self.landmarks[t] * self.scale
        if jitter is not None:
            verts = verts.copy()
            verts[:, :2] = verts[:, :2] @ jitter[:, :2].T + jitter[:, 2]
            verts[:, 2] *= np.sqrt(abs(np.linalg.det(jitter[:, :2])))
            lm = lm @ jitter[:, :2].T + jitter[:, 2]
        cond = render_mesh(verts.astype(np.float32), self.model.triangles, self.model.nmfc_colors, self.size)
        eyes = eye_image(lm, self.size).astype(np.float32) / 255.0
        return np.concatenate([cond.nmfc, eyes, cond.shape], axis=-1).transpose(2, 0, 1).astype(np.float32)

    def render_range(self, frames: Sequence[int], jitter: np.ndarray | None = None) -> np.ndarray:
        """(N, 9, S, S); indices below 0 repeat frame 0 (the window padding at a clip's start)."""
        return np.stack([self.render(max(int(t), 0), jitter) for t in frames])

    def face(self, t: int) -> np.ndarray:
        """Frame t's aligned face as (3, S, S) float32 in [-1, 1]."""
        img = _resize(self.clip.faces.read(t), self.size)
        return img.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0

    def mask(self, t: int) -> np.ndarray:
        """Frame t's face mask as (1, S, S) float32 in [0, 1]."""
        return (_resize(self.clip.masks.read(t), self.size).astype(np.float32) / 255.0)[None]


def _resize(image: np.ndarray, size: int) -> np.ndarray:
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
