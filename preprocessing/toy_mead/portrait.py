"""Portraits for toy MEAD actors: face photos shipped inside installed packages (`BUILTIN_PORTRAITS`, each
with its source and licence), or user files.

Two of them are CC BY-SA 3.0 photos (from the `thumbor` wheel's test fixtures, originally on Wikimedia
Commons): a toy set generated with them is a derivative work of those photos, so it must credit the
photographer and may only be shared under the same licence (dataset.json records each actor's licence).

Each portrait is cropped square around its face (the face about half the frame width, like a MEAD
front view), resized, and its 478 FaceMesh landmarks are found once; the rig animates those.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.errors import UserError
from preprocessing.mediapipe_mesh import face_mesh


@dataclass(frozen=True)
class PortraitSource:
    source: str  # where the file comes from (package and path)
    licence: str  # licence, with the attribution it asks for


THUMBOR_SPEC = "thumbor==7.8.0"
_THUMBOR_FILES = {
    "giunchedi": "Giunchedi%2C_Filippo_January_2015_01.jpg",
    "maher": "800px-Katherine_Maher.jpg",
}
BUILTIN_PORTRAITS = {
    "astronaut": PortraitSource(
        "skimage.data.astronaut() (Eileen Collins, NASA)", "public domain (NASA photo, via scikit-image)"
    ),
    "grace_hopper": PortraitSource(
        "matplotlib sample_data/grace_hopper.jpg", "public domain (US Navy photo, via matplotlib)"
    ),
    "giunchedi": PortraitSource(
        f"{THUMBOR_SPEC} wheel, thumbor/fixtures/filters/{_THUMBOR_FILES['giunchedi']} (Wikimedia Commons "
        "'Giunchedi, Filippo January 2015 01.jpg')",
        "CC BY-SA 3.0; photo: Myleen Hollero / Wikimedia Foundation (please attribute the creator); "
        "derived clips must credit her and be shared under CC BY-SA 3.0",
    ),
    "maher": PortraitSource(
        f"{THUMBOR_SPEC} wheel, thumbor/fixtures/filters/{_THUMBOR_FILES['maher']} (Wikimedia Commons "
        "'Katherine Maher.jpg')",
        "CC BY-SA 3.0; photo: Victor Grigas / Wikimedia Foundation; derived clips must credit him and be "
        "shared under CC BY-SA 3.0",
    ),
}


def thumbor_portrait(name: str) -> Path:
    """The path of a portrait in the installed thumbor wheel (never imported: only its files are used)."""
    spec = importlib.util.find_spec("thumbor")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"portrait {name!r} comes from the thumbor wheel, which is not installed: "
            f"run `.venv/bin/pip install --no-deps {THUMBOR_SPEC}` (or `make setup`), or use fewer --actors"
        )
    path = Path(spec.submodule_search_locations[0]) / "fixtures" / "filters" / _THUMBOR_FILES[name]
    if not path.is_file():
        raise UserError(
            f"{path}: missing from the thumbor install; reinstall it (pip install --no-deps {THUMBOR_SPEC})"
        )
    return path


def check_portrait(name: str) -> None:
    """One UserError line (how to install it) when a built-in portrait's package is missing."""
    if name in _THUMBOR_FILES:
        thumbor_portrait(name)


def load_portrait(name: str) -> np.ndarray:
    """RGB uint8 image for a BUILTIN_PORTRAITS name or a file path."""
    if name in _THUMBOR_FILES:
        name = str(thumbor_portrait(name))
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
    """A readable description of where a portrait comes from (for dataset.json)."""
    return BUILTIN_PORTRAITS[name].source if name in BUILTIN_PORTRAITS else str(Path(name).resolve())


def portrait_licence(name: str) -> str:
    """The licence and attribution of a built-in portrait (for dataset.json); user files are the user's."""
    return BUILTIN_PORTRAITS[name].licence if name in BUILTIN_PORTRAITS else "user-supplied (the user's rights)"
