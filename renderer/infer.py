"""Render every frame of a clip (an edit, or its own parameters) as aligned faces:

  python -m renderer.infer <clip_dir> --edit happy [--run warp | runs/renderer/<actor>] [--runs-root runs]

`--run warp` is the training-free warp renderer (`renderer.warp`); a run dir is a trained neural renderer
(default: `<runs_root>/renderer/<clip actor>`).

Writes the aligned faces to `<clip_dir>/edits/<edit>/faces/` (PNG per frame at the crop size) and the
marker `.done/render.json`. Every frame is generated: the conditioning window is padded at the clip's start
by repeating frame 0 and the previous outputs start as zeros, so frame t of the output is frame t of the
source (NED skipped the first n_frames_g - 1 frames, which shifted boxes and audio).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from common.checkpoint import latest_checkpoint, load_checkpoint, load_run
from common.cli import parse_cli
from common.config import arg
from common.distributed import select_device
from common.errors import UserError, cli_entry
from common.formats import Clip, clear_done, is_done, mark_done
from common.framestore import FrameStore
from facemodel import FaceModel
from manipulator.data import check_face_model, dataset_basis_hash
from manipulator.edit import Editor, resolve_data_dir
from renderer.conditioning import ClipConditioner
from renderer.data import face_model_for
from renderer.networks import SIZES, Generator
from renderer.refine import KIND as REFINE_KIND
from renderer.refine import RefineRenderer
from renderer.warp import WarpRenderer


@dataclass
class InferConfig:
    clip_dir: str = arg(help="a preprocessed clip dir")
    edit: str = arg(help="edit name under <clip_dir>/edits/")
    run: str = arg("", "warp, or a neural renderer run dir (default <runs_root>/renderer/<clip actor>)")
    runs_root: str = arg("runs", "where the default renderer run is looked up")
    device: str = arg("auto", "auto, cpu or cuda")
    force: bool = arg(False, "render again even when up to date")


@dataclass
class Renderer:
    generator: Generator
    image_size: int
    n_frames_g: int
    actor: str
    data_dir: str
    checkpoint: str
    device: torch.device
    basis_hash: str = ""  # the face model of its training data (checkpoint; older ones: that dataset's now)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> Renderer:
        path, ckpt = load_run(run_dir, "train the renderer first (python -m renderer.train actor=…)")
        cfg = ckpt["config"]
        dev = select_device(device)
        gen = Generator(SIZES[cfg["size"]], cfg["n_frames_g"])
        gen.load_state_dict(ckpt["nets"]["generator"])
        gen.to(dev).eval()
        data_dir = resolve_data_dir(cfg["data_dir"])
        basis_hash = ckpt.get("extra", {}).get("basis_hash") or (
            dataset_basis_hash(data_dir) if (data_dir / "clips.json").is_file() else ""
        )
        return cls(gen, cfg["image_size"], cfg["n_frames_g"], cfg["actor"], str(data_dir), str(path), dev, basis_hash)

    def check_clip(self, clip: Clip) -> None:
        """Refuse a clip whose parameters were fitted with another face model than this renderer's data (it
        decodes them with that one)."""
        check_face_model(
            clip,
            self.basis_hash,
            f"the renderer {self.checkpoint} ({self.data_dir})",
            "render it with --run warp, or preprocess it with that dataset's basis_file",
        )

    @torch.no_grad()
    def frames(self, cond: ClipConditioner, progress: bool = False) -> Iterator[np.ndarray]:
        """Aligned faces (crop, crop, 3) uint8 for frames 0..T-1 of the conditioner's clip, in order."""
        n_g, s = self.n_frames_g, self.image_size
        crop = cond.clip.meta.crop_size
        first = torch.from_numpy(cond.render(0))
        window = [first] * n_g
        prev = torch.zeros(1, 3 * (n_g - 1), s, s, device=self.device)
        for t in tqdm(range(cond.n_frames), desc="render", unit="frame", disable=not progress, mininterval=5):
            if t > 0:
                window = window[1:] + [torch.from_numpy(cond.render(t))]
            c = torch.cat(window, 0)[None].to(self.device)
            mask = torch.from_numpy(cond.mask(t))[None].to(self.device)
            out = self.generator(c, prev, mask)
            if n_g > 1:
                prev = torch.cat([prev[:, 3:], out], 1)
            img = ((out[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
            yield img if s == crop else cv2.resize(img, (crop, crop), interpolation=cv2.INTER_CUBIC)


def save_faces(faces: Iterable[np.ndarray], edit_dir: Path, checkpoint: str) -> Iterator[np.ndarray]:
    """Pass rendered faces through, writing each to `<edit_dir>/faces/`; the render is marked done (by
    `checkpoint`) once the last one is written."""
    store = FrameStore(edit_dir / "faces", 3)
    clear_done(edit_dir, "render")  # frames are about to be rewritten: an earlier render's marker no longer holds
    for t, img in enumerate(faces):
        store.write(t, img)
        yield img
    mark_done(edit_dir, "render", checkpoint)


def load_renderer(spec: str | Path, device: str = "auto", runs_root: str | Path = "runs") -> Renderer | WarpRenderer:
    """`warp` -> the warp renderer; `warp_refine` -> the warp + the refiner run `<runs_root>/refiner/default`;
    a run dir -> the refiner or the neural renderer it holds."""
    if str(spec) == WarpRenderer.kind:
        return WarpRenderer()
    if str(spec) == REFINE_KIND:
        run = Path(runs_root) / "refiner" / "default"
        if not run.is_dir():
            raise UserError(
                f"--renderer warp_refine: no refiner run at {run}; train one (python -m renderer.refine "
                f"engine.runs_root={runs_root}) or use --renderer warp"
            )
        return RefineRenderer.load(run, device)
    if not Path(spec).is_dir():
        raise UserError(f"{spec}: no such renderer run dir (give warp, warp_refine or a run dir)")
    ckpt = latest_checkpoint(Path(spec) / "checkpoints")
    if ckpt is not None and load_checkpoint(ckpt).get("extra", {}).get("kind") == REFINE_KIND:
        return RefineRenderer.load(spec, device)
    return Renderer.load(spec, device)


def default_renderer(runs_root: str | Path) -> str:
    """`warp_refine` when a refiner run exists under `runs_root`, else `warp`."""
    return REFINE_KIND if latest_checkpoint(Path(runs_root) / "refiner" / "default" / "checkpoints") else "warp"


def render_edit(
    renderer: Renderer | WarpRenderer,
    clip: Clip,
    edit: str,
    force: bool = False,
    progress: bool = True,
    model: FaceModel | None = None,
) -> Path:
    """Render `<clip>/edits/<edit>` into its `faces/`; skipped when already rendered by the same checkpoint.
    `model`: the clip's face model (default: the neural renderer's dataset's)."""
    edit_dir = clip.dir / "edits" / edit
    if not is_done(edit_dir, "edit"):
        raise UserError(f"{edit_dir}: no finished edit; run python -m manipulator.edit {clip.dir} … --name {edit}")
    if not force and is_done(edit_dir, "render", renderer.checkpoint):
        return edit_dir / "faces"
    if isinstance(renderer, WarpRenderer):
        if model is None:
            raise UserError(f"{clip.dir}: the warp renderer needs the clip's face model")
        faces = renderer.faces(renderer.plan(model, clip, Clip(edit_dir).face()))
    else:
        if model is None:
            renderer.check_clip(clip)
        cond = ClipConditioner(
            model or face_model_for(renderer.data_dir), clip, renderer.image_size, face=Clip(edit_dir).face()
        )
        faces = renderer.frames(cond, progress)
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
    renderer = load_renderer(cfg.run or default_run(clip, cfg.runs_root), cfg.device)
    model = None
    if isinstance(renderer, WarpRenderer):
        model = face_model_for(edit_data_dir(clip.dir / "edits" / cfg.edit))
    out = render_edit(renderer, clip, cfg.edit, cfg.force, model=model)
    print(f"rendered {clip.n_frames} frames to {out}")


if __name__ == "__main__":
    main()
