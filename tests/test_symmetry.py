"""The left-right mirror of expressions (facemodel.symmetry) on constructed meshes with known answers, and the
mesh model's basis holding the mirror of its directions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from common.formats import Clip
from facemodel.eyelids import BROW_LOWER, MARGIN_STRETCH, RING_MIN, keep_brow_hair, keep_lid_margins
from facemodel.render import EYE_RINGS
from facemodel.symmetry import mirror_map, mirror_offsets, symmetric_edit, symmetry_plane


def symmetric_cloud(n_pairs: int = 40, n_mid: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(V, 3) points symmetric about x = 0 and each point's true partner."""
    rng = np.random.default_rng(seed)
    right = rng.uniform([0.2, -1, -0.5], [1.0, 1, 0.5], (n_pairs, 3))
    left = right * [-1, 1, 1]
    mid = rng.uniform([0, -1, -0.5], [0, 1, 0.5], (n_mid, 3))
    pts = np.concatenate([right, left, mid])
    partner = np.r_[np.arange(n_pairs, 2 * n_pairs), np.arange(n_pairs), np.arange(2 * n_pairs, 2 * n_pairs + n_mid)]
    return pts, partner


def test_the_plane_of_a_turned_and_tilted_face():
    pts, partner = symmetric_cloud()
    rot = Rotation.from_euler("yxz", [6, -4, 3], degrees=True)
    turned = rot.apply(pts) + [5.0, -2.0, 1.0]
    found, centre, axis = symmetry_plane(turned)
    np.testing.assert_array_equal(found, partner)
    assert abs(axis @ rot.apply([1.0, 0, 0])) == pytest.approx(1.0, abs=1e-9)
    assert (centre - [5.0, -2.0, 1.0]) @ axis == pytest.approx(0.0, abs=1e-9)


def test_mirrored_offsets_swap_sides_and_negate_the_lateral_part():
    pts, partner = symmetric_cloud()
    offsets = np.zeros_like(pts)
    offsets[3] = [0.1, 0.2, 0.3]  # one point on the right moves out, down and back
    mirrored = mirror_offsets(offsets, partner, np.array([1.0, 0, 0]))
    np.testing.assert_allclose(mirrored[partner[3]], [-0.1, 0.2, 0.3])
    assert np.count_nonzero(np.abs(mirrored).sum(1)) == 1


class LinearFace:
    """A backend whose decode is mean + expr @ basis (pose and cam ignored): two one-sided channels (a right and a
    left eye closing) and a symmetric one (a smile)."""

    def __init__(self):
        self.mean, self.partner = symmetric_cloud()
        basis = np.zeros((3, *self.mean.shape))
        basis[0, 3] = [0, 0.1, 0]  # right "lid" down
        basis[1, self.partner[3]] = [0, 0.1, 0]  # its mirror: left lid down
        basis[2, 7], basis[2, self.partner[7]] = [0.1, -0.05, 0], [-0.1, -0.05, 0]  # both corners out and up
        self.basis = basis

    def decode(self, face):
        expr = np.asarray(face["expr"], np.float64)
        return self.mean + np.einsum("td,dvc->tvc", expr, self.basis) + face["identity"].reshape(1, -1, 3)


def face_of(expr: np.ndarray, n_verts: int) -> dict[str, np.ndarray]:
    t = len(expr)
    return {"expr": expr.astype(np.float32), "pose": np.zeros((t, 3), np.float32), "identity": np.zeros(3 * n_verts)}


def test_mirror_map_and_the_symmetric_part_of_a_wink():
    model = LinearFace()
    source = np.array([[0.2, 0.0, 0.1], [0.3, 0.1, 0.0]])  # a little lopsided already
    m, residual = mirror_map(model, face_of(source, len(model.mean)))
    np.testing.assert_allclose(m, [[0, 1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-5)  # probed in float32
    assert residual == pytest.approx(0.0, abs=1e-5)
    wink = source + [1.0, 0.0, 0.0]  # the edit closes the right eye only
    np.testing.assert_allclose(symmetric_edit(source, wink, m), source + [0.5, 0.5, 0.0], atol=1e-6)
    smile = source + [0.0, 0.0, 1.0]  # a symmetric edit is kept; the source's own asymmetry stays
    np.testing.assert_allclose(symmetric_edit(source, smile, m), smile, atol=1e-6)


def test_the_mesh_basis_holds_the_mirror_of_its_directions(processed_tiny):
    from common.formats import read_clip_index
    from facemodel import mesh
    from facemodel.geometry import aligned_points

    index = read_clip_index(processed_tiny)
    train = [c for c in index["clips"] if c["split"] == "train"][:2]
    clips = [aligned_points(Clip(processed_tiny / c["dir"]).track())[:60] for c in train]
    old = mesh.MeshBasis.load(index["basis_file"])
    basis = mesh.fit_basis(clips, [c["actor"] for c in train], old.triangles, 8)
    partner, _, axis = symmetry_plane(basis.mean)
    rows = basis.basis.reshape(len(basis.basis), -1, 3)
    mirrored = mirror_offsets(rows, partner, axis).reshape(len(rows), -1)
    kept = mirrored @ basis.basis.T @ basis.basis  # what the basis holds of each direction's mirror image
    assert np.linalg.norm(mirrored - kept, axis=1).max() < 0.1 * np.linalg.norm(mirrored, axis=1).min()


def test_an_edit_never_shuts_an_eye(processed_tiny):
    """facemodel.eyelids.open_eyes on a real tracked clip and its mesh model: an edit that closes both eyes to a
    tenth of their opening is given back up to (1 - CLOSE_MAX) of the source's opening in every frame; an edit
    that widens them, and the mouth channel, are left as they are."""
    from common.formats import read_clip_index
    from facemodel import load_face_model
    from facemodel.eyelids import (
        CLOSE_MAX,
        LID_PAIRS,
        brows_measured,
        frontal,
        least_change,
        lid_gaps,
        linear_eyes,
        linear_measure,
        open_eyes,
        openings,
    )
    from facemodel.geometry import frame_blocks

    index = read_clip_index(processed_tiny)
    clip = Clip(processed_tiny / index["clips"][0]["dir"])
    model = load_face_model("mesh", index["basis_file"])
    face = clip.face()
    source = face["expr"].astype(np.float64)
    o_src = openings(model, face, source)
    jac, _ = linear_eyes(model, face)
    jac[0] = 0.0
    direction = 2 * jac.sum(axis=1) / np.linalg.norm(jac.sum(axis=1)) ** 2  # both eyes: +1 per unit (on average)
    shut = source - (0.9 * o_src.mean(axis=1))[:, None] * direction[None]
    assert (openings(model, face, shut) < 0.3 * o_src).mean() > 0.8  # the edit shuts the eyes
    kept, capped = open_eyes(model, face, shut.astype(np.float32))
    assert capped > 0.8
    wanted = np.maximum(openings(model, face, shut), (1 - CLOSE_MAX) * o_src)  # closed at most CLOSE_MAX
    o_kept = openings(model, face, kept)  # linear in the coefficients but for the normalisation: near, not equal
    assert np.all(o_kept >= 0.9 * (1 - CLOSE_MAX) * o_src)
    assert np.mean(np.isclose(o_kept, wanted, rtol=0.05, atol=1e-3)) > 0.95
    if brows_measured(model, face):
        # an edit that shuts each eye's middle lid pair only (anger narrowing the eye unevenly): every pair ends
        # closed by at most CLOSE_MAX and the pairs the edit left alone stay as they are (giving back the middle
        # gap alone raised the lid's ends over its middle: spikes)
        def pairs(expr):
            return np.concatenate(
                [
                    lid_gaps(model, model.decode(frontal(face, expr[b])).astype(np.float64))
                    for b in frame_blocks(len(expr))
                ]
            )

        jac_p, metric = linear_measure(model, face, lambda verts: lid_gaps(model, verts))
        at_src = pairs(source)
        middle = [2, 2 + len(LID_PAIRS[0])]
        wanted_change = np.zeros_like(at_src)
        wanted_change[:, middle] = -0.9 * at_src[:, middle]
        uneven = source + wanted_change @ least_change(jac_p, metric).T
        kept_u, _ = open_eyes(model, face, uneven.astype(np.float32))
        at_uneven, at_kept = pairs(uneven), pairs(kept_u.astype(np.float64))
        assert (at_uneven[:, middle] < 0.3 * at_src[:, middle]).mean() > 0.8  # the middle shut, ...
        assert np.abs(at_uneven[:, [0, 4]] - at_src[:, [0, 4]]).max() < 0.1 * np.abs(at_src[:, [0, 4]]).max()
        others = np.setdiff1d(np.arange(at_src.shape[1]), middle)
        # the others held (the middle gap's correction alone moved them 0.11 on average, 1.5x their opening) ...
        assert np.abs(at_kept[:, others] - at_uneven[:, others]).max() < 0.1 * at_src[:, others].mean()
        # ... and the middle given back (the linear solve gets ~70 % of the way on this tiny basis)
        wanted_p = (1 - CLOSE_MAX) * at_src[:, middle]
        assert np.all(at_kept[:, middle] >= at_uneven[:, middle] + 0.5 * (wanted_p - at_uneven[:, middle]))
    np.testing.assert_array_equal(kept[:, 0], shut[:, 0].astype(np.float32))  # the mouth's channel
    wide = (source + (0.3 * o_src.mean(axis=1))[:, None] * direction[None]).astype(np.float32)
    same, none = open_eyes(model, face, wide)
    assert none == 0.0 and np.array_equal(same, wide)


def test_an_edit_never_lowers_a_brow_onto_its_lid(processed_tiny):
    """open_eyes on a real tracked clip: an edit that lowers both brows to a tenth of their height above the lids
    (the toy-learnt anger) is given back up to (1 - BROW_DROP_MAX) of the source's height; the mouth's channel
    is left as it is."""
    from common.formats import read_clip_index
    from facemodel import load_face_model
    from facemodel.eyelids import BROW_DROP_MAX, brow_heights, frontal, linear_measure, open_eyes

    index = read_clip_index(processed_tiny)
    model = load_face_model("mesh", index["basis_file"])
    face = Clip(processed_tiny / index["clips"][0]["dir"]).face()
    source = face["expr"].astype(np.float64)

    def heights(expr):
        return brow_heights(model, model.decode(frontal(face, expr)).astype(np.float64))

    h_src = heights(source)
    jac, _ = linear_measure(model, face, lambda verts: brow_heights(model, verts))
    jac[0] = 0.0
    direction = 6 * jac.sum(axis=1) / np.linalg.norm(jac.sum(axis=1)) ** 2  # every brow: +1 per unit (on average)
    low = source - (0.9 * h_src.mean(axis=1))[:, None] * direction[None]
    assert (heights(low) < 0.4 * h_src).mean() > 0.5  # the brows come down onto the lids
    kept, capped = open_eyes(model, face, low.astype(np.float32))
    assert capped > 0.8
    assert np.all(heights(kept) >= 0.9 * (1 - BROW_DROP_MAX) * h_src)
    np.testing.assert_array_equal(kept[:, 0], low[:, 0].astype(np.float32))


def test_lid_margins_are_kept_within_their_limits_and_nothing_else_moves(processed_tiny):
    """keep_lid_margins on a tracked face: a first ring pulled 2.5x its margin away from the lid comes back to
    MARGIN_STRETCH[1] of it, one turned over past the lid to MARGIN_STRETCH[0], a second ring pushed under the
    first to RING_MIN beyond it; the motion across a chain, the lids, the brows and every other point stay."""
    rest = Clip(sorted(processed_tiny.glob("W001/neutral/level_*/*"))[0]).face()["landmarks2d"][0].astype(np.float64)
    moved = rest + np.random.default_rng(0).normal(0, 0.05, rest.shape)  # a small edit everywhere: kept
    lid, ring1, ring2 = (np.asarray(c) for c in EYE_RINGS[0])
    left_lid, left_ring1, left_ring2 = (np.asarray(c) for c in EYE_RINGS[1])
    margin = rest[ring1] - rest[lid]
    across = np.stack([-margin[:, 1], margin[:, 0]], 1) * 0.2  # a motion across the chain
    moved[ring1] = moved[lid] + 2.5 * margin + across  # stretched
    left_margin = rest[left_ring1] - rest[left_lid]
    moved[left_ring1] = moved[left_lid] - 1.0 * left_margin  # turned over
    band = rest[left_ring2] - rest[left_ring1]
    out = keep_lid_margins(rest, moved)

    def along(points, inner, outer, v):
        return ((points[outer] - points[inner]) * v).sum(-1) / (v * v).sum(-1)

    np.testing.assert_allclose(along(out, lid, ring1, margin), MARGIN_STRETCH[1])
    np.testing.assert_allclose(along(out, left_lid, left_ring1, left_margin), MARGIN_STRETCH[0])
    assert (along(out, left_ring1, left_ring2, band) >= RING_MIN - 1e-9).all()
    np.testing.assert_allclose(
        ((out[ring1] - out[lid]) * across).sum(-1), ((moved[ring1] - moved[lid]) * across).sum(-1)
    )
    changed = np.flatnonzero(np.abs(out - moved).max(1) > 0)
    assert set(changed) <= set(ring1) | set(ring2) | set(left_ring1) | set(left_ring2)
    np.testing.assert_array_equal(keep_lid_margins(rest, rest + 0.01), rest + 0.01)  # within limits: untouched


def test_the_band_under_a_brow_moves_with_it(processed_tiny):
    """keep_brow_hair on a tracked face: brows raised (the right one evenly, the left one more towards its inner
    end, linearly in x) with the second ring above each eye left behind (the hair stretched onto the lid) take
    that ring with them: evenly, and by the brow's line at each ring point's x (its nearer end's beyond the
    brow); the lids, the first ring and every other point stay."""
    rest = Clip(sorted(processed_tiny.glob("W001/neutral/level_*/*"))[0]).face()["landmarks2d"][0].astype(np.float64)
    moved = rest.copy()
    right, left = (np.asarray(b) for b in BROW_LOWER)
    moved[right] += [0.5, -6.0]
    x0, x1 = rest[left[0], 0], rest[left[-1], 0]  # the left brow's outer and inner ends

    def tilt(x):  # rise 2 px at the outer end to 10 px at the inner end, linear in x
        return -(2.0 + 8.0 * np.clip((x - x0) / (x1 - x0), 0.0, 1.0))

    moved[left, 1] += tilt(rest[left, 0])
    out = keep_brow_hair(rest, moved)
    ring_r, ring_l = (np.asarray(EYE_RINGS[k][2]) for k in (0, 1))
    np.testing.assert_allclose(out[ring_r] - rest[ring_r], np.tile([0.5, -6.0], (len(ring_r), 1)), atol=1e-9)
    np.testing.assert_allclose(out[ring_l, 1] - rest[ring_l, 1], tilt(rest[ring_l, 0]), atol=1e-9)
    np.testing.assert_allclose(out[ring_l, 0], rest[ring_l, 0], atol=1e-9)
    changed = np.flatnonzero(np.abs(out - moved).max(1) > 0)
    assert set(changed) == set(ring_r) | set(ring_l)
    np.testing.assert_array_equal(keep_brow_hair(rest, rest), rest)  # brows that stay: nothing moves
    frames = keep_brow_hair(np.stack([rest, rest]), np.stack([moved, rest]))  # frames at once, as the warp runs it
    np.testing.assert_allclose(frames, np.stack([out, rest]))


def test_a_stretched_lip_keeps_its_area_and_a_narrowed_one_is_left(processed_tiny):
    """keep_lip_volume on a tracked face: the lips and mouth stretched 1.4x wide about the mouth's centre (a smile
    that keeps their thickness: drawn swollen) come back to their rest thickness over 1.4 at every column, the
    rings along their column; the inner contour, the corners and every other point stay; a mouth made narrower,
    or a stretch that thins the lips by itself, is left as it is."""
    from facemodel.lips import THIN_MIN, keep_lip_volume
    from facemodel.render import LIP_COLUMNS, MOUTH_CORNERS

    rest = Clip(sorted(processed_tiny.glob("W001/neutral/level_*/*"))[0]).face()["landmarks2d"][0].astype(np.float64)
    lips = np.unique(np.r_[np.concatenate([np.concatenate(c) for c in LIP_COLUMNS]), list(MOUTH_CORNERS)])
    centre = rest[lips].mean(0)

    def widened(points, factor):
        out = points.copy()
        out[lips, 0] = centre[0] + (points[lips, 0] - centre[0]) * factor
        return out

    def thickness(points):
        return np.concatenate([np.linalg.norm(points[c[-1]] - points[c[0]], axis=-1) for c in LIP_COLUMNS])

    moved = widened(rest, 1.4)
    out = keep_lip_volume(rest, moved)
    a, b = MOUTH_CORNERS
    stretch = np.linalg.norm(moved[a] - moved[b]) / np.linalg.norm(
        rest[a] - rest[b]
    )  # 1.4 across, the corners' tilt kept
    assert 1.39 < stretch < 1.41
    np.testing.assert_allclose(thickness(out), np.maximum(thickness(rest) / stretch, THIN_MIN * thickness(rest)))
    inner = np.concatenate([c[0] for c in LIP_COLUMNS])
    changed = np.flatnonzero(np.abs(out - moved).max(1) > 0)
    assert set(changed) <= set(lips) - set(inner) - set(MOUTH_CORNERS)
    for column in LIP_COLUMNS:  # each ring moved along its column: the same share of its distance to the inner point
        base = [moved[column[0]], out[column[0]]]
        shares = [
            np.linalg.norm(out[r] - base[1], axis=-1) / np.linalg.norm(moved[r] - base[0], axis=-1) for r in column[1:]
        ]
        np.testing.assert_allclose(shares[0], shares[2], rtol=1e-6)
    narrow = widened(rest, 0.8)
    np.testing.assert_array_equal(keep_lip_volume(rest, narrow), narrow)
    pout = narrow.copy()  # narrower and thicker (a pout): left as it is
    for inner_pts, *rings in LIP_COLUMNS:
        for r in rings:
            pout[r] = pout[inner_pts] + (pout[r] - pout[inner_pts]) * 1.3
    np.testing.assert_array_equal(keep_lip_volume(rest, pout), pout)
    thin = widened(rest, 1.4)
    for inner_pts, *rings in LIP_COLUMNS:
        for r in rings:
            thin[r] = thin[inner_pts] + (thin[r] - thin[inner_pts]) * 0.5  # already thinner than 1/1.4
    np.testing.assert_array_equal(keep_lip_volume(rest, thin), thin)


def test_an_edit_parts_the_lips_only_as_the_speech_does(processed_tiny):
    """follow_speech: an edit that parts the sides of the lips (any change of the expression channels) gets the
    source's gap at every inner-lip pair times the speech factor; channel 0 (the middle gap) is not moved; the
    lids' openings and the brows' heights stay as the edit had them (the correction once raised the ends of an
    angry upper lid over its lowered middle: points drawn as spikes); the source itself at factor 1 is left as
    it is."""
    from common.formats import read_clip_index
    from facemodel import load_face_model
    from facemodel.eyelids import brows_measured, frontal, upper_face
    from facemodel.lips import follow_speech, gaps_of

    index = read_clip_index(processed_tiny)
    model = load_face_model(index["face_model"], index["basis_file"])
    face = Clip(sorted(processed_tiny.glob("W001/neutral/level_*/*"))[0]).face()
    source = face["expr"].astype(np.float64)
    rng = np.random.default_rng(0)
    edited = source + rng.normal(0, 2.0, source.shape) * source.std(0)  # an emotion moving every channel ...
    edited[:, 0] = 1.2 * source[:, 0]  # ... with the middle gap set as keep_speech sets it
    before = gaps_of(model, face, edited) - 1.2 * gaps_of(model, face, source)
    assert np.abs(before).max() > 0.01  # the sides were parted (or pressed) unlike the speech
    out, share = follow_speech(model, face, edited, 1.2)
    np.testing.assert_allclose(gaps_of(model, face, out), 1.2 * gaps_of(model, face, source), atol=2e-4)
    np.testing.assert_array_equal(out[:, 0], edited[:, 0].astype(np.float32))
    assert share == 1.0
    assert brows_measured(model, face)

    def upper(expr):
        return upper_face(model, model.decode(frontal(face, expr)).astype(np.float64))

    moved = np.abs(upper(out) - upper(edited)).max()
    assert moved < 0.05 * np.abs(upper(edited) - upper(source)).max()  # what the edit did to them: kept
    same, share = follow_speech(model, face, source, 1.0)
    np.testing.assert_array_equal(same, source.astype(np.float32))
    assert share == 0.0
