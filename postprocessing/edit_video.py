"""The one path from edited face parameters to the final video: render every frame of the clip with the
edited parameters, blend the faces into the source frames and encode the mp4 with the source's audio.
`postprocessing.pipeline` (hence `scripts/postprocess.sh` and the demo) and `evaluation.run` both use it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.formats import Clip
from facemodel import FaceModel
from postprocessing.run import write_edited_video
from renderer.conditioning import ClipConditioner
from renderer.infer import Renderer, save_faces


@dataclass
class EditedVideo:
    paths: dict[str, Path]  # "video" and, with side-by-side, "side_by_side"
    faces: list[np.ndarray] = field(default_factory=list)  # the rendered aligned faces, when kept


def _kept(faces: Iterable[np.ndarray], into: list[np.ndarray]) -> Iterator[np.ndarray]:
    for face in faces:
        into.append(face)
        yield face


def edit_video(clip: Clip, face: Mapping[str, np.ndarray], renderer: Renderer, model: FaceModel, out: Path, *,
               blend: str = "pyramid", side_by_side: bool = False, name: str = "", edit_dir: Path | None = None,
               keep_faces: bool = False, progress: bool = False) -> EditedVideo:  # fmt: skip
    """Render `clip` with the face.npz arrays `face` (its own pose, an edited `expr`; decoded by `model`, the
    face model they belong to), blend (`blend` method) into the source video and write `out` (+ the
    side-by-side video, labelled `name`). Frames are streamed: rendering, blending and encoding run in one pass.

    `edit_dir`: also store the faces in `<edit_dir>/faces/` and mark the render done, so that
    `python -m postprocessing.run` can blend them again. `keep_faces`: return the faces (memory: every frame)."""
    cond = ClipConditioner(model, clip, renderer.image_size, face=dict(face))
    faces: Iterable[np.ndarray] = renderer.frames(cond, progress)
    if edit_dir is not None:
        faces = save_faces(faces, edit_dir, renderer.checkpoint)
    kept: list[np.ndarray] = []
    if keep_faces:
        faces = _kept(faces, kept)
    return EditedVideo(write_edited_video(clip, faces, out, blend, side_by_side, name), kept)
