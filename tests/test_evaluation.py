"""Evaluation metrics on constructed inputs with known answers, the classifier's guard, the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import FormatError, UserError
from common.formats import Clip, read_clip_index
from common.image_metrics import masked_psnr, masked_ssim, mean_measured, mean_std
from evaluation import pretrained
from evaluation.cache import load_cached, save_cached
from evaluation.classifier import EmotionClassifier, train
from evaluation.fer import EMOTIONS, FERJudge, top_share
from evaluation.jobs import Job, RunInputs
from evaluation.metrics import LIPS, m_lmd, mouth_opening, paired_expr_error, pearson
from evaluation.output import Output, available
from evaluation.registry import BY_NAME, DIST_METRICS
from evaluation.report import METRICS, markdown, summarise
from evaluation.retrack import face_boxes
from evaluation.run import Evaluator, choose_reference
from facemodel import face_model_for
from manipulator.expr_norm import Normaliser
from preprocessing.pairs import load_pairs


def _talking(gaps: np.ndarray) -> np.ndarray:
    """(T, 478, 2) landmarks: outer eye corners 100 px apart, inner lips opened by `gaps` (x 100 px)."""
    lm = np.zeros((len(gaps), 478, 2))
    lm[:, 263, 0] = 100.0
    lm[:, 13, 1] = 150.0
    lm[:, 14, 1] = 150.0 + 100.0 * gaps
    return lm


def tiny_job(root: Path, model=None) -> Job:
    """The first same-sentence pair (neutral source, emotional target) of a processed dataset as a job (no
    manipulator: for measuring given videos); `model` replaces the dataset's face model."""
    index = read_clip_index(root)
    clips = {c["dir"]: c for c in index["clips"]}
    model = model or face_model_for(root)
    pairs, norm = load_pairs(root / "pairs.npz"), Normaliser.from_index(root)
    inputs = RunInputs("m", "run", "label", None, model, root, index, clips, pairs, norm)
    return Job(inputs, 0)


def test_lip_metrics_known_answers():
    period, shift = 40, 5
    t = np.arange(4 * period)
    gaps = 0.2 + 0.1 * np.sin(2 * np.pi * t / period)
    a = _talking(gaps)
    np.testing.assert_allclose(mouth_opening(a), gaps)
    assert pearson(mouth_opening(a), mouth_opening(a.copy())) == pytest.approx(1.0)
    assert m_lmd(a, a.copy(), 256) == 0.0
    shifted = _talking(np.roll(gaps, shift))
    # a sinusoid shifted by k frames (whole periods, circular) correlates by cos(2 pi k / period)
    assert pearson(mouth_opening(a), mouth_opening(shifted)) == pytest.approx(np.cos(2 * np.pi * shift / period))
    moved = a.copy()
    moved[:, LIPS] += [3.0, 4.0]  # every lip point 5 px away, in a 128 crop -> 10 px at 256
    assert m_lmd(a, moved, 128) == pytest.approx(10.0)
    # a frozen output mouth against a speaking source follows nothing: 0, never "not measured" (which a method
    # that freezes the mouth would otherwise get); two frozen mouths: nothing to follow
    assert pearson(np.ones(5), np.arange(5.0)) == 0.0 and pearson(np.arange(5.0), np.ones(5)) == 0.0
    assert np.isnan(pearson(np.ones(5), np.ones(5)))


def test_paired_error_and_summary():
    x = np.random.default_rng(0).normal(size=(20, 51))
    path = np.arange(20)
    assert paired_expr_error(x, x.copy(), path, path) == 0.0
    y = x.copy()
    y[:, 1:] += 0.5
    assert paired_expr_error(x, y, path, path) == pytest.approx(0.25)
    y[:, 0] += 9.0  # channel 0 (mouth) is not an expression channel
    assert paired_expr_error(x, y, path, path) == pytest.approx(0.25)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
    assert mean_std([float("nan"), 2.0]) == (2.0, 0.0)
    base = {"emotion": "happy", "face_found": 1.0, "emo_acc_params": 1.0, "ssim": float("nan"), "lpips": float("nan")}
    rows = [
        [
            base | {"expr_err": 1.0, "lip_r": 1.0, "m_lmd": 0.0, "emo_acc": 1.0, "psnr": 20.0},
            base | {"emotion": "sad", "expr_err": 5.0, "lip_r": 1.0, "m_lmd": 0.0, "emo_acc": 1.0, "psnr": 20.0},
        ],
        [base | {"expr_err": 3.0, "lip_r": 0.5, "m_lmd": 2.0, "emo_acc": 0.0, "psnr": 22.0}],
    ]
    dists = [
        {"happy": {"fad": 1.0, "fid": float("nan")}, "sad": {"fad": 3.0, "fid": float("nan")}},
        {"happy": {"fad": 5.0, "fid": float("nan")}},
    ]
    s = summarise(rows, dists)
    assert s["happy"]["expr_err"] == (2.0, pytest.approx(np.sqrt(2.0))) and s["happy"]["runs"] == 2
    assert s["sad"]["runs"] == 1 and s["sad"]["fad"] == (3.0, 0.0)
    # rows average over clips per run (run 0: (1 + 5) / 2), distribution metrics over emotions (run 0: (1 + 3) / 2)
    assert s["average"]["expr_err"][0] == pytest.approx((3.0 + 3.0) / 2)
    assert s["average"]["fad"][0] == pytest.approx((2.0 + 5.0) / 2) and np.isnan(s["average"]["fid"][0])
    assert set(s["average"]) == {*METRICS, "runs"}
    gone = {"fid": "missing x.pth", "csim": "missing y.pth"}
    md = markdown({"settings": {"label": {"m": s}}, "not_available": gone})
    assert "| m (runs: 2) |" in md and "n/a" in md  # a metric without values is shown as n/a, not a crash
    assert "- fid: not available (missing x.pth)" in md and "- csim: not available (missing y.pth)" in md
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    columns = [c.strip() for c in header.split("|")]
    assert "fad" in columns and "fid" not in columns and "csim" not in columns  # unavailable: listed, not a column
    assert summarise(rows)["happy"]["fad"][0] != summarise(rows)["happy"]["fad"][0]  # no distributions: nan
    assert set(DIST_METRICS) <= set(METRICS)


def test_fer_metrics_judge_output_source_and_target(processed_tiny, tmp_path):
    """The output judged in the source's boxes: an "output" that is the source video scores as the source."""
    job = tiny_job(processed_tiny)
    source, target = Clip(processed_tiny / job.source), Clip(processed_tiny / job.target)
    ev = Evaluator(tmp_path, None, tmp_path, "test", frame_step=10, nets=pretrained.Nets(fer=FERJudge.load()))
    out = Output(ev, job, Path(source.meta.source_video), None, None)
    got = {m: BY_NAME[m].per_output(out) for m in ("fer_acc", "fer_src", "fer_real")}
    probs = FERJudge.load().clip(source, 10)  # the share of frames whose top class is the target, by hand
    found = np.isfinite(probs).all(1)  # a frame without a face is a miss
    by_hand = np.sum(probs[found].argmax(1) == EMOTIONS.index(job.emotion)) / len(probs)
    assert got["fer_acc"] == got["fer_src"] == pytest.approx(by_hand)
    assert got["fer_real"] == top_share(FERJudge.load().clip(target, 10), job.emotion)
    gone = Evaluator(tmp_path, None, tmp_path, "test")  # no judge: the fer metrics are not measured
    assert not any(available(gone, BY_NAME[m]) for m in ("fer_acc", "fer_src", "fer_real"))
    assert available(gone, BY_NAME["psnr"]) and not available(gone, BY_NAME["emo_acc"])  # no classifier either


def test_face_boxes_map_landmarks_to_the_frame():
    lm = np.array([[[10.0, 20.0], [50.0, 80.0], [30.0, 40.0]]])
    c2f = np.array([[[2.0, 0.0, 100.0], [0.0, 2.0, 50.0]]])  # crop px -> frame px: x2 and an offset
    np.testing.assert_allclose(face_boxes({"landmarks": lm, "crop_to_frame": c2f}), [[120, 90, 200, 210]])


def test_reference_choice():
    index = {
        "clips": [
            {"dir": "A/happy/3/001", "split": "test", "emotion": "happy", "actor": "A", "clip_id": "001"},
            {"dir": "A/happy/3/002", "split": "test", "emotion": "happy", "actor": "A", "clip_id": "002"},
            {"dir": "B/happy/3/001", "split": "test", "emotion": "happy", "actor": "B", "clip_id": "001"},
            {"dir": "A/sad/3/002", "split": "test", "emotion": "sad", "actor": "A", "clip_id": "002"},
        ]
    }
    assert choose_reference(index, "test", "A", "happy", "001", "same_id") == "A/happy/3/002"  # another sentence
    assert choose_reference(index, "test", "A", "happy", "001", "cross_id") == "B/happy/3/001"
    assert choose_reference(index, "test", "B", "sad", "001", "cross_id") == "A/sad/3/002"
    assert choose_reference(index, "test", "B", "sad", "001", "same_id") is None
    one_sentence = {"clips": [c for c in index["clips"] if c["clip_id"] == "001"]}
    assert choose_reference(one_sentence, "test", "A", "happy", "001", "same_id") is None  # never the target itself
    # none in the test split: a validation clip (held out from training too), never a training clip
    held_out = {
        "clips": one_sentence["clips"]
        + [
            {"dir": "A/happy/3/003", "split": "val", "emotion": "happy", "actor": "A", "clip_id": "003"},
            {"dir": "A/happy/3/004", "split": "train", "emotion": "happy", "actor": "A", "clip_id": "004"},
        ]
    }
    assert choose_reference(held_out, "test", "A", "happy", "001", "same_id") == "A/happy/3/003"
    assert choose_reference(held_out, "test", "A", "happy", "001", "cross_id") == "B/happy/3/001"  # test first


def test_an_empty_mask_is_not_measured():
    """An empty mask measures nothing: NaN, skipped by the mean (it used to be +inf, dropped silently later);
    identical pixels are a real +inf; a failed item counts at the worst value whatever it holds."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 4, 0, 255).astype(np.uint8)
    empty, full = np.zeros((32, 32), bool), np.ones((32, 32), bool)
    assert np.isnan(masked_psnr(a, b, empty)) and np.isnan(masked_ssim(a, b, empty))
    expected = 10 * np.log10(255.0**2 / np.mean((a.astype(float) - b) ** 2))
    assert masked_psnr(a, b, full) == pytest.approx(expected)
    assert mean_measured([masked_psnr(a, b, full), masked_psnr(a, b, empty)]) == pytest.approx(expected)
    assert mean_measured([masked_psnr(a, a, full), expected]) == float("inf")
    assert np.isnan(mean_measured([float("nan")]))
    # the failure rule: failed items at `worst` (NaN or not), unmeasured NaN skipped
    values, failed = [0.8, float("nan"), float("nan"), 0.5], [False, True, False, True]
    assert mean_measured(values, failed, -1.0) == pytest.approx((0.8 - 1.0 - 1.0) / 3)
    assert mean_std([2.0, float("nan"), 4.0]) == (3.0, pytest.approx(np.sqrt(2.0)))


def test_classifier_refuses_its_training_clips(processed_tiny, tmp_path):
    info = train(processed_tiny, tmp_path / "clf", steps=50)
    assert info["emotions"] == ["happy", "neutral"]
    clf = EmotionClassifier.load(tmp_path / "clf")
    index = __import__("json").loads((processed_tiny / "clips.json").read_text())
    seen = Clip(processed_tiny / next(c["dir"] for c in index["clips"] if c["split"] == "train"))
    with pytest.raises(UserError, match="trained on this video"):
        clf.predict(seen.face()["expr"], seen.meta.source_video)
    held_out = [c for c in index["clips"] if c["split"] == "test"]
    assert {c["emotion"] for c in held_out} == {"happy", "neutral"}  # toy happy lifts the lip corners: separable
    for c in held_out:
        unseen = Clip(processed_tiny / c["dir"])
        assert clf.predict(unseen.face()["expr"], unseen.meta.source_video) == c["emotion"], c["dir"]
    assert info["held_out_accuracy"] == 1.0
    probs = clf.probabilities(unseen.face()["expr"][:3])  # shorter than a window: padded, still a distribution
    assert probs.shape == (2,) and probs.sum() == pytest.approx(1.0, abs=1e-5)


def _fake_lpips_files(tmp_path):
    from evaluation.lpips import _CHANNELS, vgg16_features

    g = torch.Generator().manual_seed(0)
    state = {
        f"features.{k}": torch.randn(v.shape, generator=g) * 0.05 for k, v in vgg16_features().state_dict().items()
    }
    state["classifier.0.weight"] = torch.zeros(4, 4)  # the rest of torchvision's file is ignored
    vgg = tmp_path / "vgg16-397923af.pth"
    torch.save(state, vgg)
    heads = tmp_path / "vgg.pth"
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(_CHANNELS)}, heads)
    return vgg, heads


def test_lpips_on_generated_weights(tmp_path):
    from evaluation.lpips import LPIPS, missing

    assert "vgg16-397923af.pth" in missing(tmp_path / "vgg16-397923af.pth", None)  # reported, not raised
    vgg, heads = _fake_lpips_files(tmp_path)
    assert missing(vgg, heads) is None
    lp = LPIPS.load(vgg, heads)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    d_same, d_other = lp(x, x.clone()), lp(x, torch.flip(x, [3]))
    assert d_same.shape == (2,) and torch.all(d_same == 0) and torch.all(d_other > 0)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, heads)
    with pytest.raises(FormatError, match="not LPIPS"):
        LPIPS.load(vgg, heads)


def test_frechet_distance_known_answers():
    from evaluation.metrics import frechet_distance, gaussian_stats

    d = 8
    # N(0, I) vs N(1, 4 I): |mu|^2 = d, trace term d * (1 + 4 - 2 * 2) = d
    assert frechet_distance(np.zeros(d), np.eye(d), np.ones(d), 4 * np.eye(d)) == pytest.approx(2.0 * d)
    x = np.random.default_rng(0).normal(size=(500, d))
    assert frechet_distance(*gaussian_stats(x), *gaussian_stats(x.copy())) == pytest.approx(0.0, abs=1e-6)
    # a rank-deficient covariance (fewer samples than dimensions) still gives a finite, non-negative value
    few = np.random.default_rng(1).normal(size=(4, d))
    assert np.isfinite(frechet_distance(*gaussian_stats(few), *gaussian_stats(x)))
    with pytest.raises(ValueError):
        gaussian_stats(x[:1])
    # not covariances (a negative variance): sqrt(-4) = 2i on the diagonal must raise, not be dropped silently
    with pytest.raises(ValueError, match="imaginary part of 2"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -4.0]))


def test_a_rerender_drops_the_old_render_marker_first(tmp_path):
    """Frames of a new render overwrite the old ones one by one: the old render's marker must be gone from the
    start, or a render killed half-way would look finished to the old checkpoint (mixed frames)."""
    from common.formats import is_done, mark_done
    from renderer.infer import save_faces

    mark_done(tmp_path, "render", "old")
    frames = save_faces((np.zeros((8, 8, 3), np.uint8) for _ in range(3)), tmp_path, "new")
    next(frames)  # one frame rewritten, then the run is killed
    assert not is_done(tmp_path, "render", "old") and not is_done(tmp_path, "render")
    for _ in frames:
        pass
    assert is_done(tmp_path, "render", "new")


def test_frechet_distance_of_features_matches_the_covariance_route():
    from evaluation.metrics import frechet_distance, frechet_distance_of, gaussian_stats

    rng = np.random.default_rng(2)
    for n, m, d in ((30, 45, 64), (200, 150, 16)):  # fewer samples than dimensions (SVD route), and more
        x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d)) * 1.5 + 0.3
        want = frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
        assert frechet_distance_of(x, y) == pytest.approx(want, rel=1e-6)
    assert frechet_distance_of(x, x.copy()) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        frechet_distance_of(x, y[:, :3])


def test_missing_pretrained_weights_are_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # nothing placed there
    paths = pretrained.PretrainedPaths(lpips_heads=str(tmp_path / "heads.pth"), fer=str(tmp_path / "fer.hdf5"))
    nets, why = pretrained.load(paths)
    assert nets == pretrained.Nets()  # nothing loaded
    assert (
        set(why)
        == set(pretrained.METRIC_NETS)
        == {"lpips", "fad", "csim", "lse_d", "lse_c", "fid", "fer_acc", "fer_src", "fer_real", "csim_emo"}
    )
    assert "EfficientFace_Trained_on_AffectNet7.pth.tar" in why["csim_emo"]
    assert str(tmp_path / "fer.hdf5") in why["fer_acc"] and "fer==" in why["fer_real"]  # how to get it
    assert "resnet18_110.pth" in why["fad"] and "syncnet_v2.model" in why["lse_c"]
    assert "pt_inception-2015-12-05-6726825d.pth" in why["fid"] and str(tmp_path / "torch_home") in why["fid"]
    nets, why = pretrained.load(pretrained.PretrainedPaths(lpips_heads="x", arcface=str(tmp_path / "mine.pth")))
    assert str(tmp_path / "mine.pth") in why["csim"]  # an explicit path is the one named


def test_bench_times_the_metric_networks():
    from evaluation.bench.scores import bench_evaluation

    out = bench_evaluation(frames=8)
    assert out["frames"] == 8 and out["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert all(out[k]["frames_per_s"] > 0 for k in ("arcface", "fid_inception", "syncnet"))


def test_finished_outputs_are_cached_by_key(tmp_path):
    video = tmp_path / "out" / "clip_happy.mp4"
    assert load_cached(video, "k1") is None  # nothing yet
    video.parent.mkdir()
    video.write_bytes(b"mp4")
    row = {"emotion": "happy", "lip_r": float("nan"), "psnr": 20.5}
    stamps = {"lip_r": "s1", "psnr": "s2", "arcface_fake": "s3", "arcface_real": "s3"}
    feats = {"arcface_fake": np.arange(6.0).reshape(2, 3), "arcface_real": np.ones((4, 3))}
    save_cached(video, "k1", row, stamps, feats)
    got = load_cached(video, "k1")
    assert got.row["psnr"] == 20.5 and np.isnan(got.row["lip_r"]) and got.stamps == stamps
    np.testing.assert_array_equal(got.features["arcface_fake"], feats["arcface_fake"])
    assert load_cached(video, "k2") is None  # another checkpoint or options: the output is made again
    video.with_suffix(".npz").unlink()  # features lost: recompute, not crash
    assert load_cached(video, "k1") is None
    video.with_suffix(".json").write_text('{"key": "k1", "ro')  # half written
    assert load_cached(video, "k1") is None
    save_cached(video, "k3", {"emotion": "sad", "psnr": 1.0}, {"psnr": "s2"}, {})  # no crop features: no .npz
    got = load_cached(video, "k3")
    assert (got.row, got.stamps, got.features) == ({"emotion": "sad", "psnr": 1.0}, {"psnr": "s2"}, {})


def test_output_key_takes_renderer_labels_and_checkpoint_contents(tmp_path):
    """The warp renderer has no checkpoint file, only a version label: the key takes it as it is; a checkpoint
    file enters by its content, so a retrained (or replaced) run changes the key and a copy does not."""
    from evaluation.cache import file_digest, output_key

    ckpt = tmp_path / "step_1.pt"
    ckpt.write_bytes(b"x")
    warp = output_key({"setting": "label"}, {"manipulator": str(ckpt), "renderer": "warp-v1"})
    assert warp != output_key({"setting": "label"}, {"manipulator": str(ckpt), "renderer": "warp-v2"})
    before = output_key({}, {"renderer": str(ckpt)})
    (tmp_path / "copy").mkdir()
    copy = tmp_path / "copy" / "step_1.pt"
    copy.write_bytes(b"x")
    assert output_key({}, {"renderer": str(copy)}) == before  # the same content elsewhere
    ckpt.write_bytes(b"xy")
    assert output_key({}, {"renderer": str(ckpt)}) != before
    assert file_digest(ckpt) == __import__("hashlib").sha256(b"xy").hexdigest()
    assert output_key({}, {"nets": [str(ckpt), str(copy)]}) != output_key({}, {"nets": [str(copy), str(copy)]})


def test_distribution_metrics_count_each_real_clip_once(tmp_path):
    from evaluation.arcface import fad

    rng = np.random.default_rng(3)
    fake1, fake2, real = rng.normal(size=(5, 4)), rng.normal(size=(6, 4)), rng.normal(size=(7, 4)) + 1.0
    ev = Evaluator(tmp_path, None, tmp_path, "test")
    # two outputs of one emotion whose pairs share the target clip "A": its crops enter the real set once
    feats = {"happy": {"arcface_fake": {0: fake1, 1: fake2}, "arcface_real": {"A": real}}}
    got = ev.distribution(feats)["happy"]
    assert got["fad"] == pytest.approx(fad(np.concatenate([fake1, fake2]), real)) and np.isnan(got["fid"])


def test_lpips_on_masked_faces(tmp_path):
    from evaluation.lpips import LPIPS

    vgg, heads = _fake_lpips_files(tmp_path)
    lp = LPIPS.load(vgg, heads)
    rng = np.random.default_rng(4)
    a, b = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    assert lp.masked([a], [a.copy()], [mask]) == pytest.approx(0.0, abs=1e-6)
    assert lp.masked([a], [b], [mask]) > 0
    outside = a.copy()
    outside[~mask] = 0  # differences outside the face mask do not count
    assert lp.masked([a], [outside], [mask]) == pytest.approx(0.0, abs=1e-6)
    assert not available(Evaluator(tmp_path, None, tmp_path, "test"), BY_NAME["lpips"])  # not loaded: n/a


class _CropFitter:
    """A FaceModel backend other than mesh that, like DECA, fits from the aligned crops; records its inputs."""

    name = "crops"
    expr_dim = 4

    def fit_clip(self, faces, track):
        self.faces, self.track = list(faces), track
        return {"expr": np.zeros((len(self.faces), self.expr_dim), np.float32)}


class _Classifier:
    def predict(self, expr, video):
        self.expr = expr
        return "happy"


def test_emotion_metric_fits_any_face_model_to_the_output_crops(processed_tiny, tmp_path):
    """emo_acc comes from FaceModel.fit_clip on the re-tracked output (not only for the mesh backend)."""
    model, classifier = _CropFitter(), _Classifier()
    job = tiny_job(processed_tiny, model)
    clip = Clip(processed_tiny / job.source)
    out = Output(Evaluator(tmp_path, classifier, tmp_path, "test"), job, Path(clip.meta.source_video), None, None)
    assert BY_NAME["emo_acc"].per_output(out) == 1.0 and out.face_found > 0.9 and not out.face_lost
    size = clip.meta.crop_size
    assert len(model.faces) == clip.n_frames and model.faces[0].shape == (size, size, 3)
    assert model.faces[0].dtype == np.uint8 and len(classifier.expr) == clip.n_frames
    assert {"align", "crop_to_frame", "landmarks", "landmarks_z"} <= set(model.track)
    # the crops are the re-tracked video's aligned faces: here the source video, re-tracked by the same tracker,
    # smoothing and crop as the clip, so they are the clip's own faces
    assert np.abs(model.faces[-1].astype(int) - clip.faces.read(clip.n_frames - 1)).mean() < 1.0
    # and the output that is its own source has the ceiling of lip sync
    assert out.lip[0] == pytest.approx(1.0, abs=1e-3) and out.lip[1] < 0.5
