"""Mesh topologies: the names by which a face model says which mesh it decodes (`FaceModel.topology`) and a
renderer which meshes it can draw, and the FaceMesh triangle list, recovered from MediaPipe's shipped
tessellation edges (3-cliques)."""

from __future__ import annotations

import numpy as np

FACEMESH_468 = "facemesh468"  # MediaPipe FaceMesh without irises: the mesh backend's vertices and indices
FLAME_5023 = "flame5023"  # FLAME's head mesh: the DECA backend's
TOPOLOGIES = {FACEMESH_468: "FaceMesh, 468 vertices", FLAME_5023: "FLAME, 5023 vertices"}  # for messages


def vertex_indices(rows: str) -> list[int]:
    """Vertex indices written as rows of whitespace-separated numbers (a long list stays a few readable rows
    under the formatter, which would put one number per line)."""
    return [int(i) for i in rows.split()]


def mediapipe_triangles() -> np.ndarray:
    """(F, 3) int32 triangles of the 468-point FaceMesh (854 from the wheel's FACEMESH_TESSELATION)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(e)) for e in FACEMESH_TESSELATION}
    neighbours: dict[int, set[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    triangles = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    return np.array(sorted(triangles), dtype=np.int32)
