"""Re-track a video (the output of the pipeline, or any video) with the preprocessing tracker, so that
metrics read the face in the pixels, never the parameters that produced them; face boxes from a track."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.video import iter_frames
from facemodel.geometry import aligned_points, crop_frame
from preprocessing.tracking import FaceTracker, build_track


@dataclass
class Retracked:
    aligned: np.ndarray  # (T, 478, 3) landmarks in the aligned crop (pixels of `crop_size`), depth scaled
    valid: np.ndarray  # (T,) frames where a face was found
    crop_size: int
    track: dict[str, np.ndarray]  # the track.npz arrays (what `FaceModel.fit_clip` reads)
    video: Path

    def faces(self) -> Iterator[np.ndarray]:
        """The video's aligned face crops (crop_size², RGB uint8) in frame order, decoded only as iterated."""
        c2f, align = self.track["crop_to_frame"], self.track["align"]
        for t, frame in enumerate(iter_frames(self.video)):
            yield crop_frame(frame, c2f[t], align[t], self.crop_size)


def retrack(
    video: str | Path, crop_size: int = 256, margin: float = 0.3, smooth_sigma: float = 1.5, min_fraction: float = 0.5
) -> Retracked:
    """FaceMesh on every frame, the preprocessing's smoothing and alignment; aligned-crop landmarks.
    Frames where no face is found are interpolated (and flagged in `valid`)."""
    tracker = FaceTracker(max_faces=1)
    for frame in iter_frames(video):
        tracker.add(frame)
    raw = tracker.finish()
    try:
        track = build_track(raw, crop_size, margin, smooth_sigma, min_fraction)
    except UserError as exc:
        raise UserError(f"{video}: {exc}") from None
    arrays = track.arrays()
    return Retracked(aligned_points(arrays), track.valid, crop_size, arrays, Path(video))


def landmark_boxes(points: np.ndarray) -> np.ndarray:
    """(T, L, 2+) landmarks in frame pixels -> (T, 4) boxes (x1, y1, x2, y2) of their extent (NaN where lost)."""
    xy = np.asarray(points, np.float64)[..., :2]
    return np.concatenate([xy.min(1), xy.max(1)], 1)


def face_boxes(track: dict[str, np.ndarray]) -> np.ndarray:
    """(T, 4) tight face boxes (x1, y1, x2, y2) in frame pixels: the tracked landmarks' extent, mapped from
    the crop to the frame (what a face detector's box covers, brow to chin)."""
    lm = track["landmarks"].astype(np.float64)  # (T, L, 2) crop px
    c2f = track["crop_to_frame"].astype(np.float64)
    return landmark_boxes(np.einsum("tij,tlj->tli", c2f[:, :, :2], lm) + c2f[:, None, :, 2])
