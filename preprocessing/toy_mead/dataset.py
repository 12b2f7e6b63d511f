"""Toy MEAD's on-disk formats, read and written only here: the clip layout, the ground truth and dataset.json.

<root>/<actor>/video/front/<emotion>/level_<k>/<NNN>.mp4    H.264 + AAC (16 kHz mono)
<root>/<actor>/audio/<emotion>/level_<k>/<NNN>.wav          16 kHz mono PCM16
<root>/<actor>/ground_truth/<emotion>/level_<k>/<NNN>.npz   GROUND_TRUTH_KEYS
<root>/<actor>/contact_sheet.png                            emotions x frames, for people to look at
<root>/dataset.json                                         DATASET_KEYS; written last: the set is complete
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from common.errors import FormatError
from common.fsutil import atomic_write_bytes, atomic_write_text

DATASET_FILE = "dataset.json"
FORMAT_VERSION = 2  # recorded in dataset.json's settings: a set made by another format version is not reused
DATASET_KEYS = (
    "name",
    "settings",
    "actors",
    "sentences",
    "emotions",
    "levels",
    "fps",
    "size",
    "audio_sr",
    "split",
    "n_clips",
)
GROUND_TRUTH_KEYS = (
    "rig",
    "rig_names",
    "phonemes",
    "phoneme_starts",
    "phoneme_labels",
    "landmarks",
    "emotion",
    "level",
    "intensity",
    "sentence",
    "fps",
)


def clip_paths(root: str | Path, actor: str, emotion: str, level: int, clip_name: str) -> dict[str, Path]:
    """The `video`, `audio` and `truth` files of one clip in MEAD's layout."""
    level_dir = f"level_{level}"
    base = Path(root) / actor
    return {
        "video": base / "video" / "front" / emotion / level_dir / f"{clip_name}.mp4",
        "audio": base / "audio" / emotion / level_dir / f"{clip_name}.wav",
        "truth": base / "ground_truth" / emotion / level_dir / f"{clip_name}.npz",
    }


def ground_truth_of(video: str | Path) -> Path:
    """The ground-truth file of a toy MEAD video (`<actor>/video/front/<emotion>/level_<k>/<NNN>.mp4`)."""
    video = Path(video)
    return video.parents[4] / "ground_truth" / video.parent.parent.name / video.parent.name / f"{video.stem}.npz"


def write_ground_truth(path: str | Path, truth: Mapping[str, np.ndarray]) -> None:
    """Write a clip's ground truth (GROUND_TRUTH_KEYS) as a compressed npz, atomically."""
    missing = [k for k in GROUND_TRUTH_KEYS if k not in truth]
    if missing:
        raise ValueError(f"{path}: ground truth lacks {', '.join(missing)}")
    buf = io.BytesIO()
    np.savez_compressed(buf, **truth)
    atomic_write_bytes(path, buf.getvalue())


def read_ground_truth(path: str | Path, keys: Sequence[str] = GROUND_TRUTH_KEYS) -> dict[str, np.ndarray]:
    """The arrays `keys` of a clip's ground truth; FormatError naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise FormatError(f"{path}: not a toy MEAD ground truth (missing {', '.join(missing)})")
            return {k: z[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: not a toy MEAD ground truth ({exc})") from None


def write_dataset(root: str | Path, index: Mapping) -> Path:
    """Write `<root>/dataset.json` (DATASET_KEYS), atomically; returns its path."""
    path = Path(root) / DATASET_FILE
    missing = [k for k in DATASET_KEYS if k not in index]
    if missing:
        raise ValueError(f"{path}: dataset index lacks {', '.join(missing)}")
    atomic_write_text(path, json.dumps(index, indent=2) + "\n")
    return path


def read_dataset(root: str | Path) -> dict | None:
    """The validated `<root>/dataset.json` as a dict, or None when the folder has none."""
    path = Path(root) / DATASET_FILE
    if not path.is_file():
        return None
    what = f"{path}: not a valid toy MEAD dataset.json"
    try:
        index = json.loads(path.read_text())
    except ValueError as exc:
        raise FormatError(f"{what} ({exc})") from None
    if not isinstance(index, dict):
        raise FormatError(f"{what} (the top level must be an object)")
    missing = [k for k in DATASET_KEYS if k not in index]
    if missing:
        raise FormatError(f"{what} (missing {', '.join(missing)})")
    split = index["split"]
    if not isinstance(split, dict) or not all(isinstance(v, list) for v in split.values()):
        raise FormatError(f"{what} ('split' must map split names to lists of sentence ids)")
    return index
