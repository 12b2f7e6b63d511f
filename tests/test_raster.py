from __future__ import annotations

import numpy as np
import pytest

from common.geometry import ellipsoid_grid, lambert_shade, rotation_matrix, to_screen, vertex_normals
from common.raster import interpolate, rasterize, render


def centres(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w]
    return xs + 0.5, ys + 0.5


def inside(tri: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    (x0, y0), (x1, y1), (x2, y2) = tri[:, :2]
    d = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / d
    w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / d
    return (w0 >= 0) & (w1 >= 0) & (1 - w0 - w1 >= 0)


@pytest.mark.parametrize("winding", [[0, 1, 2], [0, 2, 1]])
def test_coverage_of_known_triangle(winding):
    tri = np.array([[3.2, 4.1, 1.0], [40.7, 9.3, 1.0], [12.5, 30.9, 1.0]], np.float32)
    frags = rasterize(tri, np.array([winding]), 36, 48)
    px, py = centres(36, 48)
    np.testing.assert_array_equal(frags.mask, inside(tri.astype(np.float64), px, py))
    area = 0.5 * abs(
        (tri[1, 0] - tri[0, 0]) * (tri[2, 1] - tri[0, 1]) - (tri[2, 0] - tri[0, 0]) * (tri[1, 1] - tri[0, 1])
    )
    assert abs(frags.mask.sum() - area) < 0.1 * area


def test_square_of_two_triangles_covers_every_pixel_once():
    verts = np.array([[0, 0, 0], [16, 0, 0], [16, 16, 0], [0, 16, 0]], np.float32)
    frags = rasterize(verts, np.array([[0, 1, 2], [0, 2, 3]]), 20, 20)
    assert frags.mask[:16, :16].all() and not frags.mask[16:, :].any() and not frags.mask[:, 16:].any()


def test_nearest_surface_wins_regardless_of_order():
    near = np.array([[0, 0, 1.0], [30, 0, 1.0], [0, 30, 1.0]], np.float32)
    far = np.array([[0, 0, 5.0], [30, 0, 5.0], [0, 30, 5.0]], np.float32)
    for first, second, near_index in ((near, far, 0), (far, near, 1)):
        verts = np.concatenate([first, second])
        frags = rasterize(verts, np.array([[0, 1, 2], [3, 4, 5]]), 32, 32)
        covered = frags.mask
        assert (frags.face_idx[covered] == near_index).all()
        np.testing.assert_allclose(frags.depth[covered], 1.0)


def test_intersecting_triangles_split_by_depth():
    # Two triangles crossing: depth of A grows left->right, B is flat at 0.5; A wins on the left half.
    verts = np.array([[0, 0, 0.0], [40, 0, 1.0], [0, 40, 0.0], [0, 0, 0.5], [40, 0, 0.5], [0, 40, 0.5]], np.float32)
    frags = rasterize(verts, np.array([[0, 1, 2], [3, 4, 5]]), 40, 40)
    px, _ = centres(40, 40)
    covered = frags.mask
    assert (frags.face_idx[covered & (px < 19)] == 0).all()
    assert (frags.face_idx[covered & (px > 21)] == 1).all()


def test_attributes_exact_at_vertices_and_linear_inside():
    # Vertices on pixel centres: the attribute there must equal the vertex attribute exactly.
    tri = np.array([[2.5, 2.5, 0], [50.5, 2.5, 0], [2.5, 40.5, 0]], np.float32)
    attrs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    img, mask = render(tri, np.array([[0, 1, 2]]), attrs, 48, 64)
    for (x, y, _), a in zip(tri, attrs, strict=True):
        np.testing.assert_allclose(img[int(y), int(x)], a, atol=1e-6)
    # A linear function of position is reproduced everywhere inside (barycentrics are affine).
    f = lambda x, y: 0.3 * x - 0.2 * y + 1.0  # noqa: E731
    lin, _ = render(tri, np.array([[0, 1, 2]]), f(tri[:, 0], tri[:, 1]), 48, 64, background=-1)
    px, py = centres(48, 64)
    np.testing.assert_allclose(lin[..., 0][mask], f(px, py)[mask], atol=1e-4)
    assert (lin[~mask] == -1).all()


def test_clipping_degenerate_and_empty():
    verts = np.array([[-50, -50, 0], [500, -50, 0], [-50, 500, 0], [5, 5, 0], [5, 5, 0], [9, 9, 0]], np.float32)
    frags = rasterize(verts, np.array([[0, 1, 2], [3, 4, 5]]), 16, 16)
    assert frags.mask.all() and (frags.face_idx == 0).all()  # huge triangle clipped, degenerate skipped
    empty = rasterize(verts, np.zeros((0, 3), np.int32), 8, 8)
    assert not empty.mask.any()
    with pytest.raises(ValueError, match="outside"):
        rasterize(verts, np.array([[0, 1, 6]]), 8, 8)


def test_mesh_render_properties():
    verts, faces = ellipsoid_grid(22, 22)
    assert len(faces) == 882
    normals = vertex_normals(verts, faces)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    assert (normals[:, 2] < 0).mean() > 0.9  # front faces the camera (-z)
    shade = lambert_shade(normals)
    np.testing.assert_allclose(shade, 0.25 + 0.75 * np.abs(normals[:, 2]), rtol=1e-6)  # light along -z
    facing = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.6, -0.8]])
    np.testing.assert_allclose(lambert_shade(facing), [1.0, 1.0, 0.25, 0.25 + 0.75 * 0.8], rtol=1e-6)
    r = rotation_matrix(0.3, -0.2, 0.1)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert abs(np.linalg.det(r) - 1) < 1e-12
    screen = to_screen(verts, 100.0, (128, 128))
    frags = rasterize(screen, faces, 256, 256)
    img = interpolate(shade, faces, frags)
    assert 0.3 < frags.mask.mean() < 0.9 and img[frags.mask].min() >= 0.25
