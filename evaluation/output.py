"""One output of the evaluation, measured: the pieces the metrics of `evaluation.registry` read (the re-tracked
video, the lip series, the face crops, the judge's probabilities, …), each computed once and only when a metric
that is not cached needs it, and `measure`, which fills a row from the registry and the resume cache.

`Output` is an edited (or reconstructed, or unedited) video of a job's source clip; `TargetOutput` is the true
target rendition itself, measured against the source along the sentence's DTW path (evaluation.reference).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from itertools import islice
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.formats import Clip
from common.video import iter_frames, probe_video
from evaluation.cache import Cached
from evaluation.metrics import lip_sync
from evaluation.registry import CLASSIFIER, METRICS
from evaluation.retrack import Retracked, face_boxes, retrack
from evaluation.syncnet import face_crops
from facemodel.geometry import aligned_points, crop_frame
from preprocessing.pairs import pair_path

NAN = float("nan")


class Output:
    """An output `video` of `job`'s source clip whose face parameters are the source's with `edit()`
    expressions and whose aligned faces are `render()` (one per frame; rendering writes the video)."""

    fixed: dict[str, float] = {}  # metrics whose value this kind of row has by definition

    def __init__(self, ev, job, video: Path, edit: Callable[[], np.ndarray], render: Callable[[], list[np.ndarray]]):
        self.ev, self.job, self.video = ev, job, Path(video)
        self._edit, self._render = edit, render
        inputs = job.inputs
        self.emotion, self.model, self.norm = job.emotion, inputs.model, inputs.norm.forward
        self.source, self.target = Clip(inputs.root / job.source), Clip(inputs.root / job.target)
        self._features: dict[str, np.ndarray] = {}  # net -> features of the video's crops

    @property
    def nets(self):
        return self.ev.nets

    @property
    def own(self) -> Clip:
        """The clip whose track, face boxes and audio the video has: the source (the edit keeps the head pose)."""
        return self.source

    @property
    def judged(self) -> str:
        """The real video the output shows (the classifier refuses its own training videos)."""
        return self.source.meta.source_video

    @property
    def lip_path(self) -> tuple | None:
        """The frames whose lips are compared: None, frame by frame (source a[i] vs video b[i] along a path)."""
        return None

    @property
    def params_path(self) -> tuple:
        """lip_r_params' frames: () frame by frame, or the path (a, b)."""
        return ()

    @cached_property
    def src_face(self) -> dict:
        return self.source.face()

    @cached_property
    def edited(self) -> np.ndarray:
        return self._edit()

    @cached_property
    def edited_face(self) -> dict:
        return self.src_face | {"expr": self.edited}

    @cached_property
    def faces(self) -> list[np.ndarray]:
        return self._render()

    @cached_property
    def path(self) -> tuple[np.ndarray, np.ndarray]:
        """The sentence's DTW path (source frames a, target frames b)."""
        return pair_path(self.job.inputs.pairs, self.job.pair)

    @cached_property
    def face_pairs(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(rendered face, true target face, target mask) at every `frame_step`-th step of the DTW path."""
        a, b = self.path
        steps = range(0, len(a), self.ev.frame_step)
        t = self.target
        return [(self.faces[int(a[i])], t.faces.read(int(b[i])), t.masks.read(int(b[i])) > 127) for i in steps]

    @cached_property
    def retracked(self) -> Retracked | None:
        try:
            return retrack(self.video, self.source.meta.crop_size, min_fraction=0.05)
        except UserError:  # the output lost the face: a result, not a crash
            return None

    @cached_property
    def lip(self) -> tuple[float, float]:
        """lip_r, m_lmd of the source's and the re-tracked video's lips on the frames both trackers found (frame
        by frame, or source a[i] vs video b[i] along `lip_path`); NaN when fewer than 2 such frames."""
        out = self.retracked
        if out is None:
            return NAN, NAN
        track = self.source.track()
        a, b = self.lip_path or (slice(None), slice(None))
        valid = track["valid"][a] & out.valid[b]
        return lip_sync(aligned_points(track)[a, :, :2], out.aligned[b, :, :2], valid, self.source.meta.crop_size)

    @property
    def face_found(self) -> float:
        return 0.0 if self.retracked is None else float(self.retracked.valid.mean())

    @property
    def face_lost(self) -> bool:
        """No lip or emotion reading: the re-tracker lost the face, or found it in < 2 frames the source has."""
        return self.retracked is None or bool(np.isnan(self.lip[1]))

    @cached_property
    def fitted_expr(self) -> np.ndarray:
        """The dataset's face model fitted to the re-tracked video (its landmarks and aligned crops)."""
        return self.model.fit_clip(self.retracked.faces(), self.retracked.track)["expr"]

    def classify(self, expr: np.ndarray) -> float:
        """1 when the evaluation's classifier reads the target emotion in `expr`, else 0."""
        return float(self.ev.classifier.predict(expr, self.judged) == self.emotion)

    @cached_property
    def fer_output(self) -> np.ndarray:
        """The judge's probabilities on every `frame_step`-th frame of the video: the face found in the output as
        fer finds it (the judge's default crop), or with crop=tracked in the source's tracked face boxes (the
        edit keeps the head pose)."""
        return self.nets.fer.clip(self.source, self.ev.frame_step, self.video)

    def real_fer(self, clip: Clip) -> np.ndarray:
        return self.ev.real_fer(clip)

    @cached_property
    def crops(self) -> np.ndarray:
        """(N, S, S, 3) aligned crops of every `frame_step`-th frame of the video, in the own clip's track."""
        own = self.own
        track, size, keep = own.track(), own.meta.crop_size, range(0, own.n_frames, self.ev.frame_step)
        return np.stack(
            [
                crop_frame(frame, track["crop_to_frame"][t], track["align"][t], size)
                for t, frame in enumerate(iter_frames(self.video))
                if t in keep
            ]
        )

    def features(self, net: str) -> np.ndarray:
        """Features of the video's crops by a pretrained net (ArcFace: its embeddings), computed once."""
        if net not in self._features:
            model = getattr(self.nets, net)
            self._features[net] = model.embed(self.crops) if net == "arcface" else model.features(self.crops)
        return self._features[net]

    def real_features(self, net: str) -> np.ndarray:
        return self.ev.real_features(self.target, net)

    @cached_property
    def own_embeddings(self) -> np.ndarray:
        """ArcFace embeddings of the own clip's aligned faces at the crops' frames (csim's other side)."""
        keep = range(0, self.own.n_frames, self.ev.frame_step)[: len(self.crops)]
        return self.nets.arcface.embed(np.stack([self.own.faces.read(t) for t in keep]))

    @cached_property
    def lse(self) -> tuple[float, float]:
        """SyncNet's LSE-D, LSE-C of the video's face (the own clip's boxes) with the own clip's audio; frames are
        streamed, so a long video never sits in memory."""
        own, info = self.own, probe_video(self.video)
        n = min(info.n_frames, own.n_frames)
        crops = face_crops(islice(iter_frames(self.video), n), face_boxes(own.track())[:n])
        return self.nets.syncnet.lse(crops, info.fps, own.audio())


class TargetOutput(Output):
    """The true target rendition as an output: expression metrics are their ceiling by definition (expr_err 0;
    the image metrics are n/a), the lips compare the source's mouth with the target's re-tracked mouth at
    aligned frames, the judges and SyncNet read the real target video (with its own boxes and audio)."""

    fixed = {"expr_err": 0.0, "psnr": NAN, "ssim": NAN, "lpips": NAN, "csim": NAN}

    def __init__(self, ev, job, video: Path):
        super().__init__(ev, job, video, lambda: self.target.face()["expr"], list)

    @property
    def own(self) -> Clip:
        return self.target

    @property
    def judged(self) -> str:
        return self.target.meta.source_video

    @property
    def lip_path(self) -> tuple[np.ndarray, np.ndarray]:
        return self.path

    @property
    def params_path(self) -> tuple:
        return self.path

    @cached_property
    def edited_face(self) -> dict:
        return self.target.face()

    @cached_property
    def fer_output(self) -> np.ndarray:
        return self.real_fer(self.target)


def available(ev, metric) -> bool:
    """Whether the networks a metric needs are loaded."""
    return all((ev.classifier if n == CLASSIFIER else getattr(ev.nets, n)) is not None for n in metric.nets)


def measure(o: Output, stamps: dict[str, str], cached: Cached | None = None, features: bool = True):
    """(row, features, stamps) of an output: its row, the crop features of the distribution metrics
    (`features`: method rows only) and the stamp each value and feature was computed under. What the cache
    holds under the same stamp (metric version, the networks' files) is taken from it; the rest is computed
    from `o`. A metric whose networks are missing is NaN (not measured), and so is a metric with a `failed`
    value on an output whose face was lost (averages count it at that worst value)."""
    job = o.job
    row = {"emotion": job.emotion, "clip": job.source, "target": job.target, "video": str(o.video)}
    feats: dict[str, np.ndarray] = {}
    saved = cached or Cached({}, {}, {})
    out: dict[str, str] = {}
    for m in METRICS:
        stamp = stamps[m.name]
        if m.distribution:
            if not features:
                continue
            names = (f"{m.nets[0]}_fake", f"{m.nets[0]}_real")
            out |= dict.fromkeys(names, stamp)
            if all(saved.stamps.get(n) == stamp for n in names):
                feats |= {n: saved.features[n] for n in names if n in saved.features}
            elif available(o.ev, m):
                feats[names[0]], feats[names[1]] = o.features(m.nets[0]), o.real_features(m.nets[0])
            continue
        out[m.name] = stamp
        if saved.stamps.get(m.name) == stamp and m.name in saved.row:
            row[m.name] = saved.row[m.name]
        elif m.name in o.fixed:
            row[m.name] = o.fixed[m.name]
        elif not available(o.ev, m) or (m.failed is not None and o.face_lost):
            row[m.name] = NAN
        else:
            row[m.name] = float(m.per_output(o))
    return row, feats, out
