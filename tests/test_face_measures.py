"""The wink and seam measures of the real-face panel, on constructed landmarks and images with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from evaluation.face_measures import (
    LEFT_EYE,
    RIGHT_EYE,
    boundary_band,
    edited_region,
    eye_asymmetry,
    eye_openings,
    seam_ratio,
)


def eyes(right_open: np.ndarray, left_open: np.ndarray, width: float = 40.0) -> np.ndarray:
    """(T, 478, 2) landmarks: two eyes `width` px wide whose lid gaps are `open * width`."""
    t = len(right_open)
    pts = np.zeros((t, 478, 2))
    for (upper, lower, (outer, inner)), opening, x0 in ((RIGHT_EYE, right_open, 60.0), (LEFT_EYE, left_open, 160.0)):
        pts[:, outer] = [x0, 100.0]
        pts[:, inner] = [x0 + width, 100.0]
        for k, (u, v) in enumerate(zip(upper, lower, strict=True)):
            x = x0 + width * (k + 1) / 4
            pts[:, u] = np.stack([np.full(t, x), 100.0 - opening * width / 2], 1)
            pts[:, v] = np.stack([np.full(t, x), 100.0 + opening * width / 2], 1)
    return pts


def test_eye_openings_are_lid_gap_over_corner_distance():
    got = eye_openings(eyes(np.array([0.3, 0.1]), np.array([0.2, 0.25]), width=50.0))
    np.testing.assert_allclose(got, [[0.3, 0.2], [0.1, 0.25]], rtol=1e-9)


def test_eye_asymmetry_of_a_wink_a_symmetric_change_and_lost_frames():
    t = 9
    source = eyes(np.full(t, 0.3), np.full(t, 0.3))
    wink = eyes(np.full(t, 0.3 * np.exp(-1.5)), np.full(t, 0.3))  # the right eye 4.5x less open
    assert eye_asymmetry(source, wink) == pytest.approx(1.5)
    both = eyes(np.full(t, 0.15), np.full(t, 0.15))  # both eyes narrowed alike: no wink
    assert eye_asymmetry(source, both) == pytest.approx(0.0, abs=1e-12)
    # an asymmetric source kept as it is scores 0; the median ignores a few outlying frames
    tilted = eyes(np.full(t, 0.2), np.full(t, 0.3))
    noisy = eyes(np.r_[np.full(t - 2, 0.2), [0.01, 0.01]], np.full(t, 0.3))
    assert eye_asymmetry(tilted, noisy) == pytest.approx(0.0, abs=1e-12)
    valid = np.zeros(t, bool)
    assert np.isnan(eye_asymmetry(source, wink, valid))


def textured(size: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 2.5)
    ramp = np.linspace(70, 170, size, dtype=np.float32)[None, :]  # skin-like shading and a fine texture
    grey = np.clip(ramp + 40 * noise / noise.std(), 0, 255)
    return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)


def test_edited_region_and_its_band():
    src = textured()
    out = src.copy()
    out[40:100, 50:120] = np.clip(out[40:100, 50:120].astype(int) + 40, 0, 255)
    region = edited_region(src, out)
    assert region[45:95, 55:115].all() and not region[:35].any() and not region[:, :45].any()
    band = boundary_band(region, 4)
    assert band[40, 80] and band[70, 50] and not band[70, 85]  # on the edge, not in the middle
    assert not edited_region(src, src).any()


def test_a_pasted_patch_is_a_seam_and_a_feathered_warp_is_not():
    """A renderer that moves the face's texture with a displacement fading to zero adds no edge; one that pastes a
    moved patch with a hard border (or brightens it) draws one."""
    src = textured()
    yy, xx = np.mgrid[:160, :160].astype(np.float32)
    disc = np.hypot(yy - 80, xx - 80)
    fade = np.clip((50 - disc) / 25, 0, 1)
    fade = fade * fade * (3 - 2 * fade)  # smoothstep: 1 inside r=25, 0 beyond r=50
    warped = cv2.remap(src, xx - 6 * fade, yy, cv2.INTER_LINEAR)
    pasted = src.copy()
    inside = disc < 45
    moved = cv2.remap(src, xx - 10, yy - 4, cv2.INTER_LINEAR).astype(float) + 15  # another place, lit otherwise
    pasted[inside] = np.clip(moved, 0, 255).astype(np.uint8)[inside]
    brighter = np.clip(src.astype(float) + 40.0 * inside[..., None], 0, 255).astype(np.uint8)
    assert seam_ratio(src, warped) == pytest.approx(1.0, abs=0.1)
    assert seam_ratio(src, pasted) > 1.3 and seam_ratio(src, brighter) > 1.3  # the acceptance is 1.2
    assert np.isnan(seam_ratio(src, src))
