"""Renderer: network shapes, losses, the VGG19 loader on generated weights, conditioning, training smoke run
and resume, every-frame inference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_module, tiny_renderer_args

from common.checkpoint import list_checkpoints
from common.errors import UserError
from common.formats import Clip
from common.video import probe_video
from facemodel import face_model_for
from facemodel.geometry import aligned_points
from facemodel.render import LEFT_EYE, LEFT_IRIS, RIGHT_IRIS
from renderer.conditioning import ClipConditioner, gaze
from renderer.data import IdentityFrames, identity_clips
from renderer.losses import (
    _TAPS,
    PerceptualLoss,
    build_perceptual,
    feature_matching,
    load_vgg19,
    lsgan,
    vgg19_features,
)
from renderer.networks import SIZES, build_renderer
from renderer.neural import NeuralRenderer
from renderer.steps import roi_crops


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_generator_and_discriminator_shapes(size):
    nets = build_renderer(size, 3, mouth_d=True, eyes_d=True)
    cond, prev = torch.rand(2, 27, 64, 64), torch.rand(2, 6, 64, 64) * 2 - 1
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 16:48, 16:48] = 1
    mask[:, :, 20:24, 20:24] = 0.5  # a soft edge
    g = nets["generator"]
    out = g(cond, prev, mask)
    assert out.shape == (2, 3, 64, 64)
    # composited y * mask - (1 - mask): the decoder's frame inside the mask, -1 (black) outside, mixed between
    y = g.decoder(g.cond_encoder(cond) + g.prev_encoder(prev))
    assert torch.all(out[:, :, :16] == -1) and torch.equal(out[:, :, 30:48, 30:48], y[:, :, 30:48, 30:48])
    torch.testing.assert_close(out[:, :, 20:24, 20:24], (y[:, :, 20:24, 20:24] - 1) / 2)
    feats = nets["disc_image"](torch.rand(2, 12, 64, 64))
    assert len(feats) == SIZES[size].num_d
    assert all(len(f) == SIZES[size].n_layers_d + 2 for f in feats)


def test_gan_losses_on_known_inputs():
    ones = [[torch.zeros(1, 4, 3, 3), torch.ones(1, 1, 5, 5)]]
    assert lsgan(ones, True).item() == 0.0
    assert lsgan(ones, False).item() == 1.0
    assert feature_matching(ones, ones, 3).item() == 0.0
    other = [[torch.ones(1, 4, 3, 3), torch.ones(1, 1, 5, 5)]]
    assert feature_matching(other, ones, 3).item() == pytest.approx(1.0)  # 4/(3+1) * L1 of 1


def _fake_vgg19_file(path, seed=0):
    """A file with torchvision's VGG19 state-dict keys and shapes (features 0..34 + classifier), random values."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    c = 3
    idx = 0
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]:
        if v == "M":
            idx += 1
            continue
        state[f"features.{idx}.weight"] = torch.randn(v, c, 3, 3, generator=g) * 0.05
        state[f"features.{idx}.bias"] = torch.zeros(v)
        c, idx = v, idx + 2
    for i, (o, n) in {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)}.items():
        state[f"classifier.{i}.weight"] = torch.zeros(o, n)
        state[f"classifier.{i}.bias"] = torch.zeros(o)
    torch.save(state, path)
    return state


def test_vgg19_loader_on_generated_weights(tmp_path, monkeypatch):
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    state = _fake_vgg19_file(path)
    net = load_vgg19(path)
    assert torch.equal(net[28].weight, state["features.28.weight"])
    assert len(net) == _TAPS[-1] + 1
    loss = PerceptualLoss(net)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert loss(x, x).item() == 0.0
    assert loss(x, -x).item() > 0
    # the torch-hub location is the default: TORCH_HOME/hub/checkpoints/<torchvision file name>
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    assert build_perceptual("auto") is None  # not there: quietly off
    with pytest.raises(UserError, match="vgg19-dcbb9e9d.pth"):
        build_perceptual("on")
    hub = tmp_path / "home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    path.rename(hub / path.name)
    assert isinstance(build_perceptual("auto"), PerceptualLoss)
    assert build_perceptual("off") is None


def test_vgg19_loader_refuses_wrong_files(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(UserError, match="missing"):
        load_vgg19(bad)
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    state["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(state, bad)
    with pytest.raises(UserError, match="wrong shape"):
        load_vgg19(bad)
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable"):
        load_vgg19(tmp_path / "junk.pth")


def test_roi_crops_stay_inside():
    x = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16).repeat(3, 1, 1, 1)
    crops = roi_crops(x, torch.tensor([[8.0, 8.0], [0.0, 0.0], [16.0, 15.0]]), 4)
    assert crops.shape == (3, 1, 4, 4)
    assert crops[0, 0, 0, 0] == x[0, 0, 6, 6]
    assert crops[1, 0, 0, 0] == 0  # clamped to the top-left corner
    assert crops[2, 0, -1, -1] == x[0, 0, 15, 15]  # clamped to the bottom-right corner


def test_gaze_follows_the_model_eyes(processed_tiny):
    """Pupils move with the model's eye centres; openings are the edited model's."""
    model = face_model_for(processed_tiny)
    clip = Clip(sorted(processed_tiny.glob("W001/neutral/level_*/*"))[0])
    src = model.decode(clip.face())[:3]
    tracked = aligned_points(clip.track())[:3]
    pupils, radii, openings = gaze(model, src, src, tracked)
    np.testing.assert_allclose(pupils[:, 0], tracked[:, RIGHT_IRIS[0], :2])
    np.testing.assert_allclose(pupils[:, 1], tracked[:, LEFT_IRIS[0], :2])
    for eye, iris in enumerate((RIGHT_IRIS, LEFT_IRIS)):  # the iris ring's mean distance to the iris centre
        ring = tracked[:, iris[1:], :2] - tracked[:, iris[0], None, :2]
        np.testing.assert_allclose(radii[:, eye], np.linalg.norm(ring, axis=-1).mean(1))
    np.testing.assert_allclose(openings, model.eyes(src)[1])  # the (here unedited) model's openings
    moved = src.copy()
    moved[:, LEFT_EYE, 1] += 3.0  # the left eye moves down by 3 px
    pupils2, _, _ = gaze(model, moved, src, tracked)
    np.testing.assert_allclose(pupils2[:, 1] - pupils[:, 1], [[0, 3]] * 3, atol=1e-9)
    np.testing.assert_allclose(pupils2[:, 0], pupils[:, 0])


def test_conditioning_of_a_clip(processed_tiny):
    clip_dir = sorted(processed_tiny.glob("*/neutral/level_*/*"))[0]
    clip = Clip(clip_dir)
    cc = ClipConditioner(face_model_for(processed_tiny), clip, 64)
    cond = cc.render_range([-2, -1, 0])
    assert cond.shape == (3, 9, 64, 64) and cond.dtype == np.float32
    np.testing.assert_array_equal(cond[0], cond[2])  # before the clip's start: frame 0 repeated
    nmfc = cond[2, :3]
    assert (nmfc.sum(0) > 0).mean() > 0.2  # the face covers a good part of the aligned crop
    # shaded shape: one grey (at least the ambient 0.25) in three channels wherever the NMFC is drawn, else black
    np.testing.assert_array_equal(cond[2, 6:9], np.repeat(cond[2, 6:7], 3, 0))
    np.testing.assert_array_equal(cond[2, 6] > 0.2, nmfc.sum(0) > 0)
    assert not cond[2, 6][nmfc.sum(0) == 0].any()
    # eye gaze: red disks (NED's input) on black, full red at the pixels holding the pupil centres
    assert not cond[2, 4:6].any()
    for x, y in np.floor(cc.pupils[0] * cc.scale).astype(int):
        assert cond[2, 3, y, x] == 1.0
    face, crop = cc.face(0), clip.faces.read(0).astype(np.float64)
    assert face.shape == (3, 64, 64)
    # an integer-factor area resize averages pixel blocks: each channel's mean is kept (up to uint8 rounding),
    # scaled from 0..255 to -1..1
    np.testing.assert_allclose(face.mean((1, 2)), crop.mean((0, 1)) / 127.5 - 1.0, atol=0.5 / 127.5)
    assert 0 < cc.mouth[0, 1] < 64  # mouth centre inside the image


def test_identity_frames_sample(processed_tiny):
    data = IdentityFrames(processed_tiny, "W001", ("train",), 64, 3)
    batch = data.sample(np.random.default_rng(0), 2, 3)
    assert batch.cond.shape == (2, 5, 9, 64, 64)
    assert batch.real.shape == (2, 3, 3, 64, 64) and batch.mask.shape == (2, 3, 1, 64, 64)
    # targets are composited like the generator's output: -1 where the mask is 0
    assert torch.all(batch.real[batch.mask.expand_as(batch.real) == 0] == -1)
    with pytest.raises(UserError, match="no clips of actor"):
        IdentityFrames(processed_tiny, "NOBODY", ("train",), 64, 3)


def test_renderer_train_resume_and_render_every_frame(processed_tiny, tmp_path, python_exe, python_env):
    runs = tmp_path / "runs"
    args = tiny_renderer_args(processed_tiny, runs)
    run_module(
        python_exe,
        python_env,
        "renderer.train",
        *args,
        "engine.max_steps=4",
        "engine.ckpt_every=2",
        "engine.log_every=2",
    )
    run_dir = runs / "renderer" / "W001"
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [2, 4]
    assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "tb").is_dir()
    # what it shows while it trains: PSNR/SSIM on held-out clips, a sample video with audio, its hparams
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = next(r for r in logged if "val/psnr" in r)
    assert val["step"] == 4 and 0 < val["val/psnr"] < 60 and -1 <= val["val/ssim"] <= 1
    sample = run_dir / "samples" / "step_000000004.mp4"
    held_out = Clip(processed_tiny / identity_clips(processed_tiny, "W001", ("test",))[0])
    assert probe_video(sample).n_frames == held_out.n_frames and probe_video(sample).has_audio
    hparams = json.loads((run_dir / "hparams.json").read_text())
    assert hparams["hparams"]["actor"] == "W001" and set(hparams["metrics"]) == {"val/psnr", "val/ssim"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    events.Reload()
    gif = events.Images("val/sample")[-1]  # the sample video as TensorBoard shows it: an animated GIF
    assert gif.step == 4 and gif.encoded_image_string[:6] == b"GIF89a"
    proc = run_module(python_exe, python_env, "renderer.train", *args, "engine.max_steps=6", "engine.ckpt_every=2")
    assert "resumed from" in proc.stdout + proc.stderr
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")][-1] == 6
    bad = run_module(python_exe, python_env, "renderer.train", *args[:-1], check=False)
    assert bad.returncode == 2 and "actor= is required" in bad.stderr and "Traceback" not in bad.stderr

    renderer = NeuralRenderer.load(run_dir)
    clip = Clip(sorted(processed_tiny.glob("W001/neutral/level_*/*"))[0])
    cc = ClipConditioner(face_model_for(processed_tiny), clip, renderer.image_size)
    frames = list(renderer.frames(cc))
    assert len(frames) == clip.n_frames  # every frame, including the first n_frames_g - 1
    assert frames[0].shape == (clip.meta.crop_size, clip.meta.crop_size, 3) and frames[0].dtype == np.uint8


def test_quality_metrics_on_known_inputs():
    from renderer.evaluate import masked_psnr, masked_ssim

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    assert masked_psnr(real, real.copy(), mask) == float("inf")
    assert masked_ssim(real, real.copy(), mask) == pytest.approx(1.0)
    off = real.astype(int)
    off[mask] += 10
    off = np.clip(off, 0, 255).astype(np.uint8)
    err = (off.astype(float) - real)[mask]
    assert masked_psnr(real, off, mask) == pytest.approx(10 * np.log10(255**2 / np.mean(err**2)))
    other = real.copy()
    other[~mask] = 0  # changes outside the mask do not count for PSNR
    assert masked_psnr(real, other, mask) == float("inf")


def test_ddp_smoke(processed_tiny, tmp_path, python_exe, python_env):
    """Two gloo processes: one forward per backward for every DDP-wrapped net, rank 0 writes the checkpoint."""
    import subprocess

    cmd = [
        python_exe,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "renderer.train",
        "--config",
        "configs/renderer/base.yaml",
        "--config",
        "configs/renderer/tiny.yaml",
        "eyes_d=true",
        f"data_dir={processed_tiny}",
        f"engine.runs_root={tmp_path}",
        "actor=W001",
        "engine.max_steps=2",
        "engine.ckpt_every=2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=python_env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [s for s, _ in list_checkpoints(tmp_path / "renderer" / "W001" / "checkpoints")] == [2]


def test_scmcl_image_level_finetuning(processed_tiny, metric_runs, tmp_path, python_exe, python_env):
    """The SCMCL fine-tuning runs from a trained renderer with an audio+image metric, a manipulator and the
    index built by that same metric run; an index built by another run is refused."""
    from conftest import tiny_metric

    runs = tmp_path / "runs"
    tiny_metric(
        python_exe,
        python_env,
        processed_tiny,
        runs,
        "joint_visual",
        "engine.max_steps=4",
        "consistency_start=1",
        "init_from=[]",
    )
    index = tmp_path / "index_joint_visual"
    run_module(
        python_exe,
        python_env,
        "manipulator.metric.index",
        f"data_dir={processed_tiny}",
        f"metric_run={runs}/metric/joint_visual",
        f"out_dir={index}",
    )
    # the image-level term's diagnosis (S1 and S3 on the index's neutral -> emotion frame pairs)
    visual = runs / "metric/joint_visual"
    proc = run_module(
        python_exe,
        python_env,
        "manipulator.metric.diagnose",
        visual,
        f"data_dir={processed_tiny}",
        f"index_dir={index}",
        "pairs=20",
    )
    result = json.loads((visual / "diagnosis.json").read_text())
    assert set(result["checks"]) == {"image S1", "image S3"} and result["image"]["overall"]["pairs"] == 20
    assert "image pairs" in proc.stdout and "retrieved" not in result  # no expression encoder in this run
    run_module(
        python_exe,
        python_env,
        "manipulator.train",
        "--config",
        "configs/manipulator/ned_baseline.yaml",
        "--config",
        "configs/manipulator/tiny.yaml",
        f"data_dir={processed_tiny}",
        f"engine.runs_root={runs}",
        "val_splits=[]",
        "engine.max_steps=2",
    )
    base = tiny_renderer_args(processed_tiny, runs)
    run_module(python_exe, python_env, "renderer.train", *base, "engine.max_steps=2")
    scmcl = [f"scmcl.metric_run={runs}/metric/joint_visual", f"scmcl.manipulator_run={runs}/manipulator/ned_baseline"]
    proc = run_module(
        python_exe,
        python_env,
        "renderer.train",
        "--config",
        "configs/renderer/scmcl.yaml",
        *base[2:],
        *scmcl,
        f"scmcl.index_dir={index}",
        "engine.max_steps=2",
        "engine.log_every=1",
    )
    out = proc.stdout + proc.stderr
    assert "initialised from" in out and "SCMCL on" in out
    run_dir = runs / "renderer" / "W001_scmcl"
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m for m in metrics if "val/psnr" not in m]  # validation logs records of its own
    assert len(losses) == 2 and all(np.isfinite(m["scmcl/corr"]) and m["scmcl/paired"] > 0 for m in losses)
    # d_a from the manipulator's index (built by metric/joint) with this run's image encoder: refused
    mixed = run_module(
        python_exe,
        python_env,
        "renderer.train",
        "--config",
        "configs/renderer/scmcl.yaml",
        *base[2:],
        *scmcl,
        f"scmcl.index_dir={processed_tiny}/retrieval/joint",
        "engine.name=mixed",
        check=False,
    )
    assert mixed.returncode == 2 and "rebuild it" in mixed.stderr and "Traceback" not in mixed.stderr
    # a metric run without the image encoder is refused with a clear message
    bad = run_module(
        python_exe,
        python_env,
        "renderer.train",
        "--config",
        "configs/renderer/scmcl.yaml",
        *base[2:],
        f"scmcl.metric_run={metric_runs}/metric/joint",
        "engine.name=bad",
        check=False,
    )
    assert bad.returncode == 2 and "visual" in bad.stderr and "Traceback" not in bad.stderr
