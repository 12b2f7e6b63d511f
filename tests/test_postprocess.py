"""Postprocessing (mask feathering, blending, un-alignment), the experiment runner, and the end-to-end
pipeline on the tiny toy set: train (tiny experiment) -> edit -> render -> blend -> mp4 with the source audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import run_module

from common.config import load_config
from common.errors import UserError
from common.experiment import ExperimentConfig, plan
from common.formats import Clip
from common.image_metrics import masked_psnr, mean_measured
from common.video import iter_frames, probe_video, read_audio, read_frames, write_video
from evaluation.arcface import fad
from evaluation.efficientface import csim_emo
from evaluation.fer import FERJudge, every, top_share
from evaluation.fid import fid
from evaluation.metrics import lip_sync, paired_expr_error
from evaluation.retrack import face_boxes, retrack
from evaluation.syncnet import SyncNet, face_crops
from facemodel import face_model_for
from facemodel.geometry import aligned_points, aligned_to_frame, apply_affine
from manipulator.expr_norm import Normaliser
from postprocessing.blend import METHODS, blend, blend_support, soft_erode
from postprocessing.run import FrameCompositor
from preprocessing.pairs import load_pairs, pair_path
from renderer.warp import RING, WarpRenderer, polygon_alpha

REPO = Path(__file__).resolve().parents[1]


def _disk(size=96, r=30):
    yy, xx = np.mgrid[:size, :size]
    return ((xx - size / 2 + 0.5) ** 2 + (yy - size / 2 + 0.5) ** 2 <= r * r).astype(np.uint8) * 255


def test_soft_erosion_feathers_inwards():
    mask = _disk()
    soft = soft_erode(mask, 8.0)
    assert soft.dtype == np.float32 and soft.min() == 0.0 and soft.max() == 1.0
    assert np.all(soft[mask == 0] == 0)  # never outside the mask
    assert soft[48, 48] == 1.0  # deep inside: full weight
    row = soft[48, 48 - 31 : 48]  # from outside the edge to the centre: non-decreasing ramp
    assert np.all(np.diff(row) >= -1e-6)
    ramp = soft[48, 48 - 30 : 48 - 30 + 8]
    assert 0 < ramp[2] < 1  # a soft edge about 8 px wide
    np.testing.assert_array_equal(soft_erode(mask, 0), (mask > 127).astype(np.float32))
    # a mask touching the image border is feathered there too (the border counts as outside)
    full = np.full((32, 32), 255, np.uint8)
    assert soft_erode(full, 4)[0, 16] == 0 and soft_erode(full, 4)[16, 16] == 1


@pytest.mark.parametrize("method", METHODS)
def test_blending_identical_images_returns_the_image(method):
    img = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    w = soft_erode(_disk(), 8.0)
    out = blend(img, img.copy(), w, method)
    if method == "poisson":
        assert np.abs(out.astype(int) - img).max() <= 2  # a numerical solve
    else:
        np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("method", METHODS)
def test_pixels_outside_the_blend_support_are_unchanged(method):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)
    w = soft_erode(_disk(size=160, r=14), 4.0)
    out = blend(a, b, w, method)
    outside = ~blend_support(w, 4 if method == "pyramid" else 0)
    assert outside.mean() > 0.3
    np.testing.assert_array_equal(out[outside], a[outside])
    inside = w == 1
    if method != "poisson":  # Poisson keeps b's gradients, not its colours
        assert np.abs(out[inside].astype(int) - b[inside]).mean() < 20  # the face is mostly the generated one


def test_compositor_puts_the_aligned_crop_back_in_place(processed_tiny):
    """Pasting a clip's own aligned crop back reproduces the source frame: the transforms are exact."""
    clip = Clip(sorted(processed_tiny.glob("W001/neutral/level_*/*"))[0])
    frames = read_frames(clip.meta.source_video, 0, 3)
    comp = FrameCompositor(clip, "copy_paste")
    for t in range(3):
        out, weight = comp(t, frames[t], clip.faces.read(t))
        inside = weight > 0.99
        assert inside.sum() > 500
        diff = np.abs(out.astype(int) - frames[t])[inside]
        assert diff.mean() < 4.0, diff.mean()  # two resamplings of the same pixels
        np.testing.assert_array_equal(out[weight == 0], frames[t][weight == 0])
        # a shifted paste is clearly worse: the test can fail
        shifted = cv2.warpAffine(
            clip.faces.read(t), np.float32([[1, 0, 4], [0, 1, 0]]), clip.faces.read(t).shape[1::-1]
        )
        bad, _ = comp(t, frames[t], shifted)
        assert np.abs(bad.astype(int) - frames[t])[inside].mean() > diff.mean() + 2


def test_experiment_plan(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "data_dir: D\nruns_root: R\nrenderer:\n  actors: [A1, A2]\n  scmcl_finetune: true\n"
        "metric:\n  stages: [audio, expr, joint, visual, joint_visual]\n"
        "  stage_overrides:\n    joint: [engine.max_steps=7]\n"
    )
    steps = plan(load_config(ExperimentConfig, [str(exp)], [("experiment", str(exp))]))
    labels = [label for label, _ in steps]
    assert labels == [
        "metric:audio",
        "metric:expr",
        "metric:joint",
        "metric:visual",
        "metric:joint_visual",
        "index:joint",
        "index:joint_visual",
        "diagnose:joint",
        "manipulator:scmcl",
        "renderer:A1",
        "renderer:A2",
        "renderer-scmcl:A1",
        "renderer-scmcl:A2",
    ]
    joint = steps[2][1]
    assert "init_from=[R/metric/audio,R/metric/expr]" in joint and joint[-1] == "engine.max_steps=7"
    # one index per metric run whose distances a SCMCL term uses (each term checks its index's run)
    assert "metric_run=R/metric/joint" in steps[5][1] and "metric_run=R/metric/joint_visual" in steps[6][1]
    assert steps[7][1][-2:] == ["R/metric/joint", "data_dir=D"]  # the manipulator's metric diagnosed
    assert "engine.runs_root=R" in steps[9][1] and "actor=A1" in steps[9][1]
    assert "scmcl.manipulator_run=R/manipulator/scmcl" in steps[11][1]
    assert "scmcl.metric_run=R/metric/joint_visual" in steps[11][1]


def test_plan_and_dry_run_check_every_stage_before_anything_runs(tmp_path, processed_tiny, python_exe, python_env):
    """A misspelt stage override, a missing init_from file and perceptual=on without the VGG19 weights are reported
    by --plan and --dry-run, all at once, one line each (exit 2); an unprocessed data_dir is a note; a good plan
    passes."""
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        f"data_dir: {tmp_path / 'nothing'}\nruns_root: {tmp_path / 'runs'}\nmetric:\n  stages: [audio]\n"
        "manipulator:\n  config: scmcl\n  overrides: [scmcl.lamda_corr=1]\n"
        "renderer:\n  actors: [W001]\n  overrides: [init_from=nowhere/15_net_G.pth, perceptual=on]\n"
    )
    env = python_env | {"TORCH_HOME": str(tmp_path / "torch")}
    for flag in ("--plan", "--dry-run"):
        proc = run_module(python_exe, env, "common.experiment", exp, flag, check=False)
        err = proc.stderr
        assert proc.returncode == 2 and "3 problem(s) to fix before it runs" in err, err
        assert "not preprocessed yet" in proc.stdout and "unknown config key 'scmcl.lamda_corr'" in err
        assert "init_from nowhere/15_net_G.pth: not found" in err and "perceptual=on needs the VGG19 weights" in err
    good = tmp_path / "good.yaml"
    good.write_text(f"_base_: {REPO / 'configs/experiments/tiny.yaml'}\ndata_dir: {processed_tiny}\n")
    proc = run_module(python_exe, python_env, "common.experiment", good, "--plan")
    assert "manipulator:scmcl" in proc.stdout


def test_end_to_end_tiny(processed_tiny, tmp_path, python_exe, python_env):
    """Tiny experiment (metric, index, manipulator, renderer) and the edit pipeline on a held-out clip."""
    data = tmp_path / "data"
    shutil.copytree(processed_tiny, data, ignore=shutil.ignore_patterns("retrieval", "edits"))
    runs = tmp_path / "runs"
    proc = run_module(
        python_exe,
        python_env,
        "common.experiment",
        "configs/experiments/tiny.yaml",
        f"data_dir={data}",
        f"runs_root={runs}",
        timeout=600,
    )
    assert "stage times" in proc.stdout
    for run in ("metric/joint", "manipulator/scmcl", "renderer/W001"):
        assert (runs / run / "checkpoints").is_dir(), run
    held_out = [
        c["dir"]
        for c in json.loads((data / "clips.json").read_text())["clips"]
        if c["split"] == "test" and c["emotion"] == "neutral"
    ]
    clip_dir = data / held_out[0]
    out = tmp_path / "edited.mp4"
    stale = tmp_path / ".edited.mp4.tmp.k1ll3d.mp4"  # what a run killed with -9 leaves
    stale.write_bytes(b"partial")
    edit = ["postprocessing.pipeline", clip_dir, "--emotion", "happy", "--runs-root", runs]
    proc = run_module(python_exe, python_env, *edit, "--side-by-side", "--out", out)
    assert str(out) in proc.stdout and not stale.exists()
    clip = Clip(clip_dir)
    src, res = probe_video(clip.meta.source_video), probe_video(out)
    assert res.n_frames == src.n_frames == clip.n_frames
    assert res.fps == src.fps and (res.width, res.height) == (src.width, src.height)
    a_src, a_out = read_audio(clip.meta.source_video), read_audio(out)
    assert len(a_out) == len(a_src)
    np.testing.assert_array_equal(a_out, a_src)  # the same stream, copied: aligned with offset 0
    # the default renderer is the warp: outside its ring the frames are the source's (up to the video codec)
    f_src, f_out = read_frames(clip.meta.source_video), read_frames(out)
    ring = apply_affine(
        aligned_to_frame(clip.track(), 0), WarpRenderer().plan(face_model_for(data), clip, clip.face()).src[0, RING:]
    )
    far = polygon_alpha(ring, 0, 0, src.width, src.height) == 0
    far = cv2.erode(far.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert far.mean() > 0.2
    assert np.abs(f_out[0].astype(int) - f_src[0])[far].mean() < 2.0
    assert np.abs(f_out.astype(int) - f_src)[:, ~far].mean() > 0.1  # but the face was edited
    sbs = probe_video(tmp_path / "edited_side_by_side.mp4")
    assert sbs.n_frames == src.n_frames and sbs.width == 2 * src.width
    assert "render (warp)" in proc.stdout
    # the identity's neural renderer (--actor): its faces are kept, postprocessing.run blends them again
    neural = tmp_path / "neural.mp4"
    proc = run_module(python_exe, python_env, *edit, "--actor", "W001", "--out", neural)
    assert "render (neural W001)" in proc.stdout and probe_video(neural).n_frames == src.n_frames
    comp = FrameCompositor(clip)
    far = ~blend_support(comp(0, f_src[0], np.zeros_like(clip.faces.read(0)))[1], comp.levels)
    assert np.abs(read_frames(neural, 0, 1)[0].astype(int) - f_src[0])[far].mean() < 2.0
    edit_dir = clip_dir / "edits" / "happy"
    assert (edit_dir / ".done" / "render.json").is_file()
    # the edit's change is left-right symmetric (default): the tiny run's basis holds the mirror of its directions
    assert json.loads((edit_dir / "edit.json").read_text())["symmetric"]["mirror_residual"] < 0.1  # as test_symmetry
    run_module(
        python_exe,
        python_env,
        "postprocessing.run",
        clip_dir,
        "--edit",
        "happy",
        "--blend",
        "copy_paste",
        "--out",
        tmp_path / "copy_paste.mp4",
    )
    assert probe_video(tmp_path / "copy_paste.mp4").n_frames == src.n_frames
    # a video file as input, from Python (notebooks): preprocessed in test mode with the manipulator's basis,
    # then the same chain
    from postprocessing.pipeline import edit_video_file

    video_out = tmp_path / "from_video.mp4"
    paths = edit_video_file(
        clip.meta.source_video, "happy", runs_root=str(runs), processed_dir=str(tmp_path / "inputs"), out=video_out
    )
    assert paths == {"video": video_out} and probe_video(video_out).n_frames == src.n_frames
    np.testing.assert_array_equal(read_audio(video_out), a_src)
    assert (tmp_path / "inputs" / Path(clip.meta.source_video).stem / "face.npz").is_file()
    # what the command line names is checked before any preprocessing; a failed preprocessing says why last
    inputs = tmp_path / "inputs_checked"
    video = clip.meta.source_video
    for args, message in (
        (["nosuch.mp4", "--emotion", "happy"], "nosuch.mp4: no such video or clip folder"),
        ([video, "--emotion", "hapy"], "--emotion 'hapy': not one of neutral"),
        ([video, "--timeline", "0:neutral,1:hapy"], "--timeline emotion 'hapy' is not one of"),
        ([video, "--reference", tmp_path / "nowhere"], "nowhere"),
    ):
        bad = ["postprocessing.pipeline", *args, "--runs-root", runs, "--processed-dir", inputs]
        proc = run_module(python_exe, python_env, *bad, check=False)
        assert proc.returncode == 2 and message in proc.stderr.strip().splitlines()[-1], proc.stderr
        assert not inputs.exists()  # nothing was preprocessed
    noise = np.random.default_rng(0).integers(0, 255, (30, 64, 64, 3), dtype=np.uint8)
    write_video(tmp_path / "faceless.mp4", noise, 25, a_src[: 30 * 640])
    proc = run_module(
        python_exe,
        python_env,
        "postprocessing.pipeline",
        tmp_path / "faceless.mp4",
        "--emotion",
        "happy",
        "--runs-root",
        runs,
        "--processed-dir",
        inputs,
        check=False,
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "preprocessing failed: " in last and "no face found" in last, proc.stderr
    # --dry-run shows what it would use: the manipulator, the renderer, the output file
    proc = run_module(
        python_exe, python_env, "postprocessing.pipeline", video, "--emotion", "sad", "--runs-root", runs, "--dry-run"
    )
    shown = yaml.safe_load(proc.stdout)
    assert shown["manipulator"] == str(runs / "manipulator/scmcl") and shown["renderer"] == "warp"
    assert shown["out"] == str(Path("data/processed/inputs") / Path(video).stem / "edits/sad/video.mp4")
    # --personalize: this person's neural renderer trained on the video itself (tiny budget here), then used
    name = Path(clip.meta.source_video).stem
    personal = tmp_path / "personal.mp4"
    paths = edit_video_file(
        clip.meta.source_video,
        "happy",
        runs_root=str(runs),
        personalize=True,
        out=personal,
        personalize_preset="tiny",
        processed_dir=str(tmp_path / "inputs"),
    )
    run_dir = runs / "renderer" / f"video_{name}"
    assert paths == {"video": personal} and probe_video(personal).n_frames == src.n_frames
    ckpt = torch.load(sorted((run_dir / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    assert ckpt["extra"]["actor"] == name and ckpt["config"]["image_size"] == 64  # the tiny preset
    # the real-face panel on the same runs (one face, one emotion, small clips): its numbers are the measures'
    # own on the videos it wrote; the face the tiny set was built from is reported as seen in training
    run_module(
        python_exe,
        python_env,
        "evaluation.panel",
        "--faces",
        "astronaut",
        "--emotions",
        "happy",
        "--size",
        "192",
        "--runs-root",
        runs,
        "--out",
        tmp_path / "panel",
    )
    panel = json.loads((tmp_path / "panel" / "report.json").read_text())["faces"]["astronaut"]
    assert panel["trained_as"] == ["W001"]
    cell, source_video = panel["edits"]["happy"], Path(panel["clip"])
    judge = FERJudge.load()
    probs = judge.probabilities(every(iter_frames(tmp_path / "panel" / "edits" / "astronaut" / "happy.mp4"), 2))
    assert cell["top_edit"] == top_share(probs, "happy")
    assert cell["fps"] > 0 and cell["passes"]["lip_r"] == (cell["lip_r"] >= 0.85)
    assert cv2.imread(str(panel["sheet"])).shape == (3 * 192, 2 * 192, 3)  # 3 frames x (source, happy)
    assert probe_video(source_video).n_frames == panel["frames"]
    # the evaluation suite runs on the same runs: classifier on the train split, then the whole pipeline
    run_module(
        python_exe, python_env, "evaluation.classifier", "--data", data, "--out", tmp_path / "clf", "--steps", "50"
    )
    weights = _random_metric_weights(tmp_path / "weights")  # the published metrics' nets, random values
    evaluate = [f"scmcl={runs}/manipulator/scmcl", "--renderers", runs / "renderer", "--classifier", tmp_path / "clf"]
    evaluate += ["--setting", "label", "same_id", "--max-clips", "1", "--out", tmp_path / "report"]
    evaluate += ["--vgg16", tmp_path / "none.pth", *weights]
    proc = run_module(python_exe, python_env, "evaluation.run", "--runs", *evaluate)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    row = report["rows"]["label/scmcl"][0][0]
    assert row["emotion"] == "happy" and row["clip"] == held_out[0]
    n_found = row["face_found"] * src.n_frames  # a share of the output's frames
    assert n_found == pytest.approx(round(n_found))
    assert set(report["not_available"]) == {"lpips"} and "none.pth" in report["not_available"]["lpips"]
    # the metric nets have random weights: no known values for the output, but known answers on the reference
    # rows, measured by the same code: the unedited source scored as an output of itself
    ref = report["rows"]["label/ref: source"][0]
    assert ref["csim"] == pytest.approx(1.0, abs=1e-5) and row["csim"] < ref["csim"]  # identical crops; edited
    assert ref["lip_r_params"] == pytest.approx(1.0)  # the same meshes on both sides
    # the source re-tracked by the preprocessing's own tracker: its lips are the clip's (lip_r 1, m_lmd 0)
    assert ref["lip_r"] == pytest.approx(1.0, abs=1e-3) and ref["m_lmd"] == pytest.approx(0.0, abs=0.5)
    assert ref["face_lost"] == 0.0 and ref["face_found"] == pytest.approx(1.0, abs=0.05)
    judged = top_share(FERJudge.load().clip(clip, 3), "happy")  # the judge on the source, by hand (frame_step 3)
    assert ref["fer_acc"] == ref["fer_src"] == judged  # the output that is the source is judged as the source
    assert ref["emo_acc_params"] == 0.0 and report["rows"]["label/ref: target"][0]["emo_acc_params"] == 1.0
    pairs = load_pairs(data / "pairs.npz")  # psnr: target vs source faces along the pair's DTW path, target mask
    a, b = pair_path(pairs, int(np.flatnonzero((pairs["src"] == row["clip"]) & (pairs["dst"] == row["target"]))[0]))
    target = Clip(data / row["target"])
    want = [
        masked_psnr(target.faces.read(int(b[i])), clip.faces.read(int(a[i])), target.masks.read(int(b[i])) > 127)
        for i in range(0, len(a), 3)
    ]  # every 3rd path step: evaluation.run's default frame_step
    assert ref["psnr"] == pytest.approx(mean_measured(want))
    norm = Normaliser.from_index(data).forward  # the unedited source's expression error against its target
    want = paired_expr_error(norm(clip.face()["expr"]), norm(target.face()["expr"]), a, b)
    assert ref["expr_err"] == pytest.approx(want, rel=1e-5) and want > 0
    # the output's lip metrics and SyncNet scores are what their definitions give on the output video
    # (the tiny renderer's 64-px faces are barely faces: whether FaceMesh finds one depends on the CPU, so both
    # outcomes have their known answer: the lips of the frames found, or a lost face counted as such)
    track = clip.track()
    try:
        out_track = retrack(row["video"], clip.meta.crop_size, min_fraction=0.05)
    except UserError:
        assert row["face_lost"] == 1.0 and row["face_found"] == 0.0 and np.isnan(row["lip_r"])
    else:
        both = track["valid"] & out_track.valid
        lips = lip_sync(aligned_points(track)[:, :, :2], out_track.aligned[:, :, :2], both, clip.meta.crop_size)
        np.testing.assert_allclose([row["lip_r"], row["m_lmd"]], lips, rtol=1e-6)
        assert row["face_lost"] == float(np.isnan(lips[1]))
        assert row["face_found"] == pytest.approx(out_track.valid.mean())
    syncnet = SyncNet.load(tmp_path / "weights" / "syncnet_v2.model")
    info = probe_video(row["video"])
    n = min(info.n_frames, clip.n_frames)
    sync_crops = face_crops(read_frames(row["video"])[:n], face_boxes(track)[:n])
    want = syncnet.lse(sync_crops, info.fps, clip.audio())
    np.testing.assert_allclose([row["lse_d"], row["lse_c"]], want, rtol=1e-5)
    dist = report["distribution"]["label/scmcl"][0]["happy"]
    with np.load(Path(row["video"]).with_suffix(".npz")) as feats:  # the output's cached features vs the target's
        assert dist["fad"] == pytest.approx(fad(feats["arcface_fake"], feats["arcface_real"]))
        assert dist["fid"] == pytest.approx(fid(feats["inception_fake"], feats["inception_real"]))
        # csim_emo (under 100 frames a side: every pair) is the dot product of the sets' mean unit features
        fake, real = (feats[f"efficientface_{k}"] for k in ("fake", "real"))
        unit_fake, unit_real = (f / np.linalg.norm(f, axis=1, keepdims=True) for f in (fake, real))
        assert len(fake) < 100 and len(real) < 100
        assert dist["csim_emo"] == pytest.approx(float(unit_fake.mean(0) @ unit_real.mean(0)), rel=1e-5)
        assert csim_emo(real, real) == pytest.approx(float(np.sum(unit_real.mean(0) ** 2)), rel=1e-5)
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| method"))
    assert all(f" {m} " in header for m in ("csim", "lse_d", "lse_c", "fad", "fid")) and "lpips" not in header
    # a second run resumes: every output is finished, nothing is re-rendered, the report is the same
    video = Path(row["video"])
    mtime = video.stat().st_mtime_ns
    proc = run_module(python_exe, python_env, "evaluation.run", "--runs", *evaluate)
    again = json.loads((tmp_path / "report" / "report.json").read_text())
    assert video.stat().st_mtime_ns == mtime and again["rows"] == report["rows"]
    assert again["distribution"] == report["distribution"]
    assert (
        "## Setting: same_id" in proc.stdout
        and (tmp_path / "report" / "report.md").is_file()
        and len(list((edit_dir / "faces").glob("*.png"))) == clip.n_frames
    )


def _random_metric_weights(folder: Path) -> list[str]:
    """ArcFace, SyncNet, FID-Inception and EfficientFace files in the published layouts (random values) -> CLI
    flags."""
    from evaluation.arcface import ResNetFace18
    from evaluation.efficientface import EfficientFaceNet
    from evaluation.fid import FIDInception
    from evaluation.syncnet import SyncNet

    folder.mkdir(parents=True)
    flags = []
    for flag, net, name in (
        ("--arcface", ResNetFace18(), "resnet18_110.pth"),
        ("--syncnet", SyncNet(), "syncnet_v2.model"),
        ("--inception", FIDInception(), "pt_inception.pth"),
    ):
        torch.save(net.state_dict(), folder / name)
        flags += [flag, str(folder / name)]
    state = {f"module.{k}": v for k, v in EfficientFaceNet().state_dict().items()}  # as its main.py saves it
    torch.save({"state_dict": state}, folder / "EfficientFace_Trained_on_AffectNet7.pth.tar")
    return flags + ["--efficientface", str(folder / "EfficientFace_Trained_on_AffectNet7.pth.tar")]


def test_pipeline_finds_the_demo_runs(tmp_path, monkeypatch):
    """No --runs-root: the researcher's runs/ when it has a manipulator, else the demo's runs/demo."""
    from types import SimpleNamespace

    from postprocessing import pipeline

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "REPO", tmp_path / "elsewhere")
    cfg = SimpleNamespace(runs_root="")
    assert pipeline.resolve_runs_root(cfg) == "runs"  # nothing trained: the error then names runs/
    demo = tmp_path / "runs/demo/manipulator/scmcl/checkpoints"
    demo.mkdir(parents=True)
    (demo / "step_000000010.pt").write_bytes(b"")
    assert pipeline.resolve_runs_root(cfg) == "runs/demo"
    own = tmp_path / "runs/manipulator/scmcl/checkpoints"
    own.mkdir(parents=True)
    (own / "step_000000010.pt").write_bytes(b"")
    assert pipeline.resolve_runs_root(cfg) == "runs"
    assert pipeline.resolve_runs_root(SimpleNamespace(runs_root="x")) == "x"


def test_pipeline_edits_with_the_bundled_model_unless_you_trained_one(tmp_path, monkeypatch):
    """Your own run, else the bundled model, else the demo's run; --manipulator and --runs-root decide alone."""
    from types import SimpleNamespace

    from postprocessing import pipeline

    def trained(root: str) -> None:
        ckpts = tmp_path / root / "manipulator/scmcl/checkpoints"
        ckpts.mkdir(parents=True)
        (ckpts / "step_000000010.pt").write_bytes(b"")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline, "REPO", tmp_path / "elsewhere")
    bundled = tmp_path / "models/spfem-toy"
    monkeypatch.setattr(pipeline, "BUNDLED", bundled)
    cfg = SimpleNamespace(runs_root="", manipulator="")
    # nothing at all: the trained run's path (its error says how to train one)
    assert pipeline.resolve_manipulator(cfg, "runs")[0] == Path("runs/manipulator/scmcl")
    trained("runs/demo")
    assert pipeline.resolve_manipulator(cfg, "runs/demo") == (Path("runs/demo/manipulator/scmcl"), "the demo's run")
    bundled.mkdir(parents=True)
    (bundled / "manipulator.pt").write_bytes(b"")
    path, which = pipeline.resolve_manipulator(cfg, "runs/demo")
    assert path == bundled and which.startswith("the bundled model")  # the demo's recipe trained longer
    trained("runs")  # a run of yours takes precedence
    assert pipeline.resolve_manipulator(cfg, "runs") == (Path("runs/manipulator/scmcl"), "your trained run")
    assert pipeline.resolve_manipulator(SimpleNamespace(runs_root="", manipulator="m"), "runs")[0] == Path("m")
    explicit = SimpleNamespace(runs_root="runs/demo", manipulator="")  # --runs-root: that root's run
    assert pipeline.resolve_manipulator(explicit, "runs/demo")[0] == Path("runs/demo/manipulator/scmcl")


def test_a_runs_relative_dataset_resolves_from_the_repository(tmp_path, monkeypatch):
    from manipulator import edit

    monkeypatch.setattr(edit, "REPO", tmp_path)
    (tmp_path / "data/processed/x").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "data")
    assert edit.resolve_data_dir("data/processed/x") == tmp_path / "data/processed/x"
    assert edit.resolve_data_dir("processed/x") == Path("processed/x")  # exists from here: as it is


def test_two_videos_with_one_file_name_never_share_a_clip(processed_tiny, toy_mead_tiny, tmp_path, capsys):
    """`take.mp4` from two folders: the second is preprocessed again (it used to be given the first one's clip,
    so the edit showed the other video), with a note; --clip-name keeps both."""
    from postprocessing.pipeline import prepare_clip

    basis = str(processed_tiny / "face_model_mesh.npz")
    videos = sorted(toy_mead_tiny.glob("W001/video/front/neutral/level_1/*.mp4"))[:2]
    takes = []
    for k, video in enumerate(videos):
        (tmp_path / f"day{k}").mkdir()
        takes.append(shutil.copy(video, tmp_path / f"day{k}" / "take.mp4"))
    processed = tmp_path / "processed"
    first = Clip(prepare_clip(Path(takes[0]), basis, processed))
    assert first.meta.source_video == str(Path(takes[0]).resolve())
    again = prepare_clip(Path(takes[0]), basis, processed)  # the same video: kept
    assert "processed 0, skipped 1" in capsys.readouterr().out and again == first.dir
    second = Clip(prepare_clip(Path(takes[1]), basis, processed))
    assert second.dir == first.dir and "was made from" in capsys.readouterr().out
    assert second.meta.source_video == str(Path(takes[1]).resolve())
    assert second.n_frames == len(list((second.dir / "faces").glob("*.png")))
    named = Clip(prepare_clip(Path(takes[0]), basis, processed, name="day0_take"))
    assert named.dir == processed / "day0_take" and named.meta.source_video == str(Path(takes[0]).resolve())
    assert Clip(second.dir).meta.source_video == str(Path(takes[1]).resolve())  # untouched
    # a personal renderer trained on the first take is never used for the second one under the same name
    from types import SimpleNamespace

    from common.fsutil import file_stamp
    from postprocessing.pipeline import personal_renderer

    run = tmp_path / "runs" / "renderer" / f"video_{second.meta.actor}"
    run.mkdir(parents=True)
    (run / "personalized_from.json").write_text(json.dumps({"video": file_stamp(takes[0])}))
    cfg = SimpleNamespace(runs_root=str(tmp_path / "runs"), personalize_preset="tiny", device="cpu")
    with pytest.raises(UserError, match="another --clip-name"):
        personal_renderer(Clip(second.dir), cfg)
