"""The evaluation's lip metrics on frames the trackers really found, the per-stage lip diagnostic on decoded
parameters, and methods limited to some settings (the reference rows themselves run in test_postprocess)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_evaluation import _talking, tiny_job

from common.errors import ConfigError
from common.formats import Clip
from evaluation import output as evaluation_output
from evaluation.metrics import lip_sync, params_lip_r
from evaluation.output import Output
from evaluation.retrack import Retracked
from evaluation.run import Evaluator, parse_methods
from facemodel import face_model_for
from facemodel.geometry import aligned_points


def test_lip_sync_ignores_frames_a_tracker_only_interpolated():
    t = np.arange(60)
    gaps = 0.2 + 0.1 * np.sin(2 * np.pi * t / 20)
    source = _talking(gaps)
    output = source.copy()
    lost = (t % 7) == 3  # the re-tracker lost the face there: its values are guesses
    output[lost] = _talking(np.full(lost.sum(), 0.9))
    lip_r, lmd = lip_sync(source, output, ~lost, 256)
    assert lip_r == pytest.approx(1.0) and lmd == 0.0
    all_frames, _ = lip_sync(source, output, np.ones(len(t), bool), 256)
    assert all_frames < 0.9  # what counting the guesses would report
    assert all(np.isnan(v) for v in lip_sync(source, output, t == 0, 256))  # one frame: no correlation


def test_lip_metrics_mask_the_retrackers_lost_frames(processed_tiny, tmp_path, monkeypatch):
    """An output whose re-track matches the source where it found the face and holds garbage where it did not
    scores perfect lip sync; one found in a single frame is lost (no lip reading at all)."""
    job = tiny_job(processed_tiny)
    clip = Clip(processed_tiny / job.source)
    track = clip.track()
    aligned = aligned_points(track).copy()
    valid = np.ones(clip.n_frames, bool)
    valid[::4] = False
    aligned[~valid, :, 1] += 37.0  # interpolated frames far off
    fake = Retracked(aligned, valid, clip.meta.crop_size, track, Path(clip.meta.source_video))
    monkeypatch.setattr(evaluation_output, "retrack", lambda video, size, min_fraction: fake)
    ev = Evaluator(tmp_path, None, tmp_path, "test")
    out = Output(ev, job, Path(clip.meta.source_video), None, None)
    assert out.lip[0] == pytest.approx(1.0) and out.lip[1] == pytest.approx(0.0, abs=1e-6)
    assert out.face_found == pytest.approx(valid.mean()) and not out.face_lost
    once = Retracked(aligned, np.arange(clip.n_frames) == 0, clip.meta.crop_size, track, fake.video)
    monkeypatch.setattr(evaluation_output, "retrack", lambda video, size, min_fraction: once)
    out = Output(ev, job, Path(clip.meta.source_video), None, None)
    assert out.face_lost and out.face_found == pytest.approx(1 / clip.n_frames)


def test_lip_r_on_decoded_parameters(processed_tiny):
    model = face_model_for(processed_tiny)
    face = Clip(sorted(processed_tiny.glob("W001/neutral/level_*/*"))[0]).face()
    assert params_lip_r(model, face, dict(face)) == pytest.approx(1.0)
    reversed_mouth = dict(face)
    reversed_mouth["expr"] = face["expr"].copy()
    reversed_mouth["expr"][:, 0] = face["expr"][::-1, 0]  # the same mouth movements, in the wrong order
    assert params_lip_r(model, face, reversed_mouth) < 0.5
    other = dict(face)
    other["expr"] = face["expr"].copy()
    other["expr"][:, 1:] += 0.3  # other expression channels, the same mouth channel: the lips still follow
    assert params_lip_r(model, face, other) > 0.9
    path = np.arange(len(face["expr"]))
    assert params_lip_r(model, face, dict(face), path, path) == pytest.approx(1.0)


def test_methods_can_be_limited_to_settings():
    methods = parse_methods(["ned=a,b", "paired_only@label+same_id=c", "runs/x/scmcl"])
    assert [(m.name, m.runs, m.settings) for m in methods] == [
        ("ned", ["a", "b"], None),
        ("paired_only", ["c"], ["label", "same_id"]),
        ("scmcl", ["runs/x/scmcl"], None),
    ]
    with pytest.raises(ConfigError, match="unknown setting"):
        parse_methods(["x@lable=a"])
