"""Face-model backends (DESIGN section 4): `mesh` (the embedded default) and `deca` (licensed DECA/FLAME files).

Both backends provide `fit_clip(clip, track)`, `decode(face)`, `landmarks2d(face)`, `triangles`,
`nmfc_colors`, `eyes(verts)`, `mouth_centre(verts)` and `expr_dim`, and a dataset-level file
`face_model_<backend>.npz` that holds at least `expr_mean`, `expr_std` (train-split statistics for
normalising `expr`) and `config_hash`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import FormatError, UserError

BACKENDS = ("mesh", "deca")


def basis_filename(backend: str) -> str:
    return f"face_model_{backend}.npz"


def load_face_model(backend: str, basis_path: str | Path, device: str = "cpu"):
    """The backend named in the config, with its dataset-level file."""
    if backend == "mesh":
        from preprocessing.face_model.mesh import MeshBasis, MeshFaceModel

        return MeshFaceModel(MeshBasis.load(basis_path))
    if backend == "deca":
        from preprocessing.face_model.deca import DecaFaceModel

        return DecaFaceModel.from_stats(basis_path, device)
    raise ValueError(f"unknown face model backend {backend!r}; known: {', '.join(BACKENDS)}")


def read_model_file(path: str | Path) -> dict:
    """`config_hash`, `expr_mean`, `expr_std` of any backend's dataset-level file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: face-model file not found; preprocess the training set first (mode train), "
                        "or point basis_file=... at its face_model_<backend>.npz")  # fmt: skip
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"config_hash": str(z["config_hash"]), "expr_mean": z["expr_mean"].astype(np.float32),
                    "expr_std": z["expr_std"].astype(np.float32)}  # fmt: skip
    except (KeyError, ValueError, OSError) as exc:
        raise FormatError(f"{path}: not a valid face-model file ({exc})") from None
