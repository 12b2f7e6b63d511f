"""Edit the expressions of a preprocessed clip:

  python -m manipulator.edit <clip_dir> --run runs/manipulator/scmcl --emotion happy [--intensity 1.0]
      [--edit-from neutral|source|none]
  python -m manipulator.edit <clip_dir> --run ... --reference <other_clip_dir> [--intensity 0.5]
  python -m manipulator.edit <clip_dir> --run ... --timeline "0:neutral,2.5:happy,5.0:sad"

Writes `<clip_dir>/edits/<name>/` in the clip format (meta.json + face.npz with the edited `expr`, the
source's pose, camera and identity, and re-decoded landmarks) plus `edit.json` describing the edit.
The edit is the source's expressions plus the generator's change, on the same input, from a starting style to
the target's (`--edit-from`: the neutral label's by default — the source's own for a reference or a neutral
target —, or the source's own; `none`: the generator's output itself, as NED). Intensity interpolates (or
extrapolates, > 1) between the starting style and the target style.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.cli import parse_cli
from common.config import arg, choice
from common.emotions import DEFAULT_EMOTIONS, NEUTRAL
from common.errors import ConfigError, FormatError, UserError, cli_entry
from common.formats import (
    CLIPS_FILE,
    FACE_FILE,
    FACE_PARAMS,
    FACE_SPEC,
    Clip,
    clear_done,
    mark_done,
    read_clip_index,
    write_arrays,
    write_meta,
)
from common.fsutil import atomic_write_text
from facemodel import load_face_model
from facemodel.eyelids import open_eyes
from facemodel.lips import follow_speech
from facemodel.symmetry import symmetrise
from manipulator.data import check_face_model, dataset_basis_hash
from manipulator.editing import clip_style, edit_expr, keep_speech, label_style, parse_timeline, timeline_styles
from manipulator.expr_norm import Normaliser
from manipulator.models import SIZES, build_manipulator
from manipulator.windows import window_starts

TARGETS = ("emotion", "reference", "timeline")
# bump when what finish_edit makes of the same manipulator output changes (edit.json records it; the panel and
# the evaluation redo edits made by another): 2 = every inner-lip pair follows the speech, 3 = no brow lowered
# onto its lid by more than half its height (facemodel.eyelids.open_eyes), 4 = the eyes' opening held at every
# lid pair (open_eyes, and follow_speech keeps it: the ends of angry lids were raised over their middle)
EDIT_VERSION = 4
EDIT_FROM = (NEUTRAL, "source", "none")  # Editor.edit: the style the edit's change starts from (none: NED's output)


@dataclass
class EditTarget:
    """What a clip is edited to: exactly one of emotion, reference and timeline."""

    emotion: str = arg("", f"label-driven: the target emotion, one of {', '.join(DEFAULT_EMOTIONS)}")
    reference: str = arg("", "reference-driven: another clip dir whose expression style to copy")
    timeline: str = arg("", 'e.g. "0:neutral,2.5:happy,5.0:sad" (seconds:emotion)')
    intensity: float = arg(
        1.0,
        "0 = no change (--edit-from none: the manipulator's own output in the source's style), 1 = target, >1 "
        "extrapolates",
    )
    edit_from: str = choice(
        EDIT_FROM[0],
        EDIT_FROM,
        "the edit adds the manipulator's change from this style to the target's, on the source itself: neutral "
        "(the label's; a reference or a neutral target starts from the source's own), source (the clip's own); "
        "none: the manipulator's output as it is (NED). A change cancels how the manipulator misreads faces "
        "tracked unlike its training faces (real faces' surprise: twice as wide)",
    )
    symmetric: bool = arg(
        True,
        "keep the edit's change left-right symmetric (no winks or one-sided mouths) and never shut an eye (at most "
        "a third of its opening closed); false: the raw output",
    )
    speech: bool = arg(
        True,
        "the lips open and close as in the source at every inner-lip point (the edit may only scale it); false: the "
        "raw output",
    )
    name: str = arg("", "edit sub-directory name (default from the target)")


@dataclass
class EditConfig(EditTarget):
    clip_dir: str = arg(help="a preprocessed clip dir (with face.npz)")
    run: str = arg(help="manipulator run dir")


REPO = Path(__file__).resolve().parents[1]


def resolve_data_dir(data_dir: str) -> Path:
    """A run's (possibly relative) dataset path: as it is when it exists from here, else relative to the
    repository (runs trained from the repository root, used from elsewhere)."""
    path = Path(data_dir)
    if path.is_absolute() or path.exists() or not (REPO / path).exists():
        return path
    return REPO / path


MODEL_FILE = "manipulator.pt"  # a bundled model's folder (manipulator.export): its nets, and beside it
MODEL_INFO = "model.json"  # its recipe (config, data digest, training faces) and its face model's file name


def weights_file(run_dir: Path) -> Path | None:
    """The file a manipulator's nets are read from: a bundled model's MODEL_FILE, else its run's newest checkpoint."""
    return run_dir / MODEL_FILE if (run_dir / MODEL_FILE).is_file() else latest_checkpoint(run_dir / "checkpoints")


@dataclass
class Editor:
    nets: dict[str, torch.nn.Module]
    norm: Normaliser
    emotions: list[str]
    seq_len: int
    latent_dim: int
    data_dir: Path
    checkpoint: str = ""  # the file the nets came from (caches of edit results are keyed by it)
    basis_hash: str = ""  # the face model its expressions belong to (checkpoint; older ones: its dataset's now)
    face_model_name: str = "mesh"  # the backend its expressions belong to ...
    basis_file: str = ""  # ... and that backend's dataset-level file

    @classmethod
    def load(cls, run_dir: str | Path) -> Editor:
        """A manipulator run dir (its newest checkpoint; the face model of its training set) or a bundled model's
        folder (`manipulator.pt`, `model.json` and the face model's file, as `python -m manipulator.export`
        writes it)."""
        run_dir = Path(run_dir)
        bundled = (run_dir / MODEL_FILE).is_file()
        path = weights_file(run_dir)
        if path is None:
            raise UserError(
                f"{run_dir}: no manipulator checkpoint; train one (make model, make demo or scripts/train.sh)"
            )
        ckpt = load_checkpoint(path)
        cfg, extra = ckpt["config"], ckpt["extra"]
        norm = Normaliser.from_extra(extra)
        if norm is None:
            raise FormatError(f"{path}: records no expression normaliser; not a manipulator checkpoint")
        nets = build_manipulator(norm.dim, len(extra["emotions"]), cfg["size"], cfg["residual_generator"])
        for name, net in nets.items():
            if name in ckpt["nets"] or name != "discriminator":  # editing does not need D (NED's file may lack it)
                net.load_state_dict(ckpt["nets"][name])
            net.eval()
        if bundled:
            info = json.loads((run_dir / MODEL_INFO).read_text())
            data_dir, backend = run_dir, info["face_model"]
            basis_file, basis_hash = str(run_dir / info["face_model_file"]), extra["basis_hash"]
        else:
            data_dir = resolve_data_dir(cfg["data_dir"])
            basis_hash = extra.get("basis_hash") or (dataset_basis_hash(data_dir) if data_dir.is_dir() else "")
            index = read_clip_index(data_dir) if (data_dir / CLIPS_FILE).is_file() else {}
            backend, basis_file = index.get("face_model", "mesh"), index.get("basis_file", "")
        return cls(
            nets,
            norm,
            list(extra["emotions"]),
            cfg["seq_len_frames"],
            SIZES[cfg["size"]].latent_dim,
            data_dir,
            str(path),
            basis_hash,
            backend,
            basis_file,
        )

    def face_model(self):
        """The face model (facemodel.FaceModel) its expressions belong to."""
        if not self.basis_file:
            raise UserError(
                f"{self.checkpoint}: its training set {self.data_dir} is not here, and with it the face model its "
                "expressions belong to; run from where it was trained, or export it (python -m manipulator.export)"
            )
        return load_face_model(self.face_model_name, self.basis_file)

    def check_clip(self, clip: Clip) -> None:
        """Refuse a clip whose parameters were fitted with another face model than the one this manipulator
        was trained on (its expression coefficients would mean something else)."""
        check_face_model(
            clip,
            self.basis_hash,
            f"the manipulator {self.checkpoint} ({self.data_dir})",
            f"preprocess the video again with basis_file={self.basis_file}",
        )

    def label(self, emotion: str) -> int:
        if emotion not in self.emotions:
            raise UserError(f"emotion {emotion!r} is not one of {', '.join(self.emotions)}")
        return self.emotions.index(emotion)

    def target_style(self, emotion: str | None = None, reference: np.ndarray | None = None) -> np.ndarray:
        if reference is not None:
            return clip_style(self.nets["style"], self.norm.forward(reference), self.seq_len)
        return label_style(self.nets["mapping"], self.label(emotion), self.latent_dim)

    def start_for(self, edit_from: str, emotion: str = "", reference: bool = False) -> str:
        """The start (EDIT_FROM) an edit really uses: `neutral` means the source's own style for a reference (an
        encoder's style is measured against the source's, not a label's), for a neutral target (neutralising
        the source) and for a manipulator without a neutral label."""
        if edit_from not in EDIT_FROM:
            raise ConfigError(f"edit_from {edit_from!r} is not one of {', '.join(EDIT_FROM)}")
        if edit_from == NEUTRAL and (reference or emotion == NEUTRAL or NEUTRAL not in self.emotions):
            return "source"
        return edit_from

    def start_style(self, x: np.ndarray, edit_from: str) -> np.ndarray:
        """The style an edit of the normalised clip `x` starts from: the neutral label's (`neutral`, when the
        manipulator has one), else the clip's own (`source`, `none`)."""
        if self.start_for(edit_from) == NEUTRAL:
            return self.target_style(NEUTRAL)
        return clip_style(self.nets["style"], x, self.seq_len)

    def _edit(self, expr: np.ndarray, styles: np.ndarray, start: np.ndarray, edit_from: str) -> np.ndarray:
        """Raw expr (T, D) edited with `styles` ((S,) or one per window): the generator's output (`none`), or the
        source plus the generator's change from `start` to `styles` on the source.

        Why a change: the generator maps a clip to absolute expressions learnt on its training faces; a face
        tracked unlike them (a real face through FaceMesh, whose brows and lids read at a fraction of the toy
        rig's true motion) gets a warped edit (measured on the real-face panel: surprise at a third of the toy
        displacement, its eyes narrowed). What the generator changes between two styles on the same input
        cancels that bias (toy W001 tracked by FaceMesh: surprise +0.15 brow and +0.044 eye opening, as with
        its true points; the raw output gave +0.08 and +0.008). On clips like its training data both agree."""
        x = self.norm.forward(expr)
        out = edit_expr(self.nets["generator"], x, self.seq_len, styles)
        if edit_from == "none":
            return self.norm.inverse(out)
        base = edit_expr(self.nets["generator"], x, self.seq_len, start)
        return (expr + (out - base) * self.norm.std).astype(np.float32)

    def edit(
        self, expr: np.ndarray, style: np.ndarray, intensity: float = 1.0, edit_from: str = EDIT_FROM[0]
    ) -> np.ndarray:
        """Raw expr (T, D) -> edited raw expr (T, D) with one target style at the given intensity (from the
        starting style `edit_from`, EDIT_FROM)."""
        start = self.start_style(self.norm.forward(expr), edit_from)
        return self._edit(expr, start + intensity * (style - start), start, edit_from)

    def edit_timeline(
        self, expr: np.ndarray, fps: float, spec: str, edit_from: str = EDIT_FROM[0], intensity: float = 1.0
    ) -> np.ndarray:
        """Raw expr (T, D) edited along a timeline ("0:neutral,2.5:happy"): each window's style switches along
        smooth ramps, at the given intensity from the starting style `edit_from`."""
        timeline = [(t, self.target_style(emotion)) for t, emotion in parse_timeline(spec, self.emotions)]
        starts = window_starts(len(expr), self.seq_len, 1)
        centres = (starts + (self.seq_len - 1) / 2) / fps
        start = self.start_style(self.norm.forward(expr), edit_from)
        styles = start + intensity * (timeline_styles(centres, timeline) - start)
        return self._edit(expr, styles, start, edit_from)


def write_edit(clip: Clip, name: str, expr: np.ndarray, description: dict, basis_file: str) -> Path:
    """The edit sub-directory in the clip format: meta.json, face.npz (re-decoded landmarks), edit.json."""
    out = clip.dir / "edits" / name
    for stage in ("edit", "render"):  # a new edit invalidates what was rendered from the old one
        clear_done(out, stage)
    face = clip.face(keys=FACE_PARAMS)  # landmarks2d is decoded anew from the edited parameters
    face["expr"] = expr.astype(np.float32)
    model = load_face_model(clip.meta.backends.get("face_model", "mesh"), basis_file)
    face["landmarks2d"] = model.landmarks2d(face)
    write_arrays(out / FACE_FILE, face, FACE_SPEC, clip.n_frames)
    write_meta(out, clip.meta)
    atomic_write_text(out / "edit.json", json.dumps(description, indent=2) + "\n")
    mark_done(out, "edit")
    return out


def check_target(target: EditTarget) -> None:
    """Exactly one of emotion, reference and timeline names the edit's target."""
    given = [f"--{k}" for k in TARGETS if getattr(target, k)]
    if len(given) != 1:
        raise ConfigError(f"give exactly one of --emotion, --reference, --timeline (got {', '.join(given) or 'none'})")


def edit_name(target: EditTarget) -> str:
    """The edit's sub-directory name: `name`, else from the target (and the intensity when it is not 1)."""
    if target.name:
        return target.name
    if target.timeline:
        return "timeline"
    stem = target.emotion or f"ref_{Path(target.reference).name}"
    return stem if target.intensity == 1.0 else f"{stem}_x{target.intensity:g}"


def make_edit(editor: Editor, run: str | Path, clip: Clip, target: EditTarget) -> Path:
    """Edit `clip` to `target` (checked with `check_target`) and write `<clip>/edits/<edit_name>/`."""
    editor.check_clip(clip)
    face = clip.face()
    expr = face["expr"]
    start = editor.start_for(target.edit_from, target.emotion, bool(target.reference))
    if target.timeline:
        edited = editor.edit_timeline(expr, clip.meta.fps, target.timeline, start, target.intensity)
    else:
        reference = Clip(target.reference).face()["expr"] if target.reference else None
        edited = editor.edit(expr, editor.target_style(target.emotion, reference), target.intensity, start)
    name = edit_name(target)
    kind = next(k for k in TARGETS if getattr(target, k))
    description = {
        "clip_dir": str(clip.dir),
        "run": str(run),
        kind: getattr(target, kind),
        "intensity": target.intensity,
        "edit_from": start,  # the start used (start_for)
        "name": name,
        "version": EDIT_VERSION,
    }
    edited, applied = finish_edit(editor.face_model(), face, edited, target.symmetric, target.speech)
    return write_edit(clip, name, edited, description | applied, editor.basis_file)


def finish_edit(model, face: dict, edited: np.ndarray, symmetric: bool, speech: bool) -> tuple[np.ndarray, dict]:
    """The manipulator's raw edit of `face` as the pipeline delivers it (and the evaluation measures it), and what
    was applied (edit.json): its change made left-right symmetric (the raw edits wink: facemodel.symmetry), no eye
    closed by more than a third of its opening and no brow lowered onto its lid by more than half its height
    (toy-learnt anger and sadness shut them and press the brows onto them: facemodel.eyelids), then
    the source's mouth opening kept, scaled (they part closed mouths: manipulator.editing.keep_speech), at every
    inner-lip pair (a raised or stretched upper lip parts the sides: facemodel.lips.follow_speech)."""
    applied = {}
    if symmetric:
        edited, residual = symmetrise(model, face, edited)
        edited, capped = open_eyes(model, face, edited)
        applied["symmetric"] = {"mirror_residual": round(residual, 4), "eyes_capped": round(capped, 4)}
    if speech:
        edited, scale = keep_speech(face["expr"], edited)
        edited, lips = follow_speech(model, face, edited, scale)
        applied["speech"] = {"opening_scale": round(scale, 4), "lip_gaps_set": round(lips, 4)}
    return edited, applied


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(EditConfig, argv, prog="python -m manipulator.edit", doc=__doc__, positional=["clip_dir"])
    check_target(cfg)
    editor = Editor.load(cfg.run)
    out = make_edit(editor, cfg.run, Clip(cfg.clip_dir), cfg)
    print(f"edited expressions written to {out}")


if __name__ == "__main__":
    main()
