"""Evaluate a metric on held-out toy MEAD sentences, where the phoneme of every frame is known.

`python -m manipulator.metric.evaluate --data data/processed/toy_mead --run runs/metric/joint
 [--before-audio runs/metric/audio --before-visual runs/metric/expr] [--out report.json]`

- Retrieval precision@1: for each neutral frame of the held-out splits, the nearest frame (audio
  distance) among the same actor's held-out frames of each other emotion; precision = fraction whose
  ground-truth phoneme (and viseme class) equals the query's. Silent query frames are left out. Reported
  with chance (label frequencies) and a plain MFCC nearest-neighbour baseline.
- Symmetry: Spearman correlation between audio distance and visual (expr or image) distance over random
  frame pairs of the held-out clips, for the given run and, optionally, for the encoders before the
  consistency fine-tuning.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from common.cli import parse_cli
from common.config import arg, choice
from common.emotions import NEUTRAL
from common.errors import UserError, cli_entry
from common.formats import read_clip_index
from common.fsutil import atomic_write_text
from manipulator.metric.data import METRIC_SPLIT, ClipBank, InputSpec
from manipulator.metric.models import load_metric, stored_nets, stored_normaliser
from preprocessing.audio_features import frame_features
from preprocessing.toy_mead.dataset import ground_truth_of, read_ground_truth
from preprocessing.toy_mead.profiles import viseme

HELD_OUT = ("val", "test")


@dataclass
class EvaluateConfig:
    data: str = arg(help="preprocessed toy MEAD root (clips.json)")
    run: str = arg(help="metric run dir (audio + visual encoders)")
    visual: str = choice("expr", ["expr", "visual"], "visual modality for symmetry")
    before_audio: str = arg("", "audio run before fine-tuning (for symmetry_before)")
    before_visual: str = arg("", "visual run before fine-tuning (for symmetry_before)")
    out: str = arg("", "write the report as JSON here")


def load_encoder(run_dir: str | Path, modality: str) -> tuple[torch.nn.Module, InputSpec]:
    nets, cfg = load_metric(run_dir, [modality])
    return nets[modality], InputSpec(**cfg["inputs"])


@torch.no_grad()
def embed_all(net: torch.nn.Module, bank: ClipBank, modality: str, batch: int = 512) -> list[np.ndarray]:
    """Embeddings of every frame of every clip in the bank, per clip."""
    out = []
    for c, clip in enumerate(bank.clips):
        refs = [(c, t) for t in range(clip.n_frames)]
        out.append(
            torch.cat([net(bank.inputs(modality, refs[i : i + batch])) for i in range(0, len(refs), batch)]).numpy()
        )
    return out


def phoneme_labels(bank: ClipBank, index: dict) -> list[np.ndarray]:
    """Ground-truth phoneme per frame, from the toy MEAD generator's ground truth next to each video."""
    video_of = {c["dir"]: Path(c["video"]) for c in index["clips"]}
    labels = []
    for clip in bank.clips:
        truth = ground_truth_of(video_of[clip.rel_dir])
        if not truth.is_file():
            raise UserError(f"{truth}: no ground truth (this evaluation needs a toy MEAD dataset)")
        labels.append(read_ground_truth(truth, ["phonemes"])["phonemes"][: clip.n_frames])
    return labels


def precision_at_1(feats: list[np.ndarray], labels: list[np.ndarray], bank: ClipBank) -> dict[str, float]:
    """Phoneme / viseme precision@1 of neutral -> other-emotion retrieval, and its chance level."""
    hits = vis_hits = total = 0
    chance_sum = 0.0
    for actor in sorted({c.actor for c in bank.clips}):
        mine = [i for i, c in enumerate(bank.clips) if c.actor == actor]
        emotions = sorted({bank.clips[i].emotion for i in mine} - {NEUTRAL})
        q_idx = [i for i in mine if bank.clips[i].emotion == NEUTRAL]
        if not q_idx:
            continue
        q_feat = np.concatenate([feats[i] for i in q_idx])
        q_lab = np.concatenate([labels[i] for i in q_idx])
        speech = q_lab != "sil"
        for emotion in emotions:
            k_idx = [i for i in mine if bank.clips[i].emotion == emotion]
            k_feat = torch.from_numpy(np.concatenate([feats[i] for i in k_idx]))
            k_lab = np.concatenate([labels[i] for i in k_idx])
            nearest = torch.cdist(torch.from_numpy(q_feat[speech]), k_feat).argmin(dim=1).numpy()
            got, want = k_lab[nearest], q_lab[speech]
            hits += int((got == want).sum())
            vis_hits += sum(viseme(a) == viseme(b) for a, b in zip(got, want, strict=True))
            total += len(want)
            freq = Counter(k_lab.tolist())
            chance_sum += sum(freq[w] / len(k_lab) for w in want)
    if total == 0:
        raise UserError("no neutral query frames with speech in the held-out splits")
    return {
        "phoneme_p@1": hits / total,
        "viseme_p@1": vis_hits / total,
        "chance_phoneme": chance_sum / total,
        "queries": total,
    }


def symmetry(audio: list[np.ndarray], visual: list[np.ndarray], n_pairs: int = 20000, seed: int = 0) -> float:
    """Spearman(audio distance, visual distance) over random frame pairs of the same actor's clips."""
    rng = np.random.default_rng(seed)
    a_all, v_all = np.concatenate(audio), np.concatenate(visual)
    i, j = rng.integers(0, len(a_all), n_pairs), rng.integers(0, len(a_all), n_pairs)
    d_a = np.linalg.norm(a_all[i] - a_all[j], axis=1)
    d_v = np.linalg.norm(v_all[i] - v_all[j], axis=1)
    return float(spearmanr(d_a, d_v).statistic)


def evaluate(data: Path, run: str, visual_modality: str, before: tuple[str, str] | None) -> dict:
    audio_net, spec = load_encoder(run, "audio")
    bank = ClipBank(data, HELD_OUT, spec, ["audio", visual_modality], METRIC_SPLIT, stored_normaliser(run))
    index = read_clip_index(data)
    labels = phoneme_labels(bank, index)
    report: dict = {"run": str(run), "clips": len(bank.clips)}
    report["metric"] = precision_at_1(embed_all(audio_net, bank, "audio"), labels, bank)
    mfcc = [frame_features(c.audio, c.fps, c.n_frames) for c in bank.clips]
    report["mfcc_nn"] = precision_at_1(mfcc, labels, bank)
    if visual_modality in stored_nets(run):
        visual_net, _ = load_encoder(run, visual_modality)
        audio_emb, visual_emb = embed_all(audio_net, bank, "audio"), embed_all(visual_net, bank, visual_modality)
        report["symmetry_after"] = symmetry(audio_emb, visual_emb)
    if before is not None:
        a0, _ = load_encoder(before[0], "audio")
        v0, _ = load_encoder(before[1], visual_modality)
        report["symmetry_before"] = symmetry(embed_all(a0, bank, "audio"), embed_all(v0, bank, visual_modality))
    return report


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(EvaluateConfig, argv, prog="python -m manipulator.metric.evaluate", doc=__doc__)
    before = (cfg.before_audio, cfg.before_visual) if cfg.before_audio and cfg.before_visual else None
    torch.set_grad_enabled(False)
    report = evaluate(Path(cfg.data), cfg.run, cfg.visual, before)
    m, b = report["metric"], report["mfcc_nn"]
    print(
        f"held-out retrieval ({m['queries']} speech queries): phoneme p@1 metric {m['phoneme_p@1']:.3f} | "
        f"MFCC NN {b['phoneme_p@1']:.3f} | chance {m['chance_phoneme']:.3f}; viseme p@1 metric "
        f"{m['viseme_p@1']:.3f} | MFCC NN {b['viseme_p@1']:.3f}"
    )
    if "symmetry_after" in report:
        line = f"symmetry (Spearman audio vs {cfg.visual} distance): after {report['symmetry_after']:.3f}"
        if "symmetry_before" in report:
            line += f", before {report['symmetry_before']:.3f}"
        print(line)
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
