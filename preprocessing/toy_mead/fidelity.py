"""How much of the toy rig's true motion a face tracker reads: `python -m preprocessing.toy_mead.fidelity <root>`.

For each actor and emotion, one clip (`--sentence`, level `--level`) against the actor's neutral clip of the
same sentence: four expression features (median over frames, in inter-ocular distances) measured on the
generator's true landmarks and on FaceMesh's reading of the video (video mode, as preprocessing tracks), and
their ratio. A ratio well under 1 is motion the tracker misses, and so motion that everything trained on the
tracked points (the expression basis, the metric, the manipulator) never learns (docs/toy_mead.md).

Features (FaceMesh indices): inner brow over the upper lid (107/336 over 159/386), eye opening (145−159,
374−386), mouth corners below the lips' middle (61/291 vs 0/17), mouth width (61−291).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import parse_cli
from common.config import arg
from common.emotions import NEUTRAL
from common.errors import UserError, cli_entry
from common.fsutil import atomic_write_text
from common.video import iter_frames
from preprocessing.toy_mead.dataset import clip_paths, read_dataset, read_ground_truth
from preprocessing.tracking import FaceTracker

FEATURES = ("inner_brow", "eye_opening", "corner_drop", "mouth_width")


@dataclass
class FidelityConfig:
    root: str = arg(help="a toy MEAD root (python -m preprocessing.toy_mead)")
    sentence: str = arg("", "the clip (sentence number, e.g. 009; default: the set's last test sentence)")
    level: int = arg(3, "the emotion clips' level")
    json: str = arg("", "also write the numbers here")


def features(points: np.ndarray) -> np.ndarray:
    """(T, 478, 2) landmarks -> (4,) FEATURES: medians over frames, in inter-ocular distances (y down)."""
    p = np.asarray(points, np.float64)[..., :2]
    iod = np.linalg.norm(p[:, 263] - p[:, 33], axis=1)
    brow = ((p[:, 159, 1] - p[:, 107, 1]) + (p[:, 386, 1] - p[:, 336, 1])) / 2
    eye = ((p[:, 145, 1] - p[:, 159, 1]) + (p[:, 374, 1] - p[:, 386, 1])) / 2
    corner = (p[:, 61, 1] + p[:, 291, 1]) / 2 - (p[:, 0, 1] + p[:, 17, 1]) / 2
    width = np.linalg.norm(p[:, 291] - p[:, 61], axis=1)
    values = np.stack([brow, eye, corner, width], 1) / iod[:, None]
    return np.nanmedian(values, 0)


def tracked(video: Path) -> np.ndarray:
    tracker = FaceTracker(max_faces=1)
    for frame in iter_frames(video):
        tracker.add(frame)
    raw = tracker.finish()
    if not raw.valid.any():
        raise UserError(f"{video}: FaceMesh found no face")
    return raw.landmarks[raw.valid, :, :2]


def clip_features(root: Path, actor: str, emotion: str, level: int, sentence: str) -> tuple[np.ndarray, np.ndarray]:
    """(true, tracked) FEATURES of one clip."""
    paths = clip_paths(root, actor, emotion, level, sentence)
    if not paths["video"].is_file():
        raise UserError(f"{paths['video']}: no such clip (see --sentence, --level)")
    truth = read_ground_truth(paths["truth"], ["landmarks"])["landmarks"]
    return features(truth), features(tracked(paths["video"]))


def fidelity(cfg: FidelityConfig) -> dict:
    root = Path(cfg.root)
    index = read_dataset(root)
    if index is None:
        raise UserError(f"{root}: not a toy MEAD root (no dataset.json)")
    sentence = cfg.sentence or index["split"]["test"][-1]
    out = {"sentence": sentence, "level": cfg.level, "features": list(FEATURES), "actors": {}}
    for actor in (a["id"] for a in index["actors"]):
        neutral_true, neutral_tracked = clip_features(root, actor, NEUTRAL, 1, sentence)
        rows = {}
        for emotion in (e for e in index["settings"]["emotions"] if e != NEUTRAL):
            true, seen = clip_features(root, actor, emotion, cfg.level, sentence)
            d_true, d_seen = true - neutral_true, seen - neutral_tracked
            rows[emotion] = {
                f: {"true": float(t), "tracked": float(s), "ratio": float(s / t) if abs(t) > 0.01 else None}
                for f, t, s in zip(FEATURES, d_true, d_seen, strict=True)
            }
        out["actors"][actor] = rows
    return out


def table(result: dict) -> str:
    head = " | ".join(f"{f} true / tracked" for f in result["features"])
    lines = [f"| actor | emotion | {head} |", "|---|---|" + "---|" * len(result["features"])]
    for actor, rows in result["actors"].items():
        for emotion, cells in rows.items():
            text = []
            for f in result["features"]:
                c = cells[f]
                ratio = "" if c["ratio"] is None else f" ({c['ratio']:.2f})"
                text.append(f"{c['true']:+.3f} / {c['tracked']:+.3f}{ratio}")
            lines.append(f"| {actor} | {emotion} | {' | '.join(text)} |")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(
        FidelityConfig, argv, prog="python -m preprocessing.toy_mead.fidelity", doc=__doc__, positional=["root"]
    )
    result = fidelity(cfg)
    print(f"sentence {result['sentence']}, level {result['level']} against neutral level 1 (inter-ocular distances)")
    print(table(result))
    if cfg.json:
        atomic_write_text(Path(cfg.json), json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
