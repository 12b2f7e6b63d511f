"""The preprocess runner on toy MEAD: valid clips, face model, DTW pairs, modes, resume, bad input, shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module

from common.formats import FACE_FILE, TRACK_FILE, TRACK_SPEC, Clip, read_arrays, write_clip_index
from common.video import iter_frames, read_audio, write_video
from facemodel import load_face_model
from facemodel.geometry import aligned_points, apply_affine
from preprocessing.list_clips import main as list_clips_main
from preprocessing.pairs import load_pairs, pair_path


def clip_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("meta.json"))


def test_train_mode_produces_valid_clips(processed_tiny):
    index = json.loads((processed_tiny / "clips.json").read_text())
    assert len(index["clips"]) == 6
    assert sorted(c["split"] for c in index["clips"]) == ["test"] * 2 + ["train"] * 4
    tracked = total = 0
    for d in clip_dirs(processed_tiny):
        clip = Clip(d)
        clip.validate()  # every part present, frame counts agree with meta.json
        track = read_arrays(d / TRACK_FILE, TRACK_SPEC, clip.n_frames)
        tracked += int(track["valid"].sum())
        total += clip.n_frames
        assert clip.meta.backends["face_model"] == "mesh" and clip.meta.fps == 25
        assert (d / "preview.png").stat().st_size > 10_000
        assert clip.face()["expr"].shape == (clip.n_frames, 51)
    assert tracked / total >= 0.99


def test_decode_reproduces_the_tracked_mesh(processed_tiny):
    model = load_face_model("mesh", processed_tiny / "face_model_mesh.npz")
    errors = []
    for d in clip_dirs(processed_tiny):
        clip = Clip(d)
        track = read_arrays(d / TRACK_FILE, TRACK_SPEC, clip.n_frames)
        tracked = aligned_points(track)[:, :468, :2]
        decoded = model.decode(clip.face())[:, :, :2]
        errors.append(np.linalg.norm(tracked - decoded, axis=-1).mean())
    print(f"mean decode error at 256: {np.mean(errors):.3f} px (max clip {np.max(errors):.3f})")
    assert np.max(errors) < 0.5


def test_mouth_channel_follows_the_ground_truth_jaw(processed_tiny, toy_mead_tiny):
    """expr[:, 0] is the mouth opening. Sentence 003 ("She sees three green trees…") barely opens the mouth,
    so its correlation is tracker noise; it is printed, and the check uses the other sentences."""
    rs = {}
    for d in clip_dirs(processed_tiny):
        actor, emotion, level, name = d.parts[-4:]
        truth = np.load(toy_mead_tiny / actor / "ground_truth" / emotion / level / f"{name}.npz")
        rs[f"{emotion}/{name}"] = np.corrcoef(Clip(d).face()["expr"][:, 0], truth["rig"][:, 0])[0, 1]
    print("Pearson(expr[:, 0], true jaw) per clip:", {k: round(v, 2) for k, v in rs.items()})
    speaking = [v for k, v in rs.items() if not k.endswith("/003")]
    assert np.mean(speaking) > 0.8 and min(speaking) > 0.7


def test_dtw_paths_are_monotone_and_cover_both_clips(processed_tiny):
    pairs = load_pairs(processed_tiny / "pairs.npz")
    assert len(pairs["src"]) == 3 and set(pairs["emotion"]) == {"happy"}
    for p in range(len(pairs["src"])):
        a, b = pair_path(pairs, p)
        na, nb = (
            Clip(processed_tiny / pairs["src"][p]).n_frames,
            Clip(processed_tiny / pairs["dst"][p]).n_frames,
        )
        assert (a[0], b[0]) == (0, 0) and (a[-1], b[-1]) == (na - 1, nb - 1)
        steps = np.stack([np.diff(a), np.diff(b)], 1)
        assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(1) >= 1).all()
        assert pairs["src"][p].split("/")[-1] == pairs["dst"][p].split("/")[-1]  # same sentence


def test_test_mode_reuses_the_train_basis(processed_tiny, toy_mead_tiny, tmp_path, python_exe, python_env):
    basis = processed_tiny / "face_model_mesh.npz"
    before = basis.read_bytes()
    video = toy_mead_tiny / "W001" / "video" / "front" / "happy" / "level_3" / "003.mp4"
    out = tmp_path / "single"
    run_module(python_exe, python_env, "preprocessing.run", video, "test", f"out_dir={out}", f"basis_file={basis}")
    clip = Clip(out / "003")
    clip.validate()
    assert basis.read_bytes() == before and not (out / "face_model_mesh.npz").exists()
    np.testing.assert_allclose(  # same video, same basis: the same parameters as in the train run
        clip.face()["expr"], Clip(processed_tiny / "W001/happy/level_3/003").face()["expr"], atol=1e-4
    )
    proc = run_module(
        python_exe, python_env, "preprocessing.run", video, "test", f"out_dir={tmp_path / 'nb'}", check=False
    )
    assert proc.returncode == 2 and "no face model" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_after_interrupt_gives_the_same_result(processed_tiny, toy_mead_tiny, tmp_path, python_exe, python_env):
    out = tmp_path / "resumed"
    cmd = [
        python_exe,
        "-m",
        "preprocessing.run",
        str(toy_mead_tiny),
        "train",
        f"out_dir={out}",
        "num_workers=1",
    ]
    proc = subprocess.Popen(
        cmd, env=python_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 120
    while len(list(out.glob("*/*/*/*/.done/track.json"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "clips.json").exists()
    for d in clip_dirs(out):  # whatever was interrupted is not marked done
        if (d / ".done" / "track.json").exists():
            Clip(d).validate(require=("track", "audio", "faces", "masks"))
    result = run_module(python_exe, python_env, *cmd[2:])
    assert "skipped" in result.stdout
    assert sorted(p.relative_to(out) for p in clip_dirs(out)) == sorted(
        p.relative_to(processed_tiny) for p in clip_dirs(processed_tiny)
    )
    for d in clip_dirs(out):
        ref = processed_tiny / d.relative_to(out)
        clip = Clip(d)
        clip.validate()
        assert len(list((d / "faces").iterdir())) == clip.n_frames  # no duplicates or leftovers
        np.testing.assert_allclose(clip.face()["expr"], Clip(ref).face()["expr"], atol=1e-4)
    assert len(json.loads((out / "clips.json").read_text())["clips"]) == 6


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, toy_mead_tiny):
    """A folder of problem videos next to one good (odd-sized) video."""
    folder = tmp_path_factory.mktemp("bad")
    src = toy_mead_tiny / "W001" / "video" / "front" / "neutral" / "level_1" / "001.mp4"
    frames = np.stack(list(iter_frames(src)))
    audio = read_audio(src)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, frames.shape, dtype=np.uint8)
    write_video(folder / "odd_size.mp4", frames[:, :151, :191], 25, audio)
    write_video(folder / "no_audio.mp4", frames, 25)
    write_video(folder / "no_face.mp4", noise[:30], 25, audio[: 30 * 640])
    partial = np.concatenate([frames[:15], noise[15:60]])
    write_video(folder / "few_faces.mp4", partial, 25, audio[: 60 * 640])
    write_video(folder / "too_short.mp4", frames[:5], 25, audio[: 5 * 640])
    write_video(folder / "slow_fps.mp4", frames[:30], 5, audio[: 30 * 3200])
    (folder / "broken.mp4").write_bytes(b"\x00\x01" * 500)
    return folder


def test_bad_inputs_give_clear_reasons_and_leave_nothing_half_done(
    bad_inputs, processed_tiny, tmp_path, python_exe, python_env
):
    out = tmp_path / "out"
    basis = processed_tiny / "face_model_mesh.npz"
    proc = run_module(
        python_exe, python_env, "preprocessing.run", bad_inputs, "test", f"out_dir={out}", f"basis_file={basis}"
    )
    expected = {
        "broken": "not a readable video",
        "no_face": "no face found in any frame",
        "few_faces": "face found in only",
        "too_short": "shorter than one window",
        "slow_fps": "frame rate 5.000 fps is outside",
    }
    for name, reason in expected.items():
        line = next((ln for ln in proc.stdout.splitlines() if f"FAILED {name}:" in ln), "")
        assert reason in line, f"{name}: {line!r}\n{proc.stdout}"
        assert not (out / name).exists()
    Clip(out / "odd_size").validate()
    # no audio track: fine for editing (test mode) -- silence, and the clip says so
    silent = Clip(out / "no_audio")
    silent.validate()
    assert not silent.audio().any() and "none" in silent.meta.backends["audio"]
    assert sorted(c["dir"] for c in json.loads((out / "clips.json").read_text())["clips"]) == ["no_audio", "odd_size"]
    proc = run_module(
        python_exe,
        python_env,
        "preprocessing.run",
        bad_inputs / "no_audio.mp4",
        "train",
        f"out_dir={tmp_path / 'na'}",
        check=False,
    )
    assert proc.returncode == 2 and "has no audio track" in proc.stderr  # training needs the speech
    # Nothing usable at all: non-zero exit.
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "broken.mp4").write_bytes(b"junk")
    proc = run_module(
        python_exe,
        python_env,
        "preprocessing.run",
        only_bad,
        "test",
        f"out_dir={tmp_path / 'o2'}",
        f"basis_file={basis}",
        check=False,
    )
    assert proc.returncode == 1 and "FAILED broken" in proc.stdout
    proc = run_module(python_exe, python_env, "preprocessing.run", tmp_path / "missing", "test", check=False)
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr


def test_two_shards_make_exactly_one_run(processed_tiny, toy_mead_tiny, tmp_path, python_exe, python_env):
    basis = processed_tiny / "face_model_mesh.npz"
    args = [toy_mead_tiny, "reference", f"basis_file={basis}", "num_workers=1"]
    for k in (0, 1):
        run_module(
            python_exe,
            python_env,
            "preprocessing.run",
            *args,
            f"out_dir={tmp_path / 'sharded'}",
            "num_shards=2",
            f"shard_index={k}",
        )
    run_module(python_exe, python_env, "preprocessing.run", *args, f"out_dir={tmp_path / 'single'}")
    sharded, single = clip_dirs(tmp_path / "sharded"), clip_dirs(tmp_path / "single")
    assert [d.relative_to(tmp_path / "sharded") for d in sharded] == [
        d.relative_to(tmp_path / "single") for d in single
    ]
    for a, b in zip(sharded, single, strict=True):
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        np.testing.assert_array_equal(np.load(a / FACE_FILE)["expr"], np.load(b / FACE_FILE)["expr"])
    index = json.loads((tmp_path / "sharded" / "clips.json").read_text())
    assert len(index["clips"]) == 6 and index["mode"] == "reference"


def test_list_clips_prints_what_the_demo_selects(tmp_path, capsys):
    """Sorted distinct values of a field over the selected clips; per_actor keeps each actor's first/last dir."""

    def entry(actor, emotion, clip_id, split):
        return {
            "dir": f"{actor}/{emotion}/level_1/{clip_id}",
            "actor": actor,
            "emotion": emotion,
            "clip_id": clip_id,
            "split": split,
        }

    clips = [
        entry("W002", "neutral", "005", "test"),
        entry("W001", "neutral", "005", "test"),
        entry("W001", "neutral", "004", "test"),
        entry("W001", "happy", "006", "test"),
        entry("W001", "neutral", "006", "train"),
        {"dir": "video", "actor": None, "emotion": None, "clip_id": None, "split": "train"},
    ]
    write_clip_index(tmp_path, "train", "mesh", "face_model_mesh.npz", clips)

    def listed(*args: str) -> list[str]:
        list_clips_main([str(tmp_path), *args])
        return capsys.readouterr().out.splitlines()

    held_out = ("split=test", "emotion=neutral")
    assert listed(*held_out, "field=actor") == ["W001", "W002"]
    assert listed(*held_out, "actor=W001", "per_actor=last") == ["W001/neutral/level_1/005"]
    assert listed(*held_out, "per_actor=last") == ["W001/neutral/level_1/005", "W002/neutral/level_1/005"]
    assert listed("--split", "test", "--emotion", "neutral", "--per-actor", "first") == [
        "W001/neutral/level_1/004",
        "W002/neutral/level_1/005",
    ]
    assert listed("field=actor") == ["W001", "W002"]  # an unset actor is left out
    assert listed() == sorted(c["dir"] for c in clips)
    with pytest.raises(SystemExit) as exit_info:
        list_clips_main([str(tmp_path), "field=sentence"])
    assert exit_info.value.code == 2 and "field" in capsys.readouterr().err


def test_a_50_px_face_in_a_1080p_frame_is_found_on_tiles(toy_mead_tiny):
    """The full-range detector sees a 1080p frame at 192 px: a ~50 px face is a few pixels there and it finds
    nothing; on overlapping tiles it finds the face, and the landmarks land where the face is."""
    import cv2

    from preprocessing.mediapipe_mesh import QuietFaceFinder
    from preprocessing.tracking import FaceTracker

    video = toy_mead_tiny / "W001" / "video" / "front" / "neutral" / "level_1" / "001.mp4"
    frames = list(iter_frames(video))[:8]
    side, x0, y0 = 115, 300, 800  # the toy face is ~0.44 of its frame: ~50 px here
    big, small = [], FaceTracker(max_faces=1)
    for f in frames:
        canvas = np.full((1080, 1920, 3), 90, np.uint8)
        canvas[y0 : y0 + side, x0 : x0 + side] = cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA)
        big.append(canvas)
        small.add(f)
    finder = QuietFaceFinder()
    try:
        assert finder._detect(big[0], 0, 0) == []  # not on the whole frame
        (box,) = finder.boxes(big[0])  # on the tiles, once
    finally:
        finder.close()
    assert x0 <= box[0] < box[2] <= x0 + side and y0 <= box[1] < box[3] <= y0 + side
    tracker = FaceTracker(max_faces=2)
    for canvas in big:
        tracker.add(canvas)
    got, ref = tracker.finish(), small.finish()
    assert got.valid.all()
    width = got.landmarks[:, :, 0].max(1) - got.landmarks[:, :, 0].min(1)
    assert 40 < width.mean() < 60
    expected = ref.landmarks[:, :, :2] * (side / frames[0].shape[0]) + [x0, y0]
    assert np.linalg.norm(got.landmarks[:, :, :2] - expected, axis=-1).mean() < 0.05 * width.mean()


def test_a_small_face_in_a_large_frame_is_found(processed_tiny, toy_mead_tiny, tmp_path):
    """A ~150 px face in a 1920x1080 frame (FaceMesh on the whole frame finds none): the full-range detector
    finds it, FaceMesh runs on a crop around it, and the landmarks land where the face is."""
    import cv2

    from common.config import load_config
    from preprocessing.run import PreprocessConfig
    from preprocessing.run import run as preprocess
    from preprocessing.tracking import FaceTracker

    video = toy_mead_tiny / "W001" / "video" / "front" / "neutral" / "level_1" / "001.mp4"
    frames = list(iter_frames(video))[:20]
    side, x0, y0 = 300, 1300, 600
    big = []
    for f in frames:
        canvas = np.full((1080, 1920, 3), 90, np.uint8)
        canvas[y0 : y0 + side, x0 : x0 + side] = cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC)
        big.append(canvas)
    small, large = FaceTracker(max_faces=1), FaceTracker(max_faces=2)
    for f, b in zip(frames, big, strict=True):
        small.add(f)
        large.add(b)
    ref, got = small.finish(), large.finish()
    assert got.valid.all()
    expected = ref.landmarks[:, :, :2] * (side / frames[0].shape[0]) + [x0, y0]
    width = got.landmarks[:, :, 0].max(1) - got.landmarks[:, :, 0].min(1)
    assert 100 < width.mean() < 200  # the case this is for
    assert np.linalg.norm(got.landmarks[:, :, :2] - expected, axis=-1).mean() < 0.02 * width.mean()
    # and the whole preprocessing of such a video gives a clip (it stopped with "no face found" before)
    path = tmp_path / "wide.mp4"
    write_video(path, big, 25.0, audio=np.zeros(16000 * 20 // 25, np.float32))
    out = tmp_path / "out"
    basis = str(processed_tiny / "face_model_mesh.npz")
    overrides = [("input", str(path)), ("mode", "test"), ("out_dir", str(out)), ("basis_file", basis)]
    cfg = load_config(PreprocessConfig, overrides=overrides)
    assert preprocess(cfg, cfg.input, cfg.mode).counts["ok"] == 1
    clip = Clip(out / "wide")
    clip.validate()
    assert clip.meta.frame_width == 1920 and clip.track()["valid"].all()


def test_train_mode_never_overwrites_a_given_basis(processed_tiny, toy_mead_tiny, tmp_path, python_exe, python_env):
    """basis_file= pointing at another dataset's face model in train mode: one clear line, the file untouched
    (train mode used to refit it in place, silently breaking every run trained with it)."""
    basis = tmp_path / "theirs.npz"
    with np.load(processed_tiny / "face_model_mesh.npz") as z:
        arrays = {k: z[k] for k in z.files} | {"config_hash": np.array("fitted-elsewhere")}
    np.savez(basis, **arrays)  # a valid face model fitted on other clips
    before = basis.read_bytes()
    video = toy_mead_tiny / "W001" / "video" / "front" / "neutral" / "level_1" / "001.mp4"  # one clip: fast
    proc = run_module(
        python_exe,
        python_env,
        "preprocessing.run",
        video,
        "train",
        f"out_dir={tmp_path / 'o'}",
        f"basis_file={basis}",
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "exists and was fitted on other clips" in proc.stderr and "Traceback" not in proc.stderr
    assert basis.read_bytes() == before


def test_clips_record_their_face_model_and_edits_refuse_another(processed_tiny):
    """Each clip records the face model its parameters were fitted with; a manipulator trained on another one
    refuses it with one line naming both (its coefficients would mean something else)."""
    from types import SimpleNamespace

    from common.errors import UserError
    from manipulator.data import dataset_basis_hash
    from manipulator.edit import Editor

    clip = Clip(sorted(processed_tiny.glob("W001/neutral/level_*/*"))[0])
    ours = dataset_basis_hash(processed_tiny)
    assert clip.meta.backends["face_model_basis"] == ours
    basis = str(processed_tiny / "face_model_mesh.npz")
    same = SimpleNamespace(basis_hash=ours, checkpoint="m.pt", data_dir=processed_tiny, basis_file=basis)
    Editor.check_clip(same, clip)  # the same face model: fine
    other = SimpleNamespace(basis_hash="0123456789abcdef", checkpoint="m.pt", data_dir=processed_tiny, basis_file=basis)
    with pytest.raises(UserError, match=f"fitted with face model {ours}.*trained on face model 0123456789abcdef"):
        Editor.check_clip(other, clip)
    from renderer.neural import NeuralRenderer  # a neural renderer decodes with its own data's face model: same rule

    NeuralRenderer.check_clip(same, clip)
    with pytest.raises(UserError, match="render it with --run warp"):
        NeuralRenderer.check_clip(other, clip)


def test_two_people_in_frame_one_subject_throughout(toy_mead_tiny):
    """Two faces in every frame: the larger one is the subject from the first frame on and the track never
    jumps to the other one (also when the subject is briefly covered)."""
    import cv2

    from preprocessing.tracking import FaceTracker

    video = toy_mead_tiny / "W001" / "video" / "front" / "neutral" / "level_1" / "001.mp4"
    frames = list(iter_frames(video))[:24]
    h, w = frames[0].shape[:2]
    tracker = FaceTracker(max_faces=2)
    for t, f in enumerate(frames):
        other = cv2.resize(f[:, ::-1], (int(w * 0.8), int(h * 0.8)), interpolation=cv2.INTER_AREA)
        canvas = np.full((h, 2 * w, 3), 120, np.uint8)
        canvas[:, :w] = f if not 10 <= t < 12 else 120  # the subject disappears for two frames
        y0 = (h - other.shape[0]) // 2
        canvas[y0 : y0 + other.shape[0], w + 10 : w + 10 + other.shape[1]] = other
        tracker.add(canvas)
    raw = tracker.finish()
    assert raw.valid.sum() == len(frames) - 2 and not raw.valid[10:12].any()  # lost, not swapped
    assert (raw.landmarks[raw.valid][:, :, 0] < w).all()  # always the left (larger) face


def test_a_killed_long_video_resumes_inside_itself(processed_tiny, toy_mead_tiny, tmp_path, monkeypatch):
    """One long video is tracked in blocks and cropped frame by frame, each kept when done: a run killed while
    tracking resumes at its first missing block, one killed while cropping at its first missing frame, and the
    clip equals an uninterrupted run's (blocks of 16 frames here, 1000 in use)."""
    from common.config import load_config
    from preprocessing import clip_pass
    from preprocessing.run import PreprocessConfig
    from preprocessing.run import run as preprocess

    class Killed(BaseException):  # not an Exception: nothing catches it or cleans up, as with kill -9
        pass

    monkeypatch.setattr(clip_pass, "TRACK_BLOCK", 16)
    video = toy_mead_tiny / "W001" / "video" / "front" / "neutral" / "level_1" / "001.mp4"
    basis = str(processed_tiny / "face_model_mesh.npz")

    def preprocess_to(out: Path):
        overrides = [("input", str(video)), ("mode", "test"), ("out_dir", str(out)), ("basis_file", basis)]
        cfg = load_config(PreprocessConfig, overrides=overrides)
        return preprocess(cfg, cfg.input, cfg.mode)

    preprocess_to(tmp_path / "whole")
    whole = Clip(tmp_path / "whole" / "001")
    n = whole.n_frames
    assert n > 40

    def counting(module, name: str, counts: dict, die_after: int | None = None):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            if counts[name] == die_after:
                raise Killed
            counts[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counts = {"_save_block": 0, "crop_frame": 0}
    counting(clip_pass, "_save_block", counts, die_after=2)  # killed while tracking the third block
    with pytest.raises(Killed):
        preprocess_to(tmp_path / "resumed")
    blocks = sorted(p.name for p in (tmp_path / "resumed" / "001" / ".tracking").glob("*.npz"))
    assert blocks == ["00000.npz", "00001.npz"]
    monkeypatch.undo()
    monkeypatch.setattr(clip_pass, "TRACK_BLOCK", 16)
    added = {"add": 0}
    counting(clip_pass.FaceTracker, "add", added)
    counting(clip_pass, "crop_frame", counts, die_after=20)  # killed while cropping frame 20
    with pytest.raises(Killed):
        preprocess_to(tmp_path / "resumed")
    assert added["add"] == n - 32  # tracking resumed at frame 32
    monkeypatch.undo()
    monkeypatch.setattr(clip_pass, "TRACK_BLOCK", 16)
    counts["crop_frame"] = 0
    counting(clip_pass, "crop_frame", counts)
    preprocess_to(tmp_path / "resumed")
    assert counts["crop_frame"] == n - 20  # cropping resumed at frame 20
    clip = Clip(tmp_path / "resumed" / "001")
    clip.validate()
    assert not (clip.dir / ".tracking").exists()
    for key, value in whole.track().items():
        np.testing.assert_array_equal(clip.track()[key], value, err_msg=key)
    for key, value in whole.face().items():
        np.testing.assert_array_equal(clip.face()[key], value, err_msg=key)
    for t in range(n):
        assert clip.faces.path(t).read_bytes() == whole.faces.path(t).read_bytes()
        assert clip.masks.path(t).read_bytes() == whole.masks.path(t).read_bytes()


def test_landmarks_truth_tracks_with_the_generators_points(toy_one, processed_tiny, tmp_path, python_exe, python_env):
    """landmarks=truth: the clip's tracked x, y are toy MEAD's true points (FaceMesh under-reads brows and lids);
    a video without a ground truth file is refused in one line."""
    out, basis = tmp_path / "truth", f"basis_file={processed_tiny / 'face_model_mesh.npz'}"
    run_module(python_exe, python_env, "preprocessing.run", toy_one, "test", f"out_dir={out}", basis, "landmarks=truth")
    (clip_dir,) = clip_dirs(out)
    actor, emotion, level, name = clip_dir.parts[-4:]
    truth = np.load(toy_one / actor / "ground_truth" / emotion / level / f"{name}.npz")["landmarks"]
    track = read_arrays(clip_dir / TRACK_FILE, TRACK_SPEC, Clip(clip_dir).n_frames)
    valid = track["valid"]
    assert valid.mean() > 0.9
    in_frame = np.stack(
        [apply_affine(m.astype(np.float64), p) for m, p in zip(track["crop_to_frame"], track["landmarks"], strict=True)]
    )
    np.testing.assert_allclose(in_frame[valid], truth[valid], atol=1e-2)
    assert Clip(clip_dir).meta.backends["landmarks"] == "truth"
    # a video of no toy set has no truth to use
    video = next(toy_one.glob("*/video/front/*/level_*/*.mp4"))
    lone = tmp_path / "lone.mp4"
    lone.write_bytes(video.read_bytes())
    proc = run_module(
        python_exe,
        python_env,
        "preprocessing.run",
        lone,
        "test",
        f"out_dir={tmp_path / 'lone'}",
        basis,
        "landmarks=truth",
        check=False,
    )
    assert proc.returncode != 0 and "landmarks=truth needs toy MEAD's ground truth" in proc.stdout + proc.stderr
