"""Frame store for per-frame images of a clip (`faces/`, `masks/`): PNG per frame behind a small API.

Kept behind this class so that a packed format can replace PNGs without touching callers. Frame t is
`<dir>/<t:06d>.png`. Images are RGB uint8 (H, W, 3) or single-channel uint8 (H, W).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from common.errors import FormatError
from common.fsutil import atomic_write_bytes


class FrameStore:
    def __init__(self, directory: str | Path, channels: int = 3):
        if channels not in (1, 3):
            raise ValueError("channels must be 1 (masks) or 3 (RGB)")
        self.dir = Path(directory)
        self.channels = channels

    def path(self, t: int) -> Path:
        return self.dir / f"{t:06d}.png"

    def write(self, t: int, image: np.ndarray) -> None:
        """Atomically write frame t. image: (H, W, 3) RGB or (H, W) uint8 matching `channels`."""
        image = self._check(image, f"frame {t}")
        bgr = image if self.channels == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise FormatError(f"{self.path(t)}: PNG encoding failed")
        atomic_write_bytes(self.path(t), buf.tobytes())

    def write_all(self, images: Iterable[np.ndarray]) -> int:
        """Write frames 0..n-1 in order; returns n."""
        n = 0
        for n, image in enumerate(images, start=1):
            self.write(n - 1, image)
        return n

    def read(self, t: int) -> np.ndarray:
        path = self.path(t)
        flag = cv2.IMREAD_GRAYSCALE if self.channels == 1 else cv2.IMREAD_COLOR
        image = cv2.imread(str(path), flag)
        if image is None:
            raise FormatError(f"{path}: missing or unreadable frame")
        return image if self.channels == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) stacked: (N, H, W[, 3]) uint8."""
        return np.stack([self.read(t) for t in range(start, stop)])

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(len(self)):
            yield self.read(t)

    def __len__(self) -> int:
        """Number of frames stored contiguously from 0."""
        n = 0
        while self.path(n).is_file():
            n += 1
        return n

    def validate(self, n_frames: int) -> None:
        """Check that exactly frames 0..n_frames-1 exist and frame 0 decodes with the right channels."""
        if not self.dir.is_dir():
            raise FormatError(f"{self.dir}: frame folder not found")
        found = len(list(self.dir.glob("[0-9]*.png")))
        contiguous = len(self)
        if found != n_frames or contiguous != n_frames:
            raise FormatError(
                f"{self.dir}: {found} frame file(s) ({contiguous} contiguous from 0), expected {n_frames}"
            )
        if n_frames:
            self._check(self.read(0), str(self.path(0)))

    def _check(self, image: np.ndarray, what: str) -> np.ndarray:
        if image.dtype != np.uint8:
            raise FormatError(f"{self.dir}: {what} has dtype {image.dtype}, expected uint8")
        want_ndim = 2 if self.channels == 1 else 3
        if image.ndim != want_ndim or (self.channels == 3 and image.shape[2] != 3):
            raise FormatError(f"{self.dir}: {what} has shape {image.shape}, expected {self.channels} channel(s)")
        return np.ascontiguousarray(image)
