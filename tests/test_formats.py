from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from common import formats as F
from common import timebase
from common.errors import FormatError
from common.framestore import FrameStore
from common.fsutil import atomic_path

T = 12


def make_meta(**kw) -> F.ClipMeta:
    base = dict(source_video="v.mp4", fps=25.0, n_frames=T, frame_width=320, frame_height=240, crop_size=64)
    return F.ClipMeta(**{**base, **kw})


def make_track(n=T, landmarks=478):
    rng = np.random.default_rng(0)
    return {
        "boxes": rng.random((n, 4), dtype=np.float32),
        "crop_to_frame": rng.random((n, 2, 3), dtype=np.float32),
        "align": rng.random((n, 2, 3), dtype=np.float32),
        "landmarks": rng.random((n, landmarks, 2), dtype=np.float32),
        "valid": np.ones(n, bool),
    }


def make_face(n=T, dims=51):
    rng = np.random.default_rng(1)
    return {
        "expr": rng.random((n, dims), dtype=np.float32),
        "pose": rng.random((n, 6), dtype=np.float32),
        "cam": rng.random((n, 3), dtype=np.float32),
        "identity": rng.random(20, dtype=np.float32),
        "landmarks2d": rng.random((n, 478, 2), dtype=np.float32),
    }


# -- frame <-> sample mapping ---------------------------------------------------------------------


@pytest.mark.parametrize("fps", [25, 30, Fraction(30000, 1001), 29.97002997002997, 24, 60])
def test_frame_sample_mapping_matches_definition(fps):
    exact = F.as_fraction(fps)
    t = np.arange(0, 5000)
    got = F.frame_to_sample(t, fps)
    want = np.array([int(Fraction(k) * 16000 / exact + Fraction(1, 2)) for k in t])  # floor(x + 1/2)
    np.testing.assert_array_equal(got, want)
    assert all(F.frame_to_sample(int(k), fps) == w for k, w in zip(t[:50], want[:50], strict=True))


def test_frame_ranges_tile_the_audio_without_drift():
    fps = Fraction(30000, 1001)
    n = 30 * 60 * 10  # ten minutes
    starts = F.frame_to_sample(np.arange(n + 1), fps)
    lengths = np.diff(starts)
    assert set(lengths.tolist()) <= {533, 534}  # 16000 / 29.97 = 533.87
    assert starts[-1] == round(n * 16000 / float(fps))  # no accumulated drift (sr // fps would be 533 * n)
    assert timebase.frame_sample_range(3, 25) == (1920, 2560)


def test_sample_to_frame_inverts_frame_to_sample():
    for fps in (25, Fraction(30000, 1001), 30):
        s = np.arange(0, 200_000, 7)
        t = timebase.sample_to_frame(s, fps)
        assert (F.frame_to_sample(t, fps) <= s).all() and (F.frame_to_sample(t + 1, fps) > s).all()
        assert timebase.sample_to_frame(int(s[100]), fps) == t[100]
    assert timebase.n_frames_for_duration(16000, 25) == 25
    assert timebase.n_frames_for_duration(15999, 25) == 24


# -- meta.json ------------------------------------------------------------------------------------


def test_meta_round_trip(tmp_path):
    meta = make_meta(actor="M003", emotion="happy", level=3, sentence="001", backends={"face_model": "mesh"})
    F.write_meta(tmp_path, meta)
    assert F.read_meta(tmp_path) == meta


def test_meta_missing_key_is_reported(tmp_path):
    F.write_meta(tmp_path, make_meta())
    data = json.loads((tmp_path / "meta.json").read_text())
    del data["fps"]
    (tmp_path / "meta.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"meta\.json: missing key\(s\) fps"):
        F.read_meta(tmp_path)


def test_meta_wrong_type_and_version(tmp_path):
    F.write_meta(tmp_path, make_meta())
    data = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**data, "n_frames": "12"}))
    with pytest.raises(FormatError, match="'n_frames' has type str"):
        F.read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({**data, "schema_version": 99}))
    with pytest.raises(FormatError, match="schema version 99"):
        F.read_meta(tmp_path)
    with pytest.raises(FormatError, match="not found"):
        F.read_meta(tmp_path / "nothing")


# -- arrays ---------------------------------------------------------------------------------------


def test_track_and_face_round_trip(tmp_path):
    track, face = make_track(), make_face()
    face["shape_extra"] = np.zeros(3, np.float32)  # backend-specific extras are kept
    F.write_arrays(tmp_path / F.TRACK_FILE, track, F.TRACK_SPEC, T)
    F.write_arrays(tmp_path / F.FACE_FILE, face, F.FACE_SPEC, T)
    back_t = F.read_arrays(tmp_path / F.TRACK_FILE, F.TRACK_SPEC, T)
    back_f = F.read_arrays(tmp_path / F.FACE_FILE, F.FACE_SPEC, T)
    for src, back in ((track, back_t), (face, back_f)):
        assert set(back) == set(src)
        for key in src:
            np.testing.assert_array_equal(back[key], src[key])


def test_wrong_frame_count_is_reported(tmp_path):
    F.write_arrays(tmp_path / F.TRACK_FILE, make_track(n=T), F.TRACK_SPEC, T)
    with pytest.raises(FormatError, match=r"track\.npz: 'boxes' axis 0 is 12 but the frame count is 13"):
        F.read_arrays(tmp_path / F.TRACK_FILE, F.TRACK_SPEC, T + 1)


def test_missing_key_dtype_and_inconsistent_sizes_are_reported(tmp_path):
    face = make_face()
    del face["cam"]
    with pytest.raises(FormatError, match=r"missing array\(s\) cam"):
        F.write_arrays(tmp_path / F.FACE_FILE, face, F.FACE_SPEC, T)
    face = make_face()
    face["expr"] = face["expr"].astype(np.float64)
    with pytest.raises(FormatError, match="'expr' has dtype float64, expected float32"):
        F.write_arrays(tmp_path / F.FACE_FILE, face, F.FACE_SPEC, T)
    track = make_track()
    track["landmarks"] = np.zeros((T, 478, 3), np.float32)
    with pytest.raises(FormatError, match="'landmarks' axis 2 is 3, expected 2"):
        F.write_arrays(tmp_path / F.TRACK_FILE, track, F.TRACK_SPEC, T)
    face = make_face()
    face["landmarks2d"] = np.zeros((T, 68, 2), np.float32)
    F.write_arrays(tmp_path / F.FACE_FILE, face, F.FACE_SPEC, T)  # L is free in face.npz...
    face["expr"][0, 0] = np.nan
    with pytest.raises(FormatError, match="NaN"):
        F.write_arrays(tmp_path / F.FACE_FILE, face, F.FACE_SPEC, T)
    assert not list(tmp_path.glob(".*tmp*"))  # failed writes leave no temporary files


def test_corrupt_npz(tmp_path):
    (tmp_path / F.TRACK_FILE).write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="unreadable npz"):
        F.read_arrays(tmp_path / F.TRACK_FILE, F.TRACK_SPEC, T)


# -- audio ----------------------------------------------------------------------------------------


def test_audio_round_trip_pcm16(tmp_path):
    x = (0.5 * np.sin(np.linspace(0, 100, 16000))).astype(np.float32)
    F.write_audio(tmp_path / F.AUDIO_FILE, x)
    back = F.read_audio(tmp_path / F.AUDIO_FILE)
    assert back.shape == x.shape and np.abs(back - x).max() < 1 / 32767 + 1e-6


def test_audio_wrong_rate_is_reported(tmp_path):
    F.write_audio(tmp_path / F.AUDIO_FILE, np.zeros(100, np.float32), sr=22050)
    with pytest.raises(FormatError, match="expected mono 16000 Hz"):
        F.read_audio(tmp_path / F.AUDIO_FILE)


# -- frame store, markers, clip -------------------------------------------------------------------


def test_frame_store_round_trip_and_validation(tmp_path):
    rng = np.random.default_rng(0)
    faces = FrameStore(tmp_path / "faces", channels=3)
    masks = FrameStore(tmp_path / "masks", channels=1)
    imgs = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    assert faces.write_all(imgs) == 4
    masks.write_all(imgs[..., 0])
    np.testing.assert_array_equal(faces.read_range(0, 4), imgs)  # PNG is lossless, RGB order kept
    np.testing.assert_array_equal(masks.read(2), imgs[2, ..., 0])
    faces.validate(4)
    with pytest.raises(FormatError, match="4 frame file"):
        faces.validate(5)
    faces.path(1).unlink()
    with pytest.raises(FormatError, match=r"\(1 contiguous from 0\)"):
        faces.validate(4)
    with pytest.raises(FormatError, match="expected 1 channel"):
        masks.write(0, imgs[0])


def test_completion_markers(tmp_path):
    assert not F.is_done(tmp_path, "track")
    F.write_meta(tmp_path, make_meta())
    F.mark_done(tmp_path, "track", "abc")
    assert F.read_meta(tmp_path).stages["track"]["config_hash"] == "abc"  # meta.json records the stage too
    assert F.is_done(tmp_path, "track") and F.is_done(tmp_path, "track", "abc")
    assert not F.is_done(tmp_path, "track", "other-config")
    F.clear_done(tmp_path, "track")
    assert not F.is_done(tmp_path, "track")


def test_clip_validate_and_frame_audio(tmp_path):
    clip_dir = F.clip_dir_for(tmp_path, "M003", "happy", 3, "001")
    assert clip_dir == tmp_path / "M003" / "happy" / "level_3" / "001"
    F.write_meta(clip_dir, make_meta())
    F.write_arrays(clip_dir / F.TRACK_FILE, make_track(), F.TRACK_SPEC, T)
    F.write_arrays(clip_dir / F.FACE_FILE, make_face(), F.FACE_SPEC, T)
    audio = np.arange(F.frame_to_sample(T, 25), dtype=np.float32) / 1e5
    F.write_audio(clip_dir / F.AUDIO_FILE, audio)
    for store in ("faces", "masks"):
        FrameStore(clip_dir / store, 3 if store == "faces" else 1).write_all(
            np.zeros((T, 8, 8, 3) if store == "faces" else (T, 8, 8), np.uint8)
        )
    clip = F.Clip(clip_dir)
    clip.validate()
    assert len(clip.frame_audio(2)) == 640
    FrameStore(clip_dir / "masks", 1).path(T - 1).unlink()
    with pytest.raises(FormatError, match="masks"):
        clip.validate()
    F.write_audio(clip_dir / F.AUDIO_FILE, audio[:-700])
    with pytest.raises(FormatError, match="need 7680"):
        clip.validate(require=("audio",))


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
