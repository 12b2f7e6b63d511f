"""Generate the toy MEAD dataset: `python -m preprocessing.toy_mead --out data/toy_mead`.

Defaults give the embedded default set: 2 actors x 7 emotions x 10 sentences at 256x256, 30 fps.
Re-running with the same options on a complete set does nothing; on a partial set it finishes the
missing clips; with other options it refuses (use another --out, or --force to regenerate).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from common.errors import UserError, cli_entry
from common.fsutil import atomic_write_bytes, atomic_write_text
from common.video import iter_frames, probe_video
from preprocessing.toy_mead.generate import ClipJob, init_worker, prepare_actors_quietly, render_job
from preprocessing.toy_mead.portrait import builtin_portrait_path
from preprocessing.toy_mead.profiles import BUILTIN_ACTORS, EMOTIONS, EXTRA_VOICES, SENTENCES, ActorProfile

DATASET_FILE = "dataset.json"
FORMAT_VERSION = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m preprocessing.toy_mead", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data/toy_mead", help="output root (git-ignored data/ by default)")
    p.add_argument("--actors", type=int, default=2, help="number of actors (portraits, then mirrored ones)")
    p.add_argument("--sentences", type=int, default=10, help=f"sentences per emotion (max {len(SENTENCES)})")
    p.add_argument("--emotions", nargs="+", default=list(EMOTIONS), choices=EMOTIONS, metavar="EMOTION")
    p.add_argument("--level", type=int, default=3, choices=(1, 2, 3), help="intensity level of non-neutral clips")
    p.add_argument("--size", type=int, default=256, help="frame size in pixels (square)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--portrait", action="append", default=[], metavar="PATH", help="add a portrait (repeatable)")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 4))
    p.add_argument("--force", action="store_true", help="delete an existing set at --out and regenerate")
    args = p.parse_args(argv)
    if not 1 <= args.sentences <= len(SENTENCES):
        raise UserError(f"--sentences must be between 1 and {len(SENTENCES)}")
    if args.size < 96 or args.size % 2:
        raise UserError("--size must be even and at least 96 (the face must stay trackable)")
    if args.fps <= 0 or args.actors < 1 or args.workers < 1:
        raise UserError("--fps, --actors and --workers must be positive")
    return args


def actor_profiles(n_actors: int, user_portraits: list[str]) -> list[ActorProfile]:
    """Built-in portraits, then user portraits, then mirrored copies (each with its own voice)."""
    base = list(BUILTIN_ACTORS)
    for k, path in enumerate(user_portraits):
        if not Path(path).is_file():
            raise UserError(f"--portrait {path}: file not found")
        base.append(ActorProfile(f"U{k + 1:03d}", str(Path(path).resolve()), EXTRA_VOICES[k % len(EXTRA_VOICES)]))
    profiles = list(base)
    for k, profile in enumerate(base):
        voice = EXTRA_VOICES[(k + len(user_portraits)) % len(EXTRA_VOICES)]
        profiles.append(ActorProfile(f"{profile.actor_id[0]}{101 + k:03d}", profile.portrait, voice, mirror=True))
    if n_actors > len(profiles):
        raise UserError(f"--actors {n_actors}: only {len(profiles)} identities available; add --portrait images")
    return profiles[:n_actors]


def dataset_split(n_sentences: int) -> dict[str, list[str]]:
    """Split by sentence (never by clip), so test sentences are unseen in every emotion."""
    ids = [f"{k + 1:03d}" for k in range(n_sentences)]
    n_test = max(1, round(0.2 * n_sentences)) if n_sentences >= 2 else 0
    n_val = max(1, round(0.2 * n_sentences)) if n_sentences >= 4 else 0
    n_train = n_sentences - n_val - n_test
    return {"train": ids[:n_train], "val": ids[n_train : n_train + n_val], "test": ids[n_train + n_val :]}


def settings(args: argparse.Namespace) -> dict:
    return {
        "actors": args.actors,
        "sentences": args.sentences,
        "emotions": list(args.emotions),
        "level": args.level,
        "size": args.size,
        "fps": args.fps,
        "seed": args.seed,
        "portraits": [str(Path(p).resolve()) for p in args.portrait],
        "format_version": FORMAT_VERSION,
    }


def check_existing(out: Path, wanted: dict, force: bool) -> bool:
    """True when a complete set with these settings is already there."""
    index = out / DATASET_FILE
    if force and out.exists():
        if not index.is_file() and any(out.iterdir()) and not (out / ".toy_mead").is_file():
            raise UserError(f"{out}: not a toy MEAD folder; refusing to delete it with --force")
        shutil.rmtree(out)
        return False
    if index.is_file():
        have = json.loads(index.read_text()).get("settings")
        if have == wanted:
            return True
        raise UserError(f"{out}: holds a toy MEAD set made with other options ({have}); use another --out or --force")
    return False


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


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    wanted = settings(args)
    if check_existing(out, wanted, args.force):
        print(f"toy MEAD already complete at {out} (same options); nothing to do")
        return
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    (out / ".toy_mead").write_text("generated by python -m preprocessing.toy_mead\n")
    profiles = actor_profiles(args.actors, args.portrait)
    actors = prepare_actors_quietly(profiles, args.size)
    jobs = [
        ClipJob(
            a,
            profile.actor_id,
            emotion,
            EMOTIONS.index(emotion),
            1 if emotion == "neutral" else args.level,
            s,
        )
        for a, profile in enumerate(profiles)
        for emotion in args.emotions
        for s in range(args.sentences)
    ]
    todo = [job for job in jobs if not job.is_complete(out)]
    n_frames = 0
    if todo:
        workers = min(args.workers, len(todo))
        ctx = mp.get_context("spawn")  # fresh workers: no inherited MediaPipe threads
        with ctx.Pool(workers, initializer=init_worker, initargs=(actors, args.fps, args.seed)) as pool:
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
    index = {
        "name": "toy MEAD",
        "settings": wanted,
        "actors": [
            {
                "id": p.actor_id,
                "portrait": builtin_portrait_path(p.portrait),
                "mirrored": p.mirror,
                "voice": asdict(p.voice),
            }
            for p in profiles
        ],
        "sentences": [{"id": f"{k + 1:03d}", "text": SENTENCES[k]} for k in range(args.sentences)],
        "emotions": list(args.emotions),
        "levels": {e: (1 if e == "neutral" else args.level) for e in args.emotions},
        "fps": args.fps,
        "size": args.size,
        "audio_sr": 16000,
        "split": dataset_split(args.sentences),
        "n_clips": len(jobs),
    }
    atomic_write_text(out / DATASET_FILE, json.dumps(index, indent=2) + "\n")
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(
        f"toy MEAD: {len(jobs)} clips ({len(todo)} new, {n_frames} new frames) in {time.time() - t0:.1f} s, "
        f"{size_mb:.1f} MB at {out}; contact sheets: {', '.join(str(s) for s in sheets)}"
    )


if __name__ == "__main__":
    main()
