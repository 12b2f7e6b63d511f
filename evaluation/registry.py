"""The evaluation's metrics, each declared once: name, which way is better, the networks it needs, whether it is
measured per output or over a distribution (all outputs of one emotion), what a failed output counts as, its
version and its function. The report's columns, the rows `evaluation.run` and `evaluation.reference` measure,
the "not available" lines of `evaluation.pretrained` and the resume cache's stamps all iterate over METRICS:
adding a metric is one entry here (plus its function).

A per-output function takes an `evaluation.output.Output` (its pieces: the re-tracked video, the lip series,
the face crops, … are computed once, when a metric needs them) and returns a float; NaN = not measured. A
distribution metric's outputs each contribute the features of their face crops (`Output.features(net)`) and
the real target clip's (`Output.real_features(net)`); its function maps (fake, real) feature sets to a float.

Failed outputs: an output whose face the re-tracker lost (`face_lost`) has no lip or emotion reading. Its row
says NaN, and every average counts it at the metric's `failed` value, the worst the metric can take
(`common.image_metrics.mean_measured`), so that destroying a face never scores better than keeping it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.image_metrics import masked_psnr, masked_ssim, mean_measured
from evaluation.arcface import csim, fad
from evaluation.efficientface import csim_emo
from evaluation.fer import top_share
from evaluation.fid import fid
from evaluation.metrics import paired_expr_error, params_lip_r

HIGHER, LOWER, READING = "higher", "lower", "reading"  # READING: the judge on real clips, not a method's score
CLASSIFIER = "classifier"  # the evaluation's own emotion classifier (--classifier); other nets: pretrained.Nets
M_LMD_WORST = 256.0 * np.sqrt(2.0)  # 256-crop px: two lip points inside the aligned crop are never farther apart


@dataclass(frozen=True)
class Metric:
    name: str
    better: str  # HIGHER or LOWER is better, or READING (not a score)
    nets: tuple[str, ...] = ()  # networks it needs: CLASSIFIER or a field of evaluation.pretrained.Nets
    per_output: Callable[[Any], float] | None = None  # one output (an evaluation.output.Output) -> value
    distance: Callable[[np.ndarray, np.ndarray], float] | None = None  # distribution: (fake, real) features
    failed: float | None = None  # what an output whose face was lost counts as in averages (the worst value)
    version: int = 1  # bump when the definition changes: cached values of other versions are recomputed
    doc: str = ""

    @property
    def distribution(self) -> bool:
        return self.distance is not None

    @property
    def direction(self) -> str:
        if self.better == READING:
            return "reference: the judge on real clips"
        return f"{self.better} is better"


def _image(o, metric: Callable[[np.ndarray, np.ndarray, np.ndarray], float]) -> float:
    return mean_measured(metric(real, fake, mask) for fake, real, mask in o.face_pairs)


def _lpips(o) -> float:
    fake, real, masks = (list(x) for x in zip(*o.face_pairs, strict=True))
    return o.nets.lpips.masked(fake, real, masks)


METRICS: tuple[Metric, ...] = (
    Metric(
        "expr_err",
        LOWER,
        per_output=lambda o: paired_expr_error(o.norm(o.edited), o.norm(o.target.face()["expr"]), *o.path),
        doc="edited vs true target expression along the DTW path (normalised channels 1:)",
    ),
    Metric("face_found", HIGHER, per_output=lambda o: o.face_found, doc="share of output frames with a face"),
    Metric(
        "face_lost",
        LOWER,
        per_output=lambda o: float(o.face_lost),
        doc="1 when the re-tracker lost the output's face (found in < 5 % of frames, or < 2 frames both "
        "trackers found): averaged, the share of such outputs",
    ),
    # version 2: a frozen mouth scores 0 (was NaN, "not measured")
    Metric("lip_r", HIGHER, per_output=lambda o: o.lip[0], failed=-1.0, version=2, doc="mouth-opening correlation"),
    Metric(
        "lip_r_params",
        HIGHER,
        per_output=lambda o: params_lip_r(o.model, o.src_face, o.edited_face, *o.params_path),
        version=2,
        doc="lip_r on the meshes decoded from the source and edited parameters",
    ),
    Metric("m_lmd", LOWER, per_output=lambda o: o.lip[1], failed=M_LMD_WORST, doc="lip landmark distance"),
    Metric(
        "emo_acc",
        HIGHER,
        (CLASSIFIER,),
        lambda o: o.classify(o.fitted_expr),
        failed=0.0,
        doc="the classifier on the expression fitted to the re-tracked output",
    ),
    Metric(
        "emo_acc_params",
        HIGHER,
        (CLASSIFIER,),
        lambda o: o.classify(o.edited_face["expr"]),
        doc="the classifier on the edited parameters",
    ),
    Metric("fer_acc", HIGHER, ("fer",), lambda o: top_share(o.fer_output, o.emotion), doc="the judge on the output"),
    Metric("fer_src", READING, ("fer",), lambda o: top_share(o.real_fer(o.source), o.emotion), doc="… the source"),
    Metric("fer_real", READING, ("fer",), lambda o: top_share(o.real_fer(o.target), o.emotion), doc="… the target"),
    Metric("psnr", HIGHER, per_output=lambda o: _image(o, masked_psnr), doc="rendered vs target faces, masked"),
    Metric("ssim", HIGHER, per_output=lambda o: _image(o, masked_ssim), doc="rendered vs target faces, masked"),
    Metric(
        "lpips",
        LOWER,
        ("lpips",),
        _lpips,
        doc="the same face pairs, masked",
    ),
    Metric(
        "csim",
        HIGHER,
        ("arcface",),
        lambda o: csim(o.features("arcface"), o.own_embeddings),
        doc="ArcFace cosine of the output's crops vs the source's",
    ),
    Metric("lse_d", LOWER, ("syncnet",), lambda o: o.lse[0], doc="SyncNet distance, output face vs source audio"),
    Metric("lse_c", HIGHER, ("syncnet",), lambda o: o.lse[1], doc="SyncNet confidence"),
    Metric("fad", LOWER, ("arcface",), distance=fad, doc="Fréchet ArcFace distance to the real target crops"),
    Metric("fid", LOWER, ("inception",), distance=fid, doc="Fréchet Inception distance to the real target crops"),
    Metric("csim_emo", HIGHER, ("efficientface",), distance=csim_emo, doc="EfficientFace cosine vs real crops"),
)

BY_NAME = {m.name: m for m in METRICS}
NAMES = tuple(m.name for m in METRICS)
ROW_METRICS = tuple(m.name for m in METRICS if not m.distribution)
DIST_METRICS = tuple(m.name for m in METRICS if m.distribution)
