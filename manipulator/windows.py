"""Manipulator windows and their audio: the one rule every stage uses (metric, index, manipulator, renderer).

A window is `seq_len_frames` consecutive frames starting at `start`. Its **anchor** is its last frame,
`start + seq_len_frames - 1`: the audio that represents the window (for retrieval and the SCMCL losses) is
the `n_samples` of audio that end where the anchor frame ends, `frame_to_sample(anchor + 1)`. The window
is thereby represented by speech that it has fully seen (nothing from after the window), and a clip's
first frames get zero-padded audio, never audio from outside the clip. LSCMC used the first frame for the
audio but the last for the images; using one anchor everywhere removes that mismatch.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from common.formats import AUDIO_SR, frame_to_sample


def window_starts(n_frames: int, seq_len_frames: int, hop: int = 1) -> np.ndarray:
    """Start frames of all full windows of a clip: 0, hop, ... while start + seq_len <= n_frames."""
    if n_frames < seq_len_frames:
        return np.zeros(0, np.int64)
    return np.arange(0, n_frames - seq_len_frames + 1, hop, dtype=np.int64)


def anchor_frame(start: int | np.ndarray, seq_len_frames: int) -> int | np.ndarray:
    """The frame whose audio represents the window starting at `start`: its last frame."""
    return start + seq_len_frames - 1


def audio_ending_at_frame(
    audio: np.ndarray, frame: int, fps: float | Fraction, n_samples: int, sr: int = AUDIO_SR
) -> np.ndarray:
    """(n_samples,) float32: the audio that ends where `frame` ends; zero-padded before the clip start."""
    end = int(frame_to_sample(frame + 1, fps, sr))
    start = end - n_samples
    out = np.zeros(n_samples, np.float32)
    lo = max(start, 0)
    hi = min(end, len(audio))
    if hi > lo:
        out[lo - start : hi - start] = audio[lo:hi]
    return out


SILENCE_DBFS = -40.0  # anchor audio quieter than this (RMS, full scale 1.0) carries no speech to match


def is_silent(samples: np.ndarray, dbfs: float = SILENCE_DBFS) -> np.ndarray:
    """Whether audio windows (..., n_samples) are silence: RMS below `dbfs`. Silent windows embed to (nearly)
    one point, so their audio distances say nothing about speech: they are never retrieved nor paired."""
    rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64), axis=-1))
    return rms < 10.0 ** (dbfs / 20.0)


def window_audio(
    audio: np.ndarray, start: int, seq_len_frames: int, fps: float | Fraction, n_samples: int, sr: int = AUDIO_SR
) -> np.ndarray:
    """The audio that represents the window starting at `start` (see the module rule)."""
    return audio_ending_at_frame(audio, int(anchor_frame(start, seq_len_frames)), fps, n_samples, sr)
