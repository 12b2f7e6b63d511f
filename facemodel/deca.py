"""The `deca` face-model backend (DESIGN section 4): DECA/FLAME fits of the aligned face crops.

face.npz for this backend:
- `expr` (T, 51) = [jaw opening pose[3], exp(50)] (NED's 51 coefficients; channel 0 = mouth opening);
- `pose` (T, 6) = global rotation (3) + jaw rotation (3), axis-angle (decoding replaces pose[3] by expr[:, 0],
  as NED's renderer inputs do);
- `cam` (T, 6) = DECA's orthographic camera (s, tx, ty) + the square DECA box it maps [-1, 1] to, in
  aligned-crop pixels (x0, y0, size). The box is DECA's own crop rule (the 68-landmark box, 1.1 x mean side,
  x 1.25): from FAN's 68 landmarks when the track has them (`landmarks=fan`), else from the FaceMesh points
  that bound the same region (cheeks, brows, chin);
- `identity` (100,) = FLAME shape, the mean of the per-frame estimates of the clip;
- `landmarks2d` (T, 68, 2) = the FLAME 68 landmarks, projected, in aligned-crop pixels.
The dataset-level file `face_model_deca.npz` holds the expression statistics of the train split (for the
manipulator's normalisation) and where the DECA files are.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path

import cv2
import numpy as np
import torch

from common.errors import FormatError, UserError
from common.fsutil import atomic_write_bytes
from common.geometry import normalize_coords
from DECA.model import DECA, project
from facemodel.geometry import aligned_points, apply_affine
from facemodel.topology import FLAME_5023

EXPR_DIM = 51
FILE_VERSION = 1
RIGHT_EYE_68, LEFT_EYE_68 = list(range(36, 42)), list(range(42, 48))  # subject's right eye = image left
OUTER_LIPS_68 = list(range(48, 60))
# FaceMesh points bounding what the 68-point layout covers: cheeks (234, 454), brow tops (105, 334), chin (152)
MEDIAPIPE_68_EXTENT = [234, 454, 105, 334, 152, 70, 300, 127, 356]


def deca_boxes(points: np.ndarray) -> np.ndarray:
    """DECA's square crop per frame (T, 3) = (x0, y0, size) from landmarks (T, K, 2) (its `kpt68` rule)."""
    lo, hi = points.min(1), points.max(1)
    centre = (lo + hi) / 2
    size = (hi - lo).mean(1) * 1.1 * 1.25
    return np.concatenate([centre - size[:, None] / 2, size[:, None]], 1)


def save_stats(path: str | Path, expr_mean: np.ndarray, expr_std: np.ndarray, config_hash: str, deca_data: str) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        version=np.array(FILE_VERSION),
        backend=np.array("deca"),
        expr_mean=expr_mean.astype(np.float32),
        expr_std=expr_std.astype(np.float32),
        config_hash=np.array(config_hash),
        deca_data=np.array(str(deca_data)),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_stats(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: DECA face-model file not found; preprocess the training set first (mode train, "
            "face_model=deca), or point basis_file=... at its face_model_deca.npz"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["backend"]) != "deca":
                raise FormatError(f"{path}: a {z['backend']} face-model file, expected deca")
            return {k: (z[k] if z[k].ndim else z[k].item()) for k in z.files}
    except (KeyError, ValueError, OSError) as exc:
        raise FormatError(f"{path}: not a valid DECA face-model file ({exc})") from None


class DecaFaceModel:
    """Fit clips with DECA (encode the aligned crops) and decode parameters to FLAME meshes in crop pixels."""

    name = "deca"
    topology = FLAME_5023
    expr_dim = EXPR_DIM

    def __init__(self, deca_data: str | Path | None = None, device: str = "cpu", batch_size: int = 16):
        self.deca = DECA.load(deca_data, device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        flame = self.deca.flame
        self.triangles = flame.faces.cpu().numpy().astype(np.int32)
        self.nmfc_colors = normalize_coords(flame.v_template.cpu().numpy()).astype(np.float32)

    @classmethod
    def from_stats(cls, path: str | Path, device: str = "cpu") -> DecaFaceModel:
        return cls(load_stats(path)["deca_data"], device)

    # -- fitting ---------------------------------------------------------------------------------------

    def fit_clip(self, faces: Iterable[np.ndarray], track: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """face.npz arrays from the clip's aligned face crops (`faces`, in frame order), each cut to DECA's box
        and resized to 224."""
        if "landmarks68" in track:
            points = apply_affine(track["align"].astype(np.float64), track["landmarks68"].astype(np.float64))
        else:
            points = aligned_points(track)[:, MEDIAPIPE_68_EXTENT, :2]
        boxes = deca_boxes(points)
        codes: dict[str, list[np.ndarray]] = {k: [] for k in ("shape", "exp", "pose", "cam")}
        batch: list[np.ndarray] = []

        def flush():
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div(255).to(self.device)
            out = self.deca.encode(x)
            for k in codes:
                codes[k].append(out[k].cpu().numpy())
            batch.clear()

        for t, img in enumerate(faces):
            x0, y0, size = boxes[t]
            s = 224.0 / size  # aligned pixel -> DECA pixel (centre conventions: ours j + 0.5, OpenCV's j)
            m = np.array([[s, 0, -x0 * s + 0.5 * s - 0.5], [0, s, -y0 * s + 0.5 * s - 0.5]])
            flags = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            batch.append(cv2.warpAffine(img, m, (224, 224), flags=flags, borderMode=cv2.BORDER_CONSTANT))
            if len(batch) == self.batch_size:
                flush()
        if batch:
            flush()
        c = {k: np.concatenate(v).astype(np.float32) for k, v in codes.items()}
        face = {
            "expr": np.concatenate([c["pose"][:, 3:4], c["exp"]], 1),
            "pose": c["pose"],
            "cam": np.concatenate([c["cam"], boxes.astype(np.float32)], 1),
            "identity": c["shape"].mean(0),
        }
        face["landmarks2d"] = self.landmarks2d(face)
        return face

    # -- decoding --------------------------------------------------------------------------------------

    def _posed(self, face: dict[str, np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
        expr = torch.as_tensor(np.asarray(face["expr"], np.float32))
        pose = torch.as_tensor(np.asarray(face["pose"], np.float32)).clone()
        pose[:, 3] = expr[:, 0]
        shape = torch.as_tensor(np.asarray(face["identity"], np.float32))[None].expand(len(expr), -1)
        with torch.no_grad():
            verts = self.deca.flame(shape.to(self.device), expr[:, 1:].to(self.device), pose.to(self.device))
        return verts, np.asarray(face["cam"], np.float32)

    def _to_pixels(self, points: torch.Tensor, cam: np.ndarray) -> np.ndarray:
        """DECA's projection into its box, then the box into the aligned crop (per frame)."""
        ndc = project(points, torch.as_tensor(cam[:, :3], device=points.device)).cpu().numpy().astype(np.float64)
        x0, y0, half = cam[:, 3, None], cam[:, 4, None], cam[:, 5, None] / 2.0
        return np.stack([x0 + (ndc[..., 0] + 1) * half, y0 + (1 - ndc[..., 1]) * half, -ndc[..., 2] * half], -1)

    def decode(self, face: dict[str, np.ndarray]) -> np.ndarray:
        """FLAME meshes (T, 5023, 3) in aligned-crop pixels (x right, y down, depth smaller = nearer)."""
        verts, cam = self._posed(face)
        return self._to_pixels(verts, cam)

    def landmarks(self, face: dict[str, np.ndarray]) -> np.ndarray:
        """The 68 FLAME landmarks (T, 68, 3) in aligned-crop pixels."""
        verts, cam = self._posed(face)
        return self._to_pixels(self.deca.flame.landmarks(verts), cam)

    def landmarks2d(self, face: dict[str, np.ndarray]) -> np.ndarray:
        """face.npz's `landmarks2d` for (possibly edited) parameters: the 68 landmarks, (T, 68, 2)."""
        return self.landmarks(face)[..., :2].astype(np.float32)

    def _lmk(self, verts: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.asarray(verts, np.float32), device=self.device)
        return self.deca.flame.landmarks(v).cpu().numpy()  # barycentric: works on pixel coordinates too

    def eyes(self, verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eye centres (T, 2, 2) and lid openings (T, 2) from the 68 landmarks, (right, left) eye."""
        lmk = self._lmk(verts)
        centres = np.stack([lmk[:, RIGHT_EYE_68, :2].mean(1), lmk[:, LEFT_EYE_68, :2].mean(1)], 1)
        openings = []
        for e in (RIGHT_EYE_68, LEFT_EYE_68):  # iBUG eye: 0 corner, 1-2 upper lid, 3 corner, 4-5 lower lid
            upper, lower = lmk[:, [e[1], e[2]], 1].mean(1), lmk[:, [e[5], e[4]], 1].mean(1)
            openings.append(np.abs(lower - upper))
        return centres, np.stack(openings, 1)

    def mouth_centre(self, verts: np.ndarray) -> np.ndarray:
        return np.median(self._lmk(verts)[:, OUTER_LIPS_68, :2], axis=1)
