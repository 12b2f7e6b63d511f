"""Create MediaPipe FaceMesh instances without the native start-up chatter on stderr.

MediaPipe's C++ side prints several INFO/WARNING lines per instance (TFLite delegate, feedback manager)
that no environment variable silences; they would flood logs with one block per clip. We point file
descriptor 2 at /dev/null while the graph is built and warmed up, then restore it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

import numpy as np

_LIBC = ctypes.CDLL(None)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        _LIBC.fflush(None)  # C-level buffered messages must land in /dev/null, not after the restore
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def silence_stderr() -> None:
    """Point this process's stderr (fd 2) at /dev/null for good (for helper processes)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def quiet_native_stderr() -> None:
    """For worker processes: native (C/C++) writes to fd 2 go to /dev/null, Python's sys.stderr keeps the
    original stream, so tracebacks and warnings still show but MediaPipe's graph-thread chatter does not."""
    sys.stderr.flush()
    original = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(original, "w", buffering=1)


class QuietFaceMesh:
    """FaceMesh whose native start-up messages (printed on the first calls that find a face) are dropped."""

    def __init__(self, static_image_mode: bool, max_num_faces: int, min_confidence: float = 0.5):
        with _native_stderr_silenced():
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static_image_mode,
                max_num_faces=max_num_faces,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )
        self._warm = False
        self._static = static_image_mode  # static mode re-initialises per image size: always quiet

    def process(self, image: np.ndarray):
        if self._warm and not self._static:
            return self._mesh.process(image)
        with _native_stderr_silenced():
            result = self._mesh.process(image)
        self._warm = bool(result.multi_face_landmarks)  # the landmark model has run once: quiet from now on
        return result

    def close(self) -> None:
        self._mesh.close()


def face_mesh(static_image_mode: bool, max_num_faces: int, min_confidence: float = 0.5) -> QuietFaceMesh:
    """A FaceMesh with 478 landmarks (irises refined), without native log noise."""
    return QuietFaceMesh(static_image_mode, max_num_faces, min_confidence)


TILE = 480  # px: the full-range detector's tiles when it finds nothing on the whole frame


def _tile_starts(size: int) -> list[int]:
    """Starts of tiles of TILE px covering `size` px with half a tile of overlap."""
    if size <= TILE:
        return [0]
    return sorted({*range(0, size - TILE, TILE // 2), size - TILE})


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0


class QuietFaceFinder:
    """MediaPipe's full-range face detector (it ships in the same wheel as FaceMesh): face boxes anywhere in a
    large frame, down to faces of a few dozen pixels, where FaceMesh's own short-range detector finds none."""

    def __init__(self, min_confidence: float = 0.5):
        with _native_stderr_silenced():
            import mediapipe as mp

            self._det = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=min_confidence
            )

    def boxes(self, image: np.ndarray) -> list[np.ndarray]:
        """Face boxes (x0, y0, x1, y1) in pixels, most confident first. None on the whole frame: the detector
        sees it at 192 px, so a face under ~80 px of a 1080p frame is a few pixels there; then it looks again
        on overlapping tiles of `TILE` px (measured: toy faces 30-66 px wide in a 1080p frame, none found on the
        whole frame, all found and tracked on tiles)."""
        found = self._detect(image, 0, 0)
        h, w = image.shape[:2]
        if found or max(h, w) <= TILE * 1.25:
            return [box for _, box in found]
        for y0 in _tile_starts(h):
            for x0 in _tile_starts(w):
                found += self._detect(image[y0 : y0 + TILE, x0 : x0 + TILE], x0, y0)
        kept: list[tuple[float, np.ndarray]] = []
        for score, box in sorted(found, key=lambda f: -f[0]):  # a face on two tiles: its best box once
            if all(_overlap(box, other) < 0.3 for _, other in kept):
                kept.append((score, box))
        return [box for _, box in kept]

    def _detect(self, image: np.ndarray, x0: int, y0: int) -> list[tuple[float, np.ndarray]]:
        h, w = image.shape[:2]
        with _native_stderr_silenced():
            result = self._det.process(np.ascontiguousarray(image))
        out = []
        for d in sorted(result.detections or [], key=lambda d: -d.score[0]):
            b = d.location_data.relative_bounding_box
            box = np.array(
                [b.xmin * w + x0, b.ymin * h + y0, (b.xmin + b.width) * w + x0, (b.ymin + b.height) * h + y0]
            )
            out.append((float(d.score[0]), box))
        return out

    def close(self) -> None:
        self._det.close()
