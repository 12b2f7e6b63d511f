"""The evaluation's resume cache: each finished output leaves `<video>.json` (its row, and the stamp each value
was computed under) and `<video>.npz` (its crop features for the distribution metrics) beside the video
(docs/formats.md, "Evaluation output").

The file belongs to the output while its key matches: a digest of everything that produced the video (the
manipulator's and the renderer's checkpoint files by content, the renderer's kind and version, the dataset's
root, index, pairs and face model, the protocol, the setting, the reference clip, the frame step, the code
version). Each value carries a stamp: a digest of its metric's name and version and of the files of the
networks it reads (the emotion classifier, the judge, the metric weights). A replaced network recomputes the
values that read it; the video and the other values stay.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from common.fsutil import atomic_path, atomic_write_text


@dataclass
class Cached:
    row: dict  # metric -> value, and the row's labels
    stamps: dict[str, str]  # metric or feature name -> the stamp it was computed under
    features: dict[str, np.ndarray]  # "<net>_fake" / "<net>_real" crop features


@cache
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file's bytes; memoised on (path, size, mtime): a big checkpoint is read once per process."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """The content digest of a file (a replaced or retrained file gets another; a copy keeps it)."""
    st = Path(path).stat()
    return _content_digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def content(value):
    """`value` for a key: a path of an existing file becomes its content digest, a list each of its items; any
    other value (a version label such as the warp renderer's `warp-v2`) enters as it is."""
    if isinstance(value, list | tuple):
        return [content(v) for v in value]
    if isinstance(value, str | Path) and str(value) and Path(value).is_file():
        return file_digest(value)
    return value


def digest(parts: dict) -> str:
    """A 16-hex digest of JSON-able parts (file paths in them already replaced by `content`)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def output_key(options: dict, files: dict) -> str:
    """Key of an output: its `options` as they are, and `files` (name -> path, list of paths, or a label) by
    content (`content`)."""
    return digest(options | {name: content(value) for name, value in files.items()})


def load_cached(video: Path, key: str) -> Cached | None:
    """What an earlier run left for this output under the same key (None: the output is to be made again)."""
    meta = video.with_suffix(".json")
    try:
        saved = json.loads(meta.read_text())
        if saved.get("key") != key or not video.is_file():
            return None
        feats = {}
        if saved["features"]:
            with np.load(video.with_suffix(".npz")) as z:
                feats = {k: z[k] for k in saved["features"]}
        return Cached(saved["row"], saved["stamps"], feats)
    except (OSError, ValueError, KeyError):  # absent, half written or from an older layout: recompute
        return None


def save_cached(video: Path, key: str, row: dict, stamps: dict[str, str], feats: dict[str, np.ndarray]) -> None:
    """Written last, after the video: an interrupted evaluation resumes after the last finished output."""
    if feats:
        with atomic_path(video.with_suffix(".npz")) as tmp:
            np.savez(tmp, **feats)
    record = {"key": key, "row": row, "stamps": stamps, "features": sorted(feats)}
    atomic_write_text(video.with_suffix(".json"), json.dumps(record))
