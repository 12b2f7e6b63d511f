"""Unit tests of the preprocessing maths: lost-frame rule, zero-lag smoothing, transforms, subject choice,
mesh face model round trip, frame-rate audio features."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from common.formats import frame_to_sample
from facemodel import geometry
from facemodel.geometry import apply_affine, compose, invert_affine
from facemodel.mesh import (
    N_VERTS,
    RIGID_POINTS,
    MeshFaceModel,
    fit_basis,
    gap_of_flat,
    mouth_opening,
    procrustes,
    speech_direction,
)
from preprocessing.audio_features import frame_features
from preprocessing.tracking import FaceTracker, RawTrack, build_track, fill_lost, similarity_fit, smooth


def test_lost_frames_are_interpolated_and_held_at_the_ends():
    lm = np.arange(6, dtype=float)[:, None, None] * np.ones((6, 2, 3))
    valid = np.array([False, True, False, False, True, False])
    lm[~valid] = np.nan
    out = fill_lost(lm, valid)
    np.testing.assert_allclose(out[:, 0, 0], [1, 1, 2, 3, 4, 4])


def test_smoothing_has_no_lag_and_removes_outliers():
    ramp = np.linspace(0, 10, 60)[:, None]
    np.testing.assert_allclose(smooth(ramp, 2.0)[10:-10], ramp[10:-10], atol=1e-9)  # zero phase
    spiky = ramp.copy()
    spiky[30] += 50
    assert abs(smooth(spiky, 2.0)[30, 0] - ramp[30, 0]) < 0.5


def test_similarity_fit_and_affine_helpers():
    rng = np.random.default_rng(0)
    src = rng.random((8, 2)) * 100
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    m = similarity_fit(src, dst)
    np.testing.assert_allclose(apply_affine(m, src), dst, atol=1e-9)
    np.testing.assert_allclose(compose(m, invert_affine(m)), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    batch = np.stack([m, invert_affine(m)])
    pts = np.stack([src, dst])
    np.testing.assert_allclose(apply_affine(batch, pts), np.stack([dst, src]), atol=1e-9)


def test_subject_is_kept_when_a_second_face_appears():
    tracker = FaceTracker.__new__(FaceTracker)
    tracker._prev_box = None
    small = np.zeros((478, 3), np.float32)
    small[:, :2] = np.random.default_rng(0).random((478, 2)) * 50 + 100  # 50 px face at (100, 100)
    big = small.copy()
    big[:, :2] = (small[:, :2] - 100) * 2 + 300  # a larger face elsewhere
    assert tracker._choose([big, small]) is big  # first frame: the largest face
    tracker._prev_box = np.array([100, 100, 150, 150])
    assert tracker._choose([big, small]) is small  # later: the face where the subject was
    assert tracker._choose([big]) is None  # only another face: the subject is lost


def test_build_track_crops_and_aligns(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.random((478, 3)) * 80 + 60
    lm = np.repeat(base[None], 20, axis=0) + rng.normal(0, 0.2, (20, 478, 3))
    valid = np.ones(20, bool)
    valid[5] = False
    lm[5] = np.nan
    track = build_track(RawTrack(lm.astype(np.float32), valid), 128, 0.3, 1.5, 0.5)
    assert track.valid.sum() == 19 and np.isfinite(track.landmarks).all()
    assert (track.landmarks >= 0).all() and (track.landmarks <= 128).all()  # face inside the crop
    back = apply_affine(track.crop_to_frame.astype(np.float64), track.landmarks.astype(np.float64))
    np.testing.assert_allclose(back[valid], lm[valid][:, :, :2], atol=1e-3)


def synthetic_faces(n_clips=4, n_frames=40, seed=0):
    """Clips of a random 468-point 'face' with 3 expression modes (one opening the lips) and head poses."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, (N_VERTS, 3))
    modes = rng.normal(0, 0.05, (3, N_VERTS, 3))
    modes[:, RIGID_POINTS] = 0  # expressions do not move the rigid points (as on a real face)
    modes[0] = 0
    modes[0, 14, 1] = 0.2  # lower inner lip moves down with mode 0
    identities = [base + rng.normal(0, 0.02, base.shape) for _ in range(2)]
    clips, actors = [], []
    for c in range(n_clips):
        ident = identities[c % 2]
        w = rng.random((n_frames, 3)) * np.array([1.0, 1.0, 1.0])
        shapes = ident[None] + np.einsum("tk,kvd->tvd", w, modes)
        posed = []
        for s in shapes:
            q, _ = np.linalg.qr(rng.normal(size=(3, 3)) * 0.1 + np.eye(3))
            q *= np.sign(np.linalg.det(q))
            posed.append(40 * s @ q.T + np.array([128, 128, 0]))
        clips.append(np.concatenate([np.stack(posed), np.zeros((n_frames, 10, 3))], axis=1))
        actors.append(f"A{c % 2}")
    return clips, actors


def test_mesh_model_round_trip_and_mouth_channel():
    clips, actors = synthetic_faces()
    tris = np.array([[0, 1, 2], [1, 2, 3]], np.int32)
    basis = fit_basis(clips, actors, tris, expr_dim=6)
    model = MeshFaceModel(basis)
    face = model.fit(clips[0])
    err = np.linalg.norm(model.decode(face)[:, :, :2] - clips[0][:, :N_VERTS, :2], axis=-1).mean()
    extent = np.ptp(clips[0][:, :N_VERTS, 0])
    assert err < 0.005 * extent  # the mouth channel is a measured gap, so the fit is close, not exact
    np.testing.assert_allclose(basis.basis @ basis.basis.T, np.eye(5), atol=1e-6)
    assert abs(gap_of_flat(basis.basis)).max() < 1e-9  # the PCA part never opens the mouth
    x = model.decode_normalised(face["expr"].astype(np.float64), face["identity"].astype(np.float64))
    np.testing.assert_allclose(face["expr"][:, 0], mouth_opening(x), atol=1e-5)  # channel 0 decodes exactly
    edited = face["expr"].astype(np.float64).copy()
    edited[:, 0] += 0.05
    x2 = model.decode_normalised(edited, face["identity"].astype(np.float64))
    np.testing.assert_allclose(mouth_opening(x2), edited[:, 0], atol=1e-5)
    s, r, t = procrustes(clips[0][0, :N_VERTS], clips[0][1, :N_VERTS])
    assert abs(np.linalg.det(r) - 1) < 1e-9 and s > 0


def test_speech_direction_holds_what_speaking_moves_not_what_an_emotion_moves_with_it():
    """An emotion clip that opens the mouth and raises the brows for its whole length (a surprise) and speaks
    over it: channel 0's direction is the speech's (the lip alone), not the emotion's brows."""
    rng = np.random.default_rng(1)
    lip, brow = np.zeros(N_VERTS * 3), np.zeros(N_VERTS * 3)
    lip[14 * 3 + 1] = 1.0  # lower inner lip down: the opening (gap_of_flat = 1 per unit)
    brow[105 * 3 + 1] = -1.0  # a brow point up
    clips, lengths = [], []
    for emotion, n in ((0.0, 50), (1.0, 30), (0.0, 70), (1.0, 40)):  # neutral, surprised, ... of unequal lengths
        speech = np.abs(rng.normal(0, 0.03, n))
        n = len(speech)
        clips.append(np.outer(speech + 0.1 * emotion, lip) + np.outer(np.full(n, 0.2 * emotion), brow))
        lengths.append(n)
    r = np.concatenate(clips)
    r += rng.normal(0, 1e-4, r.shape)
    direction = speech_direction(r, gap_of_flat(r), lengths)
    assert abs(direction[105 * 3 + 1]) < 0.05  # across clips it would be about -2 (brows rise with the opening)
    across = (r - r.mean(0)).T @ (gap_of_flat(r) - gap_of_flat(r).mean())
    assert across[105 * 3 + 1] / gap_of_flat(across) < -1.0  # (the old regression, for contrast)
    ones = speech_direction(r, gap_of_flat(r), [1] * len(r))  # one-frame clips: nothing varies within them
    assert np.isfinite(ones).all()


def test_mesh_fit_in_blocks_equals_the_whole_clip_fit(monkeypatch):
    """Long videos are fitted and decoded block by block (bounded memory): the result must not depend on it."""
    clips, actors = synthetic_faces(n_frames=25)
    model = MeshFaceModel(fit_basis(clips, actors, np.array([[0, 1, 2]], np.int32), expr_dim=6))
    whole = model.fit(clips[0])
    monkeypatch.setattr(geometry, "BLOCK", 7)  # 25 frames -> blocks of 7, 7, 7, 4
    assert [s.stop for s in geometry.frame_blocks(25)] == [7, 14, 21, 25]
    blocked = model.fit(clips[0])
    for key in ("expr", "pose", "cam", "identity", "landmarks2d"):
        np.testing.assert_allclose(blocked[key], whole[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_frame_features_follow_the_frame_mapping():
    fps, sr = Fraction(30000, 1001), 16000
    n_frames = 90
    audio = np.zeros(frame_to_sample(n_frames, fps), np.float32)
    start, stop = frame_to_sample(40, fps), frame_to_sample(46, fps)
    audio[start:stop] = 0.5 * np.sin(2 * np.pi * 300 * np.arange(stop - start) / sr)
    feats = frame_features(audio, fps, n_frames, kind="logmel", n_features=20)
    assert feats.shape == (n_frames, 20)
    energy = feats.mean(axis=1)
    loud = np.nonzero(energy > energy.min() + 0.5 * (energy.max() - energy.min()))[0]
    assert 39 <= loud.min() <= 41 and 44 <= loud.max() <= 46


def test_pairing_rules(tmp_path):
    import json

    import pytest

    from common.errors import UserError
    from preprocessing.pairs import ClipRef, find_pairs

    refs = [ClipRef(f"A/{e}/{n}", "A", e, n) for e in ("neutral", "happy", "sad") for n in ("001", "002")]
    refs.append(ClipRef("B/happy/001", "B", "happy", "001"))  # another actor never pairs with A
    pairs = find_pairs(refs)
    assert sorted((s.rel_dir, d.rel_dir) for s, d in pairs) == [
        ("A/neutral/001", "A/happy/001"),
        ("A/neutral/001", "A/sad/001"),
        ("A/neutral/002", "A/happy/002"),
        ("A/neutral/002", "A/sad/002"),
    ]
    table = tmp_path / "pairs.json"
    table.write_text(json.dumps({"A": {"happy": {"001": "002"}}}))
    pairs = find_pairs(refs, "json", str(table))
    assert [(s.rel_dir, d.rel_dir) for s, d in pairs] == [("A/neutral/001", "A/happy/002")]
    with pytest.raises(UserError, match="not found"):
        find_pairs(refs, "json", str(tmp_path / "missing.json"))
