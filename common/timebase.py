"""Frame <-> audio sample mapping of the clip format. Frame t covers samples [round(t*sr/fps),
round((t+1)*sr/fps)). Rounding is half-up and the arithmetic exact (fractions), so no stage drifts (no
`sr // fps`)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

AUDIO_SR = 16000


def as_fraction(fps: float | Fraction | str) -> Fraction:
    """fps as an exact fraction; 29.97002997... becomes 30000/1001."""
    if isinstance(fps, Fraction):
        return fps
    value = Fraction(fps).limit_denominator(10000) if not isinstance(fps, str) else Fraction(fps)
    if value <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return value


def frame_to_sample(t: int | np.ndarray, fps: float | Fraction, sr: int = AUDIO_SR) -> int | np.ndarray:
    """First audio sample of frame t: round_half_up(t * sr / fps). Works on ints and integer arrays."""
    fr = as_fraction(fps)
    num, den = sr * fr.denominator, fr.numerator  # t*sr/fps == t*num/den
    if isinstance(t, np.ndarray):
        t64 = t.astype(np.int64)
        return (2 * t64 * num + den) // (2 * den)
    return (2 * int(t) * num + den) // (2 * den)


def frame_sample_range(t: int, fps: float | Fraction, sr: int = AUDIO_SR) -> tuple[int, int]:
    """Samples [start, stop) covered by frame t."""
    return frame_to_sample(t, fps, sr), frame_to_sample(t + 1, fps, sr)


def sample_to_frame(s: int | np.ndarray, fps: float | Fraction, sr: int = AUDIO_SR) -> int | np.ndarray:
    """The frame whose sample range contains sample s (inverse of `frame_to_sample`)."""
    fr = as_fraction(fps)
    num, den = sr * fr.denominator, fr.numerator
    # start(t) <= s  <=>  (2*t*num + den) // (2*den) <= s  <=>  2*t*num + den < 2*den*(s+1)
    # so t = ceil((2*den*(s+1) - den) / (2*num)) - 1 = floor((2*den*s + den - 1) / (2*num)), in integers.
    if isinstance(s, np.ndarray):
        s64 = s.astype(np.int64)
        return (2 * den * (s64 + 1) - den - 1) // (2 * num)
    return (2 * den * (int(s) + 1) - den - 1) // (2 * num)


def n_frames_for_duration(n_samples: int, fps: float | Fraction, sr: int = AUDIO_SR) -> int:
    """Number of whole frames whose sample ranges fit in `n_samples`."""
    return int(sample_to_frame(n_samples, fps, sr))
