"""Edit the emotion of a video end to end (what `scripts/postprocess.sh` runs):

  python -m postprocessing.pipeline <video or clip dir> (--emotion happy | --reference <clip dir> |
      --timeline "0:neutral,2:happy") [--intensity 1.0] [--edit-from neutral|source|none]
      [--manipulator runs/manipulator/scmcl]
      [--renderer warp | warp_refine | <run dir>] [--side-by-side] [--out edited.mp4]

Stages: (a video only) preprocess it in `test` mode with the manipulator's training basis (a finished clip
is kept) -> edit the expression parameters (`<clip>/edits/<name>/`) -> render every frame, blend into the
source frames and write the mp4 with the source's audio, in one pass (`postprocessing.edit_video`).
Renderer: `warp` (training-free, any face, the source's own pixels moved to the edited mesh), `warp_refine`
(the warp + the generic refiner `<runs_root>/refiner/default`, no per-person training; the default when that
run exists, else `warp`), a renderer run dir (a refiner run, or a neural renderer `runs/renderer/<identity>`),
or `--actor <identity>` for the neural renderer `<runs_root>/renderer/<identity>`, or `--personalize`: the
video's own neural renderer, trained on the video first with a budget preset (resumable; a finished run is
reused). A video is preprocessed into `<processed_dir>/<clip name>` (its file name, or --clip-name); a clip dir
there made from another video is redone.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.checkpoint import latest_checkpoint
from common.cli import parse_cli
from common.config import arg, choice, load_config
from common.errors import UserError, cli_entry
from common.formats import CLIPS_FILE, FACE_PARAMS, META_FILE, Clip, clear_done, read_meta, stage_info
from common.fsutil import atomic_write_text, file_stamp
from common.memory import release_memory
from manipulator.edit import MODEL_FILE, Editor, EditTarget, check_target, edit_name, make_edit
from manipulator.editing import parse_timeline
from postprocessing.blend import METHODS
from postprocessing.edit_video import edit_video
from preprocessing.run import PreprocessConfig
from preprocessing.run import run as preprocess
from preprocessing.sources import VIDEO_EXTENSIONS
from renderer.interface import Renderer, require_topology
from renderer.registry import default_renderer, load_renderer
from renderer.train import RendererConfig, train


def renderer_name(renderer: Renderer) -> str:
    """Its kind, and the identity it was trained on when it has one (for the timing line)."""
    return f"{renderer.kind} {renderer.actor}".strip()


@dataclass
class PipelineConfig(EditTarget):
    input: str = arg(help="a video file or a preprocessed clip dir")
    runs_root: str = arg(
        "",
        "where the default manipulator and renderer runs are looked up (default: runs, or "
        "runs/demo when only `make demo` has trained one)",
    )
    manipulator: str = arg("", "manipulator run (default <runs_root>/manipulator/scmcl)")
    renderer: str = arg(
        "",
        "warp (training-free), warp_refine (+ the generic refiner), or a renderer run dir; "
        "default: warp_refine when <runs_root>/refiner/default exists, else warp",
    )
    actor: str = arg("", "use the neural renderer <runs_root>/renderer/<actor> (instead of --renderer)")
    processed_dir: str = arg("", "where a video input is preprocessed (default data/processed/inputs)")
    clip_name: str = arg("", "a video input's folder under processed_dir (default: its file name)")
    personalize: bool = arg(
        False,
        "train this person's neural renderer on the video itself first (resumable; "
        "<runs_root or runs>/renderer/video_<clip name>) and render with it",
    )
    personalize_preset: str = arg(
        "demo",
        "its budget: configs/renderer/<preset>.yaml (demo: 600 steps at 128 px, "
        "minutes on a CPU; base: NED's size and budget, for a GPU)",
    )
    blend: str = choice("pyramid", METHODS, "how the face is blended into the frame")
    side_by_side: bool = arg(False, "also write source | edited")
    out: str = arg("", "output mp4 (default <clip>/edits/<name>/video.mp4)")
    device: str = arg("auto", "where the renderer runs: auto, cpu or cuda")


def prepare_clip(source: Path, basis_file: str, processed: Path | None, name: str = "") -> Path:
    """A clip dir for `source`: itself if it is one, else the video preprocessed in test mode with `basis_file`
    into `<processed>/<name or the file name>` (kept for re-runs; redone when it was made from another video)."""
    if source.is_dir():
        Clip(source).validate()
        return source
    if source.suffix.lower() not in VIDEO_EXTENSIONS:
        raise UserError(f"{source}: neither a clip dir nor a video ({', '.join(VIDEO_EXTENSIONS)})")
    out_root = processed or Path(PROCESSED)
    clip_dir = out_root / (name or source.stem)
    made_from = _made_from(clip_dir)
    if made_from is not None and made_from != source.resolve():
        print(
            f"note: {clip_dir} was made from {made_from}; preprocessing {source} into it instead "
            "(--clip-name <name> keeps both)"
        )
        for stage in ("track", "face"):
            clear_done(clip_dir, stage)
    cfg = load_config(
        PreprocessConfig,
        overrides=[
            ("input", str(source)),
            ("mode", "test"),
            ("name", name),
            ("out_dir", str(out_root)),
            ("basis_file", basis_file),
        ],
    )
    job = preprocess(cfg, cfg.input, cfg.mode)
    if job.counts["ok"] == 0:
        reasons = "; ".join(r.reason for r in job.results["track"] if r.status == "failed" and r.reason)
        raise UserError(
            f"preprocessing failed: {reasons}" if reasons else f"{source}: preprocessing failed (see above)"
        )
    return clip_dir


def check_source(source: Path) -> None:
    """The input, checked before the model is loaded: the first thing a typo shows."""
    if not source.exists():
        raise UserError(f"{source}: no such video or clip folder")
    if source.is_file() and source.suffix.lower() not in VIDEO_EXTENSIONS:
        raise UserError(f"{source}: not a video ({', '.join(VIDEO_EXTENSIONS)}) nor a clip folder")


def check_inputs(cfg, emotions: list[str]) -> None:
    """The emotion, timeline or reference the command line names, checked against the manipulator's emotions
    before any preprocessing."""
    if cfg.emotion and cfg.emotion not in emotions:
        raise UserError(f"--emotion {cfg.emotion!r}: not one of {', '.join(emotions)}")
    if cfg.timeline:
        parse_timeline(cfg.timeline, emotions)
    if cfg.reference:
        Clip(cfg.reference).validate()


def _made_from(clip_dir: Path) -> Path | None:
    """The video an existing clip dir was made from (None when there is none); a video changed since the clip
    was tracked counts as another video."""
    if not (clip_dir / META_FILE).is_file():
        return None
    video = Path(read_meta(clip_dir).source_video)
    finished = stage_info(clip_dir, "track").get("finished", 0.0)
    if not video.is_file() or video.stat().st_mtime > finished:
        return Path(f"{video} (since changed)")
    return video


PROCESSED = "data/processed/inputs"  # where a video input is preprocessed by default
RUNS_ROOTS = ("runs", "runs/demo")  # the researcher's own runs first, then the demo's
REPO = Path(__file__).resolve().parents[1]


def resolve_runs_root(cfg) -> str:
    """--runs-root, else the first of RUNS_ROOTS (in the working directory, then in the repository) with a
    trained SCMCL manipulator, else `runs`."""
    if cfg.runs_root:
        return cfg.runs_root
    root = trained_root(RUNS_ROOTS)
    return RUNS_ROOTS[0] if root is None else str(root)


def trained_root(names: tuple[str, ...]) -> Path | None:
    """The first of the runs roots `names` (in the working directory, then in the repository) with a trained
    SCMCL manipulator."""
    roots = [Path(r) for r in names] + [REPO / r for r in names]
    return next((r for r in roots if latest_checkpoint(r / "manipulator" / "scmcl" / "checkpoints")), None)


BUNDLED = REPO / "models" / "spfem-toy"  # the model committed with the code (make model; its MODEL_CARD.md)


def resolve_manipulator(cfg, runs_root: str) -> tuple[Path, str]:
    """(the manipulator to edit with, why that one): --manipulator; else with --runs-root that root's SCMCL run;
    else your own trained run (runs/manipulator/scmcl), the bundled model, the demo's run, in that order (the
    bundled model is the demo's recipe trained longer: configs/experiments/model.yaml)."""
    if cfg.manipulator:
        return Path(cfg.manipulator), "--manipulator"
    run = Path(runs_root) / "manipulator" / "scmcl"
    if cfg.runs_root:
        return run, "--runs-root"
    own = trained_root(RUNS_ROOTS[:1])
    if own is not None:
        return own / "manipulator" / "scmcl", "your trained run"
    if (BUNDLED / MODEL_FILE).is_file():
        return BUNDLED, "the bundled model; a run you train (runs/manipulator/scmcl) takes precedence"
    return run, "the demo's run" if latest_checkpoint(run / "checkpoints") else "trained run"


def personal_renderer(clip: Clip, cfg) -> Path:
    """Train (or resume, or find finished) the neural renderer of the clip's person on the clip's own frames,
    with the `personalize_preset` budget; returns its run dir."""
    data_dir = next((p for p in clip.dir.parents if (p / CLIPS_FILE).is_file()), None)
    if data_dir is None or not clip.meta.actor:
        raise UserError(f"--personalize: {clip.dir} is not a preprocessed clip with an identity label (give the video)")
    preset = REPO / "configs" / "renderer" / f"{cfg.personalize_preset}.yaml"
    if not preset.is_file():
        presets = sorted(p.stem for p in preset.parent.glob("*.yaml") if p.stem not in ("base", "scmcl"))
        raise UserError(f"--personalize-preset {cfg.personalize_preset}: no {preset}; presets: {', '.join(presets)}")
    runs_root = cfg.runs_root or "runs"
    run_dir, video = Path(runs_root) / "renderer" / f"video_{clip.meta.actor}", Path(clip.meta.source_video)
    made_from = {"video": file_stamp(video)}
    stamp = run_dir / "personalized_from.json"
    if stamp.is_file() and (earlier := json.loads(stamp.read_text())) != made_from:
        raise UserError(
            f"{run_dir}: a renderer of the person in {earlier['video'][0]}, not in {video} (or that "
            "video changed); remove the run, or give this video another --clip-name"
        )
    stamp.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, json.dumps(made_from) + "\n")
    train_cfg = load_config(
        RendererConfig,
        [REPO / "configs" / "renderer" / "base.yaml", preset],
        [
            ("data_dir", str(data_dir)),
            ("actor", clip.meta.actor),
            ("engine.runs_root", runs_root),
            ("engine.name", run_dir.name),
            ("engine.device", cfg.device),
        ],
    )
    print(
        f"personalize: the renderer of {clip.meta.actor} ({cfg.personalize_preset} preset, "
        f"{train_cfg.engine.max_steps} steps at {train_cfg.image_size} px)"
    )
    return train(train_cfg)


def renderer_spec(cfg, runs_root: str) -> str:
    """--actor's neural renderer, else --renderer, else warp_refine when a refiner run exists, else warp."""
    if cfg.actor:
        return str(Path(runs_root) / "renderer" / cfg.actor)
    return cfg.renderer or default_renderer(runs_root)


def resolved(cfg) -> dict[str, str]:
    """What the command will use where the options leave it open (--dry-run shows these): the runs root, the
    manipulator, the renderer and the output file."""
    runs_root = resolve_runs_root(cfg)
    source = Path(cfg.input)
    clip_dir = source if source.is_dir() else Path(cfg.processed_dir or PROCESSED) / (cfg.clip_name or source.stem)
    renderer = (
        f"the video's own neural renderer ({Path(runs_root) / 'renderer' / f'video_{clip_dir.name}'})"
        if cfg.personalize
        else renderer_spec(cfg, runs_root)
    )
    return {
        "runs_root": runs_root,
        "manipulator": str(resolve_manipulator(cfg, runs_root)[0]),
        "renderer": renderer,
        "out": cfg.out or str(clip_dir / "edits" / edit_name(cfg) / "video.mp4"),
    }


@cli_entry
def main(argv: list[str] | None = None) -> None:
    dry_run = "--dry-run" in (sys.argv[1:] if argv is None else argv)
    cfg = parse_cli(
        PipelineConfig,
        argv,
        prog="python -m postprocessing.pipeline",
        doc=__doc__,
        positional=["input"],
        derive=resolved if dry_run else None,  # a dry run shows what it would use; a real one resolves as it goes
    )
    result = run_pipeline(cfg)
    for kind, path in result.items():
        print(f"{kind}: {path}")


def run_pipeline(cfg: PipelineConfig) -> dict[str, Path]:
    """The whole edit of `cfg.input` (see the module docstring); returns the written paths by kind
    ("video", and "side_by_side" when asked)."""
    check_target(cfg)
    if cfg.personalize and (cfg.actor or cfg.renderer):
        raise UserError("--personalize chooses the renderer: drop --actor / --renderer")
    check_source(Path(cfg.input))
    runs_root = resolve_runs_root(cfg)
    manipulator, which = resolve_manipulator(cfg, runs_root)
    print(f"manipulator: {manipulator} ({which})")
    times: dict[str, float] = {}
    t = time.perf_counter()
    editor = Editor.load(manipulator)
    check_inputs(cfg, editor.emotions)
    model = editor.face_model()
    renderer = None if cfg.personalize else load_renderer(renderer_spec(cfg, runs_root), cfg.device, runs_root)
    if renderer is not None:  # before any preprocessing: a renderer that cannot draw this face model is refused now
        require_topology(renderer, model)
    processed = Path(cfg.processed_dir) if cfg.processed_dir else None
    clip = Clip(prepare_clip(Path(cfg.input), editor.basis_file, processed, cfg.clip_name))
    times["preprocess"] = time.perf_counter() - t
    release_memory()  # a long video: what preprocessing freed goes back before the next stages

    t = time.perf_counter()
    edit_dir = make_edit(editor, manipulator, clip, cfg)
    times["edit"] = time.perf_counter() - t
    release_memory()

    t = time.perf_counter()
    if renderer is None:
        renderer = load_renderer(personal_renderer(clip, cfg), cfg.device, runs_root)
        times["personalize"] = time.perf_counter() - t
        t = time.perf_counter()
    elif renderer.data_dir and renderer.data_dir != str(editor.data_dir):
        print(f"note: the renderer was trained on {renderer.data_dir}, the manipulator on {editor.data_dir}")
    out = Path(cfg.out) if cfg.out else edit_dir / "video.mp4"
    face = Clip(edit_dir).face(keys=FACE_PARAMS)  # what a face model decodes
    result = edit_video(
        clip,
        face,
        renderer,
        model,
        out,
        blend=cfg.blend,
        side_by_side=cfg.side_by_side,
        name=edit_dir.name,
        edit_dir=edit_dir,  # the renderer's own aligned faces (a neural one's), for python -m postprocessing.run
        progress=True,
    )
    times[f"render ({renderer_name(renderer)})+blend+encode"] = time.perf_counter() - t
    print(f"{clip.n_frames} frames; " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return result.paths


def edit_video_file(
    path: str | Path,
    emotion: str = "",
    *,
    reference: str = "",
    timeline: str = "",
    intensity: float = 1.0,
    out: str | Path = "",
    side_by_side: bool = False,
    renderer: str = "",
    **options,
) -> dict[str, Path]:
    """`scripts/postprocess.sh` from Python (notebooks): edit a video file or a clip dir and return the written
    paths by kind. `options`: any other PipelineConfig key (runs_root, manipulator, actor, processed_dir,
    blend, device, name). Example: `edit_video_file("me.mp4", "happy", side_by_side=True)`."""
    values = {
        "input": str(path),
        "emotion": emotion,
        "reference": reference,
        "timeline": timeline,
        "intensity": intensity,
        "out": str(out),
        "side_by_side": side_by_side,
        "renderer": renderer,
        **options,
    }
    cfg = load_config(PipelineConfig, overrides=list(values.items()))
    return run_pipeline(cfg)


if __name__ == "__main__":
    main()
