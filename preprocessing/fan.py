"""FAN 68-point landmarks (`landmarks=fan`) through the face-alignment package, fed with our tracker's boxes.

The package never downloads here: its FAN weights (`2DFAN4-11f355bf06.pth.tar`) must already be in
`$TORCH_HOME/hub/checkpoints/` (torch hub's cache, where face-alignment looks first), and its own face
detector is not used (the `folder` detector needs no weights; we pass our smoothed track boxes). The
landmarks are stored in track.npz as `landmarks68` (crop pixels, iBUG order); the DECA backend then cuts its
input crop from them, as DECA and NED do. FAN costs about a second per frame on a CPU (see the README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.errors import UserError

FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
FAN_URL = "https://www.adrianbulat.com/downloads/python-fan/" + FAN_FILE


def fan_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / FAN_FILE


def check_fan() -> None:
    """A clear message when the package or the weights are missing (before any work starts)."""
    import importlib.util

    if importlib.util.find_spec("face_alignment") is None:
        raise UserError(
            "landmarks=fan needs the face-alignment package: pip install --no-deps "
            "face-alignment==1.5.0 (make setup installs it)"
        )
    path = fan_weights_path()
    if not path.is_file():
        raise UserError(
            f"landmarks=fan needs FAN's weights at {path} (TORCH_HOME/hub/checkpoints); get "
            f"{FAN_FILE} from {FAN_URL} (face-alignment's release) and place it there"
        )


class FanLandmarks:
    def __init__(self, device: str = "cpu"):
        check_fan()
        import face_alignment

        self.fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D, device=device, flip_input=False, face_detector="folder", compile=False
        )

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) frame pixels for the face in `box` (x0, y0, x1, y1) of an RGB uint8 frame."""
        out = self.fa.get_landmarks_from_image(frame, detected_faces=[np.asarray(box, np.float64)])
        if not out:
            raise UserError("FAN returned no landmarks for a tracked box")
        return np.asarray(out[0][:, :2], np.float32)
