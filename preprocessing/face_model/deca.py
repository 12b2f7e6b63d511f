"""The `deca` face-model backend (DESIGN section 4): DECA/FLAME fits of the aligned face crops.

face.npz for this backend:
- `expr` (T, 51) = [jaw opening pose[3], exp(50)] (NED's 51 coefficients; channel 0 = mouth opening);
- `pose` (T, 6) = global rotation (3) + jaw rotation (3), axis-angle (decoding replaces pose[3] by expr[:, 0],
  as NED's renderer inputs do);
- `cam` (T, 4) = DECA's orthographic camera (s, tx, ty) + the crop size that [-1, 1] spans;
- `identity` (100,) = FLAME shape, the mean of the per-frame estimates of the clip;
- `landmarks2d` (T, 68, 2) = the FLAME 68 landmarks, projected, in aligned-crop pixels.
The dataset-level file `face_model_deca.npz` holds the expression statistics of the train split (for the
manipulator's normalisation) and where the DECA files are.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import torch

from common.errors import FormatError, UserError
from common.fsutil import atomic_write_bytes
from common.geometry import normalize_coords

EXPR_DIM = 51
FILE_VERSION = 1
RIGHT_EYE_68, LEFT_EYE_68 = list(range(36, 42)), list(range(42, 48))  # subject's right eye = image left
OUTER_LIPS_68 = list(range(48, 60))


def save_stats(path: str | Path, expr_mean: np.ndarray, expr_std: np.ndarray, config_hash: str, deca_data: str) -> None:
    buf = io.BytesIO()
    np.savez(buf, version=np.array(FILE_VERSION), backend=np.array("deca"), expr_mean=expr_mean.astype(np.float32),
             expr_std=expr_std.astype(np.float32), config_hash=np.array(config_hash),
             deca_data=np.array(str(deca_data)))  # fmt: skip
    atomic_write_bytes(path, buf.getvalue())


def load_stats(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: DECA face-model file not found; preprocess the training set first (mode train, "
                        "face_model=deca), or point basis_file=... at its face_model_deca.npz")  # fmt: skip
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
    expr_dim = EXPR_DIM

    def __init__(self, deca_data: str | Path | None = None, device: str = "cpu", batch_size: int = 16):
        from DECA.model import DECA

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

    def fit_clip(self, clip, track: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """face.npz arrays from the clip's aligned face crops (DECA sees each crop resized to 224)."""
        size = clip.meta.crop_size
        codes: dict[str, list[np.ndarray]] = {k: [] for k in ("shape", "exp", "pose", "cam")}
        batch: list[np.ndarray] = []

        def flush():
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div(255).to(self.device)
            out = self.deca.encode(x)
            for k in codes:
                codes[k].append(out[k].cpu().numpy())
            batch.clear()

        for img in clip.faces:
            batch.append(cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA if size > 224 else cv2.INTER_CUBIC))
            if len(batch) == self.batch_size:
                flush()
        if batch:
            flush()
        c = {k: np.concatenate(v).astype(np.float32) for k, v in codes.items()}
        t = len(c["exp"])
        face = {
            "expr": np.concatenate([c["pose"][:, 3:4], c["exp"]], 1),
            "pose": c["pose"],
            "cam": np.concatenate([c["cam"], np.full((t, 1), size, np.float32)], 1),
            "identity": c["shape"].mean(0),
        }
        face["landmarks2d"] = self.landmarks(face)[..., :2].astype(np.float32)
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
        from DECA.model import ndc_to_pixels, project

        size = float(cam[0, 3])
        ndc = project(points, torch.as_tensor(cam[:, :3], device=points.device))
        return ndc_to_pixels(ndc, size).cpu().numpy().astype(np.float64)

    def decode(self, face: dict[str, np.ndarray]) -> np.ndarray:
        """FLAME meshes (T, 5023, 3) in aligned-crop pixels (x right, y down, depth smaller = nearer)."""
        verts, cam = self._posed(face)
        return self._to_pixels(verts, cam)

    def landmarks(self, face: dict[str, np.ndarray]) -> np.ndarray:
        """The 68 FLAME landmarks (T, 68, 3) in aligned-crop pixels."""
        verts, cam = self._posed(face)
        return self._to_pixels(self.deca.flame.landmarks(verts), cam)

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
