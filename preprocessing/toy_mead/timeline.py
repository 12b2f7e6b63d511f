"""Per-frame rig parameters of one clip: visemes from the phoneme timeline with coarticulation, the
emotion's facial action, blinks and head motion; plus the phoneme label of every frame."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from common.emotions import ANGRY, FEAR, SAD, SURPRISED
from common.formats import AUDIO_SR
from preprocessing.toy_mead.profiles import EMOTION_ACTIONS, EMOTION_PROSODY, clean_phoneme, viseme
from preprocessing.toy_mead.rig import RIG, RIG_NAMES

CONTROL_HZ = 200  # the speech controls are built on this grid, then sampled at the frame times
SILENCE = "sil"


def phoneme_track(
    phonemes: list[tuple[float, str]], audio: np.ndarray, duration_s: float
) -> tuple[np.ndarray, list[str]]:
    """Phoneme label on the control grid; stretches where the audio is silent are labelled `sil`.

    Returns (times (K,), labels (K,)). eSpeak's phoneme events carry start times only, so a phoneme lasts
    until the next one; pauses inside a phoneme's span are found from the audio energy.
    """
    times = np.arange(int(np.ceil(duration_s * CONTROL_HZ))) / CONTROL_HZ
    labels = [SILENCE] * len(times)
    starts = np.array([t for t, _ in phonemes] + [duration_s])
    for k, (_, label) in enumerate(phonemes):
        sel = np.nonzero((times >= starts[k]) & (times < starts[k + 1]))[0]
        for i in sel:
            labels[i] = clean_phoneme(label)
    # Energy per control step (20 ms windows) against a threshold relative to the loudest part.
    hop = AUDIO_SR // CONTROL_HZ
    padded = np.pad(audio, (hop * 2, hop * 2))
    energy = np.array([np.sqrt(np.mean(padded[i * hop : i * hop + 4 * hop] ** 2)) for i in range(len(times))])
    silent = energy < 0.04 * max(energy.max(), 1e-6)
    for i in np.nonzero(silent)[0]:
        labels[i] = SILENCE
    return times, labels


def speech_controls(labels: list[str], articulation: float) -> np.ndarray:
    """(K, 4) jaw, lip_round, lip_spread, lip_close on the control grid, with coarticulation smoothing.

    Targets are blended by Gaussian smoothing (about 35 ms; 15 ms for lip closure so bilabials still
    close fully), then the jaw is scaled by the emotion's articulation gain.
    """
    targets = np.array([viseme(label) for label in labels], dtype=np.float64)
    out = np.empty_like(targets)
    for c, sigma_ms in enumerate((35.0, 40.0, 40.0, 15.0)):
        out[:, c] = gaussian_filter1d(targets[:, c], sigma_ms * CONTROL_HZ / 1000.0, mode="nearest")
    out[:, 0] *= articulation
    return np.clip(out, 0.0, 1.2)


def blink_curve(n_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Blinks as a Poisson process (~18 per minute), each closing in ~80 ms and opening in ~150 ms."""
    out = np.zeros(n_frames)
    t = rng.uniform(0.3, 2.0)
    duration = n_frames / fps
    times = np.arange(n_frames) / fps
    while t < duration:
        close, open_ = 0.08, 0.15
        rising = np.clip((times - (t - close)) / close, 0, 1)
        falling = np.clip(1 - (times - t) / open_, 0, 1)
        out = np.maximum(out, np.where(times <= t, rising, falling))
        t += rng.exponential(3.3) + 0.6
    return out


def head_motion(n_frames: int, fps: float, rng: np.random.Generator, energy: float) -> np.ndarray:
    """(T, 5) yaw, pitch, roll (radians), tx, ty (face units): slow sums of sinusoids, seeded."""
    times = np.arange(n_frames) / fps
    amplitude = np.array([0.05, 0.035, 0.025, 0.03, 0.025]) * energy
    out = np.zeros((n_frames, 5))
    for axis in range(5):
        for freq in (rng.uniform(0.15, 0.35), rng.uniform(0.5, 0.9)):
            out[:, axis] += amplitude[axis] * 0.6 * np.sin(2 * np.pi * freq * times + rng.uniform(0, 2 * np.pi))
    return out


def build_timeline(
    phonemes: list[tuple[float, str]],
    audio: np.ndarray,
    n_frames: int,
    fps: float,
    emotion: str,
    intensity: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Rig parameters (T, len(RIG_NAMES)) float32 and phoneme labels (T,) for one clip."""
    duration_s = len(audio) / AUDIO_SR
    ctrl_times, labels = phoneme_track(phonemes, audio, duration_s)
    articulation = 1 + (EMOTION_PROSODY[emotion]["articulation"] - 1) * intensity
    controls = speech_controls(labels, articulation)
    frame_times = (np.arange(n_frames) + 0.5) / fps  # sample at the middle of each frame
    idx = np.clip(np.searchsorted(ctrl_times, frame_times) - 1, 0, len(ctrl_times) - 1)
    params = np.zeros((n_frames, len(RIG_NAMES)))
    for c, name in enumerate(("jaw", "lip_round", "lip_spread", "lip_close")):
        params[:, RIG[name]] = np.interp(frame_times, ctrl_times, controls[:, c])
    # The emotion's facial action, held through the clip with a slow +-8% fluctuation.
    sway = 1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * frame_times + rng.uniform(0, 2 * np.pi))
    for name, value in EMOTION_ACTIONS[emotion].items():
        gate = 1.0 - params[:, RIG["lip_close"]] if name == "jaw" else 1.0  # bilabials raise the jaw
        params[:, RIG[name]] += value * intensity * sway * np.clip(gate, 0.0, 1.0)
    params[:, RIG["blink"]] = blink_curve(n_frames, fps, rng)
    energy = {ANGRY: 1.4, SURPRISED: 1.3, SAD: 0.6, FEAR: 1.2}.get(emotion, 1.0)
    params[:, RIG["head_yaw"] :] = head_motion(n_frames, fps, rng, 1 + (energy - 1) * intensity)
    frame_labels = np.array([labels[i] for i in idx], dtype="<U8")
    return params.astype(np.float32), frame_labels
