"""Blend a rendered edit back into the source video and write the mp4 with the original audio:

  python -m postprocessing.run <clip_dir> --edit happy [--blend pyramid|copy_paste|poisson] [--side-by-side]
                               [--out edited.mp4]

Per frame t (every frame of the source, re-decoded from the source video): the rendered aligned face
`edits/<edit>/faces/t` and the clip's face mask `masks/t` are mapped aligned -> crop -> frame with the
clip's own transforms of frame t (track.npz), the mask is soft-eroded, and the face is blended into the
frame (Laplacian pyramid by default). The video is H.264 at the source's exact frame rate and the source's
audio stream is copied without re-encoding, so frame count, duration and A/V sync equal the source's.
Outputs (default): `<clip_dir>/edits/<edit>/video.mp4` and, with --side-by-side, `side_by_side.mp4`.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from common.cli import parse_cli
from common.config import arg, choice
from common.errors import UserError, cli_entry
from common.formats import Clip, is_done
from common.framestore import FrameStore
from common.fsutil import atomic_write_text, remove_stale_temporaries
from common.video import VideoInfo, VideoWriter, concat_videos, iter_frames, probe_video
from facemodel.geometry import aligned_to_frame
from postprocessing.blend import METHODS, blend, soft_erode

FEATHER_AT_256 = 16.0  # soft-erosion ramp in aligned-crop pixels at 256 (NED: kernel 33, threshold 0.8)


def _cv_matrix(m: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Our pixel-centre convention (centre of pixel j at j + 0.5) -> OpenCV's (at j), then shift by the ROI."""
    to_cv = np.array([[1, 0, -0.5 - x0], [0, 1, -0.5 - y0], [0, 0, 1]])
    from_cv = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    return (to_cv @ np.vstack([m, [0, 0, 1]]) @ from_cv)[:2]


class FrameCompositor:
    """Pastes aligned faces into full frames with the clip's transforms and masks."""

    def __init__(self, clip: Clip, method: str = "pyramid", levels: int = 4, feather: float | None = None):
        if method not in METHODS:
            raise UserError(f"unknown blend method {method!r}; choose one of {', '.join(METHODS)}")
        self.clip, self.method, self.levels = clip, method, levels
        self.track = clip.track(keys=["crop_to_frame", "align"])  # the transforms only: long videos
        self.size = clip.meta.crop_size
        self.feather = FEATHER_AT_256 * self.size / 256 if feather is None else feather

    def weight(self, t: int) -> np.ndarray:
        """Soft-eroded aligned mask of frame t, float32 (S, S)."""
        return soft_erode(self.clip.masks.read(t), self.feather)

    def __call__(self, t: int, frame: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame t with `face` (aligned, (S, S, 3) uint8) blended in; also returns the frame-space weight."""
        return paste(frame, face, self.weight(t), aligned_to_frame(self.track, t), self.method, self.levels)


def paste(
    frame: np.ndarray, face: np.ndarray, weight: np.ndarray, m: np.ndarray, method: str = "pyramid", levels: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Warp an aligned face and its soft weight into the frame with `m` (aligned -> frame) and blend them,
    working only on the region the face covers. Returns the new frame and the frame-space weight."""
    h, w = frame.shape[:2]
    s = face.shape[0]
    corners = np.array([[0, 0], [s, 0], [0, s], [s, s]], np.float64) @ m[:, :2].T + m[:, 2]
    pad = 2 ** (levels + 2)
    x0, y0 = (np.floor(corners.min(0)) - pad).astype(int).clip(0, [w, h])
    x1, y1 = (np.ceil(corners.max(0)) + pad).astype(int).clip(0, [w, h])
    weight_full = np.zeros((h, w), np.float32)
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out, weight_full
    mc = _cv_matrix(m, x0, y0)
    size = (int(x1 - x0), int(y1 - y0))
    face_roi = cv2.warpAffine(face, mc, size, flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE)
    weight_roi = np.clip(cv2.warpAffine(weight, mc, size, flags=cv2.INTER_LINEAR, borderValue=0.0), 0.0, 1.0)
    out[y0:y1, x0:x1] = blend(frame[y0:y1, x0:x1], face_roi, weight_roi, method, levels)
    weight_full[y0:y1, x0:x1] = weight_roi
    return out, weight_full


def label(image: np.ndarray, text: str) -> np.ndarray:
    """The frame with `text` in its top-left corner, white on a dark box (readable on any background)."""
    out = image.copy()
    scale = max(0.4, image.shape[0] / 512)
    thickness = max(1, round(scale * 1.5))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(out, (4, 4), (12 + w, 12 + h + base), (0, 0, 0), -1)
    cv2.putText(out, text, (8, 8 + h), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


ENCODE_PRESET = "veryfast"  # x264 preset of edited videos: ~4x faster than "medium" at the same crf


def source_video(clip: Clip) -> tuple[Path, VideoInfo]:
    """The clip's source video and its info, checked against the clip (postprocessing re-reads its frames)."""
    source = Path(clip.meta.source_video)
    if not source.is_file():
        raise UserError(f"{source}: the clip's source video is gone; postprocessing re-reads its frames")
    info = probe_video(source)
    if info.n_frames != clip.n_frames:
        raise UserError(f"{source}: has {info.n_frames} frames, the clip was made from {clip.n_frames}")
    return source, info


def side_by_side_path(out: Path) -> Path:
    """`side_by_side.mp4` beside a `video.mp4`, else `<stem>_side_by_side.mp4`."""
    return out.with_name("side_by_side.mp4" if out.name == "video.mp4" else out.stem + "_side_by_side.mp4")


ENCODE_PART = 1000  # frames per separately encoded part: the unit of resumption of a long edit


def write_frames(
    clip: Clip,
    edited: Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]],
    out: Path,
    side_by_side: bool = False,
    edit: str = "",
    progress: bool = False,
    key: str = "",
) -> dict[str, Path]:
    """Encode (source frame, edited frame) pairs, one per source frame in order (`edited(start)` yields them from
    frame `start` on), as `out` with the source's frame rate and audio (copied), and with `side_by_side` also
    source | edited (labelled `edit`) in the same pass. Frames are encoded in parts of ENCODE_PART frames, kept
    in a hidden folder beside `out` and joined without re-encoding at the end: with `key` (a digest of
    everything the frames are made from) a rerun after a kill continues after the last finished part and writes
    the same file an uninterrupted run writes; without a key, or with another one, it starts over. Returns the
    written paths by kind ("video", "side_by_side"); each appears only when complete."""
    source, info = source_video(clip)
    paths = {"video": out} | ({"side_by_side": side_by_side_path(out)} if side_by_side else {})
    for path in paths.values():
        remove_stale_temporaries(path.parent, path.name)
    n = clip.n_frames
    parts = out.with_name(f".{out.name}.parts")
    done = _finished_parts(parts, key, list(paths))
    n_parts = -(-n // ENCODE_PART)
    pairs = iter(edited(done * ENCODE_PART)) if done < n_parts else iter(())
    with tqdm(
        total=n,
        initial=done * ENCODE_PART,
        desc="render+blend+encode",
        unit="frame",
        disable=not progress,
        mininterval=5,
    ) as bar:
        for k in range(done, n_parts):
            with contextlib.ExitStack() as stack:  # a part appears only when complete
                writers = {
                    kind: stack.enter_context(
                        VideoWriter(parts / f"{kind}_{k:05d}.mp4", info.fps, preset=ENCODE_PRESET)
                    )
                    for kind in paths
                }
                for t in range(k * ENCODE_PART, min((k + 1) * ENCODE_PART, n)):
                    pair = next(pairs, None)
                    if pair is None:
                        raise UserError(f"{out}: {t} edited frames for a clip of {n}")
                    src, frame = pair
                    writers["video"].write(frame)
                    if side_by_side:
                        writers["side_by_side"].write(
                            np.concatenate([label(src, "source"), label(frame, f"edited: {edit}")], 1)
                        )
                    bar.update()
        if next(pairs, None) is not None:
            raise UserError(f"{out}: more edited frames than the clip's {n}")
    audio = source if info.has_audio else None
    for kind, path in paths.items():
        concat_videos([parts / f"{kind}_{k:05d}.mp4" for k in range(n_parts)], path, audio)
    shutil.rmtree(parts)
    return paths


def _finished_parts(parts: Path, key: str, kinds: list[str]) -> int:
    """How many parts an earlier run with this `key` finished (contiguous from part 0); with no key or another
    key the folder starts empty."""
    key_file = parts / "key.txt"
    if key and key_file.is_file() and key_file.read_text() == key:
        remove_stale_temporaries(parts)
        k = 0
        while all((parts / f"{kind}_{k:05d}.mp4").is_file() for kind in kinds):
            k += 1
        return k
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    atomic_write_text(key_file, key)
    return 0


def composited(
    clip: Clip, faces: Iterable[np.ndarray], method: str = "pyramid"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(source frame, frame with the aligned face blended in) for every frame of the clip's source video."""
    source, _ = source_video(clip)
    compositor = FrameCompositor(clip, method)
    for t, (frame, face) in enumerate(zip(iter_frames(source), faces, strict=True)):
        yield frame, compositor(t, frame, face)[0]


def from_frame(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> Callable[[int], Iterator]:
    """`write_frames`'s `edited` for a stream that can only start at frame 0: frames before `start` are made
    and dropped."""
    return lambda start: itertools.islice(pairs, start, None)


def write_edited_video(
    clip: Clip,
    faces: Iterable[np.ndarray],
    out: Path,
    method: str = "pyramid",
    side_by_side: bool = False,
    edit: str = "",
    progress: bool = False,
) -> dict[str, Path]:
    """Blend aligned faces (one per source frame, in order) into the clip's source video -> mp4 with the
    source's audio at `out` (+ the side-by-side video, labelled `edit`). Returns the written paths by kind."""
    return write_frames(clip, from_frame(composited(clip, faces, method)), out, side_by_side, edit, progress)


def postprocess(
    clip: Clip,
    edit: str,
    out: Path | None = None,
    method: str = "pyramid",
    side_by_side: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Blend the rendered `<clip>/edits/<edit>/faces` into the source video -> mp4 (+ side-by-side)."""
    edit_dir = clip.dir / "edits" / edit
    if not is_done(edit_dir, "render"):
        raise UserError(f"{edit_dir}: not rendered yet; run python -m renderer.infer {clip.dir} --edit {edit}")
    faces = FrameStore(edit_dir / "faces", 3)
    faces.validate(clip.n_frames)
    return write_edited_video(clip, faces, out or edit_dir / "video.mp4", method, side_by_side, edit, progress)


@dataclass
class PostprocessConfig:
    clip_dir: str = arg(help="a preprocessed clip dir with a rendered edit")
    edit: str = arg(help="edit name under <clip_dir>/edits/")
    blend: str = choice("pyramid", METHODS, "how the face is blended into the frame")
    side_by_side: bool = arg(False, "also write source | edited")
    out: str = arg("", "output mp4 (default <clip_dir>/edits/<edit>/video.mp4)")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(PostprocessConfig, argv, prog="python -m postprocessing.run", doc=__doc__, positional=["clip_dir"])
    t0 = time.perf_counter()
    clip = Clip(cfg.clip_dir)
    paths = postprocess(clip, cfg.edit, Path(cfg.out) if cfg.out else None, cfg.blend, cfg.side_by_side)
    dt = time.perf_counter() - t0
    print(f"{clip.n_frames} frames in {dt:.1f} s ({clip.n_frames / dt:.1f} frames/s)")
    for kind, path in paths.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
