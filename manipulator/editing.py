"""Editing a whole clip with a trained manipulator: styles (label, reference, intensity, timeline) and the
overlap-add of window outputs.

Every window (hop 1) is edited; window outputs are weighted per frame position by a Gaussian kernel over
the window (OpenCV's default sigma for the window length) and summed into per-frame buffers, which are then
divided by the summed weights. Every frame, the first and last included, is thus a normalised weighted
average of all windows covering it (NED overwrote the first and last 9 frames with raw window outputs).
"""

from __future__ import annotations

import numpy as np
import torch

from common.errors import UserError
from manipulator.windows import window_starts


def gaussian_weights(seq_len: int) -> np.ndarray:
    """(seq_len,) normalised Gaussian kernel, sigma = 0.3 * ((seq_len - 1) / 2 - 1) + 0.8 (as cv2)."""
    sigma = 0.3 * ((seq_len - 1) * 0.5 - 1) + 0.8
    t = np.arange(seq_len) - (seq_len - 1) / 2
    w = np.exp(-(t**2) / (2 * sigma**2))
    return w / w.sum()


def overlap_add(outputs: np.ndarray, starts: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Blend window outputs (N, T, D) placed at `starts` into (n_frames, D); also returns the weight sums."""
    seq_len = outputs.shape[1]
    w = gaussian_weights(seq_len)
    acc = np.zeros((n_frames, outputs.shape[2]))
    total = np.zeros(n_frames)
    for out, s in zip(outputs, starts, strict=True):
        acc[s : s + seq_len] += w[:, None] * out
        total[s : s + seq_len] += w
    if (total <= 0).any():
        raise ValueError("some frames are covered by no window")
    return (acc / total[:, None]).astype(np.float32), total


def geometric_median(points: np.ndarray, eps: float = 1e-5, iters: int = 200) -> np.ndarray:
    """Weiszfeld's algorithm: the point minimising the sum of distances to `points` (N, S)."""
    y = points.mean(axis=0)
    for _ in range(iters):
        d = np.linalg.norm(points - y, axis=1)
        if (d < eps).any():
            return points[np.argmin(d)]
        w = 1.0 / d
        y_new = (w[:, None] * points).sum(axis=0) / w.sum()
        if np.linalg.norm(y_new - y) < eps:
            return y_new
        y = y_new
    return y


def clip_windows(expr: np.ndarray, seq_len: int) -> tuple[torch.Tensor, np.ndarray]:
    """All hop-1 windows of a normalised clip (N, T, D) and their starts."""
    starts = window_starts(len(expr), seq_len, 1)
    if len(starts) == 0:
        raise UserError(f"clip has {len(expr)} frames, fewer than one window ({seq_len} frames)")
    return torch.from_numpy(np.stack([expr[s : s + seq_len] for s in starts])), starts


WINDOW_BATCH = 256  # windows per network call: memory stays bounded on long videos (results do not depend on it)


def _batched(net: torch.nn.Module, windows: torch.Tensor, *per_window: torch.Tensor) -> np.ndarray:
    """net(windows, *per_window) over batches of WINDOW_BATCH windows, concatenated (numpy)."""
    return np.concatenate(
        [
            net(windows[i : i + WINDOW_BATCH], *(x[i : i + WINDOW_BATCH] for x in per_window)).numpy()
            for i in range(0, len(windows), WINDOW_BATCH)
        ]
    )


@torch.no_grad()
def clip_style(style_net: torch.nn.Module, expr: np.ndarray, seq_len: int) -> np.ndarray:
    """A clip's style: the geometric median of the style codes of all its windows."""
    windows, _ = clip_windows(expr, seq_len)
    return geometric_median(_batched(style_net, windows))


@torch.no_grad()
def label_style(mapping: torch.nn.Module, label: int, latent_dim: int, n_samples: int = 32, seed: int = 0):
    """The style of an emotion label: the mean of F(z, y) over seeded latent samples."""
    z = torch.randn(n_samples, latent_dim, generator=torch.Generator().manual_seed(seed))
    return mapping(z, torch.full((n_samples,), label, dtype=torch.long)).mean(dim=0).numpy()


def parse_timeline(spec: str, emotions: list[str]) -> list[tuple[float, str]]:
    """'0:neutral,2.5:happy' -> [(0.0, 'neutral'), (2.5, 'happy')], sorted, starting at 0."""
    out = []
    for item in spec.split(","):
        try:
            t, emotion = item.split(":")
            out.append((float(t), emotion.strip()))
        except ValueError:
            raise UserError(f"--timeline item {item!r} is not <seconds>:<emotion>") from None
        if out[-1][1] not in emotions:
            raise UserError(f"--timeline emotion {out[-1][1]!r} is not one of {', '.join(emotions)}")
    out.sort()
    if not out or out[0][0] > 0:
        raise UserError("--timeline must start at time 0")
    return out


def timeline_styles(times: np.ndarray, timeline: list[tuple[float, np.ndarray]], ramp_s: float = 0.3) -> np.ndarray:
    """Style at each time (N, S): switches between successive styles along smooth (logistic) ramps."""
    styles = np.repeat(timeline[0][1][None], len(times), axis=0)
    for t_switch, style in timeline[1:]:
        alpha = 1.0 / (1.0 + np.exp(-(times - t_switch) / (ramp_s / 6)))
        styles = (1 - alpha)[:, None] * styles + alpha[:, None] * style[None]
    return styles


@torch.no_grad()
def edit_expr(generator: torch.nn.Module, expr: np.ndarray, seq_len: int, styles: np.ndarray) -> np.ndarray:
    """Edit a normalised clip (T, D) with one style per window (N, S) or one style (S,); returns (T, D)."""
    windows, starts = clip_windows(expr, seq_len)
    styles = np.broadcast_to(styles, (len(starts), styles.shape[-1])) if styles.ndim == 1 else styles
    out = _batched(generator, windows, torch.from_numpy(np.ascontiguousarray(styles, dtype=np.float32)))
    return overlap_add(out, starts, len(expr))[0]


# How much an edit may widen the source's articulation; never narrow it: on the real-face panel a sad edit the
# manipulator drew at half the source's opening (the toy set's sad speech is 0.8x as wide) re-tracked at
# lip_r 0.20 -- small openings drawn by the warp are no longer seen as openings.
SPEECH_SCALE = (1.0, 1.5)


def keep_speech(source: np.ndarray, edited: np.ndarray) -> tuple[np.ndarray, float]:
    """(edited with the source's mouth opening, scaled; the scale) for raw (T, D) expressions (channel 0 = the
    opening, docs/formats.md).

    Measured on the real-face panel: the manipulator's openings follow the source's (Pearson 0.95–0.99) but add a
    steady offset (happy: +0.03, 60 % of the opening's spread), which parts every closed mouth; the warp draws a
    parted closed mouth by stretching its dark lip line, which a tracker reads as an opening that no longer
    follows the speech (re-tracked lip_r 0.66–0.77). Here the opening is the source's times one factor, the
    least-squares fit of the edit's opening (clipped to SPEECH_SCALE): the emotion may articulate wider, never
    narrower, a closed mouth (a bilabial) stays closed, and the opening's time course is the spoken one."""
    source, edited = np.asarray(source, np.float64), np.asarray(edited, np.float64)
    o_s, o_e = source[:, 0], edited[:, 0]
    energy = float(o_s @ o_s)
    scale = float(np.clip(o_e @ o_s / energy, *SPEECH_SCALE)) if energy > 1e-12 else 1.0
    out = edited.copy()
    out[:, 0] = scale * o_s
    return out.astype(np.float32), scale
