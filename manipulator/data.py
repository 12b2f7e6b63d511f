"""Manipulator data: windows of normalised `expr` from clip dirs, source/reference sampling that keeps each
label with its own sequence, and retrieved same-speech target windows from the metric's index.

Windows are `seq_len_frames` long with `hop` (see `manipulator.windows`). Expressions are normalised with
the face model's train statistics (`expr_mean`, `expr_std`); editing undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from common.emotions import NEUTRAL
from common.errors import UserError
from common.formats import Clip, read_clip_index
from facemodel import read_model_file
from manipulator.expr_norm import Normaliser
from manipulator.metric.index import RetrievalIndex
from manipulator.windows import window_starts


def dataset_basis_hash(processed: str | Path) -> str:
    """The config hash of the face model a processed dataset's clips were fitted with (its clips.json)."""
    return read_model_file(read_clip_index(Path(processed))["basis_file"])["config_hash"]


def check_face_model(clip: Clip, basis_hash: str, what: str, hint: str) -> None:
    """Refuse a clip whose parameters were fitted with another face model than `basis_hash` (the one `what`
    was trained on): its coefficients would mean something else. One line naming both, ending in `hint`."""
    fitted = clip.meta.backends.get("face_model_basis", "")
    if fitted and basis_hash and fitted != basis_hash:
        raise UserError(
            f"{clip.dir}: its face parameters were fitted with face model {fitted}, {what} was trained "
            f"on face model {basis_hash}; {hint}"
        )


@dataclass
class ScmclBatch:
    """The SCMCL terms' inputs for one batch of B source windows (built by `Retriever.fetch`, completed with
    the frozen metric parts by `with_metric`; read by `manipulator.losses.compute_g_loss`).

    target (B, T, D): retrieved same-speech windows in the target emotion (the paired loss's targets);
    reference (B, T, D): the correlation term's other window (the source, or the neutral pivot of an
    emotion -> emotion pair); d_audio (B,): the reference -> target audio distance; weight (B,):
    1 / (1 + retrieval distance), 0 where there is no target; valid (B,): 1 where there is a target (self
    pairs included); corr_valid (B,): 1 for the correlation term's pairs (self pairs, d_a = 0, excluded).
    All float32, normalised like the manipulator's windows. f_expr: the metric's frozen expression encoder
    ((N, window, D) -> (N, E)), taking the manipulator's units; phi: its φ; both None without the
    correlation term. visual_ref: d_v between generated and `source` (the reference) or `retrieved` (the
    target); window: the encoder's input length (the windows' last frames).
    """

    target: torch.Tensor
    reference: torch.Tensor
    d_audio: torch.Tensor
    weight: torch.Tensor
    valid: torch.Tensor
    corr_valid: torch.Tensor
    f_expr: torch.nn.Module | None = None
    phi: torch.nn.Module | None = None
    visual_ref: str = "source"
    window: int = 0

    def with_metric(
        self,
        device: torch.device,
        f_expr: torch.nn.Module | None,
        phi: torch.nn.Module | None,
        visual_ref: str,
        window: int,
    ) -> ScmclBatch:
        """The tensors moved to `device`, with the correlation term's frozen metric parts and settings."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v.to(device) for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        return replace(self, **moved, f_expr=f_expr, phi=phi, visual_ref=visual_ref, window=window)

    @property
    def correlation_other(self) -> torch.Tensor:
        """The window d_v compares the generated one with: the reference (`source`) or the target."""
        return self.reference if self.visual_ref == "source" else self.target


class WindowBank:
    """All windows of the clips of some splits, with emotion labels (index into `emotions`)."""

    def __init__(
        self,
        processed: str | Path,
        splits: tuple[str, ...],
        emotions: list[str],
        seq_len: int,
        hop: int,
        norm: Normaliser | None = None,
    ):
        self.root = Path(processed)
        self.emotions = list(emotions)
        self.seq_len = seq_len
        self.norm = norm or Normaliser.from_index(self.root)
        entries = [
            c for c in read_clip_index(self.root)["clips"] if c["split"] in splits and c.get("emotion") in emotions
        ]
        if not entries:
            raise UserError(f"{self.root}: no clips of emotions {emotions} in split(s) {', '.join(splits)}")
        self.clip_dirs, self.actors, self.labels, self.expr = [], [], [], []
        clip_idx, starts = [], []
        for entry in entries:
            expr = self.norm.forward(Clip(self.root / entry["dir"]).face()["expr"])
            s = window_starts(len(expr), seq_len, hop)
            if len(s) == 0:
                continue
            clip_idx.append(np.full(len(s), len(self.expr)))
            starts.append(s)
            self.clip_dirs.append(entry["dir"])
            self.actors.append(entry["actor"])
            self.labels.append(self.emotions.index(entry["emotion"]))
            self.expr.append(expr)
        self.win_clip = np.concatenate(clip_idx)
        self.win_start = np.concatenate(starts)
        self.win_label = np.array(self.labels)[self.win_clip]
        self.by_label = [np.nonzero(self.win_label == y)[0] for y in range(len(self.emotions))]
        self.present = [y for y in range(len(self.emotions)) if len(self.by_label[y])]
        self._row = {
            (d, int(s)): w
            for w, (d, s) in enumerate(zip(np.array(self.clip_dirs)[self.win_clip], self.win_start, strict=True))
        }

    def __len__(self) -> int:
        return len(self.win_clip)

    @property
    def expr_dim(self) -> int:
        return self.expr[0].shape[1]

    def windows(self, ids: np.ndarray) -> torch.Tensor:
        """(B, T, D) float32 windows."""
        return torch.from_numpy(
            np.stack([self.expr[self.win_clip[w]][self.win_start[w] : self.win_start[w] + self.seq_len] for w in ids])
        )

    def sample_sources(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(0, len(self), n)

    def sample_references(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Windows whose labels are uniform over the emotions present; each keeps its own label."""
        labels = rng.choice(self.present, n)
        return np.array([rng.choice(self.by_label[y]) for y in labels])

    def row_of(self, clip_dir: str, start: int) -> int | None:
        return self._row.get((clip_dir, int(start)))


PIVOT_DISTANCES = ("target_hop", "source_hop")
DIST_THRESH = 2.0  # the published code's `dist_thresh`: farther candidates are never paired


class Retriever:
    """Retrieved same-speech target windows (SCMCL) for sources and target labels, from the index."""

    def __init__(
        self,
        bank: WindowBank,
        index_dir: str | Path,
        metric_run: str | Path | None = None,
        dist_thresh: float | None = None,
        pivot_distance: str = "target_hop",
    ):
        """`dist_thresh`: candidates farther (retrieval distance) are never used, and a source with none left
        has no pair (both SCMCL losses skip it). `pivot_distance`: the d_a of an emotion -> emotion pair, the
        pivot -> target hop (`target_hop`) or the source -> pivot hop (`source_hop`, the published code)."""
        if pivot_distance not in PIVOT_DISTANCES:
            raise ValueError(f"pivot_distance must be one of {', '.join(PIVOT_DISTANCES)}; got {pivot_distance!r}")
        self.dist_thresh, self.pivot_distance = dist_thresh, pivot_distance
        self.bank = bank
        self.index = RetrievalIndex(index_dir)
        if metric_run is not None:
            self.index.check_metric(metric_run)
        if self.index.settings["seq_len_frames"] != bank.seq_len:
            raise UserError(
                f"{index_dir}: index built for windows of {self.index.settings['seq_len_frames']} frames, "
                f"the manipulator uses {bank.seq_len}"
            )
        self._rows: dict[tuple[str, str], dict[tuple[str, int], int]] = {}

    def _index_row(self, actor: str, emotion: str, clip_dir: str, start: int) -> int | None:
        key = (actor, emotion)
        if key not in self._rows:
            table = self.index.windows(actor, emotion)
            clips = self.index.clips
            self._rows[key] = {
                (clips[c], int(s)): r for r, (c, s) in enumerate(zip(table["clip"], table["start"], strict=True))
            }
        return self._rows[key].get((clip_dir, int(start)))

    def _bank_row(self, actor: str, emotion: str, row: int) -> int | None:
        """The bank window of row `row` of the index's windows(actor, emotion), if the bank holds it."""
        table = self.index.windows(actor, emotion)
        return self.bank.row_of(self.index.clips[table["clip"][row]], table["start"][row])

    def retrieve(self, w: int, y: int, rng: np.random.Generator) -> dict | None:
        """One source window's pair: target, correlation reference, distances; None when there is none."""
        b = self.bank
        clip, start = b.clip_dirs[b.win_clip[w]], b.win_start[w]
        actor, src_emotion, trg_emotion = b.actors[b.win_clip[w]], b.emotions[b.win_label[w]], b.emotions[y]
        if src_emotion == trg_emotion:  # already in the target emotion: its own target, no correlation pair
            return {"target": w, "reference": w, "dist": 0.0, "d_corr": 0.0, "corr": 0.0}
        row = self._index_row(actor, src_emotion, clip, start)
        if row is None:
            return None
        idx, dist = self.index.candidates(actor, src_emotion, trg_emotion)
        usable = idx[row] >= 0
        if self.dist_thresh is not None:
            usable &= dist[row] <= self.dist_thresh
        ok = np.nonzero(usable)[0]
        if not len(ok):
            return None
        k = rng.choice(ok)
        target = self._bank_row(actor, trg_emotion, int(idx[row, k]))
        if target is None:
            return None
        pivots = self.index.pivots(actor, src_emotion, trg_emotion)
        if pivots is None:  # a direct pair: the source against the target, at their audio distance
            return {
                "target": target,
                "reference": w,
                "dist": float(dist[row, k]),
                "d_corr": float(dist[row, k]),
                "corr": 1.0,
            }
        # emotion -> emotion through a neutral pivot: the correlation pair is (pivot, target) at the pivot's
        # own hop (or, as published, at the source's hop to the pivot); the paired weight keeps the documented
        # 1 / (1 + sum of both hops)
        pivot = self._bank_row(actor, NEUTRAL, int(pivots["pivot"][row]))
        return {
            "target": target,
            "reference": w if pivot is None else pivot,
            "dist": float(dist[row, k]),
            "d_corr": float(pivots["hop2"][row, k] if self.pivot_distance == "target_hop" else pivots["hop1"][row]),
            "corr": 0.0 if pivot is None else 1.0,
        }

    def fetch(self, sources: np.ndarray, y_trg: np.ndarray, rng: np.random.Generator) -> ScmclBatch:
        """Per source window and target label: its retrieved target, correlation reference and distances
        (see ScmclBatch; the metric parts are added by `ScmclBatch.with_metric`)."""
        rows = [self.retrieve(w, y, rng) for w, y in zip(sources, y_trg, strict=True)]
        none = {"dist": 0.0, "d_corr": 0.0, "corr": 0.0}
        rows = [
            r if r is not None else none | {"target": w, "reference": w, "valid": 0.0}
            for r, w in zip(rows, sources, strict=True)
        ]
        col = lambda key, default=None: torch.tensor([r.get(key, default) for r in rows], dtype=torch.float32)  # noqa: E731
        valid = col("valid", 1.0)
        return ScmclBatch(
            target=self.bank.windows(np.array([r["target"] for r in rows])),
            reference=self.bank.windows(np.array([r["reference"] for r in rows])),
            d_audio=col("d_corr"),
            weight=valid / (1.0 + col("dist")),
            valid=valid,
            corr_valid=col("corr"),
        )
