"""Per-clip work of the preprocess runner, run in worker processes.

`track_clip`: decode -> MediaPipe tracking -> smoothing, crop, alignment -> aligned face crops, hull masks,
16 kHz audio, track.npz, meta.json, marker `track`. `fit_clip`: face-model parameters -> face.npz,
marker `face`, optional preview grid. A failing clip is removed (nothing half-written stays), and its
reason is reported.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from common.errors import UserError
from common.formats import (
    FACE_FILE,
    FACE_SPEC,
    TRACK_FILE,
    TRACK_SPEC,
    Clip,
    ClipMeta,
    clear_done,
    frame_to_sample,
    is_done,
    mark_done,
    read_arrays,
    write_arrays,
    write_audio,
    write_meta,
)
from common.framestore import FrameStore
from common.fsutil import atomic_path, atomic_write_bytes, atomic_write_text, file_stamp
from common.memory import release_memory
from common.video import iter_frames, probe_video, read_audio
from facemodel import load_face_model, read_model_file
from facemodel.geometry import apply_affine, crop_frame, invert_affine
from facemodel.render import eye_image, hull_mask, render_mesh
from preprocessing.fan import FanLandmarks
from preprocessing.fsgan_seg import FaceSegmenter, face_mask
from preprocessing.mtcnn import MTCNN
from preprocessing.sources import Source
from preprocessing.toy_mead.dataset import ground_truth_of, read_ground_truth
from preprocessing.tracking import FaceTracker, RawTrack, build_track


@dataclass
class ClipResult:
    rel_dir: str
    status: str  # done | skipped | failed
    reason: str = ""
    n_frames: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self._t
        self._t = now


def track_clip(src: Source, out_root: str, cfg: dict, mode: str, stage_hash: str) -> ClipResult:
    cv2.setNumThreads(1)  # one clip per worker process: threads inside OpenCV only contend
    clip_dir = Path(out_root) / src.rel_dir
    if is_done(clip_dir, "track", stage_hash):
        return ClipResult(src.rel_dir, "skipped")
    try:
        return _track(src, clip_dir, cfg, mode, stage_hash)
    except UserError as exc:
        shutil.rmtree(clip_dir, ignore_errors=True)
        return ClipResult(src.rel_dir, "failed", str(exc))


FRAME_PROGRESS = {"on": False}  # per-frame progress bars (a single video: the clip bar says 0/1 until the end)


def _frames(video: Path, n: int, desc: str, stop: int | None = None, start: int = 0):
    frames = iter_frames(video, start, stop)
    if not FRAME_PROGRESS["on"]:
        return frames
    return tqdm(
        frames,
        total=n,
        initial=start,
        desc=desc,
        unit="frame",
        leave=False,
        mininterval=1 if sys.stderr.isatty() else 15,
    )


TRACK_BLOCK = 1000  # frames per FaceMesh restart: the unit of resumption inside one long video
WORK_DIR = ".tracking"  # the tracked blocks of an unfinished track stage


def _work_dir(src: Source, clip_dir: Path, stage_hash: str) -> Path:
    """The folder of tracked blocks of this video with these settings. Anything else found there (other
    settings, a changed video) is from another run: it is removed with that run's crops and masks."""
    key = {"track": stage_hash, "video": file_stamp(src.video)}
    work, key_file = clip_dir / WORK_DIR, clip_dir / WORK_DIR / "key.json"
    if key_file.is_file() and json.loads(key_file.read_text()) == key:
        return work
    for stale in (work, clip_dir / "faces", clip_dir / "masks"):
        shutil.rmtree(stale, ignore_errors=True)
    work.mkdir(parents=True)
    atomic_write_text(key_file, json.dumps(key))
    return work


def _save_block(path: Path, tracker: FaceTracker) -> np.ndarray:
    landmarks, state = tracker.finish().landmarks, tracker.state()
    with atomic_path(path) as tmp:
        np.savez(tmp, landmarks=landmarks, prev_box=state["prev_box"], crops=state["crops"])
    return landmarks


def _track_blocks(src: Source, work: Path, cfg: dict, n: int) -> RawTrack:
    """FaceMesh over the whole video in blocks of TRACK_BLOCK frames (the tracker restarts at each block with
    the previous block's state), each block saved when done: a killed run resumes at its first missing block
    and gives the same track as an uninterrupted run."""
    blocks, state = [], None
    while (path := work / f"{len(blocks):05d}.npz").is_file():
        with np.load(path) as z:
            blocks.append(z["landmarks"])
            state = {"prev_box": z["prev_box"], "crops": bool(z["crops"])}
    detector = _detector(cfg) if cfg["detector"] == "mtcnn" else None
    tracker = None
    if not blocks or len(blocks[-1]) == TRACK_BLOCK:  # else the video ended inside the last saved block
        start = len(blocks) * TRACK_BLOCK
        for t, frame in enumerate(_frames(src.video, n, "track frames", start=start), start):
            if tracker is None:
                tracker = FaceTracker(max_faces=cfg["max_faces"], detector=detector, state=state)
            tracker.add(frame)
            if (t + 1) % TRACK_BLOCK == 0:
                blocks.append(_save_block(work / f"{len(blocks):05d}.npz", tracker))
                state, tracker = tracker.state(), None
                release_memory()
        if tracker is not None:
            blocks.append(_save_block(work / f"{len(blocks):05d}.npz", tracker))
    landmarks = np.empty((sum(len(b) for b in blocks), 478, 3), np.float32)
    at = 0
    while blocks:  # one copy at a time: a long video's landmarks are never held twice
        block = blocks.pop(0)
        landmarks[at : at + len(block)] = block
        at += len(block)
    release_memory()
    return RawTrack(landmarks, np.isfinite(landmarks[:, 0, 0]))


def true_points(raw: RawTrack, video: Path) -> None:
    """landmarks=truth: the toy MEAD generator's true 2D points of `video` (its ground_truth file) replace
    FaceMesh's x, y in every tracked frame (FaceMesh still finds the face, says where it lost it, and gives the
    depth). In place."""
    path = ground_truth_of(video)
    if not path.is_file():
        raise UserError(f"{video}: landmarks=truth needs toy MEAD's ground truth ({path} is missing)")
    truth = read_ground_truth(path, ["landmarks"])["landmarks"]
    if truth.shape[0] != len(raw.valid) or truth.shape[1] != raw.landmarks.shape[1]:
        raise UserError(f"{path}: {truth.shape[:2]} true points do not match the video's {raw.landmarks.shape[:2]}")
    raw.landmarks[raw.valid, :, :2] = truth[raw.valid]


def _track(src: Source, clip_dir: Path, cfg: dict, mode: str, stage_hash: str) -> ClipResult:
    timer = _Timer()
    for stage in ("track", "face"):
        clear_done(clip_dir, stage)
    info = probe_video(src.video)
    if not cfg["min_fps"] <= float(info.fps) <= cfg["max_fps"]:
        raise UserError(
            f"{src.video}: frame rate {float(info.fps):.3f} fps is outside [{cfg['min_fps']}, {cfg['max_fps']}]"
        )
    if info.n_frames < cfg["min_frames"]:
        raise UserError(f"{src.video}: {info.n_frames} frames, shorter than one window ({cfg['min_frames']} frames)")
    audio = None
    silent = mode == "test" and src.audio is None and not info.has_audio  # editing needs no speech
    if mode != "reference":
        # MEAD ships the speech as a separate file too; a video to edit may have none (then: silence)
        audio = np.zeros(0, np.float32) if silent else read_audio(src.audio or src.video)
    timer.lap("probe+audio")
    work = _work_dir(src, clip_dir, stage_hash)
    raw = _track_blocks(src, work, cfg, info.n_frames)
    if cfg["landmarks"] == "truth":
        true_points(raw, src.video)
    timer.lap("decode+track")
    n = len(raw.valid)
    if n < cfg["min_frames"]:
        raise UserError(f"{src.video}: {n} decodable frames, shorter than one window ({cfg['min_frames']} frames)")
    try:
        track = build_track(
            raw, cfg["crop_size"], cfg["margin"], cfg["smooth_sigma"], cfg["min_tracked_fraction"], in_place=True
        )
    except UserError as exc:
        raise UserError(f"{src.video}: {exc}") from None
    del raw
    release_memory()
    timer.lap("smooth+align")
    size = cfg["crop_size"]
    arrays = track.arrays()
    if mode != "reference":
        faces, masks = FrameStore(clip_dir / "faces", 3), FrameStore(clip_dir / "masks", 1)
        segmenter = _segmenter(cfg) if cfg["segmentation"] == "fsgan" else None
        fan = _fan(cfg) if cfg["landmarks"] == "fan" else None
        landmarks68 = []
        pending: list[tuple[int, np.ndarray]] = []
        previous = None
        resumable = segmenter is None and fan is None  # frames another run of this key finished are kept
        for t, frame in enumerate(_frames(src.video, n, "crop frames", n)):
            if resumable and faces.path(t).is_file() and masks.path(t).is_file():
                continue
            crop = crop_frame(frame, track.crop_to_frame[t], track.align[t], size)
            faces.write(t, crop)
            if fan is not None:  # FAN on the full frame with our smoothed box, stored in crop pixels
                pts = fan.landmarks(frame, track.boxes[t])
                landmarks68.append(apply_affine(invert_affine(track.crop_to_frame[t].astype(np.float64)), pts))
            if segmenter is None:
                masks.write(t, hull_mask(apply_affine(track.align[t].astype(np.float64), track.landmarks[t]), size))
                continue
            pending.append((t, crop))
            if len(pending) == segmenter.batch_size or t == n - 1:
                previous = _write_segmented(segmenter, pending, masks, previous)
        timer.lap("crop+write" if segmenter is None else "crop+segment+write")
        if fan is not None:
            arrays["landmarks68"] = np.stack(landmarks68).astype(np.float32)
        need = frame_to_sample(n, info.fps)  # exactly the frames' samples: cut, or padded with silence
        fitted = audio[:need] if len(audio) >= need else np.pad(audio, (0, need - len(audio)))
        write_audio(clip_dir / "audio.wav", fitted)
        del audio
    write_arrays(clip_dir / TRACK_FILE, arrays, TRACK_SPEC, n)
    meta = ClipMeta(
        source_video=str(src.video.resolve()),
        fps=float(info.fps),
        n_frames=n,
        frame_width=info.width,
        frame_height=info.height,
        crop_size=size,
        actor=src.actor,
        emotion=src.emotion,
        level=src.level,
        sentence=src.clip_id,
        backends={"detector": cfg["detector"], "landmarks": cfg["landmarks"], "segmentation": cfg["segmentation"]}
        | ({"audio": "none (silent audio.wav: the video has no audio track)"} if silent else {}),
    )
    write_meta(clip_dir, meta)
    mark_done(clip_dir, "track", stage_hash)
    shutil.rmtree(work, ignore_errors=True)
    del track, arrays
    release_memory()
    timer.lap("write")
    return ClipResult(src.rel_dir, "done", n_frames=n, seconds=timer.seconds)


_SEGMENTER = None
_DETECTOR = None
_FAN = None


def _fan(cfg: dict):
    """FAN (face-alignment), loaded once per worker process."""
    global _FAN
    if _FAN is None:
        _FAN = FanLandmarks(cfg["face_device"])
    return _FAN


def _detector(cfg: dict):
    """MTCNN, loaded once per worker process."""
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = MTCNN(cfg["mtcnn_weights"] or None)
    return _DETECTOR


def _segmenter(cfg: dict):
    """FSGAN's segmentation network, loaded once per worker process."""
    global _SEGMENTER
    if _SEGMENTER is None:
        import torch

        torch.set_num_threads(1)
        _SEGMENTER = FaceSegmenter(cfg["segmentation_weights"], cfg["face_device"])
    return _SEGMENTER


def _write_segmented(segmenter, pending: list, masks: FrameStore, previous):
    """Segment the pending (t, crop) batch, write its masks; returns the last mask (reused for empty ones)."""

    for (t, _), labels in zip(pending, segmenter.labels(np.stack([c for _, c in pending])), strict=True):
        previous = face_mask(labels, previous)
        masks.write(t, previous)
    pending.clear()
    return previous


# Face-model pass ------------------------------------------------------------------------------------

_MODEL = None
_BASIS_HASH = ""


def init_face_worker(backend: str, basis_path: str, device: str = "cpu") -> None:
    global _MODEL, _BASIS_HASH
    if backend != "mesh":
        import torch

        torch.set_num_threads(1)  # one clip per worker process
    _MODEL = load_face_model(backend, basis_path, device)
    _BASIS_HASH = read_model_file(basis_path)["config_hash"]


def fit_clip(rel_dir: str, out_root: str, stage_hash: str, backend: str, preview_frames: int) -> ClipResult:
    clip_dir = Path(out_root) / rel_dir
    if is_done(clip_dir, "face", stage_hash) and (preview_frames == 0 or (clip_dir / "preview.png").is_file()):
        return ClipResult(rel_dir, "skipped")
    timer = _Timer()
    clip = Clip(clip_dir)
    track = read_arrays(clip_dir / TRACK_FILE, TRACK_SPEC, clip.n_frames)
    face = _MODEL.fit_clip(clip.faces, track)
    write_arrays(clip_dir / FACE_FILE, face, FACE_SPEC, clip.n_frames)
    release_memory()
    meta = clip.meta
    meta.backends = {**meta.backends, "face_model": backend, "face_model_basis": _BASIS_HASH}
    write_meta(clip_dir, meta)
    mark_done(clip_dir, "face", stage_hash)
    timer.lap("face fit")
    if preview_frames > 0:
        write_preview(clip, track, face, preview_frames)
        timer.lap("preview")
    return ClipResult(rel_dir, "done", n_frames=clip.n_frames, seconds=timer.seconds)


def write_preview(clip: Clip, track: dict[str, np.ndarray], face: dict[str, np.ndarray], n_rows: int) -> Path:
    """Grid: rows = frames; columns = aligned crop + landmarks, NMFC, shape, mask, eye image."""
    size = clip.meta.crop_size
    verts = _MODEL.decode(face)
    aligned = apply_affine(track["align"].astype(np.float64), track["landmarks"].astype(np.float64))
    has_faces = (clip.dir / "faces").is_dir()
    rows = []
    for t in np.linspace(0, clip.n_frames - 1, n_rows).round().astype(int):
        crop = clip.faces.read(t) if has_faces else np.zeros((size, size, 3), np.uint8)
        crop = crop.copy()
        for x, y in aligned[t]:
            cv2.circle(crop, (int(x), int(y)), 1, (0, 255, 0), -1)
        cond = render_mesh(verts[t].astype(np.float32), _MODEL.triangles, _MODEL.nmfc_colors, size)
        mask = clip.masks.read(t) if has_faces else (cond.mask * 255).astype(np.uint8)
        tiles = [
            crop,
            (cond.nmfc * 255).astype(np.uint8),
            (cond.shape * 255).astype(np.uint8),
            np.repeat(mask[..., None], 3, axis=-1),
            eye_image(aligned[t], size),
        ]
        rows.append(np.concatenate(tiles, axis=1))
    path = clip.dir / "preview.png"
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())
    return path
