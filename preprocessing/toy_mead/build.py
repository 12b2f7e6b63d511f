"""Build a toy MEAD set (`build_toy_mead(cfg)`): actors x emotions x sentences rendered by worker processes,
contact sheets, then `dataset.json` written last. The command is `python -m preprocessing.toy_mead`."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from common.config import arg, choice
from common.emotions import NEUTRAL
from common.errors import UserError
from common.fsutil import atomic_write_bytes
from common.video import iter_frames, probe_video
from preprocessing.toy_mead.dataset import DATASET_FILE, FORMAT_VERSION, read_dataset, write_dataset
from preprocessing.toy_mead.generate import ClipJob, init_worker, prepare_actors_quietly, render_job
from preprocessing.toy_mead.portrait import builtin_portrait_path, check_portrait, portrait_licence
from preprocessing.toy_mead.profiles import (
    BUILTIN_ACTORS,
    DEFAULT_ACTORS,
    EMOTION_ACTIONS,
    EMOTION_PROSODY,
    EMOTIONS,
    EXTRA_VOICES,
    SENTENCES,
    VISEMES,
    ActorProfile,
)
from preprocessing.toy_mead.rig import RIG_VERSION


@dataclass
class ToyMeadConfig:
    out: str = arg("data/toy_mead", "output root (git-ignored data/ by default)")
    actors: int = arg(
        DEFAULT_ACTORS, "number of actors: W001 W002, --portrait images, M003 W004 (thumbor wheel), then mirrored"
    )
    sentences: int = arg(10, f"sentences per emotion (max {len(SENTENCES)})")
    emotions: list[str] = arg(list(EMOTIONS), f"emotions to generate, of {', '.join(EMOTIONS)}")
    level: int = choice(3, (1, 2, 3), "intensity level of non-neutral clips")
    size: int = arg(256, "frame size in pixels (square)")
    fps: float = arg(30.0, "frames per second")
    seed: int = arg(0, "random seed (the set is deterministic for a seed)")
    portrait: list[str] = arg([], "add portrait images (--portrait a.jpg b.jpg)")
    workers: int = arg(min(os.cpu_count() or 1, 4), "generator processes")
    force: bool = arg(False, "delete an existing set at --out and regenerate")


def check_options(cfg: ToyMeadConfig) -> None:
    """The checks the schema cannot express; a one-line UserError naming the option."""
    if not cfg.emotions or any(e not in EMOTIONS for e in cfg.emotions):
        got = " ".join(cfg.emotions) or "none"
        raise UserError(f"--emotions needs one or more of {', '.join(EMOTIONS)} (got {got})")
    if not 1 <= cfg.sentences <= len(SENTENCES):
        raise UserError(f"--sentences must be between 1 and {len(SENTENCES)}")
    if cfg.size < 96 or cfg.size % 2:
        raise UserError("--size must be even and at least 96 (the face must stay trackable)")
    if cfg.fps <= 0 or cfg.actors < 1 or cfg.workers < 1:
        raise UserError("--fps, --actors and --workers must be positive")


def actor_profiles(n_actors: int, user_portraits: list[str]) -> list[ActorProfile]:
    """The default built-ins, user portraits, the other built-ins, then mirrored copies (each with its own
    voice; a mirrored copy of X0nn is X1nn)."""
    base = list(BUILTIN_ACTORS[:DEFAULT_ACTORS])
    for k, path in enumerate(user_portraits):
        if not Path(path).is_file():
            raise UserError(f"--portrait {path}: file not found")
        base.append(ActorProfile(f"U{k + 1:03d}", str(Path(path).resolve()), EXTRA_VOICES[k % len(EXTRA_VOICES)]))
    base += BUILTIN_ACTORS[DEFAULT_ACTORS:]
    profiles = list(base)
    for k, profile in enumerate(base):
        voice = EXTRA_VOICES[(k + len(user_portraits)) % len(EXTRA_VOICES)]
        mirrored_id = f"{profile.actor_id[0]}{100 + int(profile.actor_id[1:]):03d}"
        profiles.append(ActorProfile(mirrored_id, profile.portrait, voice, mirror=True))
    if n_actors > len(profiles):
        raise UserError(f"--actors {n_actors}: only {len(profiles)} identities available; add --portrait images")
    for profile in profiles[:n_actors]:
        check_portrait(profile.portrait)
    return profiles[:n_actors]


def dataset_split(n_sentences: int) -> dict[str, list[str]]:
    """Split by sentence (never by clip), so test sentences are unseen in every emotion."""
    ids = [f"{k + 1:03d}" for k in range(n_sentences)]
    n_test = max(1, round(0.2 * n_sentences)) if n_sentences >= 2 else 0
    n_val = max(1, round(0.2 * n_sentences)) if n_sentences >= 4 else 0
    n_train = n_sentences - n_val - n_test
    return {"train": ids[:n_train], "val": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}


def settings(cfg: ToyMeadConfig) -> dict:
    """The options that define a set (recorded in dataset.json; a re-run with other ones is refused)."""
    return {
        "actors": cfg.actors,
        "sentences": cfg.sentences,
        "emotions": list(cfg.emotions),
        "level": cfg.level,
        "size": cfg.size,
        "fps": cfg.fps,
        "seed": cfg.seed,
        "portraits": [str(Path(p).resolve()) for p in cfg.portrait],
        "format_version": FORMAT_VERSION,
        "prototypes": prototypes_digest(),
        "rig": RIG_VERSION,
    }


def prototypes_digest() -> str:
    """A digest of the generator's emotion prototypes, prosody and visemes (profiles.py): a set drawn with other
    ones is another set (a changed anger must not be trained on as the old one)."""
    data = {"actions": EMOTION_ACTIONS, "prosody": EMOTION_PROSODY, "visemes": VISEMES}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


DRAWING = ("prototypes", "rig")  # settings that say how the clips were drawn, not which clips


def check_existing(out: Path, wanted: dict, force: bool) -> bool:
    """True when a complete set with these settings is already there."""
    if force and out.exists():
        if not (out / DATASET_FILE).is_file() and any(out.iterdir()) and not (out / ".toy_mead").is_file():
            raise UserError(f"{out}: not a toy MEAD folder; refusing to delete it with --force")
        shutil.rmtree(out)
        return False
    index = read_dataset(out)
    if index is None:
        return False
    have = index["settings"]
    if have == wanted:
        return True
    if {k: v for k, v in have.items() if k not in DRAWING} == {k: v for k, v in wanted.items() if k not in DRAWING}:
        raise UserError(
            f"{out}: holds a toy MEAD set drawn with older emotion prototypes or an older rig "
            "(preprocessing/toy_mead/profiles.py, rig.py changed since); regenerate it with --force (then "
            "preprocess it again), or use another --out"
        )
    raise UserError(f"{out}: holds a toy MEAD set made with other options ({have}); use another --out or --force")


def dataset_index(cfg: ToyMeadConfig, wanted: dict, profiles: list[ActorProfile], n_clips: int) -> dict:
    """The content of dataset.json: settings, actors, sentences, emotions and levels, split by sentence."""
    return {
        "name": "toy MEAD",
        "settings": wanted,
        "actors": [
            {
                "id": p.actor_id,
                "portrait": builtin_portrait_path(p.portrait),
                "licence": portrait_licence(p.portrait),
                "mirrored": p.mirror,
                "voice": asdict(p.voice),
            }
            for p in profiles
        ],
        "sentences": [{"id": f"{k + 1:03d}", "text": SENTENCES[k]} for k in range(cfg.sentences)],
        "emotions": list(cfg.emotions),
        "levels": {e: (1 if e == NEUTRAL else cfg.level) for e in cfg.emotions},
        "fps": cfg.fps,
        "size": cfg.size,
        "audio_sr": 16000,
        "split": dataset_split(cfg.sentences),
        "n_clips": n_clips,
    }


def contact_sheet(out: Path, actor_id: str, jobs: list[ClipJob], n_cols: int = 5) -> Path:
    """Rows = emotions (first sentence), columns = evenly spaced frames, read back from the written mp4s."""
    rows = []
    for job in jobs:
        video = job.paths(out)["video"]
        n = probe_video(video).n_frames
        picks = set(np.linspace(0, n - 1, n_cols + 2)[1:-1].astype(int).tolist())
        frames = [f for t, f in enumerate(iter_frames(video)) if t in picks]
        row = np.concatenate(frames, axis=1)
        label = f"{job.emotion} L{job.level}"
        cv2.putText(row, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(row, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    path = out / actor_id / "contact_sheet.png"
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())
    return path


def build_toy_mead(cfg: ToyMeadConfig) -> None:
    """Generate (or finish) the set described by `cfg` at `cfg.out`; a complete set with these options is kept."""
    check_options(cfg)
    out = Path(cfg.out)
    wanted = settings(cfg)
    if check_existing(out, wanted, cfg.force):
        print(f"toy MEAD already complete at {out} (same options); nothing to do")
        return
    t0 = time.time()
    profiles = actor_profiles(cfg.actors, list(cfg.portrait))  # before anything is written: it may refuse
    out.mkdir(parents=True, exist_ok=True)
    (out / ".toy_mead").write_text("generated by python -m preprocessing.toy_mead\n")
    actors = prepare_actors_quietly(profiles, cfg.size)
    jobs = [
        ClipJob(a, profile.actor_id, emotion, EMOTIONS.index(emotion), 1 if emotion == NEUTRAL else cfg.level, s)
        for a, profile in enumerate(profiles)
        for emotion in cfg.emotions
        for s in range(cfg.sentences)
    ]
    todo = [job for job in jobs if not job.is_complete(out)]
    n_frames = 0
    if todo:
        workers = min(cfg.workers, len(todo))
        ctx = mp.get_context("spawn")  # fresh workers: no inherited MediaPipe threads
        with ctx.Pool(workers, initializer=init_worker, initargs=(actors, cfg.fps, cfg.seed)) as pool:
            work = pool.imap_unordered(render_job, [(job, str(out)) for job in todo])
            bar = tqdm(
                work,
                total=len(todo),
                desc="toy MEAD clips",
                unit="clip",
                mininterval=1 if sys.stdout.isatty() else 10,
            )
            for frames in bar:
                n_frames += frames
    sheets = [
        contact_sheet(out, p.actor_id, [j for j in jobs if j.actor_id == p.actor_id and j.sentence_index == 0])
        for p in profiles
    ]
    write_dataset(out, dataset_index(cfg, wanted, profiles, len(jobs)))
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(
        f"toy MEAD: {len(jobs)} clips ({len(todo)} new, {n_frames} new frames) in {time.time() - t0:.1f} s, "
        f"{size_mb:.1f} MB at {out}; contact sheets: {', '.join(str(s) for s in sheets)}"
    )
