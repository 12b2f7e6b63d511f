"""Video and audio I/O through PyAV: true fps and frame count, 16 kHz mono audio, H.264 + AAC mp4 output.

Audio read from a video is aligned to the first video frame: sample 0 is the audio at the presentation
time of frame 0 (leading audio is trimmed, a late audio start is padded with silence). This is what makes
`common.formats.frame_to_sample` hold for clips cut from real files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from common.errors import MediaError
from common.formats import AUDIO_SR, as_fraction, frame_to_sample
from common.fsutil import atomic_path


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: Fraction
    n_frames: int
    width: int
    height: int
    has_audio: bool
    audio_sr: int | None
    turns: int = 0  # quarter turns counterclockwise that make the coded frames upright (rotation metadata)

    @property
    def duration_s(self) -> float:
        return self.n_frames / float(self.fps)


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError(f"{path}: not a readable video/audio file ({exc})") from None


def _video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise MediaError(f"{path}: has no video stream")
    return container.streams.video[0]


def _turns(frame: av.VideoFrame) -> int:
    """Quarter turns counterclockwise (np.rot90's k) that show a decoded frame upright: its display matrix
    (a phone's "rotate" metadata; PyAV's `rotation` is counterclockwise degrees)."""
    return round(frame.rotation / 90) % 4


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, exact frame count (by demuxing; only the first frame is decoded, for the rotation), the
    upright (displayed) size and audio presence."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise MediaError(f"{path}: cannot determine the frame rate")
        try:
            turns = next((_turns(f) for f in container.decode(stream)), 0)
            container.seek(0)
            n_frames = sum(1 for p in container.demux(stream) if p.size > 0)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: corrupt video stream ({exc})") from None
        audio = container.streams.audio
        width, height = stream.codec_context.width, stream.codec_context.height
        return VideoInfo(
            path=str(path),
            fps=as_fraction(Fraction(rate.numerator, rate.denominator)),
            n_frames=n_frames,
            width=height if turns % 2 else width,
            height=width if turns % 2 else height,
            has_audio=bool(audio),
            audio_sr=audio[0].codec_context.sample_rate if audio else None,
            turns=turns,
        )


def iter_frames(path: str | Path, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Decode frames [start, stop) as RGB uint8 (H, W, 3), in presentation order, upright (rotation metadata
    applied, as players show them)."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                if stop is not None and index >= stop:
                    break
                if index >= start:
                    image = frame.to_ndarray(format="rgb24")
                    turns = _turns(frame)
                    yield np.ascontiguousarray(np.rot90(image, turns)) if turns else image
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: decoding failed at frame {index} ({exc})") from None


def read_frames(path: str | Path, start: int = 0, stop: int | None = None) -> np.ndarray:
    """All frames [start, stop) stacked: (T, H, W, 3) uint8 RGB."""
    frames = list(iter_frames(path, start, stop))
    if not frames:
        raise MediaError(f"{path}: no frames decoded in range [{start}, {stop})")
    return np.stack(frames)


def read_audio(path: str | Path, sr: int = AUDIO_SR, match_video: bool = True) -> np.ndarray:
    """The first audio track as mono float32 (N,) at `sr`, aligned so that sample 0 is at video frame 0.

    With `match_video` (and a video stream present) the result has exactly the video's length,
    `frame_to_sample(n_frames)` samples: encoder padding after the last frame is cut, a short track is
    padded with silence.
    """
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: has no audio track (the pipeline needs the speech audio)")
        astream = container.streams.audio[0]
        vstream = container.streams.video[0] if container.streams.video else None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        n_video_packets = 0
        streams = [astream] + ([vstream] if vstream is not None else [])
        try:
            for packet in container.demux(*streams):
                if packet.stream.type == "video":
                    n_video_packets += packet.size > 0
                    continue
                for frame in packet.decode():
                    if first_time is None and frame.pts is not None:
                        first_time = float(frame.pts * frame.time_base)
                    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: audio decoding failed ({exc})") from None
        video_start = _stream_start(vstream) if vstream is not None else 0.0
        fps = as_fraction(vstream.average_rate) if vstream is not None and vstream.average_rate else None
    if not chunks:
        raise MediaError(f"{path}: the audio track is empty")
    samples = np.concatenate(chunks).astype(np.float32)
    offset = round(((first_time or 0.0) - video_start) * sr)
    if offset > 0:  # audio starts after the first frame: pad the gap with silence
        samples = np.concatenate([np.zeros(offset, np.float32), samples])
    elif offset < 0:  # audio starts before the first frame: drop the lead-in
        samples = samples[-offset:]
    if match_video and fps is not None:
        want = frame_to_sample(n_video_packets, fps, sr)
        samples = np.pad(samples[:want], (0, max(0, want - len(samples))))
    return samples


def _stream_start(stream: av.stream.Stream) -> float:
    if stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


class VideoWriter:
    """Encode RGB uint8 frames (H, W, 3) one at a time as H.264 (yuv420p) mp4, with mono AAC audio if given:

        with VideoWriter(path, fps, audio_from=source) as out:
            for frame in frames:
                out.write(frame)

    `audio_from`: copy the first audio stream of that media file instead, packet for packet (no re-encoding),
    keeping its timing relative to that file's first video frame; frame 0 here is frame 0 there. Odd frame
    sizes are padded by one edge pixel (yuv420p needs even sizes). The file appears only when the block ends
    without an error (atomic rename); an error or no frame at all leaves nothing behind.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float | Fraction,
        audio: np.ndarray | None = None,
        audio_sr: int = AUDIO_SR,
        crf: int = 18,
        preset: str = "medium",
        audio_from: str | Path | None = None,
    ):
        if audio is not None and audio_from is not None:
            raise ValueError("give audio samples or audio_from, not both")
        self.path, self.fps, self.audio_sr, self.crf, self.preset = path, as_fraction(fps), audio_sr, crf, preset
        if audio is not None:
            audio = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)
            if audio.ndim != 1:
                raise MediaError(f"{path}: audio must be mono (N,), got shape {audio.shape}")
        self.audio, self.audio_from = audio, audio_from
        self.n = 0

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self.container = av.open(str(tmp), mode="w", format="mp4")
            self.vstream = self.container.add_stream("libx264", rate=self.fps)
            self.vstream.pix_fmt = "yuv420p"
            self.vstream.options = {"crf": str(self.crf), "preset": self.preset}
            self.feeder = _AudioFeeder(self.container, self.audio, self.audio_sr) if self.audio is not None else None
            self.copier = _AudioCopier(self.container, self.audio_from) if self.audio_from is not None else None
        except BaseException as exc:
            self._abort(exc)
            raise
        return self

    def write(self, frame: np.ndarray) -> None:
        frame = _even(np.asarray(frame))
        if self.n == 0:
            self.vstream.width, self.vstream.height = frame.shape[1], frame.shape[0]
        elif (frame.shape[1], frame.shape[0]) != (self.vstream.width, self.vstream.height):
            raise MediaError(f"{self.path}: frame {self.n} has size {frame.shape[:2]}, earlier frames were different")
        vframe = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vframe.pts = self.n
        vframe.time_base = 1 / self.fps
        self.container.mux(self.vstream.encode(vframe))
        self.n += 1
        if self.feeder is not None:  # keep audio interleaved with video so the muxer never buffers a lot
            self.feeder.feed_until(frame_to_sample(self.n, self.fps, self.audio_sr))
        if self.copier is not None:
            self.copier.copy_until(float(self.n / self.fps))

    def _finish(self) -> None:
        if self.n == 0:
            raise MediaError(f"{self.path}: no frames to write")
        self.container.mux(self.vstream.encode(None))
        if self.feeder is not None:
            self.feeder.feed_until(len(self.audio))
            self.feeder.flush()
        if self.copier is not None:
            self.copier.copy_until(float("inf"))

    def _abort(self, exc: BaseException) -> None:
        for closer in (getattr(self, "copier", None), getattr(self, "container", None)):
            if closer is not None:  # already failing: the original error is what matters
                with contextlib.suppress(Exception):
                    closer.close()
        self._atomic.__exit__(type(exc), exc, exc.__traceback__)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            try:
                self._finish()
            except BaseException as err:
                self._abort(err)
                raise
            if self.copier is not None:
                self.copier.close()
            self.container.close()
            self._atomic.__exit__(None, None, None)
        else:
            self._abort(exc)


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    audio_sr: int = AUDIO_SR,
    crf: int = 18,
    preset: str = "medium",
    audio_from: str | Path | None = None,
) -> int:
    """Encode RGB uint8 frames (H, W, 3) as H.264 mp4 (see `VideoWriter`). Returns the number of frames written."""
    with VideoWriter(path, fps, audio, audio_sr, crf, preset, audio_from) as out:
        for frame in frames:
            out.write(frame)
    return out.n


def concat_videos(parts: list[Path], path: str | Path, audio_from: str | Path | None = None) -> int:
    """Join video-only mp4 parts that VideoWriter wrote with the same settings (each starts with a keyframe)
    into `path`, packet for packet (no re-encoding), with the first audio stream of `audio_from` copied as
    VideoWriter copies it. Atomic. Returns the number of video frames written."""
    if not parts:
        raise MediaError(f"{path}: no parts to join")
    n = 0
    with atomic_path(path) as tmp, contextlib.ExitStack() as stack:
        out = stack.enter_context(av.open(str(tmp), mode="w", format="mp4"))
        with _open(parts[0]) as first:
            vstream = out.add_stream_from_template(_video_stream(first, parts[0]))
        copier = _AudioCopier(out, audio_from) if audio_from is not None else None
        if copier is not None:
            stack.callback(copier.close)
        offset = 0  # the parts' time base: where the current part starts
        for part in parts:
            with _open(part) as inp:
                stream = _video_stream(inp, part)
                if stream.time_base != vstream.time_base:
                    raise MediaError(f"{part}: time base {stream.time_base}, the first part's {vstream.time_base}")
                end = offset
                for pkt in inp.demux(stream):
                    if pkt.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    if pkt.duration <= 0:
                        raise MediaError(f"{part}: a packet without duration; cannot join it")
                    pkt.pts += offset
                    pkt.dts += offset
                    end = max(end, pkt.pts + pkt.duration)
                    seconds = float(pkt.pts * stream.time_base)
                    pkt.stream = vstream
                    out.mux(pkt)
                    n += 1
                    if copier is not None:
                        copier.copy_until(seconds)
                offset = end
        if copier is not None:
            copier.copy_until(float("inf"))
    return n


class _AudioCopier:
    """Copies the packets of a file's first audio stream into the output (stream copy, no re-encoding)."""

    def __init__(self, container, source: str | Path):
        self.src = _open(source)
        if not self.src.streams.audio:
            self.src.close()
            raise MediaError(f"{source}: has no audio track to copy")
        self.istream = self.src.streams.audio[0]
        self.ostream = container.add_stream_from_template(self.istream)
        self.container = container
        tb = self.istream.time_base
        video_start = _stream_start(self.src.streams.video[0]) if self.src.streams.video else 0.0
        self.shift = round(Fraction(video_start).limit_denominator(1 << 30) / tb)  # in audio time-base ticks
        self.tb = tb
        self.packets = self.src.demux(self.istream)
        self.pending = None

    def copy_until(self, seconds: float) -> None:
        while True:
            pkt = self.pending if self.pending is not None else next(self.packets, None)
            self.pending = None
            if pkt is None:
                return
            if pkt.pts is None or pkt.size == 0:
                continue
            if float((pkt.pts - self.shift) * self.tb) >= seconds:
                self.pending = pkt
                return
            pkt.pts -= self.shift
            if pkt.dts is not None:
                pkt.dts -= self.shift
            pkt.stream = self.ostream
            self.container.mux(pkt)

    def close(self) -> None:
        self.src.close()


class _AudioFeeder:
    """Encodes mono float audio into an AAC stream in fixed-size chunks, on demand."""

    def __init__(self, container, audio: np.ndarray, sr: int, chunk: int = 1024):
        self.container, self.audio, self.sr, self.chunk = container, audio, sr, chunk
        self.stream = container.add_stream("aac", rate=sr, layout="mono")
        self.pos = 0

    def feed_until(self, stop: int) -> None:
        stop = min(stop, len(self.audio))
        while self.pos < stop:
            piece = np.ascontiguousarray(self.audio[None, self.pos : self.pos + self.chunk])
            aframe = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
            aframe.sample_rate = self.sr
            aframe.pts = self.pos
            aframe.time_base = Fraction(1, self.sr)
            self.container.mux(self.stream.encode(aframe))
            self.pos += piece.shape[1]

    def flush(self) -> None:
        self.container.mux(self.stream.encode(None))


def _even(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise MediaError(f"frames must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame
