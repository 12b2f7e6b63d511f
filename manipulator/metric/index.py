"""Build the retrieval index of same-speech windows: `python -m manipulator.metric.index metric_run=runs/metric/joint`.

Every manipulator window (`seq_len_frames`, `hop`) of every clip is represented by its anchor audio
(`manipulator.windows`: the audio ending at the window's last frame) embedded with the trained audio
encoder. Per actor and per (source emotion, target emotion) we store, for every source window, the top-k
target windows by audio distance:
- neutral -> emotion and emotion -> neutral directly;
- emotion -> emotion through the nearest neutral window (as the later SCMCL code): the pivot is the top-1
  of emotion -> neutral, its candidates are its neutral -> emotion top-k, and the distance is the sum of
  the two hops. A hop farther than `max_dist` masks the candidate.
Only `idx [N, k] int32` and `dist [N, k] float32` are stored (masked slots: -1 / inf), computed by blocks:
memory O(N*k), never a dense N x N matrix.

Files under `out_dir` (default `<data_dir>/retrieval`): `index.json` (settings), per actor
`windows_<emotion>.npz` (clip (N,) int32 into `clips`, start (N,) int32, anchor (N,) int32) and
`<source>__<target>.npz` (idx, dist).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.cli import parse_cli
from common.config import arg, to_object
from common.distributed import select_device
from common.errors import UserError, cli_entry
from common.fsutil import atomic_write_bytes, atomic_write_text
from manipulator.metric.data import ClipBank, InputSpec
from manipulator.metric.models import load_metric
from manipulator.metric.topk import chunked_topk
from manipulator.windows import anchor_frame, window_starts

ANCHOR_RULE = "last frame of the window; audio = the audio_ms ending where that frame ends"


@dataclass
class IndexConfig:
    data_dir: str = arg("data/processed/toy_mead", "processed root (clips.json)")
    metric_run: str = arg("runs/metric/joint", "run dir of a metric with an audio encoder")
    out_dir: str = arg("", "default <data_dir>/retrieval")
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
    """Per (actor, emotion): embeddings (N, dim) and the window table (clip index, start, anchor)."""
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
        g = groups.setdefault((clip.actor, clip.emotion), {"vec": [], "clip": [], "start": [], "anchor": []})
        g["vec"].append(torch.cat(vecs))
        g["clip"].append(np.full(len(starts), c, np.int32))
        g["start"].append(starts.astype(np.int32))
        g["anchor"].append(anchors.astype(np.int32))
    return {
        key: {"vec": torch.cat(g["vec"]), **{f: np.concatenate(g[f]) for f in ("clip", "start", "anchor")}}
        for key, g in groups.items()
    }


def pivot_topk(
    first: tuple[torch.Tensor, torch.Tensor], second: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """emotion1 -> neutral (top-1 pivot) -> emotion2: candidates of the pivot, distance = sum of hops."""
    pivot_idx, pivot_dist = first[0][:, 0].long(), first[1][:, 0]
    has_pivot = pivot_idx >= 0
    idx = torch.full((len(pivot_idx), second[0].shape[1]), -1, dtype=torch.int32)
    dist = torch.full(idx.shape, float("inf"))
    idx[has_pivot] = second[0][pivot_idx[has_pivot]]
    dist[has_pivot] = second[1][pivot_idx[has_pivot]] + pivot_dist[has_pivot, None]
    dist[idx < 0] = float("inf")
    return idx, dist


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def build_index(cfg, device: torch.device) -> Path:
    net, spec, metric_cfg = load_audio_encoder(cfg.metric_run, device)
    bank = ClipBank(cfg.data_dir, tuple(cfg.splits), spec, ["audio"])
    out = Path(cfg.out_dir or Path(cfg.data_dir) / "retrieval")
    groups = embed_windows(net, bank, cfg.seq_len_frames, cfg.hop, device, cfg.batch_size)
    files = []
    for actor in sorted({a for a, _ in groups}):
        emotions = sorted(e for a, e in groups if a == actor)
        for emotion in emotions:
            g = groups[(actor, emotion)]
            _save_npz(out / actor / f"windows_{emotion}.npz", clip=g["clip"], start=g["start"], anchor=g["anchor"])
        if "neutral" not in emotions:
            continue
        neutral = groups[(actor, "neutral")]["vec"].to(device)
        direct = {}
        for emotion in emotions:
            if emotion == "neutral":
                continue
            vec = groups[(actor, emotion)]["vec"].to(device)
            direct[("neutral", emotion)] = chunked_topk(neutral, vec, cfg.k, cfg.max_dist)
            direct[(emotion, "neutral")] = chunked_topk(vec, neutral, cfg.k, cfg.max_dist)
        results = dict(direct)
        for e1 in emotions:
            for e2 in emotions:
                if "neutral" not in (e1, e2) and e1 != e2:
                    results[(e1, e2)] = pivot_topk(direct[(e1, "neutral")], direct[("neutral", e2)])
        for (src, tgt), (idx, dist) in results.items():
            _save_npz(out / actor / f"{src}__{tgt}.npz", idx=idx.numpy(), dist=dist.numpy())
            files.append(f"{actor}/{src}__{tgt}.npz")
    settings = {
        "anchor_rule": ANCHOR_RULE,
        "seq_len_frames": cfg.seq_len_frames,
        "hop": cfg.hop,
        "k": cfg.k,
        "max_dist": cfg.max_dist,
        "splits": list(cfg.splits),
        "metric_run": str(Path(cfg.metric_run).resolve()),
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

    def windows(self, actor: str, emotion: str) -> dict[str, np.ndarray]:
        return self._load(f"{actor}/windows_{emotion}.npz")

    def candidates(self, actor: str, source: str, target: str) -> tuple[np.ndarray, np.ndarray]:
        """(idx (N_source, k), dist (N_source, k)): rows of windows(actor, target); -1 / inf = none."""
        z = self._load(f"{actor}/{source}__{target}.npz")
        return z["idx"], z["dist"]


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(IndexConfig, argv, prog="python -m manipulator.metric.index", doc=__doc__)
    cfg = to_object(cfg)
    out = build_index(cfg, select_device(cfg.device))
    print(f"retrieval index written to {out}")


if __name__ == "__main__":
    main()
