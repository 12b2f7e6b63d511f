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
        """Face boxes (x0, y0, x1, y1) in pixels, most confident first."""
        h, w = image.shape[:2]
        with _native_stderr_silenced():
            result = self._det.process(image)
        found = sorted(result.detections or [], key=lambda d: -d.score[0])
        out = []
        for d in found:
            b = d.location_data.relative_bounding_box
            out.append(np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]))
        return out

    def close(self) -> None:
        self._det.close()
