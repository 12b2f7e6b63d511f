"""Render every frame of a clip (an edit, or its own parameters) as aligned faces:

  python -m renderer.infer <clip_dir> --edit happy [--run warp | runs/renderer/<actor>] [--runs-root runs]

`--run` is any renderer `renderer.registry.load_renderer` takes: `warp` (training-free, `renderer.warp`),
`warp_refine`, or a run dir (a refiner run, or a neural renderer; default: `<runs_root>/renderer/<clip actor>`).

Writes the aligned faces to `<clip_dir>/edits/<edit>/faces/` (PNG per frame at the crop size) and the
marker `.done/render.json`. Every frame is rendered, frame t of the output from frame t of the source.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import parse_cli
from common.config import arg
from common.errors import UserError, cli_entry
from common.formats import Clip, clear_done, is_done, mark_done
from common.framestore import FrameStore
from facemodel import FaceModel, face_model_for
from manipulator.edit import Editor
from renderer.interface import Renderer
from renderer.registry import load_renderer


@dataclass
class InferConfig:
    clip_dir: str = arg(help="a preprocessed clip dir")
    edit: str = arg(help="edit name under <clip_dir>/edits/")
    run: str = arg("", "warp, warp_refine, or a renderer run dir (default <runs_root>/renderer/<clip actor>)")
    runs_root: str = arg("runs", "where the default renderer run is looked up")
    device: str = arg("auto", "auto, cpu or cuda")
    force: bool = arg(False, "render again even when up to date")


class FaceWriter:
    """Writes a render's aligned faces to `<edit_dir>/faces/` one by one; `finish` marks the render done (by
    `checkpoint`). The folder and the marker are touched only once a face is written."""

    def __init__(self, edit_dir: Path, checkpoint: str):
        self.edit_dir, self.checkpoint = edit_dir, checkpoint
        self.store: FrameStore | None = None

    def write(self, t: int, img: np.ndarray) -> None:
        if self.store is None:
            clear_done(self.edit_dir, "render")  # frames are about to be rewritten: an earlier marker no longer holds
            self.store = FrameStore(self.edit_dir / "faces", 3)
        self.store.write(t, img)

    def finish(self) -> None:
        if self.store is not None:
            mark_done(self.edit_dir, "render", self.checkpoint)


def save_faces(faces: Iterable[np.ndarray], edit_dir: Path, checkpoint: str) -> Iterator[np.ndarray]:
    """Pass rendered faces through, writing each to `<edit_dir>/faces/`; the render is marked done (by
    `checkpoint`) once the last one is written."""
    writer = FaceWriter(edit_dir, checkpoint)
    for t, img in enumerate(faces):
        writer.write(t, img)
        yield img
    writer.finish()


def render_edit(
    renderer: Renderer,
    clip: Clip,
    edit: str,
    force: bool = False,
    progress: bool = True,
    model: FaceModel | None = None,
) -> Path:
    """Render `<clip>/edits/<edit>` into its `faces/`; skipped when already rendered by the same checkpoint.
    `model`: the face model of the edit's parameters (default: the renderer's training data's when it has one,
    after checking the clip was fitted with it; else the edit's manipulator's data's)."""
    edit_dir = clip.dir / "edits" / edit
    if not is_done(edit_dir, "edit"):
        raise UserError(f"{edit_dir}: no finished edit; run python -m manipulator.edit {clip.dir} … --name {edit}")
    if not force and is_done(edit_dir, "render", renderer.checkpoint):
        return edit_dir / "faces"
    if model is None and renderer.data_dir:
        renderer.check_clip(clip)
        model = face_model_for(renderer.data_dir)
    elif model is None:
        model = face_model_for(edit_data_dir(edit_dir))
    faces = renderer.plan(model, clip, Clip(edit_dir).face()).faces(progress)
    for _ in save_faces(faces, edit_dir, renderer.checkpoint):
        pass
    return edit_dir / "faces"


def edit_data_dir(edit_dir: Path) -> Path:
    """The dataset whose face model the edit's parameters belong to: the one its manipulator was trained on."""
    info = json.loads((edit_dir / "edit.json").read_text())
    return Editor.load(info["run"]).data_dir


def default_run(clip: Clip, runs_root: str | Path) -> Path:
    actor = clip.meta.actor
    if not actor:
        raise UserError(f"{clip.dir}: the clip has no actor label; pass --run runs/renderer/<identity>")
    return Path(runs_root) / "renderer" / actor


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(InferConfig, argv, prog="python -m renderer.infer", doc=__doc__, positional=["clip_dir"])
    clip = Clip(cfg.clip_dir)
    renderer = load_renderer(cfg.run or default_run(clip, cfg.runs_root), cfg.device, cfg.runs_root)
    out = render_edit(renderer, clip, cfg.edit, cfg.force)
    print(f"rendered {clip.n_frames} frames to {out}")


if __name__ == "__main__":
    main()
