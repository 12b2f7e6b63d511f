"""The real-face panel's clips: the head sweep's range, and a clip whose head really turns through it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from evaluation.panel import (
    PITCH_DEG,
    YAW_DEG,
    PanelConfig,
    fresh_clip,
    head_sweep,
    held_out_for,
    make_clip,
    merged,
    same_edit,
    trained_faces,
)
from evaluation.retrack import retrack


def test_head_sweep_spans_the_yaw_and_pitch_range():
    yaw, pitch = head_sweep(101)
    assert math.degrees(yaw[0]) == pytest.approx(-YAW_DEG) and math.degrees(yaw[-1]) == pytest.approx(YAW_DEG)
    assert np.all(np.diff(yaw) > 0)  # one sweep, left to right
    assert math.degrees(pitch.max()) == pytest.approx(PITCH_DEG, abs=0.01)
    assert math.degrees(pitch.min()) == pytest.approx(-PITCH_DEG, abs=0.01)
    assert (YAW_DEG, PITCH_DEG) == (25.0, 10.0)  # the panel


def test_a_panel_clip_turns_the_head_and_stays_trackable(tmp_path):
    clip = make_clip("astronaut", tmp_path / "astronaut.mp4", 192, 25.0)
    assert clip.with_suffix(".wav").is_file()
    track = retrack(clip, 128)
    assert track.valid.mean() > 0.9
    # yaw seen in the pixels: the nose tip's offset from the mid-point of the outer eye corners, in eye spans,
    # changes sign between the clip's ends (the aligned crop keeps the eyes level, not the nose)
    pts = track.track["landmarks"][:, :, :2]
    mid = 0.5 * (pts[:, 33] + pts[:, 263])
    span = np.linalg.norm(pts[:, 263] - pts[:, 33], axis=1)
    offset = (pts[:, 1, 0] - mid[:, 0]) / span
    n = len(offset)
    start, end = offset[: n // 8].mean(), offset[-n // 8 :].mean()
    assert start * end < 0 and abs(end - start) > 0.3


def test_trained_faces_reads_the_manipulators_dataset(tmp_path):
    import torch

    from common.formats import write_clip_index

    entry = {"emotion": "neutral", "clip_id": "001", "split": "train"}
    clips = [{"dir": f"{a}/neutral/001", "actor": a, **entry} for a in ("W001", "W102")]  # W102: W002 mirrored
    data = tmp_path / "data"
    data.mkdir()
    write_clip_index(data, "train", "mesh", "", clips)
    ckpts = tmp_path / "manipulator" / "checkpoints"
    ckpts.mkdir(parents=True)
    torch.save({"step": 1, "config": {"data_dir": str(data)}, "extra": {}}, ckpts / "step_000000001.pt")
    assert trained_faces(tmp_path / "manipulator") == {"astronaut": ["W001"], "grace_hopper": ["W102"]}
    assert trained_faces(tmp_path / "nothing") == {}


def test_a_run_on_some_faces_keeps_the_others_of_the_same_settings():
    settings = {
        "manipulators": ["runs/m"],
        "renderer": "warp",
        "intensity": 1.0,
        "edit_from": "neutral",
        "size": 512,
        "fps": 25.0,
        "edit": 2,
        "warp": 4,
        "rig": 2,
    }
    earlier = settings | {"faces": {"astronaut": {"old": 1}, "maher": {"old": 2}}}
    now = settings | {"faces": {"maher": {"new": 3}}}
    assert merged(earlier, now)["faces"] == {"astronaut": {"old": 1}, "maher": {"new": 3}}
    other = earlier | {"manipulators": ["runs/other"]}  # another manipulator's faces are not mixed in
    assert merged(other, now)["faces"] == {"maher": {"new": 3}}
    stronger = earlier | {"intensity": 1.5}  # nor another intensity's
    assert merged(stronger, now)["faces"] == {"maher": {"new": 3}}
    assert merged(earlier | {"warp": 3}, now)["faces"] == {"maher": {"new": 3}}  # nor an older warp's
    raw = {k: v for k, v in earlier.items() if k != "edit_from"}  # made before --edit-from: the raw output
    assert merged(raw, now)["faces"] == {"maher": {"new": 3}}
    assert merged(raw, now | {"edit_from": "none"})["faces"]["astronaut"] == {"old": 1}


def test_each_face_is_edited_by_a_manipulator_that_did_not_train_on_it():
    a, b = Path("models/a"), Path("runs/b")
    seen = {a: {"astronaut": ["W001"], "grace_hopper": ["W002"]}, b: {"giunchedi": ["M003"], "maher": ["W004"]}}
    assert held_out_for("astronaut", seen) == b and held_out_for("maher", seen) == a
    assert held_out_for("astronaut", {a: seen[a]}) == a  # none held it out: the first (reported as in training)


def test_an_edit_is_reused_only_when_made_alike(tmp_path):
    timing = tmp_path / "happy.json"
    made_by = {"manipulator": "models/a", "renderer": "", "intensity": 1.0, "edit_from": "neutral"}
    assert not same_edit(timing, made_by)
    timing.write_text(json.dumps({"edit_s": 1.0, "frames": 10} | made_by))
    assert same_edit(timing, made_by)
    assert not same_edit(timing, made_by | {"manipulator": "runs/b"})
    assert not same_edit(timing, made_by | {"intensity": 1.5})
    assert not same_edit(timing, made_by | {"edit_from": "none"})


def test_a_clip_is_remade_when_its_size_rate_or_rig_changed_and_takes_its_edits_with_it(tmp_path, monkeypatch):
    made = []

    def fake_make_clip(face, out, size, fps):  # the clip maker itself is tested above; here: when it runs
        made.append((face, size))
        out.write_bytes(b"clip")
        return out

    monkeypatch.setattr("evaluation.panel.make_clip", fake_make_clip)
    clip = tmp_path / "clips" / "astronaut.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"old clip, no stamp")  # made before clips were stamped: remade
    stale = [tmp_path / "edits/astronaut", tmp_path / "processed/m0/astronaut", tmp_path / "processed/astronaut"]
    kept = tmp_path / "edits/maher"
    for d in [*stale, kept]:
        d.mkdir(parents=True)
    cfg = PanelConfig(out=str(tmp_path))
    fresh_clip("astronaut", clip, tmp_path, cfg)
    assert made == [("astronaut", 512)] and not any(d.exists() for d in stale) and kept.is_dir()
    fresh_clip("astronaut", clip, tmp_path, cfg)  # made alike: reused
    assert len(made) == 1
    fresh_clip("astronaut", clip, tmp_path, PanelConfig(out=str(tmp_path), size=256))
    assert made[-1] == ("astronaut", 256)
    stamp = json.loads(clip.with_suffix(".json").read_text())
    clip.with_suffix(".json").write_text(json.dumps(stamp | {"rig": stamp["rig"] - 1}))  # an older rig drew it
    fresh_clip("astronaut", clip, tmp_path, PanelConfig(out=str(tmp_path), size=256))
    assert len(made) == 3
