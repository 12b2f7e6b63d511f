"""Edit the expressions of a preprocessed clip:

  python -m manipulator.edit <clip_dir> --run runs/manipulator/scmcl --emotion happy [--intensity 1.0]
  python -m manipulator.edit <clip_dir> --run ... --reference <other_clip_dir> [--intensity 0.5]
  python -m manipulator.edit <clip_dir> --run ... --timeline "0:neutral,2.5:happy,5.0:sad"

Writes `<clip_dir>/edits/<name>/` in the clip format (meta.json + face.npz with the edited `expr`, the
source's pose, camera and identity, and re-decoded landmarks) plus `edit.json` describing the edit.
Intensity interpolates (or extrapolates, > 1) between the source's own style and the target style.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.errors import UserError, cli_entry
from common.formats import FACE_FILE, FACE_SPEC, Clip, clear_done, mark_done, read_clip_index, write_arrays, write_meta
from common.fsutil import atomic_write_text
from facemodel import load_face_model
from manipulator.data import Normaliser
from manipulator.editing import clip_style, edit_expr, label_style, parse_timeline, timeline_styles
from manipulator.models import SIZES, build_manipulator
from manipulator.windows import window_starts


@dataclass
class Editor:
    nets: dict[str, torch.nn.Module]
    norm: Normaliser
    emotions: list[str]
    seq_len: int
    latent_dim: int
    data_dir: Path
    checkpoint: str = ""  # the file the nets came from (caches of edit results are keyed by it)

    @classmethod
    def load(cls, run_dir: str | Path) -> Editor:
        path = latest_checkpoint(Path(run_dir) / "checkpoints")
        if path is None:
            raise UserError(f"{run_dir}: no manipulator checkpoint; train it first (python -m manipulator.train)")
        ckpt = load_checkpoint(path)
        cfg, extra = ckpt["config"], ckpt["extra"]
        norm = Normaliser(np.array(extra["expr_mean"], np.float32), np.array(extra["expr_std"], np.float32))
        nets = build_manipulator(len(norm.mean), len(extra["emotions"]), cfg["size"], cfg["residual_generator"])
        for name, net in nets.items():
            net.load_state_dict(ckpt["nets"][name])
            net.eval()
        return cls(nets, norm, list(extra["emotions"]), cfg["seq_len_frames"], SIZES[cfg["size"]].latent_dim,
                   Path(cfg["data_dir"]), str(path))  # fmt: skip

    def label(self, emotion: str) -> int:
        if emotion not in self.emotions:
            raise UserError(f"emotion {emotion!r} is not one of {', '.join(self.emotions)}")
        return self.emotions.index(emotion)

    def target_style(self, emotion: str | None = None, reference: np.ndarray | None = None) -> np.ndarray:
        if reference is not None:
            return clip_style(self.nets["style"], self.norm.forward(reference), self.seq_len)
        return label_style(self.nets["mapping"], self.label(emotion), self.latent_dim)

    def edit(self, expr: np.ndarray, style: np.ndarray, intensity: float = 1.0) -> np.ndarray:
        """Raw expr (T, D) -> edited raw expr (T, D) with one target style at the given intensity."""
        x = self.norm.forward(expr)
        own = clip_style(self.nets["style"], x, self.seq_len)
        return self.norm.inverse(edit_expr(self.nets["generator"], x, self.seq_len, own + intensity * (style - own)))

    def edit_timeline(self, expr: np.ndarray, fps: float, spec: str) -> np.ndarray:
        timeline = [(t, self.target_style(emotion)) for t, emotion in parse_timeline(spec, self.emotions)]
        starts = window_starts(len(expr), self.seq_len, 1)
        centres = (starts + (self.seq_len - 1) / 2) / fps
        styles = timeline_styles(centres, timeline)
        return self.norm.inverse(edit_expr(self.nets["generator"], self.norm.forward(expr), self.seq_len, styles))


def write_edit(clip: Clip, name: str, expr: np.ndarray, description: dict, basis_file: str) -> Path:
    """The edit sub-directory in the clip format: meta.json, face.npz (re-decoded landmarks), edit.json."""
    out = clip.dir / "edits" / name
    for stage in ("edit", "render"):  # a new edit invalidates what was rendered from the old one
        clear_done(out, stage)
    face = clip.face()
    face["expr"] = expr.astype(np.float32)
    model = load_face_model(clip.meta.backends.get("face_model", "mesh"), basis_file)
    face["landmarks2d"] = model.landmarks2d(face)
    write_arrays(out / FACE_FILE, face, FACE_SPEC, clip.n_frames)
    write_meta(out, clip.meta)
    atomic_write_text(out / "edit.json", json.dumps(description, indent=2) + "\n")
    mark_done(out, "edit")
    return out


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m manipulator.edit", description=__doc__.splitlines()[0])
    p.add_argument("clip_dir", help="a preprocessed clip dir (with face.npz)")
    p.add_argument("--run", required=True, help="manipulator run dir")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--emotion", help="label-driven: target emotion")
    target.add_argument("--reference", help="reference-driven: another clip dir whose style to copy")
    target.add_argument("--timeline", help='e.g. "0:neutral,2.5:happy,5.0:sad" (seconds:emotion)')
    p.add_argument("--intensity", type=float, default=1.0, help="0 = source style, 1 = target, >1 extrapolates")
    p.add_argument("--name", help="edit sub-directory name (default from the target)")
    args = p.parse_args(argv)
    editor = Editor.load(args.run)
    clip = Clip(args.clip_dir)
    expr = clip.face()["expr"]
    if args.timeline:
        edited = editor.edit_timeline(expr, clip.meta.fps, args.timeline)
        name = args.name or "timeline"
    else:
        reference = Clip(args.reference).face()["expr"] if args.reference else None
        style = editor.target_style(args.emotion, reference)
        edited = editor.edit(expr, style, args.intensity)
        target_name = args.emotion or f"ref_{Path(args.reference).name}"
        name = args.name or (target_name if args.intensity == 1.0 else f"{target_name}_x{args.intensity:g}")
    description = {k: v for k, v in vars(args).items() if v is not None}
    basis_file = read_clip_index(editor.data_dir)["basis_file"]
    out = write_edit(clip, name, edited, description, basis_file)
    print(f"edited expressions written to {out}")


if __name__ == "__main__":
    main()
