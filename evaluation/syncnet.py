"""LSE-D / LSE-C (lip-sync error distance / confidence) with SyncNet, from user-placed weights; never downloaded.

The weights are joonson/syncnet_python's `syncnet_v2.model` (its `download_model.sh`), a plain state dict of
`SyncNetModel.S`: `netcnnaud` / `netfcaud` (audio) and `netcnnlip` / `netfclip` (lips), read from
`$TORCH_HOME/hub/checkpoints/` or a path. The recipe is syncnet_python's `run_pipeline.py` (crop_video) and
`SyncNetInstance.evaluate`, as used by Wav2Lip's `evaluation/scores_LSE`:
- video: 25 fps; 224x224 face crops (box centre and half-size median-filtered over 13 frames, the crop
  enlarged by the crop scale 0.4 and shifted down to the mouth, padding 110), fed as BGR floats 0..255
  (cv2 order, no normalisation) in windows of 5 frames;
- audio: 16 kHz PCM16, 13 MFCCs (python_speech_features defaults, on int16-scaled samples) at 100 Hz,
  20 MFCC frames (4 per video frame) per window;
- offsets: audio windows shifted by -15..15 frames (zero features outside the clip), Euclidean distance;
  LSE-D = the smallest mean distance over offsets, LSE-C = median - smallest of those means.
Differences from the reference: our videos may be 30 fps, so crops are resampled to 25 fps by nearest frame
in time (the reference converts the video with `ffmpeg -r 25`); boxes come from our tracker, not S3FD; the
reference's JPEG / XVID re-encoding of frames and crops is skipped. Numbers are therefore close to, not
identical with, published ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from math import gcd
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.fft import dct
from scipy.signal import medfilt, resample_poly
from torch import nn
from torch.nn import functional as F

from common.checkpoint import hub_checkpoint, load_foreign_weights, missing_weights, read_foreign_weights
from common.errors import UserError

SYNCNET_FILE = "syncnet_v2.model"
SYNCNET_FPS = 25.0
AUDIO_SR = 16000
VSHIFT = 15  # offsets searched: -VSHIFT..VSHIFT video frames (run_syncnet.py's --vshift)
WINDOW_FRAMES = 5
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
CROP_SCALE = 0.4  # run_pipeline.py's --crop_scale
SMOOTH_FRAMES = 13  # median filter over box centre and size
PAD_VALUE = 110
BATCH_WINDOWS = 20


def default_path() -> Path:
    return hub_checkpoint(SYNCNET_FILE)


def missing(path: Path | None) -> str | None:
    """Why SyncNet is not available (None = it is); names the file and where it comes from."""
    source = (
        "joonson/syncnet_python's syncnet_v2.model: "
        "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model, see its download_model.sh"
    )
    return missing_weights(Path(path) if path else default_path(), source)


# --- audio ------------------------------------------------------------------------------------------------


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_filters: int = 26, nfft: int = 512, sr: int = AUDIO_SR) -> np.ndarray:
    """(n_filters, nfft // 2 + 1) triangles between FFT bins floor((nfft + 1) * hz / sr) of mel-spaced points
    from 0 Hz to sr / 2 (python_speech_features' get_filterbanks; the bin rounding is part of it)."""
    mels = np.linspace(0.0, _hz_to_mel(sr / 2.0), n_filters + 2)
    edges = np.floor((nfft + 1) * _mel_to_hz(mels) / sr)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    k = np.arange(nfft // 2 + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):  # empty triangles divide by 0 where masked out
        rise = np.where((k >= lo) & (k < mid), (k - lo) / (mid - lo), 0.0)
        fall = np.where((k >= mid) & (k < hi), (hi - k) / (hi - mid), 0.0)
    return rise + fall


def log_mel(audio: np.ndarray, sr: int = AUDIO_SR, nfft: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(n, 26) log mel energies and (n,) log frame energies: pre-emphasis 0.97, 25 ms rectangular frames every
    10 ms (the last zero-padded; n = 1 + ceil((N - win) / step), at least 1), power spectrum |FFT|^2 / nfft."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"audio must be (N,) with N > 0, got shape {x.shape}")
    x = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    win, step = int(np.floor(0.025 * sr + 0.5)), int(np.floor(0.010 * sr + 0.5))  # round half up
    n = 1 if len(x) <= win else 1 + int(np.ceil((len(x) - win) / step))
    x = np.pad(x, (0, (n - 1) * step + win - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::step]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(np.float64).eps  # python_speech_features replaces exact zeros before the log
    energy = power.sum(1)
    bands = power @ mel_filterbank(26, nfft, sr).T
    return np.log(np.where(bands == 0, eps, bands)), np.log(np.where(energy == 0, eps, energy))


def mfcc(audio: np.ndarray, sr: int = AUDIO_SR) -> np.ndarray:
    """(N,) samples -> (n, 13) float64 MFCCs, as python_speech_features.mfcc(audio, sr) with its defaults:
    DCT-II (orthonormal) of the log mel energies, lifter 22, coefficient 0 replaced by the log frame energy.
    The scale of `audio` matters for coefficient 0 (SyncNet's reference feeds int16 values)."""
    bands, energy = log_mel(audio, sr)
    ceps = dct(bands, type=2, axis=1, norm="ortho")[:, :13]
    ceps *= 1.0 + 11.0 * np.sin(np.pi * np.arange(13) / 22.0)
    ceps[:, 0] = energy
    return ceps


def pcm16_scale(audio: np.ndarray, sr: int = AUDIO_SR) -> np.ndarray:
    """(N,) float audio in [-1, 1] at `sr` -> 16 kHz samples on the int16 scale (as scipy's wavfile.read gives
    the reference: our PCM16 files read as int / 32768 come back exactly). Resampled with resample_poly when
    sr != 16 kHz (the reference has ffmpeg resample)."""
    x = np.asarray(audio, dtype=np.float64)
    if sr != AUDIO_SR:
        g = gcd(int(sr), AUDIO_SR)
        x = resample_poly(x, AUDIO_SR // g, int(sr) // g)
    return np.clip(np.round(x * 32768.0), -32768, 32767)


# --- video ------------------------------------------------------------------------------------------------


def _smooth(values: np.ndarray) -> np.ndarray:
    """scipy's medfilt over 13 frames (zero-padded ends), as crop_video; the kernel shrinks (odd) for tracks
    shorter than 13 frames so that the zero padding never wins the median."""
    k = min(SMOOTH_FRAMES, len(values) - (1 - len(values) % 2))
    return medfilt(values, kernel_size=max(k, 1))


def face_crops(frames: Iterable[np.ndarray], boxes: np.ndarray, size: int = 224) -> np.ndarray:
    """(H, W, 3) uint8 frames (any channel order; kept) + (T, 4) face boxes (x1, y1, x2, y2) in frame pixels
    -> (T, size, size, 3) uint8 crops, as syncnet_python's crop_video: half-size s = max(w, h) / 2 and centre,
    each median-filtered over time; the crop spans x in cx +- s (1 + 0.4), y from cy - s to cy + s (1 + 0.8)
    (the mouth near the middle), outside the frame filled with 110, resized bilinearly (cv2) to size."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0 or not np.isfinite(boxes).all():
        raise UserError(f"face boxes must be finite (T, 4) with T > 0, got shape {boxes.shape}")
    half = _smooth(np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2.0)
    cx, cy = _smooth((boxes[:, 0] + boxes[:, 2]) / 2.0), _smooth((boxes[:, 1] + boxes[:, 3]) / 2.0)
    if (half <= 0).any():
        raise UserError("face boxes must have a positive size")
    out = []
    for t, frame in enumerate(frames):
        if t >= len(boxes):
            raise UserError(f"more frames than face boxes ({len(boxes)})")
        out.append(_crop_one(frame, cx[t], cy[t], half[t], size))
    if len(out) != len(boxes):
        raise UserError(f"{len(out)} frames for {len(boxes)} face boxes")
    return np.stack(out)


def _crop_one(frame: np.ndarray, cx: float, cy: float, half: float, size: int) -> np.ndarray:
    # The reference pads the frame by `pad` on each side and slices with int() of padded coordinates; the
    # same window is cut here from a 110-filled canvas without padding the whole frame.
    pad = int(half * (1 + 2 * CROP_SCALE))
    y0, y1 = int(cy + pad - half) - pad, int(cy + pad + half * (1 + 2 * CROP_SCALE)) - pad
    x0, x1 = int(cx + pad - half * (1 + CROP_SCALE)) - pad, int(cx + pad + half * (1 + CROP_SCALE)) - pad
    canvas = np.full((y1 - y0, x1 - x0, 3), PAD_VALUE, dtype=np.uint8)
    h, w = frame.shape[:2]
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_LINEAR)


def resample_indices(n_frames: int, fps: float, target_fps: float = SYNCNET_FPS) -> np.ndarray:
    """Source frame for each output frame at target_fps: the nearest in time (round half up), over the same
    duration (round(n * target / fps) frames)."""
    if abs(fps - target_fps) < 1e-6:
        return np.arange(n_frames)
    n_out = int(np.floor(n_frames * target_fps / fps + 0.5))
    return np.minimum(np.floor(np.arange(n_out) * fps / target_fps + 0.5).astype(int), n_frames - 1)


# --- offsets ----------------------------------------------------------------------------------------------


def offset_distances(video_feat: torch.Tensor, audio_feat: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """(N, D) + (N, D) embeddings -> (N, 2 vshift + 1) distances: [i, j] = |v_i - a_{i + j - vshift} + 1e-6|
    (F.pairwise_distance), with zero audio features outside the clip (syncnet_python's calc_pdist)."""
    if video_feat.shape != audio_feat.shape:
        raise ValueError(f"video {tuple(video_feat.shape)} and audio {tuple(audio_feat.shape)} features differ")
    padded = F.pad(audio_feat, (0, 0, vshift, vshift))
    windows = padded.unfold(0, 2 * vshift + 1, 1).transpose(1, 2)  # (N, 2 vshift + 1, D)
    return F.pairwise_distance(video_feat[:, None, :], windows)


def sync_scores(video_feat: torch.Tensor, audio_feat: torch.Tensor, vshift: int = VSHIFT) -> tuple[float, float, int]:
    """(LSE-D, LSE-C, offset) from (N, D) embeddings: the mean distance per offset; LSE-D its minimum, LSE-C
    median - minimum, offset = vshift - argmin (positive: video frame i matches audio window i - offset)."""
    mean = offset_distances(video_feat, audio_feat, vshift).mean(0)
    low, at = torch.min(mean, 0)
    return float(low), float(torch.median(mean) - low), int(vshift - at)


# --- network ----------------------------------------------------------------------------------------------


def _cbr(conv: nn.Module, bn: nn.Module) -> list[nn.Module]:
    return [conv, bn, nn.ReLU(inplace=True)]


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, 1024))


class SyncNet(nn.Module):
    """SyncNetModel.S with the reference's module indices (state-dict keys). Audio: (B, 1, 13, 20) MFCC
    windows -> (B, 1024); lips: (B, 3, 5, 224, 224) BGR 0..255 float windows -> (B, 1024)."""

    def __init__(self):
        super().__init__()
        c2, b2, c3, b3 = nn.Conv2d, nn.BatchNorm2d, nn.Conv3d, nn.BatchNorm3d
        self.netcnnaud = nn.Sequential(
            *_cbr(c2(1, 64, 3, padding=1), b2(64)),
            nn.MaxPool2d(1, 1),
            *_cbr(c2(64, 192, 3, padding=1), b2(192)),
            nn.MaxPool2d(3, (1, 2)),
            *_cbr(c2(192, 384, 3, padding=1), b2(384)),
            *_cbr(c2(384, 256, 3, padding=1), b2(256)),
            *_cbr(c2(256, 256, 3, padding=1), b2(256)),
            nn.MaxPool2d(3, 2),
            *_cbr(c2(256, 512, (5, 4)), b2(512)),
        )
        self.netfcaud = _head()
        self.netcnnlip = nn.Sequential(
            *_cbr(c3(3, 96, (5, 7, 7), (1, 2, 2)), b3(96)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_cbr(c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), b3(256)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_cbr(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            *_cbr(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            *_cbr(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_cbr(c3(256, 512, (1, 6, 6)), b3(512)),
        )
        self.netfclip = _head()
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> SyncNet:
        path = Path(path) if path else default_path()
        why = missing(path)
        if why:
            raise UserError(f"SyncNet: {why}")
        what = "joonson/syncnet_python's syncnet_v2.model"
        return load_foreign_weights(cls(), read_foreign_weights(path, what), path, what).to(device)

    def forward_audio(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def forward_lip(self, frame_windows: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frame_windows).flatten(1))

    @torch.no_grad()
    def embed(
        self, crops: np.ndarray, fps: float, audio: np.ndarray, sr: int = AUDIO_SR
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, H, W, 3) uint8 RGB face crops at `fps` (from face_crops; resized to 224 if needed) + (N,) float
        audio in [-1, 1] -> (video, audio) embeddings, each (n, 1024) float32 on the CPU: one per 5-frame
        window at 25 fps, n = min(frames, samples // 640) - 5 (the reference stops one window short)."""
        crops = np.asarray(crops)
        crops = crops[resample_indices(len(crops), fps)]
        if crops.shape[1:3] != (224, 224):  # as Wav2Lip's scores_LSE, which resizes every frame to 224
            crops = np.stack([cv2.resize(c, (224, 224), interpolation=cv2.INTER_LINEAR) for c in crops])
        pcm = pcm16_scale(audio, sr)
        n = min(len(crops), len(pcm) // (AUDIO_SR // int(SYNCNET_FPS))) - WINDOW_FRAMES
        if n < 1:
            raise UserError(f"SyncNet needs at least {WINDOW_FRAMES + 1} frames (at 25 fps) with audio; got {n + 5}")
        ceps = torch.from_numpy(mfcc(pcm, AUDIO_SR).T.astype(np.float32))  # (13, n_mfcc)
        bgr = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1]))  # the reference reads frames with cv2
        device = next(self.parameters()).device
        v_out, a_out = [], []
        for i in range(0, n, BATCH_WINDOWS):
            b = min(BATCH_WINDOWS, n - i)
            clip = bgr[i : i + b + WINDOW_FRAMES - 1].to(device).permute(3, 0, 1, 2).float()  # (3, b + 4, H, W)
            windows = clip.unfold(1, WINDOW_FRAMES, 1).permute(1, 0, 4, 2, 3)  # (b, 3, 5, H, W)
            v_out.append(self.forward_lip(windows.contiguous()).cpu())
            starts = MFCC_PER_FRAME * torch.arange(i, i + b)
            cc = torch.stack([ceps[:, s : s + MFCC_PER_FRAME * WINDOW_FRAMES] for s in starts.tolist()])
            a_out.append(self.forward_audio(cc[:, None].to(device)).cpu())
        return torch.cat(v_out), torch.cat(a_out)

    @torch.no_grad()
    def lse(self, crops: np.ndarray, fps: float, audio: np.ndarray, sr: int = AUDIO_SR) -> tuple[float, float]:
        """(LSE-D, LSE-C) of one face track: (T, H, W, 3) uint8 RGB crops at `fps` (face_crops' output; flipped
        to BGR and fed as 0..255 floats, as the reference) and (N,) float audio in [-1, 1] at `sr`."""
        lse_d, lse_c, _ = sync_scores(*self.embed(crops, fps, audio, sr))
        return lse_d, lse_c
