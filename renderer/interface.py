"""The one interface of every renderer (`Renderer`) and of a clip planned for rendering (`RenderPlan`).

A renderer turns (possibly edited) face parameters of a clip into pixels. Callers (`renderer.infer`,
`renderer.evaluate`, `postprocessing.edit_video`, the evaluation) see only these protocols and get a renderer
from `renderer.registry.load_renderer`; none of them knows which kind it holds. A renderer draws either in
frame coordinates (the warp: the source frame's own pixels moved) or an aligned face that postprocessing
blends into the frame (the neural renderer), or both (the refiner); `RenderPlan.edit_frame` covers all three.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import numpy as np

from common.errors import UserError
from common.formats import Clip
from facemodel import BACKEND_TOPOLOGIES, FaceModel
from facemodel.topology import TOPOLOGIES

Blend = Callable[[int, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray], np.ndarray]
"""Postprocessing's blending of an aligned face into a frame: (t, frame (H, W, 3) uint8, face (S, S, 3) uint8,
weight (S, S) float32 in [0, 1] or None for the clip's own face mask of frame t, soft-eroded, aligned -> frame
transform (2, 3)) -> the frame with the face blended in."""


class RenderPlan(Protocol):
    """One clip prepared for rendering with (possibly edited) parameters (meshes decoded, conditioning set up)."""

    seekable: bool  # frames can be rendered from any frame on (a killed edit resumes); else in order from frame 0

    def faces(self, progress: bool = False) -> Iterator[np.ndarray]:
        """Aligned faces (crop, crop, 3) uint8 of every frame, in order."""
        ...

    def edit_frame(
        self, t: int, frame: np.ndarray, to_frame: np.ndarray, blend: Blend
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Source frame t (H, W, 3) uint8, whose aligned crop maps into it by `to_frame` (2, 3), rendered with the
        edit: (the edited frame, the renderer's own aligned face of it or None when it draws in frame
        coordinates, where the aligned face is the edited frame's crop)."""
        ...


class Renderer(Protocol):
    """What every renderer kind provides (one module per kind, one entry in `renderer.registry.RENDERERS`)."""

    kind: str  # its name in the registry (`--renderer <kind>`, a run checkpoint's `extra.kind`)
    checkpoint: str  # its weights file, or the version label of a renderer without weights (render markers key on it)
    version: str  # the code version its pixels depend on besides `checkpoint` ("" when the checkpoint is all)
    topologies: tuple[str, ...] | None  # face-model topologies it can draw (facemodel.topology); None: any
    actor: str  # the identity it was trained on; "" for any face
    data_dir: str  # the dataset whose face model it decodes with; "" for the edit's own

    def check_clip(self, clip: Clip) -> None:
        """Refuse (UserError) a clip it cannot render with its `data_dir`'s face model."""
        ...

    def plan(self, model: FaceModel, clip: Clip, face: Mapping[str, np.ndarray] | None = None) -> RenderPlan:
        """`clip` prepared for rendering with face.npz arrays `face` (default: its own), decoded by `model`, the
        face model they belong to (refused in one line when the renderer cannot draw its topology)."""
        ...


def require_topology(renderer: Renderer, model: FaceModel) -> None:
    """Refuse, in one line naming both, a face model whose meshes the renderer cannot draw."""
    if renderer.topologies is None or model.topology in renderer.topologies:
        return
    needs = " or ".join(f"{t} ({TOPOLOGIES[t]})" for t in renderer.topologies)
    backends = [b for b, t in BACKEND_TOPOLOGIES.items() if t in renderer.topologies]
    raise UserError(
        f"the {renderer.kind} renderer needs a face model of topology {needs}; this clip was fitted with "
        f"{model.name} ({TOPOLOGIES.get(model.topology, model.topology)}): render it with a neural renderer trained "
        f"on that dataset (--renderer runs/renderer/<identity>; python -m renderer.train), or preprocess and train "
        f"with face_model={' or '.join(backends)}"
    )
