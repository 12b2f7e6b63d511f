"""The real-face panel: `python -m evaluation.panel [--faces …] [--emotions …] [--out runs/panel]`.

Every openly licensed face photo the environment ships (`preprocessing.toy_mead.portrait.BUILTIN_PORTRAITS`:
scikit-image's astronaut, matplotlib's Grace Hopper, the thumbor wheel's two Wikimedia portraits; licences in
the report) becomes a talking clip: a neutral sentence of the toy speech, the photo animated by the toy rig,
its head turning from −25° to +25° of yaw while it nods ±10° of pitch, at `--size` (512² by default). The one
command (`postprocessing.pipeline`, as `scripts/postprocess.sh` runs it) then edits each clip to each emotion,
and every edit is measured on its pixels:

- the FER2013 judge (`evaluation.fer`, its makers' crop) on every `--frame-step`-th frame: mean P(target) on the
  source and on the edit, and the share of frames whose top class is the target;
- eye symmetry (`evaluation.face_measures`): median |Δ log(left / right eye opening)| against the source,
  both re-tracked by FaceMesh (a wink ≈ 1.5);
- the seam ratio: gradient in the edited region's boundary band over the source's (median over frames);
- lip_r: Pearson of the source's and the output's re-tracked inner-lip opening;
- the edit's frames/s (manipulate + render + blend + encode; preprocessing once per clip, timed apart).

The report (`report.md`, `report.json`) lists per face and emotion these numbers against the acceptance
(`ACCEPT`), and says which faces the manipulator was trained on (its run's dataset: the toy MEAD actors built
from the same photo, mirrored copies included). With several `--manipulator`s (leave-faces-out folds, e.g. the
bundled model on W001 + W002 and a run on M003 + W004: `configs/protocols/toy_holdout_w001_w002.yaml`) each
face is edited by the first one that did not train on it. One contact sheet per face (`<face>_sheet.png`): the source
and the edits at three frames; `teaser.jpg`: every face at mid-clip, the source and its happy, angry, sad and
surprised edits (the README's picture). A re-run reuses the clips made alike (size, frame rate, the toy rig's
version) and the edits made alike (manipulator weights, renderer, intensity, --edit-from, the edit's and the
warp's versions); `--force` redoes them all.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.cli import parse_cli
from common.config import arg, choice
from common.emotions import ANGRY, HAPPY, NED, NEUTRAL, SAD, SURPRISED
from common.errors import UserError, cli_entry
from common.formats import read_clip_index, write_audio
from common.fsutil import atomic_write_text, file_stamp
from common.video import iter_frames, probe_video, read_frames, write_video
from evaluation.face_measures import eye_asymmetry, seam_ratio
from evaluation.fer import FERJudge, every, mean_probability, top_share
from evaluation.metrics import lip_sync
from evaluation.retrack import retrack
from manipulator.edit import EDIT_FROM, EDIT_VERSION, MODEL_INFO, weights_file
from postprocessing.pipeline import PipelineConfig, edit_video_file, resolve_manipulator, resolve_runs_root
from preprocessing.toy_mead.generate import Actor, ClipJob, prepare_actors_quietly, speech_for
from preprocessing.toy_mead.portrait import BUILTIN_PORTRAITS, check_portrait, portrait_licence
from preprocessing.toy_mead.profiles import BUILTIN_ACTORS
from preprocessing.toy_mead.rest import neutral_rest, relaxed_texture
from preprocessing.toy_mead.rig import RIG, RIG_VERSION, Rig
from preprocessing.toy_mead.timeline import build_timeline
from preprocessing.toy_mead.warp import PortraitWarper
from renderer.warp import VERSION as WARP_VERSION

ACCEPT = {"eye_asym": 0.15, "seam": 1.2, "judge_rise": 0.10, "lip_r": 0.85}  # the issue's acceptance
YAW_DEG, PITCH_DEG = 25.0, 10.0
PANEL_SENTENCE = 9  # the toy set's last sentence (index): in its test split


@dataclass
class PanelConfig:
    faces: list[str] = arg([], "portraits to use (default: every built-in one whose package is installed)")
    emotions: list[str] = arg([], "emotions to edit to (default: every emotion the manipulator knows but neutral)")
    out: str = arg("runs/panel", "output folder (clips, edits, report, contact sheets)")
    runs_root: str = arg("", "the pipeline's --runs-root (default: what scripts/postprocess.sh uses)")
    manipulator: list[str] = arg(
        [],
        "the pipeline's --manipulator: runs or model folders; with several, each face is edited by the first that "
        "did not train on it (leave-faces-out; default: the pipeline's default)",
    )
    renderer: str = arg("", "the pipeline's --renderer (default: its default)")
    intensity: float = arg(1.0, "the pipeline's --intensity")
    edit_from: str = choice(EDIT_FROM[0], EDIT_FROM, "the pipeline's --edit-from")
    size: int = arg(512, "clip size in pixels (square)")
    fps: float = arg(25.0, "clip frame rate")
    frame_step: int = arg(2, "judge every n-th frame")
    force: bool = arg(False, "remake clips and edits that exist")


def head_sweep(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch) in radians per frame: yaw from −25° to +25° (a half cosine), pitch 0 → +10° → 0 → −10° → 0."""
    phase = np.linspace(0.0, 1.0, n_frames)
    yaw = -math.radians(YAW_DEG) * np.cos(np.pi * phase)
    pitch = math.radians(PITCH_DEG) * np.sin(2 * np.pi * phase)
    return yaw, pitch


def available_faces() -> list[str]:
    """The built-in portraits whose files are installed here."""
    names = []
    for name in BUILTIN_PORTRAITS:
        try:
            check_portrait(name)
        except UserError:
            continue
        names.append(name)
    return names


def make_clip(face: str, out: Path, size: int, fps: float) -> Path:
    """A neutral talking clip of the portrait `face` with the panel's head sweep: `out` (mp4 with its audio)."""
    profile = next(p for p in BUILTIN_ACTORS if p.portrait == face)
    actor: Actor = prepare_actors_quietly([profile], size)[0]
    job = ClipJob(0, profile.actor_id, NEUTRAL, 0, 1, PANEL_SENTENCE)
    audio, phonemes, n_frames = speech_for(job, profile, fps)
    rng = np.random.default_rng([7, PANEL_SENTENCE])
    params, _ = build_timeline(phonemes, audio, n_frames, fps, NEUTRAL, 0.0, rng)
    params[:, RIG["head_yaw"]], params[:, RIG["head_pitch"]] = head_sweep(n_frames)
    warper = PortraitWarper(
        relaxed_texture(actor.image, actor.landmarks), actor.landmarks, Rig(neutral_rest(actor.landmarks))
    )

    def frames():
        for t in range(n_frames):
            p = params[t].astype(np.float64)
            yield warper.render(warper.rig.pose(p), p)

    write_video(out, frames(), fps, audio, preset="fast")
    write_audio(out.with_suffix(".wav"), audio)
    return out


def stamped_clip(face: str, clip: Path, size: int, fps: float, force: bool = False) -> bool:
    """Make the clip of `face` unless one made alike (size, frame rate, the toy rig's version: `<clip>.json`) is
    there; True when it was (re)made."""
    made = {"size": size, "fps": fps, "rig": RIG_VERSION}
    stamp = clip.with_suffix(".json")
    if not force and clip.is_file() and stamp.is_file() and made_alike(json.loads(stamp.read_text()), made, made):
        return False
    clip.parent.mkdir(parents=True, exist_ok=True)
    make_clip(face, clip, size, fps)
    atomic_write_text(stamp, json.dumps(made) + "\n")
    return True


def fresh_clip(face: str, clip: Path, out: Path, cfg: PanelConfig) -> None:
    """The panel's clip of `face` (`stamped_clip`); a new clip takes what was made from the old one with it (its
    preprocessed folders and edits)."""
    if stamped_clip(face, clip, cfg.size, cfg.fps, cfg.force):
        for stale in [out / "edits" / face, *(out / "processed").glob(f"*/{face}"), out / "processed" / face]:
            if stale.is_dir():
                shutil.rmtree(stale)


def trained_faces(manipulator: Path) -> dict[str, list[str]]:
    """{portrait: [toy actor ids]} of the manipulator's training data (a run's data_dir; a bundled model's
    recorded identities)."""
    if (manipulator / MODEL_INFO).is_file():
        actors = set(json.loads((manipulator / MODEL_INFO).read_text())["recipe"]["identities"])
    else:
        ckpt_path = latest_checkpoint(manipulator / "checkpoints")
        if ckpt_path is None:
            return {}
        data_dir = Path(load_checkpoint(ckpt_path)["config"].get("data_dir", ""))
        if not (data_dir / "clips.json").is_file():
            return {}
        actors = {c.get("actor") for c in read_clip_index(data_dir)["clips"]}
    portrait_of = {p.actor_id: p.portrait for p in BUILTIN_ACTORS}
    seen: dict[str, list[str]] = {}
    for actor in sorted(a for a in actors if a):
        base = f"{actor[0]}{int(actor[1:]) % 100:03d}" if actor[1:].isdigit() else actor  # W101 mirrors W001
        if base in portrait_of:
            seen.setdefault(portrait_of[base], []).append(actor)
    return seen


def held_out_for(face: str, seen: dict[Path, dict[str, list[str]]]) -> Path:
    """The first manipulator (of `seen`: manipulator -> trained_faces) that did not train on `face`; the first
    one when every one did (the report then says the face was in training)."""
    return next((m for m, faces in seen.items() if face not in faces), next(iter(seen)))


def weights_stamp(manipulator: Path) -> list:
    """The file a manipulator's weights are read from (manipulator.edit.weights_file), stamped."""
    path = weights_file(manipulator)
    return file_stamp(path) if path else []


def manipulator_key(manipulator: Path, manipulators: list[Path]) -> str:
    """The processed-clips folder of a manipulator's edits: each face model fits its own parameters."""
    return "." if len(manipulators) == 1 else f"m{manipulators.index(manipulator)}"


BEFORE_OPTIONS = {"intensity": 1.0, "edit_from": "none"}  # what reports and edits made before an option existed used


def made_alike(earlier: dict, now: dict, keys) -> bool:
    """Whether `earlier` (a report, an edit's timing file) was made with `now`'s values of `keys` (one from before
    an option existed was made with BEFORE_OPTIONS)."""
    return all(earlier.get(k, BEFORE_OPTIONS.get(k)) == now[k] for k in keys)


def same_edit(timing: Path, made_by: dict) -> bool:
    """Whether the edit whose timing file this is was made with the same manipulator, renderer and settings."""
    return timing.is_file() and made_alike(json.loads(timing.read_text()), made_by, made_by)


def timed_edit(clip: Path, emotion: str, video: Path, processed: Path, **pipeline):
    """The one command on `clip` (its printed output in `<video>.log`); its wall time in seconds."""
    log = video.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            edit_video_file(clip, emotion, processed_dir=str(processed), out=video, **pipeline)
        except UserError as exc:
            raise UserError(f"{clip} -> {emotion}: {exc} (log: {log})") from None
    return time.perf_counter() - t0


def judge_video(judge: FERJudge, video: Path, step: int) -> np.ndarray:
    return judge.probabilities(every(iter_frames(video), step))


def seam_of(source: Path, output: Path, step: int = 5) -> float:
    values = [
        seam_ratio(s, o)
        for t, (s, o) in enumerate(zip(iter_frames(source), iter_frames(output), strict=False))
        if t % step == 0
    ]
    values = [v for v in values if np.isfinite(v)]
    return float(np.median(values)) if values else float("nan")


def measure(judge: FERJudge, source: Path, src_track, src_probs: np.ndarray, output: Path, emotion: str, step: int):
    out_track = retrack(output, src_track.crop_size, min_fraction=0.05)
    both = src_track.valid & out_track.valid
    lip_r, _ = lip_sync(src_track.aligned[:, :, :2], out_track.aligned[:, :, :2], both, src_track.crop_size)
    probs = judge_video(judge, output, step)
    return {
        "p_source": mean_probability(src_probs, emotion),
        "p_edit": mean_probability(probs, emotion),
        "top_source": top_share(src_probs, emotion),
        "top_edit": top_share(probs, emotion),
        "eye_asym": eye_asymmetry(src_track.aligned, out_track.aligned, both),
        "seam": seam_of(source, output),
        "lip_r": lip_r,
        "face_found": float(out_track.valid.mean()),
    }


def passes(row: dict) -> dict[str, bool]:
    return {
        "eye_asym": row["eye_asym"] <= ACCEPT["eye_asym"],
        "seam": row["seam"] <= ACCEPT["seam"],
        "judge": row["p_edit"] - row["p_source"] >= ACCEPT["judge_rise"],
        "lip_r": row["lip_r"] >= ACCEPT["lip_r"],
    }


def _tile(video: Path, t: int, label: str, tile: int) -> np.ndarray:
    """Frame t of `video`, resized to tile², labelled in its top-left corner."""
    frame = cv2.resize(read_frames(video, t, t + 1)[0], (tile, tile), interpolation=cv2.INTER_AREA)
    cv2.putText(frame, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.putText(frame, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return frame


def contact_sheet(source: Path, edits: dict[str, Path], out: Path, tile: int = 192) -> Path:
    """Source and edits (columns) at 25 %, 50 % and 75 % of the clip (rows), labelled."""
    n = probe_video(source).n_frames
    columns = {"source": source, **edits}
    rows = [
        np.concatenate([_tile(video, round(n * f), label, tile) for label, video in columns.items()], axis=1)
        for f in (0.25, 0.5, 0.75)
    ]
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    return out


TEASER_EMOTIONS = (HAPPY, ANGRY, SAD, SURPRISED)


def teaser(faces: dict[str, tuple[Path, dict[str, Path]]], out: Path, tile: int = 224) -> Path | None:
    """One row per face ({face: (source, edits)}): the source and its TEASER_EMOTIONS edits at mid-clip (the head
    turned to the camera); None when no face has all four."""
    rows = []
    for face, (source, edits) in faces.items():
        if all(e in edits for e in TEASER_EMOTIONS):
            t = probe_video(source).n_frames // 2
            tiles = [_tile(source, t, f"{face}: source", tile)] + [_tile(edits[e], t, e, tile) for e in TEASER_EMOTIONS]
            rows.append(np.concatenate(tiles, axis=1))
    if not rows:
        return None
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    return out


def _fmt(v: float, spec: str = ".2f") -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(v, spec)


def report_markdown(report: dict) -> str:
    made = {k: report.get(k, BEFORE_OPTIONS[k]) for k in ("intensity", "edit_from")}
    lines = [
        "# Real-face panel",
        "",
        f"Manipulator: {', '.join(f'`{m}`' for m in report['manipulators'])}"
        f"{' (per face the first that did not train on it)' if len(report['manipulators']) > 1 else ''}; "
        f"renderer: {report['renderer']}; intensity "
        f"{made['intensity']:g}, {START_WORDS[made['edit_from']]}; clips {report['size']}² at "
        f"{report['fps']:g} fps, yaw ±{YAW_DEG:g}°, pitch ±{PITCH_DEG:g}°.",
        f"Acceptance: eye asymmetry ≤ {ACCEPT['eye_asym']}, seam ≤ {ACCEPT['seam']}, judge P(target) rise ≥ "
        f"{ACCEPT['judge_rise']}, lip_r ≥ {ACCEPT['lip_r']}.",
        "",
        "| face | in training | emotion | P(target) src → edit | top share src → edit | eye asym | seam | lip_r "
        "| fps | fails |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for face, entry in report["faces"].items():
        seen = ", ".join(entry["trained_as"]) or "no (held out)"
        if len(report["manipulators"]) > 1:
            seen += f" (`{entry['manipulator']}`)"
        for emotion, row in entry["edits"].items():
            failed = [k for k, ok in row["passes"].items() if not ok]
            lines.append(
                f"| {face} | {seen} | {emotion} | {_fmt(row['p_source'])} → {_fmt(row['p_edit'])} | "
                f"{_fmt(row['top_source'])} → {_fmt(row['top_edit'])} | {_fmt(row['eye_asym'])} | "
                f"{_fmt(row['seam'])} | {_fmt(row['lip_r'])} | {_fmt(row['fps'], '.0f')} | {', '.join(failed) or '-'} |"
            )
    lines += ["", "## Summary", ""]
    for key, text in report["summary"].items():
        lines.append(f"- {key}: {text}")
    lines += ["", "## Faces and licences", ""]
    for face, entry in report["faces"].items():
        lines.append(f"- {face}: {entry['licence']} — contact sheet `{entry['sheet']}`")
    return "\n".join(lines) + "\n"


def summarise(faces: dict) -> dict[str, str]:
    rows = [(f, e, r) for f, entry in faces.items() for e, r in entry["edits"].items()]
    if not rows:
        return {}
    out = {}
    for key in ("eye_asym", "seam", "lip_r"):
        ok = sum(r["passes"][key] for _, _, r in rows)
        out[key] = f"{ok} of {len(rows)} edits pass"
    rising = {}
    for _, e, r in rows:
        rising.setdefault(e, []).append(r["passes"]["judge"])
    out["judge"] = ", ".join(f"{e} {sum(v)}/{len(v)}" for e, v in rising.items()) + " faces with P(target) +0.10"
    per_face = {f: sum(r["passes"]["judge"] for r in entry["edits"].values()) for f, entry in faces.items()}
    out["judge per face"] = ", ".join(f"{f} {n}/{len(faces[f]['edits'])}" for f, n in per_face.items())
    return out


START_WORDS = {
    NEUTRAL: "changes from the neutral style",
    "source": "changes from the source's style",
    "none": "raw output",
}
MERGE_KEYS = (
    "manipulators",
    "renderer",
    "intensity",
    "edit_from",
    "size",
    "fps",
    "warp",
    "rig",
)  # reports on other faces made alike


def merged(earlier: dict, report: dict) -> dict:
    """`report` with the faces of an `earlier` report that it did not measure, when both were made with the same
    manipulators, renderer, intensity, starting style, size, frame rate, edit, warp and rig versions (a run on some
    faces keeps the others)."""
    if not made_alike(earlier, report, MERGE_KEYS):
        return report
    kept = {face: entry for face, entry in earlier.get("faces", {}).items() if face not in report["faces"]}
    return report | {"faces": kept | report["faces"]}


def run_panel(cfg: PanelConfig) -> dict:
    faces = list(cfg.faces) or available_faces()
    unknown = [f for f in faces if f not in BUILTIN_PORTRAITS]
    if unknown:
        raise UserError(f"--faces {unknown[0]}: not a built-in portrait ({', '.join(BUILTIN_PORTRAITS)})")
    if not faces:
        raise UserError("no built-in portrait is installed (make setup installs them)")
    choices = [e for e in NED.ours if e != NEUTRAL]  # the six the manipulator edits to
    emotions = list(cfg.emotions) or choices
    bad = [e for e in emotions if e not in choices]
    if bad:
        raise UserError(f"--emotions {bad[0]}: choose from {', '.join(choices)}")
    out = Path(cfg.out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    runs_root = resolve_runs_root(PipelineConfig(runs_root=cfg.runs_root))
    manipulators = [
        resolve_manipulator(PipelineConfig(runs_root=cfg.runs_root, manipulator=m), runs_root)[0]
        for m in (cfg.manipulator or [""])
    ]
    seen = {m: trained_faces(m) for m in manipulators}
    weights = {m: weights_stamp(m) for m in manipulators}
    pipeline = {
        "runs_root": runs_root,
        "renderer": cfg.renderer,
        "intensity": cfg.intensity,
        "edit_from": cfg.edit_from,
    }
    judge = FERJudge.load()
    report = {
        "manipulators": [str(m) for m in manipulators],
        "renderer": cfg.renderer or "the pipeline's default",
        "intensity": cfg.intensity,
        "edit_from": cfg.edit_from,
        "size": cfg.size,
        "fps": cfg.fps,
        "edit": EDIT_VERSION,
        "warp": WARP_VERSION,
        "rig": RIG_VERSION,
        "accept": ACCEPT,
        "faces": {},
    }
    jobs = tqdm(total=len(faces) * len(emotions), desc="panel edits", unit="edit")
    shown: dict[str, tuple[Path, dict[str, Path]]] = {}  # the faces' clips and edits, for the teaser
    for face in faces:
        manipulator = held_out_for(face, seen)
        pipeline["manipulator"] = str(manipulator)
        clip = out / "clips" / f"{face}.mp4"
        fresh_clip(face, clip, out, cfg)
        n_frames = probe_video(clip).n_frames
        src_track = retrack(clip, 256)
        src_probs = judge_video(judge, clip, cfg.frame_step)
        edits, rows = {}, {}
        processed = out / "processed" / manipulator_key(manipulator, manipulators)
        fresh = cfg.force or not (processed / face).is_dir()  # its first edit may preprocess the clip
        prep_s = None
        made_by = {k: pipeline[k] for k in ("manipulator", "renderer", "intensity", "edit_from")}
        made_by["warp"] = WARP_VERSION  # warp and warp_refine draw through it (other renderers: redone too)
        made_by["weights"] = weights[manipulator]  # the manipulator's file: replaced weights are new edits
        made_by["edit"] = EDIT_VERSION  # what the pipeline makes of the manipulator's output
        for emotion in emotions:
            video = out / "edits" / face / f"{emotion}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            timing = video.with_suffix(".json")
            if cfg.force or not video.is_file() or not same_edit(timing, made_by):
                seconds = timed_edit(clip, emotion, video, processed, **pipeline)
                if fresh:  # that edit preprocessed the clip: time one without that
                    fresh = False
                    first, seconds = (
                        seconds,
                        timed_edit(clip, emotion, video, processed, **pipeline),
                    )
                    prep_s = first - seconds
                atomic_write_text(timing, json.dumps({"edit_s": seconds, "frames": n_frames} | made_by) + "\n")
            fps = n_frames / json.loads(timing.read_text())["edit_s"]
            row = measure(judge, clip, src_track, src_probs, video, emotion, cfg.frame_step)
            row["fps"] = fps
            row["passes"] = passes(row)
            rows[emotion], edits[emotion] = row, video
            jobs.update()
        sheet = contact_sheet(clip, edits, out / f"{face}_sheet.png")
        shown[face] = (clip, edits)
        report["faces"][face] = {
            "licence": portrait_licence(face),
            "manipulator": str(manipulator),
            "trained_as": seen[manipulator].get(face, []),
            "clip": str(clip),
            "frames": n_frames,
            "preprocess_s": prep_s,
            "sheet": str(sheet),
            "edits": rows,
        }
    jobs.close()
    pictured = teaser(shown, out / "teaser.jpg")
    if pictured is not None:
        report["teaser"] = str(pictured)
    earlier = out / "report.json"
    if earlier.is_file():
        report = merged(json.loads(earlier.read_text()), report)
    report["summary"] = summarise(report["faces"])
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=float) + "\n")
    atomic_write_text(out / "report.md", report_markdown(report))
    return report


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(PanelConfig, argv, prog="python -m evaluation.panel", doc=__doc__)
    report = run_panel(cfg)
    print(report_markdown(report))
    print(f"report: {Path(cfg.out) / 'report.md'}, {Path(cfg.out) / 'report.json'}")


if __name__ == "__main__":
    main()
