"""Build the retrieval index of same-speech windows: `python -m manipulator.metric.index metric_run=runs/metric/joint`.

Every manipulator window (`seq_len_frames`, `hop`) of every clip is represented by its anchor audio
(`manipulator.windows`: the audio ending at the window's last frame) embedded with the trained audio
encoder. Per actor and per (source emotion, target emotion) we store, for every source window, the top-k
target windows by audio distance:
- neutral -> emotion and emotion -> neutral directly;
- windows whose anchor audio is silence (`manipulator.windows.is_silent`) are never a candidate and get none:
  silent audio embeds to one point, so its distances say nothing about speech;
- emotion -> emotion through the nearest neutral window (as the later SCMCL code): the pivot is the top-1
  of emotion -> neutral, its candidates are its neutral -> emotion top-k, and the distance is the sum of
  the two hops. The pivot row and both hops are stored too: the SCMCL correlation term uses the pivot
  (a neutral window, the kind of pair the metric was trained on) and its own hop to the target.
  A hop farther than `max_dist` masks the candidate.
Only O(N*k) arrays are stored (masked slots: -1 / inf), computed by blocks: never a dense N x N matrix.

An index belongs to one metric checkpoint: `index.json` records the run and its checkpoint, and the SCMCL
terms refuse an index built by another run (or an older checkpoint) than the encoders they use
(`RetrievalIndex.check_metric`). Default folder: `<data_dir>/retrieval/<metric run name>`.

Files: `index.json` (settings), per actor `windows_<emotion>.npz` (clip (N,) int32 into `clips`, start (N,)
int32, anchor (N,) int32, silent (N,) bool) and `<source>__<target>.npz` (idx, dist; for emotion -> emotion
also pivot (N,) int32 rows of windows_neutral, hop1 (N,) float32 and hop2 (N, k) float32).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.checkpoint import latest_checkpoint
from common.cli import parse_cli
from common.config import arg, to_object
from common.distributed import select_device
from common.emotions import NEUTRAL
from common.errors import UserError, cli_entry
from common.fsutil import atomic_write_bytes, atomic_write_text
from manipulator.metric.data import ClipBank, InputSpec
from manipulator.metric.models import load_metric
from manipulator.metric.topk import masked_topk
from manipulator.windows import anchor_frame, window_starts

ANCHOR_RULE = "last frame of the window; audio = the audio_ms ending where that frame ends"
INDEX_FORMAT = 3  # 2: metric checkpoint recorded, pivot rows and hops stored; 3: silent windows masked


@dataclass
class IndexConfig:
    data_dir: str = arg("data/processed/toy_mead", "processed root (clips.json)")
    metric_run: str = arg("runs/metric/joint", "run dir of a metric with an audio encoder")
    out_dir: str = arg("", "default <data_dir>/retrieval/<metric run name>")
    splits: list[str] = arg(["train"], "retrieve only from clips of these splits (training clips)")
    seq_len_frames: int = arg(10, "window length in frames (the manipulator's)")
    hop: int = arg(1, "frames between window starts")
    k: int = arg(10, "candidates kept per source window")
    max_dist: float | None = arg(None, "candidates farther than this are masked (-1 / inf)")
    device: str = arg("auto", "auto, cpu or cuda")
    batch_size: int = arg(512, "windows embedded per batch")


def load_audio_encoder(run_dir: str | Path, device: torch.device) -> tuple[torch.nn.Module, InputSpec, dict]:
    """The audio encoder of a metric run, in eval mode, with the input spec it was trained with."""
    nets, cfg = load_metric(run_dir, ["audio"], device)
    return nets["audio"], InputSpec(**cfg["inputs"]), cfg


@torch.no_grad()
def embed_windows(net, bank: ClipBank, seq_len: int, hop: int, device, batch_size: int):
    """Per (actor, emotion): embeddings (N, dim) and the window table (clip index, start, anchor, silent)."""
    groups: dict[tuple[str, str], dict[str, list]] = {}
    for c, clip in enumerate(tqdm(bank.clips, desc="embedding windows", unit="clip", mininterval=10)):
        starts = window_starts(clip.n_frames, seq_len, hop)
        if len(starts) == 0:
            continue
        anchors = anchor_frame(starts, seq_len)
        vecs = []
        for b in range(0, len(anchors), batch_size):
            refs = [(c, int(a)) for a in anchors[b : b + batch_size]]
            vecs.append(net(bank.inputs("audio", refs).to(device)).float().cpu())
        g = groups.setdefault(
            (clip.actor, clip.emotion), {"vec": [], "clip": [], "start": [], "anchor": [], "silent": []}
        )
        g["vec"].append(torch.cat(vecs))
        g["silent"].append(np.array([bank.silent(c, int(a)) for a in anchors]))
        g["clip"].append(np.full(len(starts), c, np.int32))
        g["start"].append(starts.astype(np.int32))
        g["anchor"].append(anchors.astype(np.int32))
    return {
        key: {"vec": torch.cat(g["vec"]), **{f: np.concatenate(g[f]) for f in ("clip", "start", "anchor", "silent")}}
        for key, g in groups.items()
    }


def default_index_dir(data_dir: str | Path, metric_run: str | Path) -> Path:
    """Where the index of a metric run lives by default: one index per metric run."""
    return Path(data_dir) / "retrieval" / Path(metric_run).name


def metric_identity(run_dir: str | Path) -> dict[str, str]:
    """What an index is built by: the metric run (resolved path), its newest checkpoint's file name and a
    digest of that file's bytes (the digest decides; the paths only make the refusal readable)."""
    path = latest_checkpoint(Path(run_dir) / "checkpoints")
    if path is None:
        raise UserError(f"{run_dir}: no metric checkpoint; train the metric first (python -m manipulator.metric.train)")
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
    return {"metric_run": str(Path(run_dir).resolve()), "metric_checkpoint": path.name, "metric_digest": digest}


def pivot_topk(
    first: tuple[torch.Tensor, torch.Tensor], second: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """emotion1 -> neutral (top-1 pivot) -> emotion2: the pivot's candidates, distance = sum of the hops.
    Returns idx, dist (N, k), pivot (N,) (-1 = none), hop1 (N,) and hop2 (N, k) (inf where masked)."""
    pivot_idx, pivot_dist = first[0][:, 0].long(), first[1][:, 0]
    has_pivot = pivot_idx >= 0
    idx = torch.full((len(pivot_idx), second[0].shape[1]), -1, dtype=torch.int32)
    hop2 = torch.full(idx.shape, float("inf"))
    idx[has_pivot] = second[0][pivot_idx[has_pivot]]
    hop2[has_pivot] = second[1][pivot_idx[has_pivot]]
    hop2[idx < 0] = float("inf")
    hop1 = torch.where(has_pivot, pivot_dist, torch.full_like(pivot_dist, float("inf")))
    dist = hop2 + hop1[:, None]
    pivot = torch.where(has_pivot, pivot_idx, torch.full_like(pivot_idx, -1)).to(torch.int32)
    return {"idx": idx, "dist": dist, "pivot": pivot, "hop1": hop1, "hop2": hop2}


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def build_index(cfg, device: torch.device) -> Path:
    net, spec, metric_cfg = load_audio_encoder(cfg.metric_run, device)
    bank = ClipBank(cfg.data_dir, tuple(cfg.splits), spec, ["audio"])
    identity = metric_identity(cfg.metric_run)
    out = Path(cfg.out_dir or default_index_dir(cfg.data_dir, cfg.metric_run))
    groups = embed_windows(net, bank, cfg.seq_len_frames, cfg.hop, device, cfg.batch_size)
    files = []
    for actor in sorted({a for a, _ in groups}):
        emotions = sorted(e for a, e in groups if a == actor)
        for emotion in emotions:
            g = groups[(actor, emotion)]
            table = {f: g[f] for f in ("clip", "start", "anchor", "silent")}
            _save_npz(out / actor / f"windows_{emotion}.npz", **table)
        if NEUTRAL not in emotions:
            continue
        vec = {e: groups[(actor, e)]["vec"].to(device) for e in emotions}
        ok = {e: torch.from_numpy(~groups[(actor, e)]["silent"]).to(device) for e in emotions}
        direct = {}
        for emotion in emotions:
            if emotion == NEUTRAL:
                continue
            for a, b in ((NEUTRAL, emotion), (emotion, NEUTRAL)):
                direct[(a, b)] = masked_topk(vec[a], vec[b], ok[a], ok[b], cfg.k, cfg.max_dist)
        results = {key: {"idx": idx, "dist": dist} for key, (idx, dist) in direct.items()}
        for e1 in emotions:
            for e2 in emotions:
                if NEUTRAL not in (e1, e2) and e1 != e2:
                    results[(e1, e2)] = pivot_topk(direct[(e1, NEUTRAL)], direct[(NEUTRAL, e2)])
        for (src, tgt), arrays in results.items():
            _save_npz(out / actor / f"{src}__{tgt}.npz", **{k: v.numpy() for k, v in arrays.items()})
            files.append(f"{actor}/{src}__{tgt}.npz")
    settings = {
        "format": INDEX_FORMAT,
        "anchor_rule": ANCHOR_RULE,
        "seq_len_frames": cfg.seq_len_frames,
        "hop": cfg.hop,
        "k": cfg.k,
        "max_dist": cfg.max_dist,
        "splits": list(cfg.splits),
        **identity,
        "inputs": metric_cfg["inputs"],
        "clips": [c.rel_dir for c in bank.clips],
        "files": files,
    }
    atomic_write_text(out / "index.json", json.dumps(settings, indent=2) + "\n")
    return out


class RetrievalIndex:
    """Read access to a built index: windows of (actor, emotion) and top-k candidates between emotions."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        path = self.dir / "index.json"
        if not path.is_file():
            raise UserError(f"{path}: no retrieval index; build it (python -m manipulator.metric.index)")
        self.settings = json.loads(path.read_text())
        if self.settings.get("format", 1) < INDEX_FORMAT:
            raise UserError(
                f"{path}: retrieval index of format {self.settings.get('format', 1)}, before silent windows were "
                f"masked (format {INDEX_FORMAT}); rebuild it: python -m manipulator.metric.index "
                f"metric_run={self.settings.get('metric_run', '...')} out_dir={self.dir}"
            )
        self.clips = self.settings["clips"]
        self._cache: dict[str, dict[str, np.ndarray]] = {}

    def _load(self, rel: str) -> dict[str, np.ndarray]:
        if rel not in self._cache:
            path = self.dir / rel
            if not path.is_file():
                raise UserError(f"{path}: missing from the retrieval index")
            with np.load(path, allow_pickle=False) as z:
                self._cache[rel] = {k: z[k] for k in z.files}
        return self._cache[rel]

    def check_metric(self, run_dir: str | Path) -> None:
        """Refuse an index built by another metric run, or by an older checkpoint of this one, than `run_dir`
        (whose encoders and φ the SCMCL terms use): its audio distances would be on another scale."""
        want = metric_identity(run_dir)
        have = {k: self.settings.get(k, "(not recorded)") for k in want}
        if have["metric_digest"] != want["metric_digest"]:
            raise UserError(
                f"{self.dir}: retrieval index built from {have['metric_run']} "
                f"({have['metric_checkpoint']}), but the SCMCL terms use {want['metric_run']} "
                f"({want['metric_checkpoint']}); rebuild it: python -m manipulator.metric.index "
                f"metric_run={run_dir} out_dir={self.dir} "
                "data_dir=... splits=[...]"
            )

    def windows(self, actor: str, emotion: str) -> dict[str, np.ndarray]:
        return self._load(f"{actor}/windows_{emotion}.npz")

    def candidates(self, actor: str, source: str, target: str) -> tuple[np.ndarray, np.ndarray]:
        """(idx (N_source, k), dist (N_source, k)): rows of windows(actor, target); -1 / inf = none."""
        z = self._load(f"{actor}/{source}__{target}.npz")
        return z["idx"], z["dist"]

    def pivots(self, actor: str, source: str, target: str) -> dict[str, np.ndarray] | None:
        """For emotion -> emotion: pivot (N,) rows of windows(actor, NEUTRAL), hop1 (N,), hop2 (N, k);
        None for the direct pairs (one of the two emotions is neutral)."""
        z = self._load(f"{actor}/{source}__{target}.npz")
        return {k: z[k] for k in ("pivot", "hop1", "hop2")} if "pivot" in z else None


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(IndexConfig, argv, prog="python -m manipulator.metric.index", doc=__doc__)
    cfg = to_object(cfg)
    out = build_index(cfg, select_device(cfg.device))
    print(f"retrieval index written to {out}")


if __name__ == "__main__":
    main()
