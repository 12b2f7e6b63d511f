"""Diagnose a SCMCL metric where the manipulator uses it: `python -m manipulator.metric.diagnose <metric run>`.

The correlation term |φ(d_v) - d_a| helps the manipulator only if, on the pairs it is trained on, it is lower
at the real same-speech target than at the unedited source, and falls along the way from one to the other.
Six checks, on the retrieved pairs of the run's index (what the term sees in training) and, for reference,
on the metric's own DTW-aligned pairs, per target emotion and overall:

- S1: the term at the real target vs at the source: mean of each, their difference, the share of pairs
  where the target is lower;
- S2: the mean term along source + α·(target - source), α = 0, 0.1, ..., 1;
- S3: median(φ(d_v(reference, target)) - d_a) and Spearman ρ(d_a, d_v): φ calibrated where pairs live;
- S4: per (actor, emotion), DTW-aligned same-sentence cross-emotion d_v over different-sentence
  same-emotion d_v (the encoder follows speech, not emotion);
- S5: the expression encoder's steepest-direction sensitivity (the largest singular value of its Jacobian)
  over its sensitivity along target - source (median over pairs);
- S6: retrieved pairs with silent anchor audio on either side (`manipulator.windows.is_silent`).

Pass targets are `TARGETS`. The result goes to `<run>/diagnosis.json` and the run's TensorBoard
(`diagnose/...`); the SCMCL manipulator with the correlation term refuses a metric whose diagnosis fails
(`require_passing`), unless told otherwise (`scmcl.allow_failing_metric=true`, recorded in its checkpoints).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.stats import spearmanr

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.cli import parse_cli
from common.config import arg, choice, to_object
from common.emotions import NEUTRAL
from common.errors import UserError, cli_entry
from common.formats import Clip, read_clip_index
from common.fsutil import atomic_write_text
from manipulator.data import DIST_THRESH, PIVOT_DISTANCES, Retriever, WindowBank
from manipulator.losses import correlation_terms, visual_distance
from manipulator.metric.data import METRIC_SPLIT, ClipBank, InputSpec, PairSampler, crop_box
from manipulator.metric.index import RetrievalIndex, default_index_dir, metric_identity
from manipulator.metric.models import load_metric, stored_nets, stored_normaliser
from manipulator.windows import anchor_frame, audio_ending_at_frame, is_silent

DIAGNOSIS_FILE = "diagnosis.json"
ALPHAS = np.round(np.linspace(0.0, 1.0, 11), 2)
CHECKS = ("S1", "S2", "S3", "S4", "S5", "S6")


@dataclass(frozen=True)
class Targets:
    """What a metric must reach on its retrieved pairs for the correlation term to point at the edit."""

    s1_margin: float = 0.3  # mean term at the source minus at the target, at least
    s1_share: float = 0.75  # share of pairs whose term is lower at the target, at least
    s2_tolerance: float = 0.02  # largest rise of the mean term between consecutive α, at most
    s3_offset: float = 0.25  # |median(φ(d_v) - d_a)|, at most
    s3_rho: float = 0.5  # Spearman ρ(d_a, d_v), at least
    s4_ratio: float = 0.5  # same-sentence cross-emotion over different-sentence same-emotion d_v, at most
    s5_ratio: float = 3.0  # steepest over along-the-edit sensitivity (median), at most
    s6_silent: int = 0  # retrieved pairs with silence on either side, at most


TARGETS = Targets()


@dataclass
class PairSet:
    """Pairs as the correlation term sees them: the expression encoder's windows (N, w, D) of the source, the
    real target and the reference d_v is measured from (the source; the neutral pivot of an emotion ->
    emotion pair), the reference -> target audio distance d_a (N,), the target emotion (N,) and whether
    either side's anchor audio is silent (N,)."""

    source: torch.Tensor
    target: torch.Tensor
    reference: torch.Tensor
    d_audio: torch.Tensor
    emotion: np.ndarray
    silent: np.ndarray

    def __len__(self) -> int:
        return len(self.d_audio)

    def subset(self, keep: np.ndarray) -> PairSet:
        t = torch.from_numpy(np.flatnonzero(keep))
        return PairSet(
            self.source[t], self.target[t], self.reference[t], self.d_audio[t], self.emotion[keep], self.silent[keep]
        )


# -- the checks, on any encoder f ((N, w, D) -> (N, E)) and φ -------------------------------------------------


@torch.no_grad()
def path_terms(f, phi, pairs: PairSet, alphas=ALPHAS) -> np.ndarray:
    """The correlation term per pair along source + α·(target - source): (len(alphas), N)."""
    w = pairs.source.shape[1]
    step = pairs.target - pairs.source
    rows = [
        correlation_terms(f, phi, pairs.source + float(a) * step, pairs.reference, pairs.d_audio, w) for a in alphas
    ]
    return torch.stack(rows).numpy()


def s1_target_vs_source(at_source: np.ndarray, at_target: np.ndarray) -> dict[str, float]:
    """S1 from the per-pair terms at the source and at the target."""
    return {
        "term_source": float(at_source.mean()),
        "term_target": float(at_target.mean()),
        "margin": float(at_source.mean() - at_target.mean()),
        "share_target_lower": float((at_target < at_source).mean()),
    }


def s2_path(terms: np.ndarray) -> dict[str, object]:
    """S2 from path_terms: the mean term per α and its largest rise between consecutive α."""
    means = terms.mean(axis=1)
    return {
        "means": [round(float(m), 4) for m in means],
        "max_rise": float(np.diff(means).max()) if len(means) > 1 else 0.0,
    }


def s3_calibration(phi_dv: np.ndarray, d_v: np.ndarray, d_audio: np.ndarray) -> dict[str, float]:
    """S3: how far φ(d_v) lands from d_a (median) and whether d_v orders pairs as d_a does (Spearman ρ)."""
    if len(d_v) < 3 or np.ptp(d_v) == 0 or np.ptp(d_audio) == 0:
        rho = float("nan")  # no order to compare: fails the check
    else:
        rho = float(spearmanr(d_audio, d_v).statistic)
    return {"median_offset": float(np.median(phi_dv - d_audio)), "spearman": rho}


def s4_ratio(same_sentence: np.ndarray, different_sentence: np.ndarray) -> dict[str, float]:
    """S4 for one (actor, emotion): mean aligned same-sentence cross-emotion d_v over mean different-sentence
    same-emotion d_v."""
    same, diff = float(np.mean(same_sentence)), float(np.mean(different_sentence))
    return {"same_sentence": same, "different_sentence": diff, "ratio": same / diff if diff > 0 else float("inf")}


def s5_ratios(f, source: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per pair, the largest singular value of f's Jacobian at the source over ||J·e|| / ||e||, e = target -
    source (both flattened windows); NaN where e = 0 (no edit to be sensitive along)."""
    ratios = np.full(len(source), np.nan)
    for i, (x, y) in enumerate(zip(source, target, strict=True)):
        e = (y - x).reshape(-1)
        if float(e.norm()) == 0.0:
            continue
        jac = torch.func.jacrev(lambda v, shape=x.shape: f(v.reshape(shape)[None])[0])(x.reshape(-1).clone())
        steepest = float(torch.linalg.matrix_norm(jac, ord=2))
        along = float((jac @ e).norm() / e.norm())
        ratios[i] = steepest / along if along > 0 else float("inf")
    return ratios


def s5_summary(ratios: np.ndarray) -> dict[str, float]:
    """S5: the median ratio over the pairs that have one."""
    kept = ratios[~np.isnan(ratios)]
    return {"ratio": float(np.median(kept)) if len(kept) else float("nan"), "pairs": len(kept)}


S5_PAIRS = 128  # pairs whose Jacobian S5 takes (the slowest check)


def summarise(f, phi, pairs: PairSet, ratios: np.ndarray | None = None) -> dict[str, object]:
    """S1, S2, S3, S5 and S6 of one set of pairs (S5 from `ratios` when given, NaN = not measured)."""
    terms = path_terms(f, phi, pairs)
    with torch.no_grad():
        d_v = visual_distance(f, pairs.target, pairs.reference, pairs.source.shape[1])
        phi_dv = phi(d_v)
    if ratios is None:
        ratios = s5_ratios(f, pairs.source, pairs.target)
    return {
        "pairs": len(pairs),
        "S1": s1_target_vs_source(terms[0], terms[-1]),
        "S2": s2_path(terms),
        "S3": s3_calibration(phi_dv.numpy(), d_v.numpy(), pairs.d_audio.numpy()),
        "S5": s5_summary(ratios),
        "S6": {"silent_pairs": int(pairs.silent.sum())},
    }


def summarise_by_emotion(f, phi, pairs: PairSet) -> dict[str, dict]:
    """summarise() overall and per target emotion; S5 on the first S5_PAIRS pairs (they are drawn at random)."""
    ratios = np.full(len(pairs), np.nan)
    ratios[:S5_PAIRS] = s5_ratios(f, pairs.source[:S5_PAIRS], pairs.target[:S5_PAIRS])
    out = {"overall": summarise(f, phi, pairs, ratios)}
    for emotion in sorted(set(pairs.emotion.tolist())):
        keep = pairs.emotion == emotion
        out[emotion] = summarise(f, phi, pairs.subset(keep), ratios[keep])
    return out


def _s1_row(s1: dict, targets: Targets) -> tuple[str, str, bool]:
    return (
        f"margin {s1['margin']:.3f}, target lower in {s1['share_target_lower']:.0%}",
        f"margin >= {targets.s1_margin}, share >= {targets.s1_share:.0%}",
        s1["margin"] >= targets.s1_margin and s1["share_target_lower"] >= targets.s1_share,
    )


def _s3_row(s3: dict, targets: Targets) -> tuple[str, str, bool]:
    rho = s3["spearman"]
    return (
        f"median offset {s3['median_offset']:+.3f}, rho {rho:.2f}",
        f"|offset| <= {targets.s3_offset}, rho >= {targets.s3_rho}",
        abs(s3["median_offset"]) <= targets.s3_offset and bool(rho >= targets.s3_rho),
    )


def _verdicts(rows: dict[str, tuple[str, str, bool]]) -> dict[str, dict]:
    return {name: {"value": v, "target": t, "pass": bool(ok)} for name, (v, t, ok) in rows.items()}


def judge(retrieved: dict, s4: dict[str, dict], targets: Targets = TARGETS) -> dict[str, dict]:
    """Each check's value, target and verdict, on the retrieved pairs overall (S4: every (actor, emotion))."""
    s2, s5, s6 = (retrieved[k] for k in ("S2", "S5", "S6"))
    worst_s4 = max((v["ratio"] for v in s4.values()), default=float("nan"))
    return _verdicts(
        {
            "S1": _s1_row(retrieved["S1"], targets),
            "S2": (
                f"largest rise {s2['max_rise']:.3f}",
                f"<= {targets.s2_tolerance}",
                s2["max_rise"] <= targets.s2_tolerance,
            ),
            "S3": _s3_row(retrieved["S3"], targets),
            "S4": (f"worst ratio {worst_s4:.2f}", f"<= {targets.s4_ratio} everywhere", worst_s4 <= targets.s4_ratio),
            "S5": (f"ratio {s5['ratio']:.1f}", f"<= {targets.s5_ratio}", s5["ratio"] <= targets.s5_ratio),
            "S6": (
                f"{s6['silent_pairs']} silent pairs",
                f"<= {targets.s6_silent}",
                s6["silent_pairs"] <= targets.s6_silent,
            ),
        }
    )


# -- the pairs of a metric run ------------------------------------------------------------------------------


class _AnchorAudio:
    """Anchor audio of (clip dir, frame) in a processed root, cached per clip (for the silence check)."""

    def __init__(self, root: Path, n_samples: int):
        self.root, self.n_samples = root, n_samples
        self._clips: dict[str, tuple[np.ndarray, object]] = {}

    def silent(self, clip_dir: str, frame: int) -> bool:
        if clip_dir not in self._clips:
            clip = Clip(self.root / clip_dir)
            self._clips[clip_dir] = (clip.audio(), clip.meta.fps_exact)
        audio, fps = self._clips[clip_dir]
        return bool(is_silent(audio_ending_at_frame(audio, frame, fps, self.n_samples)))


def retrieved_pairs(
    run_dir, data_dir: Path, index_dir: Path, n: int, seed: int, window: int, spec, retrieval: dict
) -> PairSet:
    """Up to n correlation pairs as the SCMCL manipulator draws them (sources uniform over the windows, target
    emotions uniform over the others; `retrieval`: its dist_thresh and pivot_distance), from the index, in
    the metric's units."""
    index = RetrievalIndex(index_dir)
    settings = index.settings
    emotions = sorted({c["emotion"] for c in read_clip_index(data_dir)["clips"] if c.get("emotion")})
    bank = WindowBank(
        data_dir,
        tuple(settings["splits"]),
        emotions,
        settings["seq_len_frames"],
        settings["hop"],
        stored_normaliser(run_dir),
    )
    retriever = Retriever(bank, index_dir, run_dir, retrieval["dist_thresh"], retrieval["pivot_distance"])
    audio = _AnchorAudio(data_dir, spec.audio_samples)
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, dict]] = []
    for _ in range(50 * n):
        if len(rows) >= n:
            break
        w = int(rng.integers(len(bank)))
        others = [y for y in bank.present if y != bank.win_label[w]]
        got = retriever.retrieve(w, int(rng.choice(others)), rng) if others else None
        if got is not None and got["corr"] > 0:
            rows.append((w, got))
    if not rows:
        raise UserError(f"{index_dir}: no retrieved pairs with a correlation term (is the index empty?)")
    last = lambda ids: bank.windows(np.array(ids))[:, -window:]  # noqa: E731  the encoder's window

    def silent(row: int) -> bool:
        clip = bank.clip_dirs[bank.win_clip[row]]
        return audio.silent(clip, int(anchor_frame(bank.win_start[row], bank.seq_len)))

    return PairSet(
        source=last([w for w, _ in rows]),
        target=last([g["target"] for _, g in rows]),
        reference=last([g["reference"] for _, g in rows]),
        d_audio=torch.tensor([g["d_corr"] for _, g in rows], dtype=torch.float32),
        emotion=np.array([bank.emotions[bank.win_label[g["target"]]] for _, g in rows]),
        silent=np.array([silent(w) or silent(g["target"]) for w, g in rows]),
    )


@torch.no_grad()
def aligned_pairs(bank: ClipBank, sampler: PairSampler, audio_net, n: int, seed: int) -> PairSet:
    """Up to n of the metric's own pairs (a neutral frame and its DTW-matched emotional frame), with their
    audio distance under the metric's audio encoder."""
    rows = np.random.default_rng(seed).permutation(len(sampler))[:n]
    anchors, positives = sampler.refs(rows)
    d_audio = (audio_net(bank.inputs("audio", anchors)) - audio_net(bank.inputs("audio", positives))).norm(dim=-1)
    source, target = bank.inputs("expr", anchors), bank.inputs("expr", positives)

    return PairSet(
        source=source,
        target=target,
        reference=source,
        d_audio=d_audio,
        emotion=np.array([bank.clips[c].emotion for c, _ in positives]),
        silent=np.array([bank.silent(*a) or bank.silent(*p) for a, p in zip(anchors, positives, strict=True)]),
    )


@torch.no_grad()
def invariance(bank: ClipBank, sampler: PairSampler, f, per_group: int, seed: int) -> dict[str, dict]:
    """S4 per (actor, emotion): aligned same-sentence cross-emotion pairs against the same emotional frames
    and a random frame of another clip (another sentence) of that actor and emotion."""
    rng = np.random.default_rng(seed)
    out = {}
    for rows in sampler.groups:
        rows = rng.permutation(rows)[:per_group]
        anchors, positives = sampler.refs(rows)
        clip = bank.clips[positives[0][0]]
        others = [i for i, c in enumerate(bank.clips) if c.actor == clip.actor and c.emotion == clip.emotion]
        far = []
        for c, _ in positives:
            choices = [i for i in others if i != c]
            if not choices:
                break
            o = int(rng.choice(choices))
            far.append((o, int(rng.integers(bank.clips[o].n_frames))))
        if len(far) < len(positives):
            continue  # one clip of this actor and emotion: no other sentence to compare with
        emb = lambda refs: f(bank.inputs("expr", refs))  # noqa: E731
        pos = emb(positives)
        same = (emb(anchors) - pos).norm(dim=-1).numpy()
        different = (pos - emb(far)).norm(dim=-1).numpy()
        out[f"{clip.actor}/{clip.emotion}"] = s4_ratio(same, different)
    return out


@torch.no_grad()
def image_pairs(run_dir, data_dir: Path, index_dir: Path, f_img, spec, n: int, seed: int) -> dict[str, np.ndarray]:
    """Up to n neutral -> emotion pairs of the index as the renderer's SCMCL fine-tuning draws them, with the
    image encoder's distance between the real source frame and the real retrieved target frame (masked faces,
    the metric's crop) and their audio distance: d_img (N,), d_a (N,), emotion (N,)."""
    index = RetrievalIndex(index_dir)
    index.check_metric(run_dir)
    rng = np.random.default_rng(seed)
    clips: dict[str, Clip] = {}

    def crop(rel: str, frame: int) -> np.ndarray:
        clip = clips.setdefault(rel, Clip(data_dir / rel))
        face = clip.faces.read(frame).astype(np.float32) / 255.0
        face *= (clip.masks.read(frame) > 127)[..., None]  # the renderer compares masked faces
        x0, y0, x1, y1 = crop_box(face.shape[0], spec.visual_crop)
        return cv2.resize(face[y0:y1, x0:x1], (spec.visual_size,) * 2, interpolation=cv2.INTER_AREA)

    actors = sorted({p.parent.name for p in index.dir.glob(f"*/windows_{NEUTRAL}.npz")})
    found: list[tuple[np.ndarray, np.ndarray, float, str]] = []
    for _ in range(50 * n):
        if len(found) >= n or not actors:
            break
        actor = actors[int(rng.integers(len(actors)))]
        targets = sorted(p.stem.split("__")[1] for p in (index.dir / actor).glob(f"{NEUTRAL}__*.npz"))
        if not targets:
            continue
        emotion = targets[int(rng.integers(len(targets)))]
        src, trg = index.windows(actor, NEUTRAL), index.windows(actor, emotion)
        idx, dist = index.candidates(actor, NEUTRAL, emotion)
        row = int(rng.integers(len(idx)))
        ok = np.flatnonzero(idx[row] >= 0)
        if not len(ok):
            continue
        k = int(rng.choice(ok))
        t = int(idx[row, k])
        a = crop(index.clips[src["clip"][row]], int(src["anchor"][row]))
        b = crop(index.clips[trg["clip"][t]], int(trg["anchor"][t]))
        found.append((a, b, float(dist[row, k]), emotion))
    if not found:
        raise UserError(f"{index_dir}: no neutral -> emotion pairs to diagnose the image encoder on")
    to = lambda xs: torch.from_numpy(np.stack(xs).transpose(0, 3, 1, 2).copy())  # noqa: E731
    d_img = (f_img(to([x[0] for x in found])) - f_img(to([x[1] for x in found]))).norm(dim=-1)
    return {"d_img": d_img.numpy(), "d_a": np.array([x[2] for x in found]), "emotion": np.array([x[3] for x in found])}


@torch.no_grad()
def summarise_images(phi, pairs: dict[str, np.ndarray]) -> dict[str, dict]:
    """S1 and S3 of the image-level term |φ(d_img(source, rendered)) - d_a|: at the real target frame vs at
    the source frame itself (d_img 0), overall and per target emotion."""

    def one(keep: np.ndarray) -> dict:
        d_img, d_a = pairs["d_img"][keep], pairs["d_a"][keep]
        phi_img = phi(torch.from_numpy(d_img)).numpy()
        at_source = np.abs(phi(torch.zeros(len(d_a))).numpy() - d_a)
        return {
            "pairs": int(keep.sum()),
            "S1": s1_target_vs_source(at_source, np.abs(phi_img - d_a)),
            "S3": s3_calibration(phi_img, d_img, d_a),
        }

    out = {"overall": one(np.ones(len(pairs["d_a"]), bool))}
    for emotion in sorted(set(pairs["emotion"].tolist())):
        out[emotion] = one(pairs["emotion"] == emotion)
    return out


def judge_images(images: dict, targets: Targets = TARGETS) -> dict[str, dict]:
    """S1 and S3 of the image-level term (overall), as `judge` words them."""
    overall = images["overall"]
    return _verdicts({"image S1": _s1_row(overall["S1"], targets), "image S3": _s3_row(overall["S3"], targets)})


# -- the command --------------------------------------------------------------------------------------------


@dataclass
class DiagnoseConfig:
    metric_run: str = arg(help="run dir of a metric with audio and expr encoders and a trained φ (consistency=affine)")
    data_dir: str = arg("", "processed root; default: the metric run's own")
    index_dir: str = arg("", "retrieval index; default <data_dir>/retrieval/<metric run name>")
    pairs: int = arg(400, "retrieved pairs (and aligned pairs) drawn")
    per_group: int = arg(64, "aligned pairs per (actor, emotion) for S4")
    seed: int = arg(0, "draw of the pairs")
    dist_thresh: float | None = arg(DIST_THRESH, "the manipulator's scmcl.dist_thresh (pairs as it draws them)")
    pivot_distance: str = choice(PIVOT_DISTANCES[1], list(PIVOT_DISTANCES), "the manipulator's scmcl.pivot_distance")
    json: str = arg("", "also write the result here (it always goes to <metric run>/diagnosis.json)")
    targets: Targets = field(default_factory=Targets)


def diagnose(cfg) -> dict:
    """The expression checks (S1-S6) when the run has an expression encoder, the image-level S1 and S3 when
    it has an image encoder (the renderer's SCMCL fine-tuning)."""
    run = Path(cfg.metric_run)
    have = set(stored_nets(run))
    if not ({"expr", "phi_expr"} <= have or {"visual", "phi_visual"} <= have):
        raise UserError(
            f"{run}: no expression or image encoder with its φ to diagnose (it has {', '.join(sorted(have))})"
        )
    ckpt = load_checkpoint(latest_checkpoint(run / "checkpoints"))  # stored_nets found it
    mcfg = ckpt["config"]
    data_dir = Path(cfg.data_dir or mcfg["data_dir"])
    index_dir = Path(cfg.index_dir or default_index_dir(data_dir, run))
    spec = InputSpec(**mcfg["inputs"])
    result = {
        **metric_identity(run),
        "step": int(ckpt["step"]),
        "data_dir": str(data_dir),
        "index_dir": str(index_dir),
        "targets": asdict(cfg.targets),
        "checks": {},
    }
    if {"expr", "phi_expr"} <= have:
        result |= diagnose_expression(cfg, run, data_dir, index_dir, spec)
    if {"visual", "phi_visual"} <= have:
        nets, _ = load_metric(run, ["visual", "phi_visual"])
        pairs = image_pairs(run, data_dir, index_dir, nets["visual"], spec, cfg.pairs, cfg.seed)
        result["image"] = summarise_images(nets["phi_visual"], pairs)
        result["image_phi"] = {"weight": float(nets["phi_visual"].weight), "bias": float(nets["phi_visual"].bias)}
        result["checks"] |= judge_images(result["image"], cfg.targets)
    result["passed"] = all(c["pass"] for c in result["checks"].values())
    return result


def diagnose_expression(cfg, run: Path, data_dir: Path, index_dir: Path, spec: InputSpec) -> dict:
    """S1-S6 of the expression encoder and φ of a metric run."""
    nets, mcfg = load_metric(run, ["audio", "expr", "phi_expr"])
    f, phi = nets["expr"], nets["phi_expr"]
    retrieval = {"dist_thresh": cfg.dist_thresh, "pivot_distance": cfg.pivot_distance}
    retrieved = retrieved_pairs(run, data_dir, index_dir, cfg.pairs, cfg.seed, spec.expr_window, spec, retrieval)
    bank = ClipBank(
        data_dir, tuple(mcfg["train_splits"]), spec, ["audio", "expr"], METRIC_SPLIT, stored_normaliser(run)
    )
    sampler = PairSampler(bank, 1, "actor_emotion", 0, cfg.seed, 0, bool(mcfg.get("skip_silent", False)))
    aligned = aligned_pairs(bank, sampler, nets["audio"], cfg.pairs, cfg.seed)
    result = {
        "retrieval": retrieval,
        "phi": {"weight": float(phi.weight), "bias": float(phi.bias)},
        "retrieved": summarise_by_emotion(f, phi, retrieved),
        "aligned": summarise_by_emotion(f, phi, aligned),
        "S4": invariance(bank, sampler, f, cfg.per_group, cfg.seed),
    }
    result["checks"] = judge(result["retrieved"]["overall"], result["S4"], cfg.targets)
    return result


def format_report(result: dict) -> str:
    """The diagnosis as plain-text tables."""
    lines = [f"metric {result['metric_run']} ({result['metric_checkpoint']})"]
    head = "  {:<14} {:>5} {:>9} {:>9} {:>7} {:>7} {:>9} {:>9} {:>6} {:>6} {:>6}"
    if "retrieved" in result:
        lines.append(f"expression encoder, φ(d) = {result['phi']['weight']:.3f}·d + {result['phi']['bias']:.3f}")
    for name in ("retrieved", "aligned", "image"):
        if name not in result:
            continue
        lines += [
            f"{name} pairs",
            head.format("emotion", "n", "S1 src", "S1 trg", "margin", "share", "S2 rise", "S3 off", "rho", "S5", "S6"),
        ]
        for emotion, s in result[name].items():
            lines.append(
                head.format(
                    emotion,
                    s["pairs"],
                    f"{s['S1']['term_source']:.3f}",
                    f"{s['S1']['term_target']:.3f}",
                    f"{s['S1']['margin']:+.3f}",
                    f"{s['S1']['share_target_lower']:.0%}",
                    f"{s['S2']['max_rise']:.3f}" if "S2" in s else "-",
                    f"{s['S3']['median_offset']:+.3f}",
                    f"{s['S3']['spearman']:.2f}",
                    f"{s['S5']['ratio']:.1f}" if "S5" in s else "-",
                    s["S6"]["silent_pairs"] if "S6" in s else "-",
                )
            )
        if "S2" in result[name]["overall"]:
            means = result[name]["overall"]["S2"]["means"]
            lines.append("  S2 mean term at α = 0, 0.1, …, 1: " + " ".join(f"{m:.2f}" for m in means))
    if "S4" in result:
        lines.append("S4 (aligned same-sentence cross-emotion d_v / different-sentence same-emotion d_v)")
        for group, s in result["S4"].items():
            lines.append(f"  {group:<20} {s['same_sentence']:.3f} / {s['different_sentence']:.3f} = {s['ratio']:.2f}")
    if "image" in result:
        phi = result["image_phi"]
        lines.append(f"image encoder (renderer fine-tuning), φ(d) = {phi['weight']:.3f}·d + {phi['bias']:.3f}")
    lines.append("checks (retrieved pairs, overall)")
    for name, c in result["checks"].items():
        lines.append(f"  {name} {'PASS' if c['pass'] else 'FAIL'}  {c['value']}  (target {c['target']})")
    lines.append("diagnosis: " + ("passed" if result["passed"] else "FAILED: " + ", ".join(failed_checks(result))))
    return "\n".join(lines)


def failed_checks(result: dict) -> list[str]:
    return [name for name, c in result["checks"].items() if not c["pass"]]


def write_tensorboard(run: Path, result: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow import

    with SummaryWriter(str(run / "tb")) as tb:
        step = result["step"]
        for name in ("retrieved", "aligned", "image"):
            if name not in result:
                continue
            s = result[name]["overall"]
            scalars = {
                "S1_margin": s["S1"]["margin"],
                "S1_share": s["S1"]["share_target_lower"],
                "S3_median_offset": s["S3"]["median_offset"],
                "S3_spearman": s["S3"]["spearman"],
            }
            if "S5" in s:
                scalars |= {"S2_max_rise": s["S2"]["max_rise"], "S5_ratio": s["S5"]["ratio"]}
                scalars["S6_silent"] = s["S6"]["silent_pairs"]
            for key, value in scalars.items():
                tb.add_scalar(f"diagnose/{name}/{key}", value, step)
        if "S4" in result:
            worst = max((v["ratio"] for v in result["S4"].values()), default=0.0)
            tb.add_scalar("diagnose/S4_worst_ratio", worst, step)
        tb.add_scalar("diagnose/passed", float(result["passed"]), step)


def require_passing(run_dir: str | Path, allow_failing: bool, log, retrieval: dict | None = None) -> dict:
    """The diagnosis record of a metric run for the correlation term: refused (one line naming the failed
    checks and the command that shows them) unless it passed for the run's newest checkpoint and for pairs
    drawn as the manipulator draws them (`retrieval`: its dist_thresh and pivot_distance), or `allow_failing`
    (then a warning, and the record says it was overridden)."""
    run = Path(run_dir)
    show = f"python -m manipulator.metric.diagnose {run}"
    path = run / DIAGNOSIS_FILE
    problem, record = "", {"metric_run": str(run)}
    if not path.is_file():
        problem = f"{run}: no diagnosis of this metric ({path}); run: {show}"
    else:
        result = json.loads(path.read_text())
        record = {k: result.get(k) for k in ("metric_run", "metric_checkpoint", "metric_digest", "passed")}
        record["checks"] = {k: c["pass"] for k, c in result.get("checks", {}).items()}
        settings = " ".join(f"{k}={v}" for k, v in (retrieval or {}).items())
        if result.get("metric_digest") != metric_identity(run)["metric_digest"]:
            problem = f"{path} diagnoses an older checkpoint than {run}'s newest; run again: {show}"
        elif retrieval is not None and result.get("retrieval") != retrieval:
            problem = f"{path} diagnoses pairs drawn with {result.get('retrieval')}; run again: {show} {settings}"
        elif not result.get("passed"):
            failed = ", ".join(f"{k} ({result['checks'][k]['value']})" for k in failed_checks(result))
            problem = f"metric {run} fails its diagnosis: {failed}; see {show}"
    if not problem:
        return record | {"overridden": False}
    if not allow_failing:
        raise UserError(
            f"{problem}; the correlation term would not point at the edit "
            "(scmcl.allow_failing_metric=true trains anyway, and the run records it)"
        )
    log.warning("%s; training anyway (scmcl.allow_failing_metric=true, recorded in the checkpoints)", problem)
    return record | {"overridden": True}


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(
        DiagnoseConfig, argv, prog="python -m manipulator.metric.diagnose", doc=__doc__, positional=["metric_run"]
    )
    cfg = to_object(cfg)
    result = diagnose(cfg)
    text = json.dumps(result, indent=2) + "\n"
    run = Path(cfg.metric_run)
    atomic_write_text(run / DIAGNOSIS_FILE, text)
    if cfg.json:
        atomic_write_text(cfg.json, text)
    write_tensorboard(run, result)
    print(format_report(result))
    print(f"written to {run / DIAGNOSIS_FILE}")


if __name__ == "__main__":
    main()
