"""The one path from edited face parameters to the final video: render every frame of the clip with the
edited parameters and encode the mp4 with the source's audio, for any renderer (`renderer.interface`): a
renderer that draws in frame coordinates (the warp) moves the source frame's own pixels; an aligned face it
makes (the neural renderer, the refiner) is blended into the frame here. `postprocessing.pipeline` (hence
`scripts/postprocess.sh` and the demo) and `evaluation.run` both use it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.formats import FACE_FILE, TRACK_FILE, Clip
from common.fsutil import file_stamp
from common.memory import release_memory
from common.video import iter_frames
from facemodel import FaceModel
from facemodel.geometry import aligned_to_frame, crop_frame
from postprocessing.run import FrameCompositor, paste, source_video, write_frames
from renderer.infer import FaceWriter
from renderer.interface import Renderer, RenderPlan


@dataclass
class EditedVideo:
    paths: dict[str, Path]  # "video" and, with side-by-side, "side_by_side"
    faces: list[np.ndarray] = field(default_factory=list)  # the rendered aligned faces, when kept


def _edited(
    plan: RenderPlan,
    clip: Clip,
    blend: str,
    keep: list[np.ndarray] | None,
    writer: FaceWriter | None,
    start: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(source frame, edited frame) pairs from frame `start` on. An aligned face the renderer makes is pasted
    with the `blend` method (inside its own weight, else the clip's soft-eroded face mask); `keep` collects the
    aligned faces (the renderer's own, else the edited frame's crop), `writer` stores the renderer's own."""
    source, _ = source_video(clip)
    compositor = FrameCompositor(clip, blend)
    track, size = compositor.track, clip.meta.crop_size

    def pasted(
        t: int, frame: np.ndarray, face: np.ndarray, weight: np.ndarray | None, to_frame: np.ndarray
    ) -> np.ndarray:
        weight = compositor.weight(t) if weight is None else weight
        return paste(frame, face, weight, to_frame, compositor.method, compositor.levels)[0]

    for t, frame in enumerate(iter_frames(source, start), start):
        to_frame = aligned_to_frame(track, t)
        edited, face = plan.edit_frame(t, frame, to_frame, pasted)
        if face is not None and writer is not None:
            writer.write(t, face)
        if keep is not None:
            keep.append(
                face if face is not None else crop_frame(edited, track["crop_to_frame"][t], track["align"][t], size)
            )
        yield frame, edited
    if writer is not None:  # every frame's face is written (a resumed edit's earlier ones by the killed run)
        writer.finish()


def edit_key(clip: Clip, face: Mapping[str, np.ndarray], *settings: object) -> str:
    """Digest of what an edited video is made from: the source video and the clip's files (by size and time),
    the edited parameters and the renderer's settings. A killed edit resumes only when all are the same."""
    digest = hashlib.sha256()
    for path in (Path(clip.meta.source_video), clip.dir / TRACK_FILE, clip.dir / FACE_FILE):
        digest.update(f"{file_stamp(path)};".encode())
    for k in sorted(face):
        digest.update(k.encode() + np.ascontiguousarray(face[k]).tobytes())
    digest.update(repr(settings).encode())
    return digest.hexdigest()


def edit_video(
    clip: Clip,
    face: Mapping[str, np.ndarray],
    renderer: Renderer,
    model: FaceModel,
    out: Path,
    *,
    blend: str = "pyramid",
    side_by_side: bool = False,
    name: str = "",
    edit_dir: Path | None = None,
    keep_faces: bool = False,
    progress: bool = False,
) -> EditedVideo:
    """Render `clip` with the face.npz arrays `face` (its own pose, an edited `expr`; decoded by `model`, the
    face model they belong to), blend (`blend` method) into the source video and write `out` (+ the
    side-by-side video, labelled `name`). Frames are streamed: rendering, blending and encoding run in one pass;
    a killed edit resumes after its last encoded part when the renderer can start at any frame.

    `edit_dir`: also store the renderer's own aligned faces (the neural renderer's; a warp has none) in
    `<edit_dir>/faces/` and mark the render done, so that `python -m postprocessing.run` can blend them again.
    `keep_faces`: return the aligned faces (memory: every frame; a renderer that draws in frame coordinates has
    them cut from its output frames with the clip's alignment)."""
    plan = renderer.plan(model, clip, face)
    release_memory()
    kept: list[np.ndarray] = []
    writer = FaceWriter(edit_dir, renderer.checkpoint) if edit_dir is not None else None
    resumable = plan.seekable and not keep_faces
    key = edit_key(clip, face, renderer.checkpoint, blend, side_by_side, name) if resumable else ""

    def frames(start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return _edited(plan, clip, blend, kept if keep_faces else None, writer, start)

    return EditedVideo(write_frames(clip, frames, out, side_by_side, name, progress, key), kept)
