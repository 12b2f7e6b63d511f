from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from common.errors import MediaError
from common.formats import frame_to_sample
from common.video import iter_frames, probe_video, read_audio, read_frames, write_video


def moving_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frames whose mean brightness encodes the index (robust to H.264 loss)."""
    return np.stack([np.full((h, w, 3), 20 + 4 * i, np.uint8) for i in range(n)])


def tone_burst(n_samples: int, sr: int, start: int, length: int = 1600) -> np.ndarray:
    audio = np.zeros(n_samples, np.float32)
    t = np.arange(length) / sr
    audio[start : start + length] = 0.6 * np.sin(2 * np.pi * 440 * t)
    return audio


@pytest.mark.parametrize("fps", [25, Fraction(30000, 1001)])
def test_round_trip_frames_fps_and_audio_duration(tmp_path, fps):
    n = 50
    frames = moving_frames(n)
    audio = tone_burst(frame_to_sample(n, fps), 16000, start=frame_to_sample(20, fps))
    path = tmp_path / "clip.mp4"
    assert write_video(path, frames, fps, audio) == n
    info = probe_video(path)
    assert info.n_frames == n and info.fps == fps and (info.width, info.height) == (64, 48)
    assert info.has_audio and info.audio_sr == 16000
    back = read_frames(path)
    assert back.shape == frames.shape
    np.testing.assert_allclose(back.mean(axis=(1, 2, 3)), frames.mean(axis=(1, 2, 3)), atol=2.0)
    decoded = read_audio(path)
    one_frame = 16000 / float(fps)
    assert abs(len(decoded) - n * one_frame) <= one_frame
    raw = read_audio(path, match_video=False)  # without trimming, AAC padding stays within one AAC frame
    assert 0 <= len(raw) - len(decoded) <= 1024 + one_frame


def test_audio_is_aligned_with_frames(tmp_path):
    """A burst placed at frame 20 must decode at frame 20 (no encoder-delay offset, NED's ~67 ms bug)."""
    fps, sr, n = 30, 16000, 60
    start = frame_to_sample(20, fps)
    write_video(tmp_path / "a.mp4", moving_frames(n), fps, tone_burst(frame_to_sample(n, fps), sr, start))
    decoded = read_audio(tmp_path / "a.mp4")
    onset = int(np.argmax(np.abs(decoded) > 0.15))
    assert abs(onset - start) < 0.005 * sr  # within 5 ms


def test_resamples_other_rates_to_16k(tmp_path):
    fps, n = 25, 25
    audio44 = tone_burst(44100, 44100, start=22050)
    write_video(tmp_path / "b.mp4", moving_frames(n), fps, audio44, audio_sr=44100)
    assert probe_video(tmp_path / "b.mp4").audio_sr == 44100
    decoded = read_audio(tmp_path / "b.mp4", sr=16000)
    assert len(decoded) == 16000
    assert abs(int(np.argmax(np.abs(decoded) > 0.15)) - 8000) < 80


def test_iter_frames_range_and_odd_size(tmp_path):
    frames = moving_frames(10, h=31, w=45)
    write_video(tmp_path / "c.mp4", frames, 25)
    info = probe_video(tmp_path / "c.mp4")
    assert (info.width, info.height) == (46, 32)  # padded to even for yuv420p
    part = list(iter_frames(tmp_path / "c.mp4", 3, 6))
    assert len(part) == 3
    np.testing.assert_allclose([f[:31, :45].mean() for f in part], frames[3:6].mean(axis=(1, 2, 3)), atol=2.0)


def test_clear_errors(tmp_path):
    write_video(tmp_path / "silent.mp4", moving_frames(5), 25)
    with pytest.raises(MediaError, match=r"silent\.mp4: has no audio track"):
        read_audio(tmp_path / "silent.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError, match=r"junk\.mp4: not a readable video"):
        probe_video(tmp_path / "junk.mp4")
    with pytest.raises(MediaError, match="file not found"):
        read_frames(tmp_path / "missing.mp4")
    with pytest.raises(MediaError, match="RGB uint8"):
        write_video(tmp_path / "bad.mp4", [np.zeros((8, 8), np.uint8)], 25)
    assert not (tmp_path / "bad.mp4").exists() and not list(tmp_path.glob(".bad*"))


@pytest.mark.parametrize("fps", [25, Fraction(2213, 100)])
def test_parts_join_into_one_video_with_the_sources_audio(tmp_path, fps):
    """concat_videos: parts written separately decode as one video with every frame in order at the same rate,
    and the audio is the source's (copied, so it decodes equal)."""
    from common.video import VideoWriter, concat_videos

    n = 37
    frames = moving_frames(n)
    audio = tone_burst(frame_to_sample(n, fps), 16000, start=frame_to_sample(9, fps))
    write_video(tmp_path / "source.mp4", frames, fps, audio)
    parts = []
    for k, (a, b) in enumerate([(0, 16), (16, 32), (32, n)]):
        parts.append(tmp_path / f"part{k}.mp4")
        with VideoWriter(parts[-1], fps, preset="veryfast") as out:
            for f in frames[a:b]:
                out.write(f)
    assert concat_videos(parts, tmp_path / "joined.mp4", audio_from=tmp_path / "source.mp4") == n
    info = probe_video(tmp_path / "joined.mp4")
    assert info.n_frames == n and info.fps == fps and info.has_audio
    means = read_frames(tmp_path / "joined.mp4").mean(axis=(1, 2, 3))
    np.testing.assert_allclose(means, frames.mean(axis=(1, 2, 3)), atol=2.0)  # every frame, in order
    np.testing.assert_array_equal(read_audio(tmp_path / "joined.mp4"), read_audio(tmp_path / "source.mp4"))


def test_rotation_metadata_gives_upright_frames(tmp_path):
    """A phone video: landscape-coded frames with a display matrix saying "turn 90 degrees clockwise" (made by
    writing the matrix into the mp4's track header). Frames decode upright and the probed size is the shown one."""
    import struct

    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:12, :16] = (255, 0, 0)  # a red block top-left in the coded frame
    write_video(tmp_path / "coded.mp4", np.stack([frame] * 6), 25)
    data = bytearray((tmp_path / "coded.mp4").read_bytes())
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))
    assert at > 0
    data[at : at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # 90 deg clockwise
    (tmp_path / "phone.mp4").write_bytes(bytes(data))
    info = probe_video(tmp_path / "phone.mp4")
    assert (info.width, info.height, info.n_frames) == (48, 64, 6)
    shown = read_frames(tmp_path / "phone.mp4")
    assert shown.shape == (6, 64, 48, 3)
    red = shown[0, :, :, 0] > 128
    assert red[:16, -12:].mean() > 0.9 and red.mean() < 0.08  # turned clockwise: top-left -> top-right
