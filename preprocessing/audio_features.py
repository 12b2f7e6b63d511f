"""Frame-rate audio features (MFCC / log-mel): one vector per video frame, on the common frame mapping.

Features are computed at a 10 ms hop, then averaged over the hops whose centres fall inside each video
frame's sample range `[frame_to_sample(t), frame_to_sample(t + 1))`, so any fps (incl. 30000/1001) is
exact and nothing drifts.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from common.formats import AUDIO_SR, frame_to_sample

HOP = AUDIO_SR // 100  # 10 ms
N_FFT = 400  # 25 ms window


def hop_features(audio: np.ndarray, kind: str = "mfcc", n_features: int = 13, sr: int = AUDIO_SR) -> np.ndarray:
    """(K, n_features) features at a 10 ms hop; hop k is centred on sample k * HOP."""
    import librosa

    if kind == "mfcc":
        feats = librosa.feature.mfcc(y=audio, sr=sr, n_mfcc=n_features, n_fft=N_FFT, hop_length=HOP, n_mels=40)
    elif kind == "logmel":
        mel = librosa.feature.melspectrogram(y=audio, sr=sr, n_fft=N_FFT, hop_length=HOP, n_mels=n_features)
        feats = np.log(mel + 1e-6)
    else:
        raise ValueError(f"unknown audio feature kind {kind!r}: use mfcc or logmel")
    return feats.T.astype(np.float32)


def frame_features(
    audio: np.ndarray,
    fps: float | Fraction,
    n_frames: int,
    kind: str = "mfcc",
    n_features: int = 13,
    sr: int = AUDIO_SR,
) -> np.ndarray:
    """(n_frames, n_features) float32: the mean of the 10 ms features inside each video frame."""
    feats = hop_features(audio.astype(np.float32), kind, n_features, sr)
    centres = np.arange(len(feats)) * HOP
    starts = frame_to_sample(np.arange(n_frames + 1), fps, sr)
    # hop k belongs to frame t when starts[t] <= centre_k < starts[t + 1]
    owner = np.searchsorted(starts, centres, side="right") - 1
    out = np.zeros((n_frames, feats.shape[1]), np.float64)
    counts = np.zeros(n_frames)
    inside = (owner >= 0) & (owner < n_frames)
    np.add.at(out, owner[inside], feats[inside])
    np.add.at(counts, owner[inside], 1)
    empty = counts == 0  # frames shorter than a hop (fps > 100) take their nearest hop
    if empty.any():
        mid = (starts[:-1][empty] + starts[1:][empty]) // 2
        out[empty] = feats[np.clip(np.round(mid / HOP).astype(int), 0, len(feats) - 1)]
        counts[empty] = 1
    return (out / counts[:, None]).astype(np.float32)
