"""Reference rows of the evaluation report, measured per (neutral clip, emotion) with the same code as the
methods' rows (`evaluation.output`, the metrics of `evaluation.registry`), on every output any method of the
setting makes, so that the methods' numbers can be read against them:
- `ref: source`: the unedited source video itself (the floor of emotion change, the ceiling of lip sync);
- `ref: reconstruction`: the source's own parameters through the evaluated renderer, blended and encoded like
  an edit (what the renderer alone costs: a method's lip_r cannot beat it);
- `ref: target`: the true target-emotion rendition of the sentence, DTW-aligned to the source (the ceiling of
  the expression metrics; its lip_r is how much the lips naturally change with the emotion).
Plus the per-stage lip diagnostic `lip_r_params`: lip_r on the meshes decoded from the parameters (source vs
edited, before any rendering), beside `lip_r` on the re-tracked video: a loss in the first is the
manipulator's, a loss only in the second the renderer's. The distribution metrics are not computed for
reference rows.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from common.formats import Clip
from evaluation.output import Output, TargetOutput
from postprocessing.edit_video import edit_video

KINDS = ("source", "reconstruction", "target")


def _linked(video: Path, link: Path) -> Path:
    """A real clip's video under the report folder (a symlink), so that its cached row can sit beside it."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or link.resolve() != video.resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(video.resolve())
    return link


def reference_output(ev, job, kind: str) -> Output:
    """The output whose row is the reference row `kind` (in KINDS) of a job."""
    inputs = job.inputs
    source, target = Clip(inputs.root / job.source), Clip(inputs.root / job.target)
    video = ev.out / "videos" / "reference" / kind / f"{job.source.replace('/', '_')}_{job.emotion}.mp4"
    if kind == "target":
        return TargetOutput(ev, job, _linked(Path(target.meta.source_video), video))
    expr = lambda: source.face()["expr"]  # noqa: E731 (unedited)
    if kind == "source":
        faces = lambda: [source.faces.read(t) for t in range(source.n_frames)]  # noqa: E731
        return Output(ev, job, _linked(Path(source.meta.source_video), video), expr, faces)
    renderer = ev.renderer(inputs.clips[job.source]["actor"])
    return Output(
        ev,
        job,
        video,
        expr,
        lambda: edit_video(source, source.face(), renderer, inputs.model, video, keep_faces=True).faces,
    )


def reference_row(ev, job, kind: str) -> dict:
    """One reference row (`kind` in KINDS) of one job; cached beside its video like the methods' outputs, under
    a key of the clips, the dataset and (reconstruction) the renderer."""
    renderer = ev.renderer(job.inputs.clips[job.source]["actor"]) if kind == "reconstruction" else None
    key = ev.cache_key(job, renderer, {}, reference_row=kind)
    return ev.measured(reference_output(ev, job, kind), key, features=False)[0]


def reference_rows(ev, jobs: list) -> dict[str, list[dict]]:
    """The three reference rows of every job, by kind."""
    out: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for job in tqdm(jobs, desc="reference rows", unit="clip", mininterval=10):
        for kind in KINDS:
            out[kind].append(reference_row(ev, job, kind))
    return out
