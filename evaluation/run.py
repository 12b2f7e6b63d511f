"""Compare methods on held-out clips, through the whole pipeline (edit -> render -> blend -> mp4 -> re-track):

  python -m evaluation.run --runs ned_baseline=runs/a/manipulator/ned_baseline,runs/b/... scmcl=runs/a/... \\
      --renderers runs/demo/renderer --classifier runs/eval/classifier [--split test] \\
      [--setting label|same_id|cross_id ...] [--out runs/eval/report]

Each `name=dir[,dir…]` is one method with one manipulator run per seed (mean ± std over seeds). For every
neutral clip of the split and every emotion in which the same sentence exists (pairs.npz), the clip is
edited to that emotion — by label, or by a reference clip of that emotion from the same identity
(`same_id`, another sentence) or another identity (`cross_id`) — rendered with the identity's renderer,
blended into the source video and written as mp4. Metrics:
- expr_err: edited expression vs the true target rendition along the DTW path (normalised channels 1:);
- face_found: fraction of output frames where the tracker finds a face (below 5 %, the lip and emotion
  metrics of that output are n/a);
- lip_r / m_lmd: mouth-opening correlation and mouth-landmark distance (256-crop px) between the source
  video and the output video, both re-tracked (lip preservation);
- emo_acc: the evaluation's emotion classifier (trained on original train clips only) on the expression
  fitted to the re-tracked output; emo_acc_params: the same classifier on the edited parameters (the
  manipulator alone, before rendering: a gap between the two is the renderer's loss);
- psnr / ssim: rendered faces vs the true target rendition's faces along the DTW path, inside its mask;
- lpips: the same pairs (faces masked), when torchvision's VGG16 and LPIPS's heads are present
  (`evaluation.lpips`), else "not available" with the missing files named.
FAD, LSE-D/LSE-C (SyncNet), CSIM (ArcFace) and FID are reported as not available: their loaders are not
part of this toolkit yet. Writes `<out>/report.md` and `<out>/report.json`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.errors import UserError, cli_entry
from common.formats import Clip
from common.fsutil import atomic_write_text
from common.video import iter_frames, probe_video, write_video
from evaluation.classifier import EmotionClassifier
from evaluation.lpips import LPIPS
from evaluation.lpips import default_paths as lpips_paths
from evaluation.lpips import missing as lpips_missing
from evaluation.metrics import m_lmd, mean_std, mouth_opening, paired_expr_error, pearson, psnr, ssim
from evaluation.retrack import retrack
from manipulator.edit import Editor
from manipulator.metric.data import load_index
from postprocessing.run import FrameCompositor
from preprocessing.clip_pass import aligned_points
from preprocessing.pairs import load_pairs, pair_path
from renderer.conditioning import ClipConditioner
from renderer.data import face_model_for
from renderer.infer import Renderer

METRICS = ("expr_err", "face_found", "lip_r", "m_lmd", "emo_acc", "emo_acc_params", "psnr", "ssim", "lpips")
LOWER_IS_BETTER = {"expr_err", "m_lmd", "lpips"}
NOT_BUILT = ("FAD", "LSE-D", "LSE-C", "CSIM", "FID")  # need pretrained nets whose loaders are not written yet
SETTINGS = ("label", "same_id", "cross_id")


@dataclass
class Method:
    name: str
    runs: list[str]


def parse_methods(specs: list[str]) -> list[Method]:
    methods = []
    for spec in specs:
        name, _, dirs = spec.partition("=")
        if not dirs:
            name, dirs = Path(spec).name, spec
        methods.append(Method(name, [d for d in dirs.split(",") if d]))
    return methods


def choose_reference(index: dict, split: str, actor: str, emotion: str, sentence: str, setting: str) -> str | None:
    """A clip dir of `emotion` in the split: same actor and another sentence (same_id), or another actor."""
    cands = [c for c in index["clips"] if c["split"] == split and c.get("emotion") == emotion]
    if setting == "same_id":
        cands = [c for c in cands if c["actor"] == actor]
        other = [c for c in cands if c.get("clip_id") != sentence]
        cands = other or cands
    else:
        cands = [c for c in cands if c["actor"] != actor]
    return sorted(c["dir"] for c in cands)[0] if cands else None


class Evaluator:
    def __init__(self, renderers: Path, classifier: EmotionClassifier, out: Path, split: str,
                 max_clips: int = 0, frame_step: int = 3, lpips=None):  # fmt: skip
        self.renderers, self.classifier, self.out, self.split = renderers, classifier, out, split
        self.lpips = lpips
        self.max_clips, self.frame_step = max_clips, frame_step
        self._renderer: dict[str, Renderer] = {}

    def renderer(self, actor: str) -> Renderer:
        if actor not in self._renderer:
            self._renderer[actor] = Renderer.load(self.renderers / actor)
        return self._renderer[actor]

    def run(self, method: str, run: str, setting: str) -> list[dict]:
        editor = Editor.load(run)
        root = editor.data_dir
        index = load_index(root)
        by_dir = {c["dir"]: c for c in index["clips"]}
        pairs = load_pairs(root / "pairs.npz")
        model = face_model_for(root)
        jobs = [p for p in range(len(pairs["src"])) if by_dir.get(str(pairs["src"][p]), {}).get("split") == self.split
                and str(pairs["emotion"][p]) in editor.emotions]  # fmt: skip
        if self.max_clips:
            jobs = jobs[: self.max_clips]
        if not jobs:
            raise UserError(f"{root}: no neutral clip of split {self.split!r} with same-sentence pairs")
        rows = []
        for p in tqdm(jobs, desc=f"{method} {Path(run).name} {setting}", unit="edit", mininterval=10):
            rows.append(self.one(editor, model, root, by_dir, index, pairs, p, method, run, setting))
        return [r for r in rows if r is not None]

    def one(self, editor, model, root, by_dir, index, pairs, p, method, run, setting) -> dict | None:
        src_dir, dst_dir, emotion = str(pairs["src"][p]), str(pairs["dst"][p]), str(pairs["emotion"][p])
        source, target = Clip(root / src_dir), Clip(root / dst_dir)
        self.classifier.check_unseen(source.meta.source_video)
        entry = by_dir[src_dir]
        if setting == "label":
            style = editor.target_style(emotion)
        else:
            ref = choose_reference(index, self.split, entry["actor"], emotion, entry.get("clip_id"), setting)
            if ref is None:
                return None
            style = editor.target_style(reference=Clip(root / ref).face()["expr"])
        src_face = source.face()
        edited = editor.edit(src_face["expr"], style)
        renderer = self.renderer(entry["actor"])
        faces = list(renderer.frames(ClipConditioner(model, source, renderer.image_size, face=src_face | {
            "expr": edited})))  # fmt: skip
        video = self.out / "videos" / method / Path(run).name / setting / f"{src_dir.replace('/', '_')}_{emotion}.mp4"
        compositor = FrameCompositor(source)
        frames = (compositor(t, f, faces[t])[0] for t, f in enumerate(iter_frames(source.meta.source_video)))
        write_video(video, frames, probe_video(source.meta.source_video).fps, audio_from=source.meta.source_video)
        try:
            out_track = retrack(video, source.meta.crop_size, min_fraction=0.05)
        except UserError:  # the output lost the face: a result, not a crash
            out_track = None
        src_aligned = aligned_points(source.track())
        a, b = pair_path(pairs, p)
        norm = editor.norm.forward
        nan = float("nan")
        lips = {"face_found": 0.0, "lip_r": nan, "m_lmd": nan, "emo_acc": nan}
        if out_track is not None:
            out = out_track.aligned[..., :2]
            lips = {"face_found": float(out_track.valid.mean()),
                    "lip_r": pearson(mouth_opening(src_aligned[..., :2]), mouth_opening(out)),
                    "m_lmd": m_lmd(src_aligned[..., :2], out, source.meta.crop_size), "emo_acc": nan}  # fmt: skip
            if hasattr(model, "fit"):
                fitted = model.fit(out_track.aligned)["expr"]
                lips["emo_acc"] = float(self.classifier.predict(fitted, source.meta.source_video) == emotion)
        steps = range(0, len(a), self.frame_step)
        masks = [target.masks.read(int(b[i])) > 127 for i in steps]
        lp = float("nan")
        if self.lpips is not None:
            to_t = lambda img, m: torch.from_numpy(img * m[..., None] / 127.5 - 1.0).permute(2, 0, 1).float()  # noqa: E731
            fake = torch.stack([to_t(faces[int(a[i])], m) for i, m in zip(steps, masks, strict=True)])
            real = torch.stack([to_t(target.faces.read(int(b[i])), m) for i, m in zip(steps, masks, strict=True)])
            lp = float(self.lpips(fake, real).mean())
        return {
            "emotion": emotion,
            "clip": src_dir,
            "expr_err": paired_expr_error(norm(edited), norm(target.face()["expr"]), a, b),
            **lips,
            "emo_acc_params": float(self.classifier.predict(edited, source.meta.source_video) == emotion),
            "psnr": float(np.mean([psnr(target.faces.read(int(b[i])), faces[int(a[i])], m)
                                   for i, m in zip(steps, masks, strict=True)])),
            "ssim": float(np.mean([ssim(target.faces.read(int(b[i])), faces[int(a[i])], m)
                                   for i, m in zip(steps, masks, strict=True)])),
            "lpips": lp,
            "video": str(video),
        }  # fmt: skip


def summarise(rows_per_run: list[list[dict]]) -> dict:
    """Per emotion and on average: mean over clips within a run, then mean ± std over runs (seeds)."""
    emotions = sorted({r["emotion"] for rows in rows_per_run for r in rows})
    out = {}
    for emotion in [*emotions, "average"]:
        per_run = []
        for rows in rows_per_run:
            sel = [r for r in rows if emotion == "average" or r["emotion"] == emotion]
            if sel:
                per_run.append({m: float(np.nanmean([r[m] for r in sel])) for m in METRICS})
        out[emotion] = {m: mean_std([x[m] for x in per_run]) for m in METRICS} | {"runs": len(per_run)}
    return out


def markdown(report: dict) -> str:
    lines = ["# Evaluation report", ""]
    for setting, methods in report["settings"].items():
        emotions = sorted({e for s in methods.values() for e in s if e != "average"}) + ["average"]
        lines += [f"## Setting: {setting}", "", "Metrics: " + ", ".join(
            f"{m} ({'lower' if m in LOWER_IS_BETTER else 'higher'} is better)" for m in METRICS), ""]  # fmt: skip
        for emotion in emotions:
            lines += [f"### {emotion}", "", "| method | " + " | ".join(METRICS) + " |",
                      "|---|" + "---|" * len(METRICS)]  # fmt: skip
            for name, summary in methods.items():
                if emotion not in summary:
                    continue
                cells = []
                for m in METRICS:
                    mean, std = summary[emotion][m]
                    cells.append("n/a" if not np.isfinite(mean) else f"{mean:.3f} ± {std:.3f}")
                lines.append(f"| {name} (runs: {summary[emotion]['runs']}) | " + " | ".join(cells) + " |")
            lines.append("")
    for name, why in report.get("not_available", {}).items():
        lines.append(f"- {name}: not available ({why})")
    lines.append("")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="name=manipulator_run[,run…] per method (seeds)")
    p.add_argument("--renderers", required=True, help="folder with one renderer run per identity")
    p.add_argument("--classifier", required=True, help="emotion classifier dir (python -m evaluation.classifier)")
    p.add_argument("--split", default="test")
    p.add_argument("--setting", nargs="+", default=["label"], choices=SETTINGS)
    p.add_argument("--max-clips", type=int, default=0, help="at most this many (clip, emotion) pairs per run")
    p.add_argument("--vgg16", help="torchvision VGG16 weights for LPIPS (default TORCH_HOME/hub/checkpoints)")
    p.add_argument("--lpips-heads", help="LPIPS v0.1 VGG heads (default: the installed lpips package's)")
    p.add_argument("--out", default="runs/eval/report")
    args = p.parse_args(argv)
    from preprocessing.mediapipe_mesh import quiet_native_stderr

    quiet_native_stderr()  # MediaPipe's native log lines while re-tracking
    out = Path(args.out)
    not_available = {name: "its pretrained network's loader is not built in this toolkit yet" for name in NOT_BUILT}
    d_vgg, d_heads = lpips_paths()
    vgg, heads = Path(args.vgg16) if args.vgg16 else d_vgg, Path(args.lpips_heads) if args.lpips_heads else d_heads
    why = lpips_missing(vgg, heads)
    lpips = None
    if why:
        not_available["LPIPS"] = why
    else:
        lpips = LPIPS.load(vgg, heads)
    ev = Evaluator(Path(args.renderers), EmotionClassifier.load(args.classifier), out, args.split, args.max_clips,
                   lpips=lpips)  # fmt: skip
    report = {"split": args.split, "settings": {}, "rows": {}, "not_available": not_available}
    for setting in args.setting:
        report["settings"][setting] = {}
        for method in parse_methods(args.runs):
            rows = [ev.run(method.name, run, setting) for run in method.runs]
            report["settings"][setting][method.name] = summarise(rows)
            report["rows"][f"{setting}/{method.name}"] = rows
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    atomic_write_text(out / "report.md", md)
    print(md)
    print(f"report: {out / 'report.md'}, {out / 'report.json'}")


if __name__ == "__main__":
    main()
