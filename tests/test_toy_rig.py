"""Toy MEAD rig and warp on a real portrait: lids never cross, eyes stay round, an open mouth reads as open."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.toy_mead.portrait import LandmarkFinder, prepare_portrait
from preprocessing.toy_mead.profiles import EMOTION_ACTIONS
from preprocessing.toy_mead.rest import neutral_rest, relaxed_texture
from preprocessing.toy_mead.rig import (
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LEFT_IRIS,
    MIN_LID_GAP,
    RIG,
    RIG_NAMES,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    RIGHT_IRIS,
    Rig,
    _lid_gap,
)
from preprocessing.toy_mead.warp import PortraitWarper

SIZE = 192


@pytest.fixture(scope="module")
def portrait():
    finder = LandmarkFinder()
    try:
        image, lm = prepare_portrait("astronaut", SIZE, finder)
    finally:
        finder.close()
    rig = Rig(neutral_rest(lm))
    return image, lm, rig, PortraitWarper(relaxed_texture(image, lm), lm, rig)


def params(**values: float) -> np.ndarray:
    p = np.zeros(len(RIG_NAMES))
    for name, v in values.items():
        p[RIG[name]] = v
    return p


def face_units(rig: Rig, posed: np.ndarray) -> np.ndarray:
    return rig.frame.to_face(posed)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_lids_never_cross_however_the_actions_add_up(portrait, scale):
    _, _, rig, _ = portrait
    for emotion, actions in EMOTION_ACTIONS.items():
        q = face_units(rig, rig.pose(params(**{k: scale * v for k, v in actions.items()}))[:468])
        for up, low in ((RIGHT_EYE_UPPER, RIGHT_EYE_LOWER), (LEFT_EYE_UPPER, LEFT_EYE_LOWER)):
            gap = _lid_gap(q, up, low)
            assert gap.min() >= MIN_LID_GAP - 1e-3, f"{emotion} x{scale}: lid gap {gap.min():.4f}"
    # A blink still closes the eye.
    q = face_units(rig, rig.pose(params(blink=1.0))[:468])
    assert _lid_gap(q, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER).max() < 0.03


def test_irises_move_with_the_eye_corners_not_the_lids(portrait):
    _, _, rig, _ = portrait
    rest = rig.pose(params())
    wide = rig.pose(params(upper_lid_raise=1.5, lid_tighten=1.0))
    np.testing.assert_allclose(wide[RIGHT_IRIS + LEFT_IRIS], rest[RIGHT_IRIS + LEFT_IRIS], atol=1e-9)
    lids_moved = np.abs(wide[RIGHT_EYE_UPPER, 1] - rest[RIGHT_EYE_UPPER, 1]).max()
    assert lids_moved > 0.04 * rig.frame.iod


def test_raised_lids_show_the_eye_white_and_a_round_iris(portrait):
    image, lm, rig, warper = portrait
    p = params(upper_lid_raise=1.5)
    posed = rig.pose(p)
    frame = warper.render(posed, p)
    eye_renderer = warper.eyes
    for (upper, _, iris), (_, _, radius, sclera) in zip(eye_renderer.EYES, eye_renderer.rest, strict=True):
        centre = posed[iris[0], :2]
        # Halfway between the photo's upper lid and the raised one, beside the iris: eye white, not lid skin.
        x = centre[0] + 1.6 * radius
        old_lid = np.interp(x, *sorted_xy(lm[upper, :2]))
        new_lid = np.interp(x, *sorted_xy(posed[upper, :2]))
        assert new_lid < old_lid - 1.0, "the lid did not rise"
        y = 0.5 * (old_lid + new_lid)
        pixel = frame[int(y), int(x)].astype(float)
        ratio = pixel / sclera  # the eye white's own colour, at most shaded by the lid above it
        assert ratio.min() >= 0.65 and ratio.max() <= 1.05 and np.ptp(ratio) < 0.08, f"{pixel} vs white {sclera}"
        # The whole iris shows, round: along the vertical through its centre, as tall as it is wide.
        cx, cy = int(centre[0]), centre[1]
        column = frame[int(cy - 2 * radius) : int(cy + 2 * radius) + 1, cx].astype(float).mean(axis=1)
        row = frame[int(cy), int(centre[0] - 2 * radius) : int(centre[0] + 2 * radius) + 1].astype(float).mean(axis=1)
        threshold = sclera.mean() - 50
        height, width = int((column < threshold).sum()), int((row < threshold).sum())
        assert abs(height - width) <= max(2, 0.25 * width), f"iris {width} px wide, {height} px tall"
    assert np.isfinite(frame).all() and frame.dtype == np.uint8


def sorted_xy(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(points[:, 0])
    return points[order, 0], points[order, 1]


def test_an_open_mouth_is_dark_inside_and_a_closed_one_is_not_drawn(portrait):
    image, _, rig, warper = portrait
    for jaw, dark in ((1.0, True), (0.0, False)):
        p = params(jaw=jaw)
        posed = rig.pose(p)
        frame = warper.render(posed, p)
        # Just above the middle of the lower inner lip: the cavity behind the lower teeth (or, closed, lip).
        x, y = 0.5 * (posed[13, :2] + posed[14, :2])
        luma = frame[int(y), int(x)].astype(float).mean()
        assert (luma < 90) == dark, f"jaw {jaw}: luma {luma:.0f} at the mouth centre"
