"""The warp renderer (renderer.warp): known-answer geometry on real tracked meshes of the tiny toy set."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from common.formats import Clip
from common.raster import interpolate, rasterize
from common.video import probe_video, read_frames
from facemodel import face_model_for
from facemodel.eyelids import keep_brow_hair, keep_lid_margins
from facemodel.geometry import aligned_to_frame
from facemodel.lips import keep_lip_volume
from facemodel.render import FACE_OVAL
from renderer.warp import (
    EYES,
    FIXED,
    FOLD_EPS,
    INNER_LIPS,
    INNER_LIPS_LOWER,
    IRIS_RADIUS,
    LASH_BAND,
    LASH_MIN,
    LASH_PX,
    RING,
    SCLERA_SHADE,
    UNFOLD_SMOOTH,
    ClipWarp,
    WarpRenderer,
    _smoothed_map,
    choose_donors,
    control_points,
    eye_layer,
    folded,
    layered,
    mouth_layer,
    polygon_alpha,
    signed_areas,
    triangles,
    unfold,
    unfold_clip,
    warp_image,
)


@pytest.fixture(scope="module")
def clip(processed_tiny) -> Clip:
    return Clip(sorted(processed_tiny.glob("W001/neutral/level_*/*"))[0])


@pytest.fixture(scope="module")
def model(processed_tiny):
    return face_model_for(processed_tiny)


def _texture(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random image: linear interpolation of it is close to exact, shifts are visible."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), 1.5)


def test_source_parameters_return_the_source(clip, model):
    """The clip's own parameters: the aligned crop and the source frame come back unchanged."""
    plan = WarpRenderer().plan(model, clip, clip.face())
    assert np.abs(plan.dst - plan.src).max() < 1e-9 and (plan.donors == -1).all()
    track = clip.track()
    frames = read_frames(clip.meta.source_video, 0, 3)
    for t in range(3):
        crop = clip.faces.read(t)
        assert np.abs(plan.frame(t, crop).astype(int) - crop).max() <= 1
        frame = frames[t]
        assert np.abs(plan.frame(t, frame, aligned_to_frame(track, t)).astype(int) - frame).max() <= 1


def test_known_translation_moves_the_pixels_by_exactly_that(clip, model):
    src = control_points(model.decode(clip.face())[0, :, :2])
    dst = src.copy()
    dst[:RING] += [3.0, -2.0]  # the face moves, the ring stays
    image = _texture(clip.meta.crop_size)
    out = warp_image(image, src, dst, triangles())
    # well inside the moved face the map is a pure translation: out(x, y) = image(x - 3, y + 2)
    inner = polygon_alpha(dst[FACE_OVAL], 0, 0, image.shape[1], image.shape[0]) > 0.99
    inner = cv2.erode(inner.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    for eye in EYES:  # the holes are triangulated too, but keep the test to the tessellated surface
        inner &= polygon_alpha(dst[eye], 0, 0, image.shape[1], image.shape[0]) == 0
    ys, xs = np.nonzero(inner)
    assert len(ys) > 5000
    np.testing.assert_allclose(out[ys, xs].astype(int), image[ys + 2, xs - 3].astype(int), atol=1)
    # and it is not the identity
    assert np.abs(out[ys, xs].astype(int) - image[ys, xs]).mean() > 5


def _fold_edit(src: np.ndarray) -> np.ndarray:
    """A smile as the manipulator decodes it: the mouth corner pulled up past the cheek point above it, its
    neighbours part of the way (the fold that used to be undone by shrinking the edit), and the nose tip dragged
    down over the upper lip."""
    dst = src.copy()
    dst[[43, 57, 76, 146, 184, 185]] += [-10.0, -13.0]
    dst[61] += [-14.5, -21.0]
    dst[1] += [0.0, 30.0]
    return dst


@pytest.mark.parametrize(
    "scale, shift", [(1.0, (0.0, 0.0)), (1.0, (0.37, 0.81)), (0.93, (0.5, 0.25)), (1.06, (0.9, 0.6))]
)
def test_an_inverting_edit_leaves_no_fold_hole_or_nan(clip, model, scale, shift):
    """A corner dragged past its neighbours folds the sheet: the flipped triangles are drawn behind, every pixel
    inside the ring is covered by an unflipped triangle, the moved corner's content is where it was dragged.
    The tracked mesh is also scaled and moved by sub-pixel amounts: which pixel centres fall where must not
    matter (an earlier version probed the one pixel under the dragged corner, which on another CPU's tracking
    fell just outside the corner's own triangles and showed the cheek behind, as it should)."""
    mesh = control_points(model.decode(clip.face())[0, :, :2])
    size = clip.meta.crop_size
    src = (mesh - size / 2) * scale + size / 2 + np.array(shift)
    tris = triangles()
    dst = _fold_edit(src)
    area_src = signed_areas(src, tris)
    flipped = (area_src * signed_areas(dst, tris) < 0) & (np.abs(area_src) > FOLD_EPS)  # the warp's own rule
    assert flipped.sum() >= 3
    # the probe: a point inside the corner's largest unflipped triangle, 30 % of the way from the corner to the
    # triangle's centroid; the whole edit is moved by a sub-pixel amount so that the probe is a pixel centre
    star = np.flatnonzero((tris == 61).any(1) & ~flipped)
    assert len(star) > 0
    tri = tris[star[np.argmax(np.abs(signed_areas(dst, tris[star])))]]
    probe_dst, probe_src = (0.7 * p[61] + 0.3 * p[tri].mean(0) for p in (dst, src))
    offset = np.floor(probe_dst) + 0.5 - probe_dst
    src, dst, probe_dst, probe_src = src + offset, dst + offset, probe_dst + offset, probe_src + offset
    verts, attrs, layered_tris = layered(src, dst, tris)
    frags = rasterize(verts, layered_tris, size, size)
    front = ~np.isin(frags.face_idx, np.flatnonzero(flipped))  # pixels drawn from an unflipped triangle
    inside = cv2.erode((polygon_alpha(dst[RING:], 0, 0, size, size) > 0.99).astype(np.uint8), np.ones((3, 3))) > 0
    assert frags.mask[inside].all() and front[inside].all()  # no hole, nothing mirrored
    image = _texture(size)
    out = warp_image(image, src, dst, tris)
    assert out.dtype == np.uint8 and out.shape == image.shape
    # next to the dragged corner the map samples the corner's own skin (the moving part is in front, nearer
    # than the unmoved cheek it slides over): exactly the affine map of the corner's triangle
    where = interpolate(attrs.astype(np.float32), layered_tris, frags)
    x, y = np.floor(probe_dst).astype(int)
    np.testing.assert_allclose(where[y, x], probe_src, atol=0.01)
    assert np.isfinite(where).all()  # no NaN: every pixel is a sample of the image


def _drawn_eye(raise_px: float = 0.0):
    """A constructed eye with known answers: skin, a sclera-white opening between two lids (contour element 0
    and 8 the corners, 1..7 the lower lid, 9..15 the upper), a blue iris of radius IRIS_RADIUS eye widths (its top
    and bottom hidden by the lids) with a black pupil, and a dark lash line along the upper lid. Returns the
    image, its contour and the contour with the upper lid raised by `raise_px`."""
    skin, sclera, iris_c = (200, 150, 130), (235, 230, 225), (60, 80, 140)
    t = np.linspace(0.0, 1.0, 9)
    xs = 30.0 + 60.0 * t
    lower = np.stack([xs, 40.0 + 8.0 * np.sin(np.pi * t)], 1)
    upper = np.stack([xs[::-1], 40.0 - 7.0 * np.sin(np.pi * t[::-1])], 1)
    contour = np.concatenate([lower, upper[1:8]]).astype(np.float32)  # 0 = left corner, 8 = right corner
    image = np.full((80, 120, 3), skin, np.uint8)
    opening = polygon_alpha(contour, 0, 0, 120, 80) > 0.5
    image[opening] = sclera
    yy, xx = np.mgrid[0:80, 0:120] + 0.5
    iris = opening & ((xx - 60.0) ** 2 + (yy - 40.0) ** 2 <= (IRIS_RADIUS * 60.0) ** 2)
    image[iris] = iris_c
    image[opening & ((xx - 60.0) ** 2 + (yy - 40.0) ** 2 <= 25.0)] = 0
    cv2.polylines(
        image, [np.round(contour[[8, 9, 10, 11, 12, 13, 14, 15, 0]] - 0.5).astype(np.int32)], False, (30, 20, 20), 2
    )
    raised = contour.copy()
    raised[9:16, 1] -= raise_px * np.sin(np.pi * t[1:8][::-1])
    return image, contour, raised, np.array(sclera, float), np.array(iris_c, float)


def _lid_top(eye: np.ndarray, x: float) -> float:
    upper = [15, 14, 13, 12, 11, 10, 9]  # left to right
    return float(np.interp(x, eye[upper, 0], eye[upper, 1]))


def _lash_band(eye: np.ndarray, x: float) -> float:
    """Rows a raised lid carries up from the source (its margin: lashes and their shadow, and a pixel above)."""
    opening = float(np.interp(x, eye[1:8, 0], eye[1:8, 1])) - _lid_top(eye, x)
    return min(max(LASH_MIN, LASH_BAND * opening), 0.5 * opening) + LASH_PX


def test_a_raised_lid_uncovers_sclera_and_a_round_iris_and_keeps_its_lashes():
    image, src_eye, dst_eye, sclera, _ = _drawn_eye(raise_px=13.0)
    out = image.copy()
    eye_layer(image, out, src_eye, dst_eye)
    lum = out.astype(float) @ [0.299, 0.587, 0.114]
    # beside the iris (x = 44: 16 px from its centre, radius 12.6) the uncovered band is eye white, shaded under
    # the lid, neither skin nor a repeated lash line; the new lid has its lashes
    x = 44
    new_top, old_top = _lid_top(dst_eye, x + 0.5), _lid_top(src_eye, x + 0.5)
    lashes = _lash_band(src_eye, x + 0.5)  # carried up with the lid
    band = out[int(np.ceil(new_top + lashes + 0.5)) : int(np.floor(old_top)), x].astype(float)
    assert len(band) >= 2
    assert np.all(band >= 0.75 * sclera - 2) and np.all(band <= sclera + 2)
    assert lum[int(new_top) : int(new_top) + 3, x].min() < 90
    # above the iris's centre the band is iris up to the drawn iris's top, sclera above it: the iris is round
    iris_top = 40.0 - IRIS_RADIUS * 60.0  # the drawn iris's top row, hidden by the source's lid (at 33)
    col = out[:, 60].astype(float)
    iris_rows = col[int(np.ceil(iris_top + 1.0)) : int(_lid_top(src_eye, 60.5))]
    white_rows = col[int(np.ceil(_lid_top(dst_eye, 60.5) + _lash_band(src_eye, 60.5) + 0.5)) : int(iris_top) - 1]
    assert len(iris_rows) >= 2 and np.all(iris_rows[:, 2] > iris_rows[:, 0] + 30)  # the iris, continued
    assert len(white_rows) >= 1 and np.all(white_rows >= SCLERA_SHADE * sclera - 2)  # and the white above it
    blue = (out[..., 2].astype(int) > out[..., 0].astype(int) + 30) & (lum < 150)
    ys, xs = np.nonzero(blue)
    assert ys.max() - ys.min() <= 1.1 * (xs.max() - xs.min()) + 2
    # the opening's middle is the source's, untouched
    h, w = image.shape[:2]
    middle = cv2.erode((polygon_alpha(src_eye, 0, 0, w, h) > 0.99).astype(np.uint8), np.ones((7, 7))) > 0
    np.testing.assert_array_equal(out[middle], image[middle])


def test_an_eye_without_a_visible_white_repeats_rows_and_moves_rigidly(clip, model):
    """A texture with no sclera/iris contrast (a shaded eye) is not looked into: raising the upper lid keeps the
    source's eye pixels where they were and fills the uncovered band from inside the source opening."""
    mesh = model.decode(clip.face())[0, :, :2]
    eye = np.array(EYES[0])
    src_eye = mesh[eye]
    dst_eye = src_eye.copy()
    upper = list(range(9, 16))  # contour elements 9..15 are the upper lid (0 and 8 the corners)
    dst_eye[upper, 1] -= 3.0
    image = (_texture(clip.meta.crop_size, 1) // 16 + 100).astype(np.uint8)  # under SCLERA_CONTRAST
    out = image.copy()
    eye_layer(image, out, src_eye, dst_eye)
    h, w = image.shape[:2]
    src_inside = cv2.erode((polygon_alpha(src_eye, 0, 0, w, h) > 0.99).astype(np.uint8), np.ones((3, 3))) > 0
    assert src_inside.sum() > 20
    np.testing.assert_array_equal(out[src_inside], image[src_inside])  # not moved, not stretched
    new = (polygon_alpha(dst_eye, 0, 0, w, h) > 0.99) & (polygon_alpha(src_eye, 0, 0, w, h) == 0)
    assert new.sum() > 10 and (out[new] != image[new]).any()  # the band above was redrawn
    # a translation of the whole eye moves its pixels with it
    moved = image.copy()
    eye_layer(image, moved, src_eye, src_eye + [2.0, 0.0])
    ys, xs = np.nonzero(src_inside)
    np.testing.assert_allclose(moved[ys, xs + 2].astype(int), image[ys, xs].astype(int), atol=1)


def test_the_smoothed_map_keeps_the_exact_polygons_and_rounds_the_bends_elsewhere():
    """_smoothed_map: a displacement that bends sharply (piecewise linear, as across a triangle edge) is rounded
    away from the `exact` polygons and unchanged inside them (beyond the blend zone of 2 sigma)."""
    h, w, sigma = 80, 120, 3.0
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    bend = np.maximum(gy - 40.0, 0.0) * 0.3  # rows below 40 move down, more the lower they are
    map_x, map_y = gx.copy(), gy - bend
    box = np.array([[10, 10], [50, 10], [50, 70], [10, 70]], np.float32)  # the left part kept exact
    sx, sy = _smoothed_map(map_x, map_y, gx, gy, sigma, [box], (0, 0))
    np.testing.assert_allclose(sx, map_x, atol=1e-4)  # no sideways motion appears
    inside = (gx > 10 + 2 * sigma) & (gx < 50 - 2 * sigma) & (gy > 10 + 2 * sigma) & (gy < 70 - 2 * sigma)
    np.testing.assert_allclose(sy[inside], map_y[inside], atol=1e-3)
    curvature = lambda m: np.abs(np.diff(m[:, 90], 2)).max()  # noqa: E731  (a column far from the box)
    assert curvature(map_y) > 0.25 and curvature(sy) < 0.2 * curvature(map_y)  # ~1 / (sqrt(2 pi) sigma) of it


def test_uncovered_mouth_is_filled_from_the_closest_open_frame(clip):
    crop = clip.meta.crop_size
    rng = np.random.default_rng(0)
    base = np.array([[x, 0.0] for x in np.linspace(-20, 20, 20)]) + [crop / 2, crop * 0.7]
    closed = base.copy()
    opened = base.copy()
    lower = [INNER_LIPS.index(i) for i in INNER_LIPS_LOWER[1:-1]]
    opened[lower, 1] += 12.0 * np.sin(np.linspace(0.3, np.pi - 0.3, len(lower)))
    src = np.stack([closed + rng.normal(0, 0.1, closed.shape) for _ in range(6)])
    src[4] = opened  # frame 4 shows the mouth open
    dst = src.copy()
    dst[1] = opened + [1.0, 0.5]  # the edit opens frame 1's mouth
    donors = choose_donors(src, dst, crop)
    assert donors[1] == 4 and (np.delete(donors, 1) == -1).all()
    # the donor's mouth interior (green) fills the edited opening
    donor = np.zeros((crop, crop, 3), np.uint8)
    donor[:] = (200, 150, 140)
    cv2.fillPoly(donor, [np.round(opened - 0.5).astype(np.int32)], (0, 255, 0))
    out = np.full((crop, crop, 3), 128, np.uint8)
    mouth_layer(out, donor, opened, dst[1], np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    inside = cv2.erode((polygon_alpha(dst[1], 0, 0, crop, crop) > 0.99).astype(np.uint8), np.ones((5, 5))) > 0
    assert inside.sum() > 50
    assert (out[inside][:, 1] > 200).mean() > 0.9 and (out[inside][:, 0] < 60).mean() > 0.9
    assert (out[~(polygon_alpha(dst[1], 0, 0, crop, crop) > 0)] == 128).all()  # nothing outside the opening


def test_planned_edit_is_smoothed_over_time(clip, model):
    """A jittery edit: the displacement is smoothed over time; its size is kept; the lids and the inner lips are
    where the edit put them (folds among the other points are undone: unfold)."""
    face = dict(clip.face())
    rng = np.random.default_rng(0)
    expr = face["expr"].copy()
    expr[:, 1:] += rng.normal(0, 1.5, expr[:, 1:].shape).astype(np.float32) * expr[:, 1:].std(0)
    face["expr"] = expr
    raw = ClipWarp.plan(model, clip, face, smooth=0.0)
    smooth = ClipWarp.plan(model, clip, face)
    jitter = lambda p: np.abs(np.diff(p.dst - p.src, axis=0)).mean()  # noqa: E731
    assert jitter(smooth) < 0.6 * jitter(raw)
    source = model.decode(clip.face())[:, :RING, :2]
    edited = model.decode(face)[:, :RING, :2]
    # the band under a brow moves with it, the lid margins keep their width (facemodel.eyelids), a stretched lip
    # its area (facemodel.lips), then the folds are undone
    kept = raw.src.astype(np.float64)
    kept[:, :RING] = keep_lip_volume(source, keep_lid_margins(source, keep_brow_hair(source, edited)))
    correction = unfold(raw.src, kept, raw.triangles, FIXED) - kept
    assert np.abs(correction).max() > 0.1  # this edit folds the mesh
    wanted = kept + gaussian_filter1d(correction, UNFOLD_SMOOTH, axis=0, mode="nearest")  # smoothed over time
    np.testing.assert_allclose(raw.dst, wanted, atol=1e-3)  # float32 points
    exact = np.flatnonzero(FIXED[:RING])  # the lids and the inner lips: the edit's own
    np.testing.assert_allclose((raw.dst - raw.src)[:, exact], (edited - source)[:, exact], atol=1e-4)
    assert (raw.dst[:, RING:] == raw.src[:, RING:]).all()  # the ring never moves


def test_unfold_turns_a_pushed_point_back_and_leaves_the_fixed_ones():
    """A grid of triangles with one point pushed past its neighbours (a fold; a second frame without one): the
    fold is undone by moving free points only; the unfolded frame and every fixed point stay as they were."""
    n = 10
    gy, gx = np.mgrid[0:n, 0:n].astype(np.float64) * 10.0
    src = np.stack([gx.ravel(), gy.ravel()], 1)
    idx = np.arange(n * n).reshape(n, n)
    tris = np.concatenate(
        [
            np.stack([idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel()], 1),
            np.stack([idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()], 1),
        ]
    )
    fixed = np.zeros(n * n, bool)
    fixed[idx[0]], fixed[idx[-1]], fixed[idx[:, 0]], fixed[idx[:, -1]] = True, True, True, True
    fixed[idx[3, 3]] = True
    dst = np.stack([src, src + 0.5])
    dst[0, idx[2, 2]] += [14.0, 13.0]  # past its right and lower neighbours
    assert folded(src, dst[0], tris).any() and not folded(src, dst[1], tris).any()
    out = unfold(np.stack([src, src]), dst, tris, fixed)
    assert not folded(src, out[0], tris).any()
    np.testing.assert_array_equal(out[1], dst[1])
    np.testing.assert_array_equal(out[:, fixed], dst[:, fixed])
    # a fold that comes and goes (every other frame): its correction is smoothed over time, not jumping
    frames = np.stack([dst[0] if t % 2 == 0 else src for t in range(9)])
    per_frame = unfold(np.stack([src] * 9), frames, tris, fixed) - frames
    clip = unfold_clip(np.stack([src] * 9), frames, tris, fixed) - frames
    jump = lambda c: np.abs(np.diff(c, axis=0)).max()  # noqa: E731
    assert jump(clip) < 0.5 * jump(per_frame)
    moved = np.flatnonzero(np.abs(out[0] - dst[0]).max(axis=1) > 0)
    assert len(moved) > 0
    rows, cols = np.divmod(moved, n)
    assert np.all(np.maximum(np.abs(rows - 2), np.abs(cols - 2)) <= 2)  # only near the pushed point: the rest stays


def test_refiner_trains_resumes_and_renders(processed_tiny, clip, model, tmp_path):
    """The generic refiner: a tiny run on every identity's clips, resumed, then `warp_refine` edits a clip."""
    from postprocessing.edit_video import edit_video
    from renderer.refine.inference import RefineRenderer
    from renderer.refine.train import main as refine
    from renderer.registry import default_renderer, load_renderer

    runs = tmp_path / "runs"
    assert default_renderer(runs) == "warp"
    args = [
        "--config",
        "configs/refiner/base.yaml",
        "--config",
        "configs/refiner/tiny.yaml",
        f"data_dir={processed_tiny}",
        f"engine.runs_root={runs}",
    ]
    refine(args)
    run = runs / "refiner" / "default"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 6 and np.isfinite(metrics[-1]["l1"]) and metrics[-1]["l1_warp"] > 0
    assert any((run / "tb").iterdir())
    refine([*args, "engine.max_steps=9"])  # resumes at 6
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 6, 9]
    assert default_renderer(runs) == "warp_refine"
    renderer = load_renderer("warp_refine", "cpu", runs)
    assert isinstance(renderer, RefineRenderer) and isinstance(load_renderer(run, "cpu"), RefineRenderer)
    face = dict(clip.face())
    face["expr"] = face["expr"] + np.float32(0.5) * face["expr"].std(0)
    out = edit_video(clip, face, renderer, model, tmp_path / "refined.mp4", side_by_side=True, keep_faces=True)
    assert probe_video(out.paths["video"]).n_frames == clip.n_frames == len(out.faces)
    assert probe_video(out.paths["side_by_side"]).width == 2 * clip.meta.frame_width


def test_donor_is_kept_while_it_fits():
    """Two closed-mouth frames edited open, two open frames that fit about equally: the first choice is kept for
    the next frame instead of flickering to the other donor."""
    crop = 256
    base = np.array([[x, 0.0] for x in np.linspace(-20, 20, 20)]) + [128.0, 180.0]
    lower = [INNER_LIPS.index(i) for i in INNER_LIPS_LOWER[1:-1]]
    bump = np.sin(np.linspace(0.3, np.pi - 0.3, len(lower)))

    def opened(depth: float) -> np.ndarray:
        lips = base.copy()
        lips[lower, 1] += depth * bump
        return lips

    src = np.stack([base, base, opened(12.0), opened(12.6)])
    dst = src.copy()
    dst[0], dst[1] = opened(12.4), opened(12.28)  # frame 1 alone would prefer frame 2, frame 0 prefers 3
    donors = choose_donors(src, dst, crop)
    assert donors[0] == 3 and donors[1] == 3


def test_renderer_choice_errors_are_one_line(tmp_path):
    from common.errors import UserError
    from renderer.registry import load_renderer

    with pytest.raises(UserError, match="no refiner run at .*python -m renderer.refine"):
        load_renderer("warp_refine", "cpu", tmp_path / "runs")
    with pytest.raises(UserError, match="no such renderer run dir"):
        load_renderer(tmp_path / "nope", "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoint; train the renderer first"):
        load_renderer(tmp_path / "empty", "cpu")


def test_frames_where_the_face_is_lost_stay_unedited(clip, model, monkeypatch):
    """A run of lost frames longer than LOST_RUN: those frames are the source's; the edit fades out and in
    around it; a 2-frame dropout is edited like its neighbours."""
    from renderer.warp import EDIT_RAMP, LOST_RUN, edit_weights

    valid = np.ones(40, bool)
    valid[10:20] = False  # 10 lost frames: left alone
    valid[30:32] = False  # a dropout: edited
    w = edit_weights(valid)
    assert (w[10:20] == 0).all() and (w[30:32] == 1).all() and w[0] == 1 and w[-1] == 1
    assert 0 < w[10 - EDIT_RAMP // 2] < 1 and 0 < w[20 + EDIT_RAMP // 2] < 1
    assert np.all(np.diff(w[:10]) <= 0) and np.all(np.diff(w[20:30]) >= 0)
    assert (edit_weights(np.r_[np.ones(5, bool), np.zeros(LOST_RUN, bool), np.ones(5, bool)]) == 1).all()
    track = dict(clip.track())
    track["valid"] = track["valid"].copy()
    track["valid"][5:15] = False
    monkeypatch.setattr(Clip, "track", lambda self, keys=None: track)
    face = dict(clip.face())
    face["expr"] = face["expr"] + np.float32(1.0) * face["expr"].std(0)
    plan = ClipWarp.plan(model, clip, face)
    assert np.abs(plan.dst[5:15] - plan.src[5:15]).max() == 0
    assert np.abs(plan.dst[25:] - plan.src[25:]).max() > 1.0


def test_a_killed_edit_resumes_after_its_last_encoded_part(clip, model, tmp_path, monkeypatch):
    """The edited video is encoded in parts: a rerun after a kill renders only the frames after the last
    finished part and writes the same file an uninterrupted run writes; another edit starts over."""
    from postprocessing import edit_video as ev
    from postprocessing import run as post

    class Killed(BaseException):  # as kill -9: nothing catches it, nothing is cleaned up
        pass

    monkeypatch.setattr(post, "ENCODE_PART", 16)
    face = clip.face()
    face["expr"] = face["expr"].copy()
    face["expr"][:, 1] += 2.0
    renderer = WarpRenderer()
    whole = ev.edit_video(clip, face, renderer, model, tmp_path / "whole.mp4", side_by_side=True, name="x")
    rendered = []
    real = ev._edited

    def counted(plan, clip, blend, keep, writer, start=0, die_at=None):
        for t, pair in enumerate(real(plan, clip, blend, keep, writer, start), start):
            if t == die_at:
                raise Killed
            rendered.append(t)
            yield pair

    monkeypatch.setattr(ev, "_edited", lambda *a, **k: counted(*a, die_at=40, **k))
    with pytest.raises(Killed):
        ev.edit_video(clip, face, renderer, model, tmp_path / "resumed.mp4", side_by_side=True, name="x")
    assert not (tmp_path / "resumed.mp4").exists()
    rendered.clear()
    monkeypatch.setattr(ev, "_edited", counted)
    paths = ev.edit_video(clip, face, renderer, model, tmp_path / "resumed.mp4", side_by_side=True, name="x").paths
    assert rendered == list(range(32, clip.n_frames))  # parts 0 and 1 (frames 0-31) were kept
    for kind, path in paths.items():
        assert path.read_bytes() == whole.paths[kind].read_bytes(), kind
    assert not (tmp_path / ".resumed.mp4.parts").exists()
    face["expr"][:, 1] -= 4.0  # another edit to the same file: nothing of the first is reused
    rendered.clear()
    ev.edit_video(clip, face, renderer, model, tmp_path / "resumed.mp4", side_by_side=True, name="x")
    assert rendered == list(range(clip.n_frames))
