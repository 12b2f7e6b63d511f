"""Portraits for toy MEAD actors: public-domain images shipped inside installed packages, or user files.

Each portrait is cropped square around its face (the face about half the frame width, like a MEAD
front view), resized, and its 478 FaceMesh landmarks are found once; the rig animates those.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from common.errors import UserError
from preprocessing.mediapipe_mesh import face_mesh


def load_portrait(name: str) -> np.ndarray:
    """RGB uint8 image for "astronaut", "grace_hopper" or a file path."""
    if name == "astronaut":
        from skimage import data

        return np.ascontiguousarray(data.astronaut())
    if name == "grace_hopper":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            buf = np.frombuffer(f.read(), np.uint8)
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    image = cv2.imread(str(name), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{name}: cannot read the portrait image (give a JPEG or PNG of a frontal face)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class LandmarkFinder:
    """MediaPipe FaceMesh (static images, 478 points incl. irises) returning pixel coordinates."""

    def __init__(self) -> None:
        self._mesh = face_mesh(static_image_mode=True, max_num_faces=1)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """(478, 3) float64 landmarks in pixels (z scaled like x), or None when no face is found."""
        result = self._mesh.process(image)
        if not result.multi_face_landmarks:
            return None
        h, w = image.shape[:2]
        lm = result.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h, p.z * w) for p in lm], dtype=np.float64)

    def close(self) -> None:
        self._mesh.close()


def prepare_portrait(
    name: str, size: int, finder: LandmarkFinder, mirror: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Crop and resize a portrait around its face; returns (image (size, size, 3), landmarks (478, 3))."""
    image = load_portrait(name)
    if mirror:
        image = np.ascontiguousarray(image[:, ::-1])
    lm = finder(image)
    if lm is None:
        raise UserError(f"{name}: MediaPipe finds no face in this portrait; use a clear frontal face photo")
    x0, y0 = lm[:, :2].min(axis=0)
    x1, y1 = lm[:, :2].max(axis=0)
    face_w = max(x1 - x0, y1 - y0)
    side = 2.0 * face_w
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1) + 0.1 * face_w  # a little more chin and neck than hair
    scale = size / side
    affine = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]], np.float32)
    crop = cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    lm = finder(crop)
    if lm is None:
        raise UserError(f"{name}: the face is too small or unclear after cropping to {size}x{size}")
    return crop, lm


def builtin_portrait_path(name: str) -> str:
    """A readable description of where a built-in portrait comes from (for dataset.json)."""
    sources = {
        "astronaut": "skimage.data.astronaut()",
        "grace_hopper": "matplotlib sample_data/grace_hopper.jpg",
    }
    return sources.get(name, str(Path(name).resolve()))
