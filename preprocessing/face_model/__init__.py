"""Face-model backends (DESIGN section 4). `mesh` is the embedded default; the DECA backend plugs in here."""

from __future__ import annotations

from pathlib import Path

from preprocessing.face_model.mesh import MeshBasis, MeshFaceModel

BACKENDS = ("mesh",)


def basis_filename(backend: str) -> str:
    return f"face_model_{backend}.npz"


def load_face_model(backend: str, basis_path: str | Path) -> MeshFaceModel:
    """The backend named in the config, with its dataset-level file."""
    if backend == "mesh":
        return MeshFaceModel(MeshBasis.load(basis_path))
    raise ValueError(f"unknown face model backend {backend!r}; known: {', '.join(BACKENDS)}")
