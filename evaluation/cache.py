"""The evaluation's resume cache: each finished output leaves `<video>.json` (its row) and `<video>.npz` (its
FAD/FID features) beside the video, under a key of everything the row depends on (docs/formats.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from common import __version__
from common.fsutil import atomic_path, atomic_write_text
from renderer.warp import VERSION as WARP_VERSION

ROW_LAYOUT = 5  # 5: lip_r_params, lip metrics on frames both trackers found (4: the fer_* columns)


def evaluation_options(frame_step: int, nets, renderer) -> dict:
    """The options every cached row depends on: frame step, code version, row layout, the loaded metric networks,
    the renderer's kind ("" for a row without one) and the warp renderer's version."""
    kind = "" if renderer is None else getattr(renderer, "kind", "neural")
    return {
        "frame_step": frame_step,
        "version": __version__,
        "row_layout": ROW_LAYOUT,
        "renderer": kind,
        "nets": sorted(n for n, v in vars(nets).items() if v is not None),
        "warp": WARP_VERSION,
    }


def output_key(options: dict, checkpoints: dict[str, str]) -> str:
    """Hash of an output's options and checkpoint files (path, size, mtime: a retrained run changes it); a value
    that is not a file (the warp renderer's version label) enters as it is."""
    parts = dict(options)
    for name, path in checkpoints.items():
        if not Path(path).is_file():
            parts[name] = str(path)
            continue
        st = Path(path).stat()
        parts[name] = [str(path), st.st_size, st.st_mtime_ns]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def load_cached(video: Path, key: str) -> tuple[dict, dict] | None:
    """A finished output's row and FAD/FID features, if they were computed with the same key."""
    meta = video.with_suffix(".json")
    try:
        saved = json.loads(meta.read_text())
        if saved.get("key") != key or not video.is_file():
            return None
        feats = {}
        if saved["features"]:
            with np.load(video.with_suffix(".npz")) as z:
                feats = {k: z[k] for k in saved["features"]}
        return saved["row"], feats
    except (OSError, ValueError, KeyError):  # absent, half written or from an older layout: recompute
        return None


def save_cached(video: Path, key: str, row: dict, feats: dict[str, np.ndarray]) -> None:
    """Written last, after the video: an interrupted evaluation resumes after the last finished output."""
    if feats:
        with atomic_path(video.with_suffix(".npz")) as tmp:
            np.savez(tmp, **feats)
    atomic_write_text(video.with_suffix(".json"), json.dumps({"key": key, "row": row, "features": sorted(feats)}))
