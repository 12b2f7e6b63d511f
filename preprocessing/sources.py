"""Find the videos to preprocess: a MEAD-layout root (toy or real), a folder of videos, or one video.

Each source gets the clip dir it will be written to (DESIGN section 5):
- MEAD: `<root>/<actor>/video/front/<emotion>/level_<k>/<NNN>.mp4` -> `<out>/<actor>/<emotion>/level_<k>/<NNN>/`
- a folder or a single file: `<name>.mp4` -> `<out>/<name>/`; a single file's clip is labelled with its name as
  the actor (its identity: what `--personalize` trains a renderer for)
A toy MEAD `dataset.json` next to the videos supplies the train/val/test split by sentence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from common.errors import UserError
from preprocessing.protocols import UNUSED, assign, check_mead_labels, load_protocol
from preprocessing.toy_mead.dataset import read_dataset

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
AUDIO_EXTENSIONS = (".wav", ".m4a", ".aac", ".mp3", ".flac")


@dataclass(frozen=True)
class Source:
    video: Path
    rel_dir: str  # clip dir relative to the output root
    actor: str | None = None
    emotion: str | None = None
    level: int | None = None
    clip_id: str | None = None
    split: str = "train"
    audio: Path | None = None  # separate audio file (MEAD ships audio next to the video)
    metric_split: str | None = None  # the metric's split when a protocol sets one (None: the same as split)
    protocol: str = ""


def _mead_audio(root: Path, actor: str, emotion: str, level_dir: str, clip_id: str) -> Path | None:
    for ext in AUDIO_EXTENSIONS:
        path = root / actor / "audio" / emotion / level_dir / f"{clip_id}{ext}"
        if path.is_file():
            return path
    return None


def _splits(root: Path) -> dict[str, str]:
    """Sentence id -> split from a toy MEAD dataset.json (empty when absent: everything is train)."""
    index = read_dataset(root)
    if index is None:
        return {}
    return {sentence: name for name, sentences in index["split"].items() for sentence in sentences}


def discover(input_path: str | Path, name: str = "", protocol: str = "") -> list[Source]:
    """All sources under `input_path`, in a stable order. `name`: one video's clip dir name (default: the file
    name without its extension). `protocol`: a split protocol for a MEAD-layout root (preprocessing.protocols);
    the clips it uses for nothing are left out."""
    sources = _discover(input_path, name)
    if not protocol:
        return sources
    rule = load_protocol(protocol)
    entries = [asdict(s) | {"dir": s.rel_dir} for s in sources]
    check_mead_labels(entries, str(input_path))
    assigned = assign(rule, entries)
    used = [(s, a) for s, a in zip(sources, assigned, strict=True) if (a["split"], a["metric_split"]) != (UNUSED,) * 2]
    return [replace(s, split=a["split"], metric_split=a["metric_split"], protocol=rule.name) for s, a in used]


def _discover(input_path: str | Path, name: str) -> list[Source]:
    root = Path(input_path)
    if not root.exists():
        raise UserError(f"{root}: no such file or folder")
    if name and not root.is_file():
        raise UserError(f"name={name}: names the clip of one video; {root} is a folder")
    if name and (Path(name).name != name or name in (".", "..")):
        raise UserError(f"name={name}: a clip name is one folder name, without '/'")
    if root.is_file():
        if root.suffix.lower() not in VIDEO_EXTENSIONS:
            raise UserError(f"{root}: not a video file ({', '.join(VIDEO_EXTENSIONS)})")
        name = name or root.stem
        return [Source(root, name, actor=name)]  # one video is one person: the clip name labels the identity
    mead = sorted(root.glob("*/video/front/*/level_*/*"))
    mead = [p for p in mead if p.suffix.lower() in VIDEO_EXTENSIONS]
    if mead:
        splits = _splits(root)
        sources = []
        for video in mead:
            actor, emotion, level_dir, clip_id = video.parts[-6], video.parts[-3], video.parts[-2], video.stem
            sources.append(
                Source(
                    video=video,
                    rel_dir=f"{actor}/{emotion}/{level_dir}/{clip_id}",
                    actor=actor,
                    emotion=emotion,
                    level=int(level_dir.split("_")[-1]),
                    clip_id=clip_id,
                    split=splits.get(clip_id, "train"),
                    audio=_mead_audio(root, actor, emotion, level_dir, clip_id),
                )
            )
        return sources
    videos = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise UserError(
            f"{root}: no videos found (MEAD layout <actor>/video/front/<emotion>/level_<k>/, or video files)"
        )
    return [Source(v, v.stem) for v in videos]
