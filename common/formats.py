"""The on-disk clip format (DESIGN section 5): one module owns every file a clip dir holds.

A clip dir holds `meta.json`, `track.npz`, `face.npz`, `audio.wav`, `faces/`, `masks/` and completion
markers under `.done/`; a processed root lists its finished clips in `clips.json`. Every writer is atomic;
every reader validates keys, dtypes and frame counts and raises `FormatError` naming the file. The frame <->
audio sample mapping is `common.timebase` (AUDIO_SR, as_fraction, frame_to_sample are importable from here too).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf

from common import __version__
from common.errors import FormatError, UserError
from common.framestore import FrameStore
from common.fsutil import atomic_path, atomic_write_text
from common.timebase import AUDIO_SR, as_fraction, frame_sample_range, frame_to_sample

SCHEMA_VERSION = 1

META_FILE = "meta.json"
TRACK_FILE = "track.npz"
FACE_FILE = "face.npz"
AUDIO_FILE = "audio.wav"
FACES_DIR = "faces"
MASKS_DIR = "masks"
DONE_DIR = ".done"
CLIPS_FILE = "clips.json"  # in a processed root: the finished clips and the face-model file they were fitted with

# ---------------------------------------------------------------------------------------------------
# meta.json


@dataclass
class ClipMeta:
    """Contents of `meta.json`. `stages` maps stage name -> {config_hash, code_version, finished}."""

    source_video: str
    fps: float
    n_frames: int
    frame_width: int
    frame_height: int
    crop_size: int
    audio_sr: int = AUDIO_SR
    actor: str | None = None
    emotion: str | None = None
    level: int | None = None
    sentence: str | None = None
    backends: dict[str, str] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def fps_exact(self) -> Fraction:
        return as_fraction(self.fps)


_META_TYPES = {
    "source_video": str,
    "fps": (int, float),
    "n_frames": int,
    "frame_width": int,
    "frame_height": int,
    "crop_size": int,
    "audio_sr": int,
    "actor": (str, type(None)),
    "emotion": (str, type(None)),
    "level": (int, type(None)),
    "sentence": (str, type(None)),
    "backends": dict,
    "stages": dict,
    "schema_version": int,
}


def write_meta(clip_dir: str | Path, meta: ClipMeta) -> None:
    validate_meta(dataclasses.asdict(meta), Path(clip_dir) / META_FILE)
    atomic_write_text(Path(clip_dir) / META_FILE, json.dumps(dataclasses.asdict(meta), indent=2) + "\n")


def validate_meta(data: Mapping[str, Any], path: Path) -> None:
    required = [f.name for f in dataclasses.fields(ClipMeta) if f.default is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise FormatError(f"{path}: missing key(s) {', '.join(missing)}")
    unknown = sorted(set(data) - set(_META_TYPES))
    if unknown:
        raise FormatError(f"{path}: unknown key(s) {', '.join(unknown)}")
    for key, value in data.items():
        expected = _META_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise FormatError(f"{path}: key '{key}' has type {type(value).__name__}, expected {expected}")
    if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise FormatError(
            f"{path}: schema version {data['schema_version']} but this code reads {SCHEMA_VERSION}; "
            "re-run preprocessing"
        )
    if data["n_frames"] < 0 or data["fps"] <= 0 or data["crop_size"] <= 0:
        raise FormatError(f"{path}: n_frames, fps and crop_size must be positive")


def read_meta(clip_dir: str | Path) -> ClipMeta:
    path = Path(clip_dir) / META_FILE
    if not path.is_file():
        raise FormatError(f"{path}: not found (is {clip_dir} a preprocessed clip dir?)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object")
    validate_meta(data, path)
    return ClipMeta(**data)


# ---------------------------------------------------------------------------------------------------
# Array files (track.npz, face.npz): a spec maps key -> (dtype, shape). In shapes, "T" is the clip's
# frame count; other letters are free sizes that must agree within the file; ints are fixed.

ArraySpec = Mapping[str, tuple[str, tuple[int | str, ...]]]

TRACK_SPEC: ArraySpec = {
    "boxes": ("float32", ("T", 4)),  # face box x0, y0, x1, y1 in frame pixels (smoothed)
    "crop_to_frame": ("float32", ("T", 2, 3)),  # affine: crop pixel -> frame pixel
    "align": ("float32", ("T", 2, 3)),  # affine: crop pixel -> canonical template pixel
    "landmarks": ("float32", ("T", "L", 2)),  # crop pixels (x, y); L = 478 for MediaPipe incl. iris
    "valid": ("bool", ("T",)),  # False where the face was lost (values there are interpolated)
}

FACE_SPEC: ArraySpec = {
    "expr": ("float32", ("T", "D")),  # expression coefficients; channel 0 = mouth opening
    "pose": ("float32", ("T", "P")),  # rigid head pose (backend-defined layout)
    "cam": ("float32", ("T", "C")),  # camera / projection parameters, into the aligned crop
    "identity": ("float32", ("I",)),  # per-clip identity (shape) coefficients
    "landmarks2d": ("float32", ("T", "L", 2)),  # decoded 2D landmarks in aligned-crop pixels
}


FACE_PARAMS = ("expr", "pose", "cam", "identity")  # the face.npz arrays a face model decodes meshes from

# face.npz `expr` channels (DESIGN section 4), for every backend: one mouth-opening channel (DECA: the jaw angle
# pose[3]; mesh: the inner-lip gap over face size), which speech drives and edits must keep, then the rest.
MOUTH_CHANNEL = 0
EXPRESSION_CHANNELS = slice(MOUTH_CHANNEL + 1, None)
Params = TypeVar("Params")  # np.ndarray or torch.Tensor


def mouth_channel(expr: Params) -> Params:
    """The mouth-opening channel of expression parameters: (..., D) -> (...) (NumPy or torch)."""
    return expr[..., MOUTH_CHANNEL]


def expression_channels(expr: Params) -> Params:
    """Every channel but the mouth opening: (..., D) -> (..., D - 1) (NumPy or torch)."""
    return expr[..., EXPRESSION_CHANNELS]


def validate_arrays(arrays: Mapping[str, np.ndarray], spec: ArraySpec, n_frames: int, path: Path) -> None:
    """Check keys, dtypes and shapes against `spec`; raise FormatError naming `path`."""
    missing = [k for k in spec if k not in arrays]
    if missing:
        raise FormatError(f"{path}: missing array(s) {', '.join(missing)}")
    sizes: dict[str, int] = {"T": n_frames}
    for key, (dtype, shape) in spec.items():
        arr = arrays[key]
        if arr.dtype != np.dtype(dtype):
            raise FormatError(f"{path}: '{key}' has dtype {arr.dtype}, expected {dtype}")
        if arr.ndim != len(shape):
            raise FormatError(f"{path}: '{key}' has shape {arr.shape}, expected {len(shape)} dims {shape}")
        for axis, (want, got) in enumerate(zip(shape, arr.shape, strict=True)):
            if isinstance(want, str):
                expected = sizes.setdefault(want, got)
                if got != expected:
                    what = "frame count" if want == "T" else f"size {want}"
                    raise FormatError(
                        f"{path}: '{key}' axis {axis} is {got} but the {what} is {expected} (shape {arr.shape})"
                    )
            elif got != want:
                raise FormatError(f"{path}: '{key}' axis {axis} is {got}, expected {want} (shape {arr.shape})")
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise FormatError(f"{path}: '{key}' contains NaN or inf")


def write_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], spec: ArraySpec, n_frames: int) -> None:
    """Validate then atomically write an npz (extra keys beyond the spec are kept)."""
    path = Path(path)
    validate_arrays(arrays, spec, n_frames, path)
    with atomic_path(path) as tmp:  # straight to the file: a long video's arrays are not copied in memory
        np.savez(tmp, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})


def read_arrays(
    path: str | Path, spec: ArraySpec, n_frames: int, keys: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """The validated arrays of an npz; with `keys` only those (a long video's other arrays stay on disk)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: not found")
    if keys is not None:
        keys = list(keys)
        spec = {k: v for k, v in spec.items() if k in keys}
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if keys is None or k in keys}
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: unreadable npz ({exc})") from None
    validate_arrays(arrays, spec, n_frames, path)
    return arrays


# ---------------------------------------------------------------------------------------------------
# audio.wav: 16 kHz mono PCM16.


def write_audio(path: str | Path, samples: np.ndarray, sr: int = AUDIO_SR) -> None:
    """samples: (N,) float in [-1, 1] (clipped), written as PCM16."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"audio must be mono (N,), got shape {samples.shape}")
    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(samples, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")


def read_audio(path: str | Path, sr: int = AUDIO_SR) -> np.ndarray:
    """Return (N,) float32 in [-1, 1]; the file must be mono at `sr`."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: not found")
    try:
        samples, file_sr = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise FormatError(f"{path}: unreadable audio ({exc})") from None
    if file_sr != sr or samples.shape[1] != 1:
        raise FormatError(f"{path}: expected mono {sr} Hz, got {samples.shape[1]} channel(s) at {file_sr} Hz")
    return samples[:, 0]


# ---------------------------------------------------------------------------------------------------
# Completion markers: written last by each stage; a stage is finished only if its marker exists (and,
# when asked, was written with the same config hash).


def mark_done(clip_dir: str | Path, stage: str, config_hash: str = "") -> None:
    """Record the stage in meta.json (when present), then write its marker: the last write of a stage."""
    info = {"stage": stage, "config_hash": config_hash, "code_version": __version__, "finished": time.time()}
    if (Path(clip_dir) / META_FILE).is_file():
        meta = read_meta(clip_dir)
        meta.stages[stage] = {k: info[k] for k in ("config_hash", "code_version")}
        write_meta(clip_dir, meta)
    atomic_write_text(Path(clip_dir) / DONE_DIR / f"{stage}.json", json.dumps(info) + "\n")


def is_done(clip_dir: str | Path, stage: str, config_hash: str | None = None) -> bool:
    marker = Path(clip_dir) / DONE_DIR / f"{stage}.json"
    if not marker.is_file():
        return False
    if config_hash is None:
        return True
    try:
        return json.loads(marker.read_text()).get("config_hash") == config_hash
    except json.JSONDecodeError:
        return False


def stage_info(clip_dir: str | Path, stage: str) -> dict:
    """What `mark_done` recorded for a finished stage (config_hash, code_version, finished), {} when not done."""
    marker = Path(clip_dir) / DONE_DIR / f"{stage}.json"
    try:
        return json.loads(marker.read_text()) if marker.is_file() else {}
    except json.JSONDecodeError:
        return {}


def clear_done(clip_dir: str | Path, stage: str) -> None:
    """Remove a stage's marker before redoing it, so an interrupted redo never looks finished."""
    (Path(clip_dir) / DONE_DIR / f"{stage}.json").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# Clip: a small handle over one clip dir.


def clip_dir_for(processed_root: str | Path, actor: str, emotion: str, level: int | str, clip_id: str) -> Path:
    """MEAD-style location `<root>/<actor>/<emotion>/<level>/<clip_id>/`."""
    level_name = f"level_{level}" if isinstance(level, int) else str(level)
    return Path(processed_root) / actor / emotion / level_name / clip_id


class Clip:
    """Reads one clip dir, validating every file against `meta.json`'s frame count."""

    def __init__(self, clip_dir: str | Path):
        self.dir = Path(clip_dir)
        self.meta = read_meta(self.dir)

    @property
    def n_frames(self) -> int:
        return self.meta.n_frames

    def track(self, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        return read_arrays(self.dir / TRACK_FILE, TRACK_SPEC, self.n_frames, keys)

    def face(self, name: str = FACE_FILE, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """face.npz's arrays (`keys` only, when given; FACE_PARAMS are what a face model decodes)."""
        return read_arrays(self.dir / name, FACE_SPEC, self.n_frames, keys)

    def audio(self) -> np.ndarray:
        samples = read_audio(self.dir / AUDIO_FILE, self.meta.audio_sr)
        need = frame_to_sample(self.n_frames, self.meta.fps_exact, self.meta.audio_sr)
        if len(samples) < need:
            raise FormatError(
                f"{self.dir / AUDIO_FILE}: {len(samples)} samples, but {self.n_frames} frames at "
                f"{self.meta.fps} fps need {need}"
            )
        return samples

    def frame_audio(self, t: int) -> np.ndarray:
        """Audio samples covered by frame t."""
        start, stop = frame_sample_range(t, self.meta.fps_exact, self.meta.audio_sr)
        return self.audio()[start:stop]

    @property
    def faces(self) -> FrameStore:
        return FrameStore(self.dir / FACES_DIR, channels=3)

    @property
    def masks(self) -> FrameStore:
        return FrameStore(self.dir / MASKS_DIR, channels=1)

    def validate(self, require: tuple[str, ...] = ("track", "face", "audio", "faces", "masks")) -> None:
        """Check that the named parts exist and agree with meta.json; raise FormatError otherwise."""
        checks = {
            "track": self.track,
            "face": self.face,
            "audio": self.audio,
            "faces": lambda: self.faces.validate(self.n_frames),
            "masks": lambda: self.masks.validate(self.n_frames),
        }
        for part in require:
            if part not in checks:
                raise ValueError(f"unknown clip part {part!r}; known: {', '.join(checks)}")
            checks[part]()


# ---------------------------------------------------------------------------------------------------
# clips.json: the index of a processed root.

CLIP_INDEX_KEYS = ("mode", "face_model", "basis_file", "clips")
CLIP_ENTRY_KEYS = ("dir", "actor", "emotion", "clip_id", "split")


def write_clip_index(root: str | Path, mode: str, face_model: str, basis_file: str, clips: list[dict]) -> Path:
    """`<root>/clips.json`: the mode that wrote it, the face model and its dataset-level file, and one entry
    per finished clip (at least CLIP_ENTRY_KEYS: `dir` relative to the root, labels, `split`)."""
    for entry in clips:
        missing = [k for k in CLIP_ENTRY_KEYS if k not in entry]
        if missing:
            raise ValueError(f"clips.json entry {entry.get('dir')!r} lacks {', '.join(missing)}")
    path = Path(root) / CLIPS_FILE
    index = {"mode": mode, "face_model": face_model, "basis_file": basis_file, "clips": clips}
    atomic_write_text(path, json.dumps(index, indent=2) + "\n")
    return path


def read_clip_index(root: str | Path) -> dict:
    """The validated `<root>/clips.json` as a dict (CLIP_INDEX_KEYS; each clip has CLIP_ENTRY_KEYS)."""
    path = Path(root) / CLIPS_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; preprocess the dataset first (scripts/preprocess.sh … train)")
    try:
        index = json.loads(path.read_text())
        missing = [k for k in CLIP_INDEX_KEYS if k not in index]
        missing += sorted({k for c in index["clips"] for k in CLIP_ENTRY_KEYS if k not in c})
    except (ValueError, TypeError, KeyError) as exc:
        raise FormatError(f"{path}: not a valid clips.json ({exc})") from None
    if missing:
        raise FormatError(f"{path}: not a valid clips.json (missing {', '.join(missing)}); preprocess again")
    return index


def clip_split(entry: dict, key: str = "split") -> str:
    """A clip's split for a role: `split` (manipulator, renderer, evaluation) or `metric_split` (the metric;
    set by a protocol, else the same as `split`)."""
    return entry.get(key) or entry["split"]


def select_clips(
    index: dict, splits: Any = None, emotion: str | None = None, actor: str | None = None, key: str = "split"
) -> list[dict]:
    """The entries of a clips.json in the given split(s) (a name or a collection; of role `key`, see clip_split),
    emotion and actor."""
    if isinstance(splits, str):
        splits = (splits,)
    return [
        c
        for c in index["clips"]
        if (splits is None or clip_split(c, key) in splits)
        and (emotion is None or c["emotion"] == emotion)
        and (actor is None or c["actor"] == actor)
    ]
