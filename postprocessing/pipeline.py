"""Edit the emotion of a video end to end (what `scripts/postprocess.sh` runs):

  python -m postprocessing.pipeline <video or clip dir> (--emotion happy | --reference <clip dir> |
      --timeline "0:neutral,2:happy") [--intensity 1.0] [--manipulator runs/manipulator/scmcl]
      [--renderer runs/renderer/<identity>] [--side-by-side] [--out edited.mp4]

Stages: (a video only) preprocess it in `test` mode with the manipulator's training basis -> edit the
expression parameters -> render every frame with the identity's renderer -> blend into the source frames
-> mp4 with the source's audio. Each stage is skipped when its output is up to date.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.errors import UserError, cli_entry
from common.formats import Clip, read_clip_index
from manipulator import edit as edit_stage
from postprocessing.run import postprocess
from preprocessing import run as preprocess
from preprocessing.sources import VIDEO_EXTENSIONS
from renderer.infer import Renderer, render_edit


def edit_name(args: argparse.Namespace) -> str:
    if args.name:
        return args.name
    if args.timeline:
        return "timeline"
    target = args.emotion or f"ref_{Path(args.reference).name}"
    return target if args.intensity == 1.0 else f"{target}_x{args.intensity:g}"


def _manipulator_data_dir(run: Path) -> Path:
    path = latest_checkpoint(run / "checkpoints")
    if path is None:
        raise UserError(f"{run}: no manipulator checkpoint; train it first (scripts/train.sh)")
    return Path(load_checkpoint(path)["config"]["data_dir"])


def prepare_clip(source: Path, manipulator: Path, processed: Path | None) -> Path:
    """A clip dir for `source`: itself if it is one, else the video preprocessed in test mode."""
    if source.is_dir():
        Clip(source).validate()
        return source
    if source.suffix.lower() not in VIDEO_EXTENSIONS:
        raise UserError(f"{source}: neither a clip dir nor a video ({', '.join(VIDEO_EXTENSIONS)})")

    data_dir = _manipulator_data_dir(manipulator)
    basis = read_clip_index(data_dir)["basis_file"]
    out_root = processed or Path("data/processed/inputs")
    preprocess.main([str(source), "test", f"out_dir={out_root}", f"basis_file={basis}"])
    return out_root / source.stem


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m postprocessing.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("input", help="a video file or a preprocessed clip dir")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--emotion", help="label-driven: target emotion")
    target.add_argument("--reference", help="reference-driven: a clip dir whose expression style to copy")
    target.add_argument("--timeline", help='e.g. "0:neutral,2.5:happy" (seconds:emotion)')
    p.add_argument("--intensity", type=float, default=1.0)
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--manipulator", help="manipulator run (default <runs-root>/manipulator/scmcl)")
    p.add_argument("--renderer", help="renderer run (default <runs-root>/renderer/<actor>)")
    p.add_argument("--actor", help="identity whose renderer to use when the clip has no actor label")
    p.add_argument("--processed-dir", help="where a video input is preprocessed (default data/processed/inputs)")
    p.add_argument("--name", help="edit name (default from the target)")
    p.add_argument("--blend", default="pyramid", choices=["pyramid", "copy_paste", "poisson"])
    p.add_argument("--side-by-side", action="store_true")
    p.add_argument("--out", help="output mp4 (default <clip>/edits/<name>/video.mp4)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    runs = Path(args.runs_root)
    manipulator = Path(args.manipulator) if args.manipulator else runs / "manipulator" / "scmcl"
    times: dict[str, float] = {}
    t = time.perf_counter()
    clip_dir = prepare_clip(Path(args.input), manipulator, Path(args.processed_dir) if args.processed_dir else None)
    clip = Clip(clip_dir)
    times["preprocess"] = time.perf_counter() - t
    name = edit_name(args)

    t = time.perf_counter()
    edit_argv = [str(clip_dir), "--run", str(manipulator), "--name", name, "--intensity", str(args.intensity)]
    for flag in ("emotion", "reference", "timeline"):
        if getattr(args, flag):
            edit_argv += [f"--{flag}", getattr(args, flag)]
    edit_stage.main(edit_argv)
    times["edit"] = time.perf_counter() - t

    t = time.perf_counter()
    actor = args.actor or clip.meta.actor
    if args.renderer:
        renderer_run = Path(args.renderer)
    elif actor:
        renderer_run = runs / "renderer" / actor
    else:
        raise UserError(f"{clip_dir}: no actor label; pass --renderer <run dir> or --actor <identity>")
    renderer = Renderer.load(renderer_run, args.device)
    render_edit(renderer, clip, name)
    times["render"] = time.perf_counter() - t

    t = time.perf_counter()
    paths = postprocess(clip, name, Path(args.out) if args.out else None, args.blend, args.side_by_side)
    times["blend+encode"] = time.perf_counter() - t
    print(f"{clip.n_frames} frames; " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    for kind, path in paths.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
