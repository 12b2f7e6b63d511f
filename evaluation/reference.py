"""Reference rows of the evaluation report, measured per (neutral clip, emotion) with the same code as the
methods' rows, so that the methods' numbers can be read against them:
- `ref: source`: the unedited source video itself (the floor of emotion change, the ceiling of lip sync);
- `ref: reconstruction`: the source's own parameters through the evaluated renderer, blended and encoded like
  an edit (what the renderer alone costs: a method's lip_r cannot beat it);
- `ref: target`: the true target-emotion rendition of the sentence, DTW-aligned to the source (the ceiling of
  the expression metrics; its lip_r is how much the lips naturally change with the emotion).
Plus the per-stage lip diagnostic `lip_r_params`: lip_r on the meshes decoded from the parameters (source vs
edited, before any rendering), beside `lip_r` on the re-tracked video: a loss in the first is the
manipulator's, a loss only in the second the renderer's. FAD/FID are not computed for reference rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.formats import Clip
from evaluation.cache import load_cached, save_cached
from evaluation.fer import top_share
from evaluation.metrics import mouth_opening, pearson
from postprocessing.edit_video import edit_video
from preprocessing.pairs import pair_path

KINDS = ("source", "reconstruction", "target")
FACEMESH_POINTS = (468, 478)  # the mesh model's vertices; FaceMesh with irises


def decoded_mouth(model, face: dict) -> np.ndarray | None:
    """Mouth opening (T,) of the landmarks decoded from face parameters; None for a face model whose landmarks
    are not the FaceMesh topology (the lip points are FaceMesh indices; DECA's are 68 points)."""
    points = model.landmarks2d(face)
    return mouth_opening(points) if points.shape[1] in FACEMESH_POINTS else None


def params_lip_r(model, face_a: dict, face_b: dict, a: np.ndarray | None = None, b=None) -> float:
    """lip_r between the decoded meshes of two sets of face parameters (frame by frame, or along the path a, b)."""
    ma, mb = decoded_mouth(model, face_a), decoded_mouth(model, face_b)
    if ma is None or mb is None:
        return float("nan")
    return pearson(ma, mb) if a is None else pearson(ma[a], mb[b])


def _linked(video: Path, link: Path) -> Path:
    """A real clip's video under the report folder (a symlink), so that its cached row can sit beside it."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or link.resolve() != video.resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(video.resolve())
    return link


def reference_row(ev, job, kind: str) -> dict:
    """One reference row (`kind` in KINDS) of one job; cached beside its video like the methods' outputs."""
    inputs = job.inputs
    source, target = Clip(inputs.root / job.source), Clip(inputs.root / job.target)
    renderer = ev.renderer(inputs.clips[job.source]["actor"]) if kind == "reconstruction" else None
    video = ev.out / "videos" / "reference" / kind / f"{job.source.replace('/', '_')}_{job.emotion}.mp4"
    if kind != "reconstruction":
        video = _linked(Path((source if kind == "source" else target).meta.source_video), video)
    key = ev.cache_key(renderer, {"renderer": renderer.checkpoint} if renderer is not None else {}, reference_row=kind)
    cached = None if ev.force else load_cached(video, key)
    if cached is not None:
        return cached[0]
    face = source.face()
    if kind == "source":
        row, _ = ev.measure(job, face, face["expr"], video, [source.faces.read(t) for t in range(source.n_frames)])
    elif kind == "reconstruction":
        faces = edit_video(source, face, renderer, inputs.model, video, keep_faces=True).faces
        row, _ = ev.measure(job, face, face["expr"], video, faces)
    else:
        row = target_row(ev, job, video)
    save_cached(video, key, row, {})
    return row


def target_row(ev, job, video: Path) -> dict:
    """The true target rendition measured against the source along the sentence's DTW path: expression metrics
    are their ceiling by definition (expr_err 0; image metrics n/a), lip metrics compare the source's mouth
    with the target's re-tracked mouth at aligned frames, the judges score the real target video."""
    inputs, emotion = job.inputs, job.emotion
    source, target = Clip(inputs.root / job.source), Clip(inputs.root / job.target)
    a, b = pair_path(inputs.pairs, job.pair)
    nan = float("nan")
    row = {
        "emotion": emotion,
        "clip": job.source,
        "target": job.target,
        "expr_err": 0.0,
        "psnr": nan,
        "ssim": nan,
        "lpips": nan,
        "csim": nan,
        "video": str(video),
    }
    row |= ev.lip_metrics(video, source, inputs.model, emotion, (a, b), target.meta.source_video)
    target_face = target.face()
    row["lip_r_params"] = params_lip_r(inputs.model, source.face(), target_face, a, b)
    row["emo_acc_params"] = float(ev.classifier.predict(target_face["expr"], target.meta.source_video) == emotion)
    more, _ = ev.pretrained_metrics(video, target, target)  # SyncNet on the real target with its own audio
    row |= {"lse_d": more["lse_d"], "lse_c": more["lse_c"]}
    if ev.nets.fer is None:
        return row | dict.fromkeys(("fer_acc", "fer_src", "fer_real"), nan)
    real = top_share(ev.real_fer(target), emotion)
    return row | {"fer_acc": real, "fer_src": top_share(ev.real_fer(source), emotion), "fer_real": real}


def reference_rows(ev, jobs: list) -> dict[str, list[dict]]:
    """The three reference rows of every job, by kind."""
    out: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for job in tqdm(jobs, desc="reference rows", unit="clip", mininterval=10):
        for kind in KINDS:
            out[kind].append(reference_row(ev, job, kind))
    return out
