"""The one path from edited face parameters to the final video: render every frame of the clip with the
edited parameters and encode the mp4 with the source's audio. With a neural renderer the aligned faces are
blended into the source frames; the warp renderer (`renderer.warp`) moves the source frame's own pixels, in
frame coordinates, so there is nothing to blend. `postprocessing.pipeline` (hence `scripts/postprocess.sh` and
the demo) and `evaluation.run` both use it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.formats import FACE_FILE, TRACK_FILE, Clip
from common.fsutil import file_stamp
from common.memory import release_memory
from common.video import iter_frames
from facemodel import FaceModel
from facemodel.geometry import aligned_to_frame, crop_frame
from postprocessing.run import paste, source_video, write_edited_video, write_frames
from renderer.conditioning import ClipConditioner
from renderer.infer import Renderer, save_faces
from renderer.refine import RefineRenderer
from renderer.warp import ClipWarp, WarpRenderer


@dataclass
class EditedVideo:
    paths: dict[str, Path]  # "video" and, with side-by-side, "side_by_side"
    faces: list[np.ndarray] = field(default_factory=list)  # the rendered aligned faces, when kept


def _warped(
    renderer: WarpRenderer, plan: ClipWarp, clip: Clip, keep: list[np.ndarray] | None, blend: str, start: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(source frame, edited frame) pairs from frame `start` on: the warp in frame coordinates; with the refiner,
    the aligned crop of the warped frame refined and blended back inside the edited face's hull."""
    source, _ = source_video(clip)
    track, size = clip.track(keys=["crop_to_frame", "align"]), clip.meta.crop_size
    for t, frame in enumerate(iter_frames(source, start), start):
        to_frame = aligned_to_frame(track, t)
        edited = plan.frame(t, frame, to_frame)
        if isinstance(renderer, RefineRenderer):
            crop = crop_frame(edited, track["crop_to_frame"][t], track["align"][t], size)
            refined, weight = renderer.refine(crop, plan.src[t], plan.dst[t], plan.triangles)
            edited, _ = paste(edited, refined, weight, to_frame, blend)
        if keep is not None:
            keep.append(crop_frame(edited, track["crop_to_frame"][t], track["align"][t], size))
        yield frame, edited


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


def _kept(faces: Iterable[np.ndarray], into: list[np.ndarray]) -> Iterator[np.ndarray]:
    for face in faces:
        into.append(face)
        yield face


def edit_video(
    clip: Clip,
    face: Mapping[str, np.ndarray],
    renderer: Renderer | WarpRenderer,
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
    side-by-side video, labelled `name`). Frames are streamed: rendering, blending and encoding run in one pass.

    `edit_dir` (neural renderer): also store the faces in `<edit_dir>/faces/` and mark the render done, so that
    `python -m postprocessing.run` can blend them again. `keep_faces`: return the aligned faces (memory: every
    frame; the warp renderer's are cut from its output frames with the clip's alignment)."""
    if isinstance(renderer, WarpRenderer):
        kept: list[np.ndarray] = []
        plan = renderer.plan(model, clip, face)
        release_memory()
        key = "" if keep_faces else edit_key(clip, face, renderer.checkpoint, blend, side_by_side, name)

        def frames(start: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            return _warped(renderer, plan, clip, kept if keep_faces else None, blend, start)

        return EditedVideo(write_frames(clip, frames, out, side_by_side, name, progress, key), kept)
    cond = ClipConditioner(model, clip, renderer.image_size, face=dict(face))
    faces: Iterable[np.ndarray] = renderer.frames(cond)
    if edit_dir is not None:
        faces = save_faces(faces, edit_dir, renderer.checkpoint)
    kept = []
    if keep_faces:
        faces = _kept(faces, kept)
    return EditedVideo(write_edited_video(clip, faces, out, blend, side_by_side, name, progress), kept)
