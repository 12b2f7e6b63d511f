"""Toy MEAD rig and warp on a real portrait: lids never cross, irises stay on the eyeball, an open mouth reads as
open."""

from __future__ import annotations

import numpy as np
import pytest

from facemodel.eyelids import MARGIN_STRETCH, RING_MIN
from facemodel.render import EYE_RINGS
from preprocessing.toy_mead import warp
from preprocessing.toy_mead.fidelity import features
from preprocessing.toy_mead.portrait import LandmarkFinder, prepare_portrait
from preprocessing.toy_mead.profiles import EMOTION_ACTIONS
from preprocessing.toy_mead.rest import neutral_rest, relaxed_texture
from preprocessing.toy_mead.rig import (
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LEFT_IRIS,
    LID_DROOP,
    MIN_LID_GAP,
    RIG,
    RIG_NAMES,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    RIGHT_IRIS,
    Rig,
    _lid_gap,
)
from preprocessing.toy_mead.warp import PortraitWarper, _poly_alpha, lip_polygons

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


def _band_ratios(rest: np.ndarray, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lid margins, bands beyond them): each band's length along its rest direction, of its rest length."""
    out = []
    for a, b in ((0, 1), (1, 2)):
        ratios = []
        for chain in EYE_RINGS:
            v_rest = rest[chain[b]] - rest[chain[a]]
            ratios.append(((moved[chain[b]] - moved[chain[a]]) * v_rest).sum(-1) / (v_rest * v_rest).sum(-1))
        out.append(np.concatenate(ratios))
    return out[0], out[1]


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_lid_margins_keep_their_width_in_every_emotion(portrait, scale):
    """The band from a lid to the mesh ring next to it (the lashes) is neither stretched (the brow fields pulled
    it to 2-2.7x in surprise, sadness and fear) nor turned over (anger, disgust): a rig-drawn face has no smeared
    lash band or lid fold, and a manipulator trained on its true points learns none."""
    _, _, rig, _ = portrait
    rest = rig.pose(params())[:468]
    for emotion, actions in [*EMOTION_ACTIONS.items(), ("blink", {"blink": 1.0})]:
        moved = rig.pose(params(**{k: scale * v for k, v in actions.items()}))[:468]
        margin, beyond = _band_ratios(rest, moved)
        lo, hi = MARGIN_STRETCH
        assert margin.min() >= lo - 1e-6 and margin.max() <= hi + 1e-6, (emotion, margin.min(), margin.max())
        assert beyond.min() >= RING_MIN - 1e-6, (emotion, beyond.min())


def test_irises_move_with_the_eye_corners_not_the_lids(portrait):
    _, _, rig, _ = portrait
    rest = rig.pose(params())
    wide = rig.pose(params(upper_lid_raise=1.5, lid_tighten=1.0))
    np.testing.assert_allclose(wide[RIGHT_IRIS + LEFT_IRIS], rest[RIGHT_IRIS + LEFT_IRIS], atol=1e-9)
    lids_moved = np.abs(wide[RIGHT_EYE_UPPER, 1] - rest[RIGHT_EYE_UPPER, 1]).max()
    assert lids_moved > 0.04 * rig.frame.iod


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


def test_lips_are_tinted_towards_a_lip_colour_so_thin_pale_lips_still_show(portrait, monkeypatch):
    """The astronaut's lips, stretched thin and pale by her smile, are pulled towards the lip colour."""
    _, _, rig, warper = portrait
    p = params(jaw=0.3)
    posed = rig.pose(p)
    lips = _poly_alpha((SIZE, SIZE), lip_polygons(posed)) > 0.5
    target = warper.lip_rgb / warper.lip_rgb.sum()

    def chroma_distance() -> float:
        pixels = warper.render(posed, p)[lips].astype(float)
        return float(np.abs(pixels / pixels.sum(axis=1, keepdims=True) - target).sum(axis=1).mean())

    tinted = chroma_distance()
    monkeypatch.setattr(warp, "LIP_TINT", 0.0)
    untinted = chroma_distance()
    assert lips.sum() > 100 and tinted < 0.8 * untinted, f"lip colour distance {tinted:.3f} vs untinted {untinted:.3f}"


def test_lid_droop_lowers_the_upper_lids_by_its_share_of_the_eye(portrait):
    _, _, rig, _ = portrait
    open_gap = _lid_gap(face_units(rig, rig.pose(params())[:468]), RIGHT_EYE_UPPER, RIGHT_EYE_LOWER).max()
    heavy = _lid_gap(face_units(rig, rig.pose(params(lid_droop=1.0))[:468]), RIGHT_EYE_UPPER, RIGHT_EYE_LOWER).max()
    assert heavy == pytest.approx((1 - 0.92 * LID_DROOP) * open_gap, rel=0.05)
    # Drooping lids still blink shut.
    shut = _lid_gap(face_units(rig, rig.pose(params(lid_droop=1.0, blink=1.0))[:468]), RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)
    assert shut.max() < 0.1 * open_gap


def test_fidelity_features_read_the_rigs_own_motion(portrait):
    """The features `python -m preprocessing.toy_mead.fidelity` compares (true vs tracked) move the right way on
    the rig's true points: AU1 raises the inner brows, lid droop narrows the eyes, AU15 drops the mouth corners,
    AU12 widens the mouth; and they are in inter-ocular distances (the same for a face twice the size)."""
    _, _, rig, _ = portrait

    def feats(**values: float) -> np.ndarray:
        return features(rig.pose(params(**values))[None, :, :2])

    base = feats()
    brow, eye, corner, width = (
        feats(**v) - base
        for v in ({"brow_inner_raise": 1.0}, {"lid_droop": 1.0}, {"lip_corner_depress": 1.0}, {"lip_corner_pull": 1.0})
    )
    assert brow[0] > 0.02 and eye[1] < -0.02 and corner[2] > 0.01 and width[3] > 0.02
    twice = features(2.0 * rig.pose(params(brow_inner_raise=1.0))[None, :, :2])
    np.testing.assert_allclose(twice, base + brow, atol=1e-9)
