"""The face-model library every stage after tracking uses (DESIGN section 4).

Two backends implement the `FaceModel` protocol: `mesh` (the embedded default, `facemodel.mesh`) and
`deca` (licensed DECA/FLAME files, `facemodel.deca`). Each has a dataset-level file
`face_model_<backend>.npz` that holds at least `expr_mean`, `expr_std` (train-split statistics for
normalising `expr`) and `config_hash`. Beside them: conditioning-image rendering (`facemodel.render`), the
FaceMesh topology (`facemodel.topology`) and landmark/affine geometry of the clip format
(`facemodel.geometry`). Consumers type against `FaceModel` and get a backend from `load_face_model`, or the one
a processed dataset was fitted with from `face_model_for`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from common.errors import FormatError, UserError
from common.formats import read_clip_index
from facemodel.deca import DecaFaceModel
from facemodel.mesh import MeshBasis, MeshFaceModel

BACKENDS = ("mesh", "deca")
BACKEND_TOPOLOGIES = {"mesh": MeshFaceModel.topology, "deca": DecaFaceModel.topology}  # backend -> its mesh


class FaceModel(Protocol):
    """What a face-model backend provides. Arrays follow face.npz (docs/formats.md): `expr` (T, D) float32
    with channel 0 the mouth opening, `pose`, `cam`, `identity`; meshes are (T, V, 3) in aligned-crop pixels."""

    name: str
    topology: str  # the mesh `decode` returns (facemodel.topology: facemesh468, flame5023); renderers check it
    triangles: np.ndarray  # (F, 3) int32 mesh triangles
    nmfc_colors: np.ndarray  # (V, 3) float32 in [0, 1]: normalised mean-face coordinates (NMFC vertex colours)

    @property
    def expr_dim(self) -> int:
        """D, the width of `expr`."""
        ...

    def fit_clip(self, faces: Iterable[np.ndarray], track: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """face.npz arrays of a tracked clip: `faces` its aligned crops (S, S, 3) uint8 in frame order, `track`
        its track.npz arrays (`align`, `landmarks`, `landmarks_z`, optional `landmarks68`)."""
        ...

    def decode(self, face: Mapping[str, np.ndarray]) -> np.ndarray:
        """Posed meshes (T, V, 3) in aligned-crop pixels (x, y, depth) from face.npz arrays (possibly edited)."""
        ...

    def landmarks2d(self, face: Mapping[str, np.ndarray]) -> np.ndarray:
        """face.npz's `landmarks2d` (T, L, 2) float32 for (possibly edited) parameters."""
        ...

    def eyes(self, verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eye centres (T, 2, 2) and lid openings (T, 2) of decoded meshes, (right, left) eye."""
        ...

    def mouth_centre(self, verts: np.ndarray) -> np.ndarray:
        """(T, 2) mouth centre of decoded meshes."""
        ...


def basis_filename(backend: str) -> str:
    return f"face_model_{backend}.npz"


def load_face_model(backend: str, basis_path: str | Path, device: str = "cpu") -> FaceModel:
    """The backend named in the config, with its dataset-level file."""
    if backend == "mesh":
        return MeshFaceModel(MeshBasis.load(basis_path))
    if backend == "deca":
        return DecaFaceModel.from_stats(basis_path, device)
    raise ValueError(f"unknown face model backend {backend!r}; known: {', '.join(BACKENDS)}")


def face_model_for(data_dir: str | Path) -> FaceModel:
    """The face model a processed dataset was fitted with (its clips.json names the backend and its file)."""
    index = read_clip_index(Path(data_dir))
    return load_face_model(index.get("face_model", "mesh"), index["basis_file"])


def read_model_file(path: str | Path) -> dict:
    """`config_hash`, `expr_mean`, `expr_std` of any backend's dataset-level file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: face-model file not found; preprocess the training set first (mode train), "
            "or point basis_file=... at its face_model_<backend>.npz"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            return {
                "config_hash": str(z["config_hash"]),
                "expr_mean": z["expr_mean"].astype(np.float32),
                "expr_std": z["expr_std"].astype(np.float32),
            }
    except (KeyError, ValueError, OSError) as exc:
        raise FormatError(f"{path}: not a valid face-model file ({exc})") from None
