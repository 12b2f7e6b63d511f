"""Generate toy MEAD clips: speech -> rig timeline -> warped frames -> mp4 + wav + ground truth.

The files and their layout are those of `preprocessing.toy_mead.dataset` (MEAD's, plus ground truth and
our index). Every file is written atomically and the ground truth last, so an interrupted run resumes clip
by clip.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.emotions import NEUTRAL
from common.formats import AUDIO_SR, frame_to_sample, write_audio
from common.timebase import n_frames_for_duration
from common.video import write_video
from preprocessing.mediapipe_mesh import silence_stderr
from preprocessing.toy_mead.dataset import clip_paths, write_ground_truth
from preprocessing.toy_mead.portrait import LandmarkFinder, prepare_portrait
from preprocessing.toy_mead.profiles import SENTENCES, ActorProfile, emotion_voice
from preprocessing.toy_mead.rest import neutral_rest, relaxed_texture
from preprocessing.toy_mead.rig import RIG_NAMES, Rig
from preprocessing.toy_mead.speech import synthesize
from preprocessing.toy_mead.timeline import build_timeline
from preprocessing.toy_mead.warp import PortraitWarper

LEAD_S, TAIL_S = 0.3, 0.35  # silence around each sentence: the clip starts and ends with a closed mouth


@dataclass(frozen=True)
class ClipJob:
    actor_index: int
    actor_id: str
    emotion: str
    emotion_index: int
    level: int
    sentence_index: int  # 0-based; the clip number is sentence_index + 1

    @property
    def clip_name(self) -> str:
        return f"{self.sentence_index + 1:03d}"

    @property
    def intensity(self) -> float:
        return 0.0 if self.emotion == NEUTRAL else self.level / 3.0

    def paths(self, out: Path) -> dict[str, Path]:
        return clip_paths(out, self.actor_id, self.emotion, self.level, self.clip_name)

    def is_complete(self, out: Path) -> bool:
        return all(p.is_file() for p in self.paths(out).values())


@dataclass(frozen=True)
class Actor:
    profile: ActorProfile
    image: np.ndarray  # (size, size, 3) uint8 RGB
    landmarks: np.ndarray  # (478, 3) rest landmarks in pixels


def speech_for(job: ClipJob, actor: ActorProfile, fps: float) -> tuple[np.ndarray, list[tuple[float, str]], int]:
    """Padded 16 kHz audio trimmed to a whole number of frames, shifted phoneme events, frame count."""
    voice = emotion_voice(actor.voice, job.emotion, job.intensity)
    utt = synthesize(SENTENCES[job.sentence_index], voice)
    audio = np.concatenate(
        [
            np.zeros(round(LEAD_S * AUDIO_SR), np.float32),
            utt.audio,
            np.zeros(round(TAIL_S * AUDIO_SR), np.float32),
        ]
    )
    n_frames = n_frames_for_duration(len(audio), fps)
    audio = audio[: frame_to_sample(n_frames, fps)]
    phonemes = [(t + LEAD_S, label) for t, label in utt.phonemes]
    return audio, phonemes, n_frames


class ClipRenderer:
    """Renders clips of one process; holds one rig and warper per actor."""

    def __init__(self, actors: list[Actor], fps: float, seed: int):
        self.actors = actors
        self.fps = fps
        self.seed = seed
        self._warpers: dict[int, PortraitWarper] = {}

    def warper(self, index: int) -> PortraitWarper:
        if index not in self._warpers:
            actor = self.actors[index]
            rig = Rig(neutral_rest(actor.landmarks))
            self._warpers[index] = PortraitWarper(relaxed_texture(actor.image, actor.landmarks), actor.landmarks, rig)
        return self._warpers[index]

    def render(self, job: ClipJob, out: Path) -> int:
        """Write the clip's mp4, wav and ground truth; returns its frame count."""
        actor = self.actors[job.actor_index]
        rng = np.random.default_rng([self.seed, job.actor_index, job.emotion_index, job.sentence_index])
        audio, phonemes, n_frames = speech_for(job, actor.profile, self.fps)
        params, labels = build_timeline(phonemes, audio, n_frames, self.fps, job.emotion, job.intensity, rng)
        warper = self.warper(job.actor_index)
        landmarks = np.empty((n_frames, 478, 2), np.float32)

        def frames():
            for t in range(n_frames):
                posed = warper.rig.pose(params[t].astype(np.float64))
                landmarks[t] = posed
                yield warper.render(posed, params[t])

        paths = job.paths(out)
        write_video(paths["video"], frames(), self.fps, audio, preset="fast")
        write_audio(paths["audio"], audio)
        truth = {
            "rig": params,
            "rig_names": np.array(RIG_NAMES),
            "phonemes": labels,
            "phoneme_starts": np.array([t for t, _ in phonemes], np.float32),
            "phoneme_labels": np.array([label for _, label in phonemes], dtype="<U8"),
            "landmarks": landmarks,
            "emotion": np.array(job.emotion),
            "level": np.array(job.level, np.int32),
            "intensity": np.array(job.intensity, np.float32),
            "sentence": np.array(SENTENCES[job.sentence_index]),
            "fps": np.array(self.fps, np.float64),
        }
        write_ground_truth(paths["truth"], truth)
        return n_frames


# Worker-process state for multiprocessing (set once per worker by `init_worker`).
_RENDERER: ClipRenderer | None = None


def init_worker(actors: list[Actor], fps: float, seed: int) -> None:
    global _RENDERER
    _RENDERER = ClipRenderer(actors, fps, seed)


def render_job(args: tuple[ClipJob, str]) -> int:
    job, out = args
    assert _RENDERER is not None, "init_worker was not called"
    return _RENDERER.render(job, Path(out))


def prepare_actors(profiles: list[ActorProfile], size: int) -> list[Actor]:
    finder = LandmarkFinder()
    try:
        return [Actor(p, *prepare_portrait(p.portrait, size, finder, p.mirror)) for p in profiles]
    finally:
        finder.close()


def prepare_actors_quietly(profiles: list[ActorProfile], size: int) -> list[Actor]:
    """prepare_actors in a helper process whose stderr is /dev/null: static-image FaceMesh prints its
    native start-up messages when the process exits, which no in-process redirect can catch."""
    ctx = mp.get_context("spawn")
    # An executor (not a Pool): if the helper dies, we get BrokenProcessPool instead of waiting forever.
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=silence_stderr) as pool:
        return pool.submit(prepare_actors, profiles, size).result()
