"""The renderer's SCMCL image pairs (renderer.scmcl.ScmclImageTerms.sample) on a planted retrieval index: every
sampled pair is one the index holds (source window's anchor -> the retrieved target window's anchor, with its
audio distance), a source window without candidates is never used, and the conditioning covers the generator's
frames up to the anchor."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from manipulator.metric.index import INDEX_FORMAT, RetrievalIndex
from renderer.scmcl import ScmclImageTerms

SIZE = 4
CLIPS = ["W001/neutral/a", "W001/neutral/b", "W001/neutral/c", "W001/happy/d", "W001/happy/e", "W001/sad/f"]
INF = np.inf


def _planted_index(root):
    """Windows (clip, anchor) per emotion and top-2 candidates from neutral: the answers are known."""
    (root / "W001").mkdir(parents=True)
    windows = {
        "neutral": ([0, 1, 2], [4, 9, 6]),
        "happy": ([3, 4, 3], [5, 7, 11]),
        "sad": ([5], [3]),
    }
    for emotion, (clip, anchor) in windows.items():
        np.savez(root / "W001" / f"windows_{emotion}.npz", clip=np.array(clip), anchor=np.array(anchor))
    candidates = {  # neutral row 1 has no candidate at all
        "happy": ([[2, -1], [-1, -1], [0, 1]], [[0.3, INF], [INF, INF], [0.7, 0.9]]),
        "sad": ([[0, -1], [-1, -1], [-1, -1]], [[1.2, INF], [INF, INF], [INF, INF]]),
    }
    for emotion, (idx, dist) in candidates.items():
        np.savez(root / "W001" / f"neutral__{emotion}.npz", idx=np.array(idx), dist=np.array(dist, np.float32))
    (root / "index.json").write_text(json.dumps({"format": INDEX_FORMAT, "clips": CLIPS, "seq_len_frames": 6}))
    return RetrievalIndex(root)


class _Conditioner:
    """Frames that say where they come from: channel 0 the frame index, 1 the clip, 2 the emotion (edited
    conditioning) or -1 (a real frame)."""

    def __init__(self, rel_dir: str, emotion: str | None):
        self.code = (CLIPS.index(rel_dir), -1 if emotion is None else ["happy", "sad"].index(emotion))

    def face(self, t: int) -> np.ndarray:
        return np.stack([np.full((SIZE, SIZE), v, np.float32) for v in (t, *self.code)])

    def mask(self, t: int) -> np.ndarray:
        return np.ones((1, SIZE, SIZE), np.float32)

    def render_range(self, frames: range) -> np.ndarray:
        return np.stack([self.face(t) for t in frames])


def test_sampled_image_pairs_are_the_indexed_ones(tmp_path):
    terms = ScmclImageTerms.__new__(ScmclImageTerms)
    terms.cfg = SimpleNamespace(actor="W001", scmcl=SimpleNamespace(batch_size=40))
    terms.n_g, terms.device, terms.source_emotion = 3, "cpu", "neutral"
    terms.index = _planted_index(tmp_path / "index")
    dirs = CLIPS[:3]  # the renderer's training clips (targets are read through the real-frame conditioner)
    terms.data = SimpleNamespace(dirs=dirs, size=SIZE)
    terms.by_dir = {d: i for i, d in enumerate(dirs)}
    terms.targets = ["happy", "sad"]
    terms.source_rows = np.array([0, 1, 2])
    terms._edited_conditioner = lambda c, emotion: _Conditioner(dirs[c], emotion)
    terms._real_conditioner = lambda rel_dir: _Conditioner(rel_dir, None)
    cond, mask, source, target, d_a = terms.sample(np.random.default_rng(0))
    assert cond.shape == (40, 3 * 3, SIZE, SIZE) and source.shape == target.shape == (40, 3, SIZE, SIZE)
    # (source clip, source anchor, emotion) -> (target clip, target anchor, audio distance), from the plant
    answers = {
        (0, 4, "happy"): {(3, 11, 0.3)},
        (0, 4, "sad"): {(5, 3, 1.2)},
        (2, 6, "happy"): {(3, 5, 0.7), (4, 7, 0.9)},
    }
    seen = set()
    for i in range(40):
        t, clip, emotion = (int(v) for v in source[i, :, 0, 0])
        key = (clip, t, ["happy", "sad"][emotion])
        got = (int(target[i, 1, 0, 0]), int(target[i, 0, 0, 0]), round(float(d_a[i]), 6))
        assert target[i, 2, 0, 0] == -1  # a real frame, not an edited one
        assert got in answers[key], (key, got)
        seen.add((key, got))
        # the generator's conditioning: the edited frames anchor - 2 .. anchor of the source clip
        frames = cond[i].reshape(3, 3, SIZE, SIZE)[:, :, 0, 0]
        np.testing.assert_array_equal(frames[:, 0].numpy(), [t - 2, t - 1, t])
        assert (frames[:, 1] == clip).all() and (frames[:, 2] == emotion).all()
    assert seen == {(k, v) for k, vs in answers.items() for v in vs}  # 40 draws reach all four planted pairs
    assert mask.shape == (40, 1, SIZE, SIZE)
