"""SCMCL metric: losses, φ, block top-k, the window<->audio anchor rule, training (resume) and the index."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_module, tiny_metric

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.errors import UserError
from common.formats import Clip, frame_to_sample
from manipulator.metric.evaluate import precision_at_1
from manipulator.metric.index import RetrievalIndex, pivot_topk
from manipulator.metric.losses import consistency_affine, consistency_softmax, info_nce
from manipulator.metric.models import AffineScale
from manipulator.metric.topk import chunked_topk, dense_topk, masked_topk
from manipulator.windows import anchor_frame, audio_ending_at_frame, window_audio, window_starts
from preprocessing.toy_mead.dataset import ground_truth_of, read_ground_truth


def test_info_nce_on_hand_made_embeddings():
    anchors = 10.0 * torch.eye(8)
    assert info_nce(anchors, anchors.clone()) < 1e-4  # perfectly separated
    swapped = info_nce(anchors, anchors.roll(1, dims=0))
    assert swapped > 10.0  # every positive is nearest to someone else's anchor
    assert info_nce(torch.zeros(8, 4), torch.zeros(8, 4)).item() == pytest.approx(np.log(8), rel=1e-5)


def test_consistency_terms():
    d = torch.rand(6, 6) * 3
    assert consistency_softmax(d, d.clone()) == 0
    assert consistency_softmax(d, d.flip(1)) > 0.01
    phi = AffineScale()
    with torch.no_grad():
        phi.weight.fill_(2.0)
        phi.bias.fill_(1.0)
    assert consistency_affine(d, 2 * d + 1, phi) < 1e-6
    assert consistency_affine(d, d, phi) > 0.5


def test_near_range_consistency_counts_only_the_close_pairs():
    d_a = torch.tensor([[0.5, 6.0], [7.0, 1.5]])  # the diagonal is near (same speech), the rest far
    d_v = torch.tensor([[0.5, 0.0], [0.0, 2.5]])  # φ = identity: errors 0, 6, 7, 1
    phi = AffineScale()
    assert consistency_affine(d_v, d_a, phi).item() == pytest.approx(14 / 4)
    assert consistency_affine(d_v, d_a, phi, max_audio=2.0).item() == pytest.approx(1 / 2)
    assert consistency_affine(d_v, d_a, phi, max_audio=0.1).item() == 0.0  # no near pair: no term


def test_phi_learns_a_known_affine_map():
    torch.manual_seed(0)
    phi = AffineScale()
    opt = torch.optim.Adam(phi.parameters(), lr=0.05)
    for _ in range(1500):
        d_v = torch.rand(16, 16) * 4
        loss = consistency_affine(d_v, 3.0 * d_v + 0.5, phi)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert phi.weight.item() == pytest.approx(3.0, abs=0.02) and phi.bias.item() == pytest.approx(0.5, abs=0.05)


def test_block_topk_equals_brute_force():
    gen = torch.Generator().manual_seed(0)
    q, keys = torch.randn(300, 16, generator=gen), torch.randn(500, 16, generator=gen)
    idx, dist = chunked_topk(q, keys, 7, block_q=64, block_k=100)
    ref_idx, ref_dist = dense_topk(q, keys, 7)
    assert torch.equal(idx, ref_idx) and torch.allclose(dist, ref_dist, atol=1e-5)
    np.testing.assert_allclose(dist[:, 0], torch.cdist(q, keys).min(dim=1).values, atol=1e-5)


def test_threshold_and_missing_candidates_are_masked():
    q = torch.tensor([[0.0, 0.0], [10.0, 10.0]])
    keys = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    idx, dist = chunked_topk(q, keys, 3, max_dist=1.5)
    assert idx.tolist() == [[0, -1, -1], [-1, -1, -1]]  # k > keys and far keys: masked, no crash
    assert dist[0, 0] == 1.0 and torch.isinf(dist[0, 1:]).all() and torch.isinf(dist[1]).all()
    idx, dist = chunked_topk(torch.zeros(0, 2), keys, 3)
    assert idx.shape == (0, 3)


def test_masked_topk_never_offers_a_left_out_key_and_gives_left_out_queries_none():
    q = torch.tensor([[0.0, 0.0], [5.0, 5.0], [1.0, 0.0]])
    keys = torch.tensor([[0.0, 0.1], [0.0, 0.2], [5.0, 5.0], [0.0, 0.3]])
    idx, dist = masked_topk(q, keys, torch.tensor([True, False, True]), torch.tensor([False, True, True, True]), 2)
    assert idx.tolist() == [[1, 3], [-1, -1], [1, 3]]  # key 0 is the nearest but left out; rows of `keys`
    assert torch.isinf(dist[1]).all() and dist[0, 0] == pytest.approx(0.2)


def test_pivot_goes_through_the_nearest_neutral():
    first = (torch.tensor([[1], [-1]], dtype=torch.int32), torch.tensor([[0.5], [float("inf")]]))
    second = (torch.tensor([[3, 4], [5, -1]], dtype=torch.int32), torch.tensor([[1.0, 2.0], [0.25, float("inf")]]))
    got = pivot_topk(first, second)
    assert got["idx"].tolist() == [[5, -1], [-1, -1]]
    dist = got["dist"]
    assert dist[0, 0] == 0.75 and torch.isinf(dist[0, 1]) and torch.isinf(dist[1]).all()
    # the pivot row and both hops are kept: the correlation term uses (pivot, target) at hop2
    assert got["pivot"].tolist() == [1, -1] and got["hop1"][0] == 0.5 and torch.isinf(got["hop1"][1])
    assert got["hop2"][0, 0] == 0.25 and torch.isinf(got["hop2"][0, 1]) and torch.isinf(got["hop2"][1]).all()


def test_window_anchor_rule():
    assert window_starts(12, 10).tolist() == [0, 1, 2] and window_starts(9, 10).size == 0
    assert window_starts(30, 10, hop=5).tolist() == [0, 5, 10, 15, 20]
    assert anchor_frame(2, 10) == 11
    audio = np.arange(20000, dtype=np.float32)
    clip = window_audio(audio, 0, 10, 25, 1280)  # anchor = frame 9, which ends at sample 6400
    np.testing.assert_array_equal(clip, audio[5120:6400])
    early = audio_ending_at_frame(audio, 0, 25, 1280)  # frame 0 ends at 640: zero-padded before the clip
    assert (early[:640] == 0).all() and np.array_equal(early[640:], audio[:640])
    end = frame_to_sample(30, 30000 / 1001)
    np.testing.assert_array_equal(audio_ending_at_frame(audio, 29, 30000 / 1001, 100), audio[end - 100 : end])


def test_metric_training_resumes_exactly(metric_runs, processed_tiny, python_exe, python_env):
    from common.checkpoint import load_checkpoint

    args = ["engine.max_steps=20", "engine.name=resumed"]
    tiny_metric(python_exe, python_env, processed_tiny, metric_runs, "audio", *args, "engine.session_steps=10")
    tiny_metric(python_exe, python_env, processed_tiny, metric_runs, "audio", *args)
    straight = load_checkpoint(metric_runs / "metric/audio/checkpoints/step_000000020.pt")["nets"]["audio"]
    resumed = load_checkpoint(metric_runs / "metric/resumed/checkpoints/step_000000020.pt")["nets"]["audio"]
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_joint_run_trains_the_consistency_term(metric_runs):
    lines = [json.loads(x) for x in (metric_runs / "metric/joint/metrics.jsonl").read_text().splitlines()]
    assert "consistency/expr" in lines[-1] and "phi/expr_weight" in lines[-1]
    ckpt = load_checkpoint(latest_checkpoint(metric_runs / "metric/joint/checkpoints"))
    assert ckpt["extra"]["phi_trained"] == {"expr": True}  # consistency_start=5 < 20 steps
    assert "initialised audio" in (metric_runs / "metric/joint/log.txt").read_text()


def test_index_matches_brute_force_on_the_embeddings(metric_runs, processed_tiny, tmp_path, python_exe, python_env):
    out = tmp_path / "retrieval"
    run_module(
        python_exe,
        python_env,
        "manipulator.metric.index",
        f"data_dir={processed_tiny}",
        f"metric_run={metric_runs}/metric/joint",
        f"out_dir={out}",
        "k=4",
        "splits=[train,test]",
    )
    index = RetrievalIndex(out)
    assert index.settings["anchor_rule"].startswith("last frame")
    index.check_metric(metric_runs / "metric/joint")  # built by this run's newest checkpoint
    with pytest.raises(UserError, match="rebuild it"):  # any other run's encoders are refused
        index.check_metric(metric_runs / "metric/audio")
    neutral, happy = index.windows("W001", "neutral"), index.windows("W001", "happy")
    assert (neutral["anchor"] == neutral["start"] + 9).all()
    idx, dist = index.candidates("W001", "neutral", "happy")
    assert idx.shape == (len(neutral["start"]), 4) and idx.dtype == np.int32 and dist.dtype == np.float32
    assert ((idx >= -1) & (idx < len(happy["start"]))).all()
    assert (np.diff(np.nan_to_num(dist, posinf=1e30), axis=1) >= 0).all()  # ascending; no candidate: inf
    back, _ = index.candidates("W001", "happy", "neutral")
    assert back.shape == (len(happy["start"]), 4)
    # Recompute the neutral->happy top-k by brute force from the same audio encoder.
    from manipulator.metric.data import ClipBank
    from manipulator.metric.index import embed_windows, load_audio_encoder

    net, spec, _ = load_audio_encoder(metric_runs / "metric/joint", torch.device("cpu"))
    bank = ClipBank(processed_tiny, ("train", "test"), spec, ["audio"])
    groups = embed_windows(net, bank, 10, 1, torch.device("cpu"), 256)
    quiet_n, quiet_h = groups[("W001", "neutral")]["silent"], groups[("W001", "happy")]["silent"]
    np.testing.assert_array_equal(neutral["silent"], quiet_n)
    assert quiet_n.any() and quiet_h.any() and not quiet_h.all()  # toy MEAD has silence before and after speech
    assert not np.isin(idx, np.flatnonzero(quiet_h)).any()  # a silent window is never a candidate
    assert (idx[quiet_n] == -1).all() and np.isinf(dist[quiet_n]).all()  # and gets none
    assert not np.isin(back, np.flatnonzero(quiet_n)).any()
    idx, dist = idx[~quiet_n], dist[~quiet_n]
    keys = np.flatnonzero(~quiet_h)  # brute force over the speech windows
    vec_n, vec_h = groups[("W001", "neutral")]["vec"], groups[("W001", "happy")]["vec"]
    ref_idx, ref_dist = dense_topk(vec_n[~quiet_n], vec_h[keys], 4)
    ref_idx, ref_dist = keys[ref_idx.numpy()], ref_dist.numpy()
    np.testing.assert_allclose(dist, ref_dist, atol=1e-4)  # cdist's matmul path differs by ~1e-5 per block
    gaps = np.diff(ref_dist, axis=1)
    clear = np.ones_like(ref_idx, bool)  # ranks not involved in a near-tie must hold the same window
    clear[:, 1:] &= gaps > 1e-4
    clear[:, :-1] &= gaps > 1e-4
    np.testing.assert_array_equal(idx[clear], ref_idx[clear])


def test_metric_evaluation_command(metric_runs, processed_tiny, tmp_path, python_exe, python_env):
    """The documented command line: held-out p@1 against the toy ground truth, symmetry after and before."""
    out, runs = tmp_path / "metric_eval.json", metric_runs / "metric"
    args = [
        "--data",
        processed_tiny,
        "--run",
        runs / "joint",
        "--before-audio",
        runs / "audio",
        "--before-visual",
        runs / "expr",
        "--out",
        out,
    ]
    proc = run_module(python_exe, python_env, "manipulator.metric.evaluate", *args)
    report = json.loads(out.read_text())
    speech = 0  # one query per speech frame of the held-out neutral clips and other emotion (here: happy)
    for c in json.loads((processed_tiny / "clips.json").read_text())["clips"]:
        if c["split"] in ("val", "test") and c["emotion"] == "neutral":
            truth = read_ground_truth(ground_truth_of(c["video"]), ["phonemes"])["phonemes"]
            speech += int((truth[: Clip(processed_tiny / c["dir"]).n_frames] != "sil").sum())
    m = report["metric"]
    assert m["queries"] == report["mfcc_nn"]["queries"] == speech > 0
    assert m["viseme_p@1"] >= m["phoneme_p@1"]  # a retrieved frame of the same phoneme has the same viseme
    assert m["phoneme_p@1"] * speech == pytest.approx(round(m["phoneme_p@1"] * speech))  # a share of the queries
    assert {"mfcc_nn", "symmetry_after", "symmetry_before"} <= set(report) and "phoneme p@1" in proc.stdout


def test_precision_at_1_on_constructed_features():
    """One-hot phoneme features: a query retrieves a frame of its own phoneme whenever the emotion has one;
    otherwise the first key (all equally far)."""
    clips = [SimpleNamespace(actor="A", emotion=e) for e in ("neutral", "happy", "sad")]
    clips.append(SimpleNamespace(actor="B", emotion="neutral"))  # no other emotion of B: no queries
    labels = [
        np.array(["sil", "a", "p", "i"]),
        np.array(["i", "p", "a", "sil"]),
        np.array(["b", "a", "a", "i"]),
        np.array(["a", "p"]),
    ]
    vocab = ["sil", "a", "p", "i", "b"]
    feats = [np.eye(len(vocab), dtype=np.float32)[[vocab.index(x) for x in lab]] for lab in labels]
    got = precision_at_1(feats, labels, SimpleNamespace(clips=clips))
    # happy: a, p, i all found; sad: a and i found, p retrieves the first key, b (another phoneme, its viseme)
    assert got["queries"] == 6 and got["phoneme_p@1"] == pytest.approx(5 / 6) and got["viseme_p@1"] == 1.0
    # chance: the keys' frequency of each query's phoneme, (1/4 + 1/4 + 1/4) for happy, (2/4 + 0 + 1/4) for sad
    assert got["chance_phoneme"] == pytest.approx(1.5 / 6)


def test_pair_sampler_leaves_out_pairs_with_silence(processed_tiny):
    from manipulator.metric.data import ClipBank, InputSpec, PairSampler

    bank = ClipBank(processed_tiny, ("train",), InputSpec(), ["audio"])
    every = PairSampler(bank, 8, "actor_emotion", 3, 0)
    speech = PairSampler(bank, 8, "actor_emotion", 3, 0, skip_silent=True)
    quiet = [
        bank.silent(int(c), int(f)) or bank.silent(int(d), int(g))
        for c, f, d, g in zip(every.src_clip, every.src_frame, every.dst_clip, every.dst_frame, strict=True)
    ]
    assert 0 < sum(quiet) < len(quiet) and len(speech) == len(every) - sum(quiet)
    refs = speech.refs(np.arange(len(speech)))
    assert not any(bank.silent(*ref) for side in refs for ref in side)
