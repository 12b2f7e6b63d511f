"""The training-free warp renderer (`--renderer warp`): any face, no training, the source's own pixels.

Per frame t the source frame is warped from the source mesh (the clip's own parameters, decoded) to the
edited mesh (the edited parameters, decoded), so identity, skin, hair and background come from the source
pixels and only the geometry changes. The points it moves are FaceMesh's (eye and inner-lip contours, face
oval), so it needs a face model on the FaceMesh topology; a FLAME-fitted (DECA) clip is refused in one line:

- Control points: the 468 mesh points plus a ring around the face oval (RING_SCALE oval radii about its centre)
  that does not move, so the displacement decays to zero between the face and the ring and everything outside
  the ring is the source untouched (no blending seam). Triangles: FaceMesh's own tessellation, a strip between
  the upper and lower chain of each eye and mouth opening, two per oval segment out to the ring. The edited
  mesh is rasterized with the source positions as attributes (`common.raster`): a backward map, sampled once
  with `cv2.remap` directly in frame coordinates (the aligned -> frame transform is applied to the points, so
  the face is resampled once, not twice).
- The displacement (edited minus source mesh) is smoothed over time (Gaussian, SMOOTH_SIGMA frames) so that
  jitter in the edited parameters does not flicker; the source's own motion is untouched.
- Folds: where the edit pushes a point past its neighbours (a lip's outer ring past the next at a mouth corner,
  an angry lid's end over its first ring) the plan first undoes the fold (`unfold`: the free points of each
  turned-over triangle take their neighbours' mean displacement; lids and inner lips never move): drawn, a fold
  was a spike or a frayed dark tail. What stays folded (slivers pinned between fixed points) is drawn behind
  everything and the more a point moved the nearer it is drawn, so the moving skin slides over what it passes:
  no mirrored texture, no hole, no NaN.
- Eyes: inside each edited eye opening the eye (sclera and iris) moves rigidly with the eye corners instead of
  stretching, so irises stay round. Where the edit raises an upper lid (surprise, fear) it uncovers eye the
  source never showed: the lid carries its lash band up with it, the iris is continued as a circle (IRIS_RADIUS
  eye widths, centred where its visible part is widest, drawn radially from that diameter) and the rest is
  sclera of the eye's own colour, shaded under the lid (`eye_look`, `_uncovered_eye`); an eye whose white
  cannot be told from its iris (closed, shaded, behind dark glasses) repeats the rows nearest the source
  opening's middle instead. A lower lid that falls repeats its margin's row.
- Smooth map: the displacement is blurred (MAP_SMOOTH of the face's size) outside the eyes with their lid margins
  and the lips, which keep their exact contours: a piecewise-affine map bends at every triangle edge, and brows
  raised over a forehead of few, large triangles showed the bends as straight creases.
- Lips: a lip stretched wider than at rest is thinned to keep its area (`facemodel.lips.keep_lip_volume`; a smile
  drawn at full lip height looked swollen).
- Lid margins: the band from each lid to the mesh ring next to it carries the lashes; an edit may stretch it
  (a brow raised with the skin next to the lid: 2-2.7x in the toy-learnt surprise, sadness and fear) or turn it
  over (a brow lowered past the lid: anger, disgust), which draws a smeared dark lash band or a fold. The
  first ring keeps a bounded share of the margin's source length along it, the second stays beyond the first
  (`facemodel.eyelids.keep_lid_margins`); lids and brows move as edited, the skin in between takes the stretch.
- Brow hair: the band under each brow, down to the second ring above the eye, moves with the brow
  (`facemodel.eyelids.keep_brow_hair`): stretched, it smeared the hair of thick brows onto the lids.
- Lost face: in runs of more than LOST_RUN frames where the tracker lost the face, the frames are the source's,
  unedited (the edit fades out and back in over EDIT_RAMP frames); shorter dropouts are interpolated and edited.
- Mouth: the teeth and tongue follow the inner-lip correspondence (the opening is the source's by construction:
  expr channel 0). Where the edited inner-lip area is clearly larger than the source's (the edit uncovers what
  the source never showed), the inside of the mouth comes from the frame of the clip whose inner-lip shape is
  closest to the edited one (its aligned crop), mapped by the inner-lip correspondence.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import sparse
from scipy.ndimage import distance_transform_edt, gaussian_filter1d, label
from tqdm import tqdm

from common.formats import FACE_PARAMS, Clip
from common.raster import interpolate, rasterize
from facemodel import FaceModel
from facemodel.eyelids import keep_brow_hair, keep_lid_margins
from facemodel.geometry import apply_affine, frame_blocks, frames_of, invert_affine
from facemodel.lips import keep_lip_volume
from facemodel.mesh import OUTER_LIPS
from facemodel.render import EYE_RINGS, FACE_OVAL, INNER_LIPS_LOWER, INNER_LIPS_UPPER, LEFT_EYE, RIGHT_EYE
from facemodel.topology import FACEMESH_468, mediapipe_triangles
from renderer.interface import Blend, require_topology

N_MESH = 468
RING_SCALE = 1.5  # the fixed ring, in face-oval radii about the oval's centre
SMOOTH_SIGMA = 1.0  # temporal smoothing of the displacement, frames
FOLD_EPS = 0.5  # pixels²: a source triangle this small is collapsed; its orientation says nothing
UNFOLD_SMOOTH = 2.0  # frames: temporal smoothing of unfold's correction (a fold comes and goes frame by frame)
UNFOLD_STEPS = 12  # at most this many neighbour-averaging steps to turn folded triangles back (unfold)
BEHIND = 1e6  # depth of flipped triangles: drawn only where nothing else is
EYES = (RIGHT_EYE, LEFT_EYE)  # 16-point lid contours; element 0 and 8 are the eye corners
EYE_FILL_BAND = 0.25  # uncovered eye pixels repeat rows at least this fraction of the opening inside the lids
LASH_PX = 1.0  # px above the source lid that a raised lid carries up with its margin (the lash line's top)
LASH_BAND, LASH_MIN = 0.15, 1.5  # below a lid: its lashes and their shadow, of the opening's height (at least px)
EYE_MIN_OPENING = 3.0  # px: a lower source opening (a blink) is not looked into for sclera and iris
SCLERA_CONTRAST = 20.0  # luminance levels between sclera and iris needed to tell them apart
SCLERA_SHADE = 0.7  # the sclera's brightness at a raised upper lid (its shadow), of its own colour
IRIS_RADIUS = 0.21  # of the eye's width (corner to corner): a human iris is about 12 of the eye's 28-30 mm
MOUTH_DONOR_RATIO = 1.3  # edited inner-lip area above this multiple of the source's (plus a floor) -> donor frame
MOUTH_DONOR_FLOOR = 2e-3  # in units of the crop area
LOST_RUN = 5  # frames: a longer run without a tracked face is left unedited
EDIT_RAMP = 5  # frames over which the edit fades out before and in after such a run
DONOR_HYSTERESIS = 1.5  # keep the previous donor while its shape cost is within this factor of the best
MAP_SMOOTH = 0.02  # the warp's displacement blurred over this share of the face's size (outside eyes and lips)
# the polygons the smoothed map keeps exact: the lips' outer contour, and each eye out to its second ring (that
# ring along the upper lid, then back along the lower one; EYE_RINGS: right upper, left upper, right lower, left
# lower)
EXACT_REGIONS = [OUTER_LIPS] + [EYE_RINGS[k][2] + EYE_RINGS[k + 2][2][::-1] for k in (0, 1)]
# points `unfold` never moves: the lids (the eyes' openings), the inner lips (the speech) and the fixed ring
FIXED = np.zeros(N_MESH + len(FACE_OVAL), bool)
FIXED[np.r_[RIGHT_EYE, LEFT_EYE, INNER_LIPS_UPPER, INNER_LIPS_LOWER]] = True
FIXED[N_MESH:] = True
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
VERSION = 9  # bump when the output changes: render markers and evaluation caches key on it


def ring_points(mesh2d: np.ndarray) -> np.ndarray:
    """(len(FACE_OVAL), 2): the face oval scaled by RING_SCALE about its centre."""
    oval = mesh2d[FACE_OVAL]
    centre = oval.mean(axis=0)
    return centre + RING_SCALE * (oval - centre)


RING = N_MESH  # index of the first ring point
INNER_LIPS = INNER_LIPS_LOWER + INNER_LIPS_UPPER[-2:0:-1]  # the mouth opening's contour (20 points)
# the openings as two chains from corner to corner (upper, lower), over which a strip of triangles closes the hole
HOLES = [(eye[:1] + eye[15:8:-1] + eye[8:9], eye[:9]) for eye in EYES] + [(INNER_LIPS_UPPER, INNER_LIPS_LOWER)]


def control_points(mesh2d: np.ndarray) -> np.ndarray:
    """(468 + 36, 2): the mesh points and the ring."""
    return np.concatenate([mesh2d[:N_MESH], ring_points(mesh2d)])


def _strip(upper: list[int], lower: list[int]) -> list[list[int]]:
    """Triangles between two chains that share their end points (a crescent-safe triangulation of a hole)."""
    tris = [[upper[0], upper[1], lower[1]]]
    for i in range(1, len(upper) - 2):
        tris += [[upper[i], upper[i + 1], lower[i + 1]], [upper[i], lower[i + 1], lower[i]]]
    return tris + [[upper[-2], upper[-1], lower[-2]]]


def triangles() -> np.ndarray:
    """(F, 3) int32 over `control_points`: FaceMesh's own tessellation (the face surface, whose holes are the
    eye and mouth openings and whose boundary is the face oval), a strip over each hole, and two triangles per
    oval segment out to the ring."""
    n = len(FACE_OVAL)
    ring = [[FACE_OVAL[i], FACE_OVAL[(i + 1) % n], RING + (i + 1) % n] for i in range(n)]
    ring += [[FACE_OVAL[i], RING + (i + 1) % n, RING + i] for i in range(n)]
    holes = [t for upper, lower in HOLES for t in _strip(upper, lower)]
    return np.concatenate([mediapipe_triangles(), np.array(ring + holes, np.int32)])


def signed_areas(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = (points[..., tris[:, k], :] for k in range(3))
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (c[..., 0] - a[..., 0]) * (b[..., 1] - a[..., 1])


def polygon_alpha(polygon: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """(h, w) float32 anti-aliased coverage of a polygon (our pixel-centre convention) in the box at x0, y0."""
    canvas = np.zeros((h, w), np.uint8)
    pts = np.round((polygon - [x0 + 0.5, y0 + 0.5]) * 16).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def _box(points: np.ndarray, shape: tuple[int, int], pad: float) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) around points (+pad), clipped to the image; None when empty."""
    h, w = shape
    x0, y0 = np.floor(points.min(0) - pad).astype(int)
    x1, y1 = np.ceil(points.max(0) + pad).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _composite(out: np.ndarray, layer: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    a = alpha[..., None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(region * (1 - a) + layer.astype(np.float32) * a + 0.5, 0, 255).astype(np.uint8)


def neighbour_mean(tris: np.ndarray, n_points: int) -> sparse.csr_matrix:
    """(n_points, n_points): row p averages the points that share a triangle edge with p (itself where none do)."""
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)  # each edge once; both directions below
    rows, cols = np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]]
    adj = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_points, n_points))
    degree = np.asarray(adj.sum(axis=1)).ravel()
    lonely = degree == 0
    adj = adj + sparse.diags(lonely.astype(float))
    return sparse.diags(1.0 / np.where(lonely, 1.0, degree)) @ adj


def folded(src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(..., F) bool: triangles whose orientation at `dst` (..., P, 2) is the opposite of `src`'s (not collapsed)."""
    area_src, area_dst = signed_areas(src, tris), signed_areas(dst, tris)
    return (area_src * area_dst < 0) & (np.abs(area_src) > FOLD_EPS)


def unfold(
    src: np.ndarray,
    dst: np.ndarray,
    tris: np.ndarray,
    fixed: np.ndarray,
    steps: int = UNFOLD_STEPS,
    mean: sparse.csr_matrix | None = None,
) -> np.ndarray:
    """`dst` (T, P, 2) with the edit's folds undone: the free points (not `fixed`, (P,) bool) of every turned-over
    triangle take their neighbours' mean displacement, step by step, until no triangle with a free point is
    folded (or `steps` run out). An edit folds the mesh where a point is pushed past its neighbours (an angry
    lid's end over its first ring, a lip's outer ring past the next at a mouth corner): `layered` draws a fold
    without holes, but as a spike or a frayed dark tail. Fixed points (the lids, the inner lips: the eyes'
    openings and the speech) never move; a fold among fixed points only is left to `layered`, and so is one the
    steps do not undo (a sliver pinned between fixed points). `mean`: neighbour_mean(tris, P), when it is made
    once for many calls."""
    out = np.array(dst, np.float64)
    src = np.asarray(src, np.float64)
    n_points = src.shape[-2]
    has_free = ~fixed[tris].all(axis=1)
    mean = neighbour_mean(tris, n_points) if mean is None else mean
    todo = np.arange(len(out))
    for _ in range(steps):
        flips = folded(src[todo], out[todo], tris) & has_free  # (t, F)
        keep = flips.any(axis=1)
        todo, flips = todo[keep], flips[keep]
        if len(todo) == 0:
            break
        rows, f_idx = np.nonzero(flips)
        move = np.zeros((len(todo), n_points), bool)
        for k in range(3):
            move[rows, tris[f_idx, k]] = True
        move &= ~fixed
        disp = (out[todo] - src[todo]).transpose(1, 0, 2).reshape(n_points, -1)
        averaged = (mean @ disp).reshape(n_points, len(todo), 2).transpose(1, 0, 2)
        out[todo] = np.where(move[..., None], src[todo] + averaged, out[todo])
    return out.astype(dst.dtype)


def unfold_clip(
    src: np.ndarray, dst: np.ndarray, tris: np.ndarray, fixed: np.ndarray, smooth: float = UNFOLD_SMOOTH
) -> np.ndarray:
    """`unfold` over a whole clip (T, P, 2), its correction smoothed over time (Gaussian, `smooth` frames): frame
    by frame, where a fold comes and goes the correction jumps (measured on the real-face panel: the points it
    moved changed 3-4 px between frames, up to 20, where the edit itself moves them 1-2)."""
    mean = neighbour_mean(tris, src.shape[-2])
    correction = np.empty_like(dst)
    for block in frame_blocks(len(dst)):  # memory: (block, triangles) areas per step
        correction[block] = unfold(src[block], dst[block], tris, fixed, mean=mean) - dst[block]
    if smooth > 0 and len(dst) > 1:
        gaussian_filter1d(correction, smooth, axis=0, mode="nearest", output=correction)
    return dst + correction


def layered(src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices (x, y, depth), source positions and triangles that draw an edit's folds right. Where the edit
    pushes a vertex past its neighbours the warped sheet folds over itself: a flipped triangle (orientation in
    `dst` opposite to `src`'s) sits between two unflipped layers, and with the outer ring fixed every point
    the flipped one covers is also covered by an unflipped one (the map has degree one inside the ring). So
    the flipped triangles go behind everything (their own vertices, far depth), and among the unflipped the
    more a vertex moved the nearer it is: the moving part slides over what it passes (a mouth corner pulled
    up over the cheek), no mirrored texture and no hole."""
    moved = np.linalg.norm(dst - src, axis=1)
    flipped = folded(src, dst, tris)
    verts = np.zeros((len(dst), 3), np.float32)
    verts[:, :2] = dst
    verts[:, 2] = -moved
    if not flipped.any():
        return verts, src, tris
    back = np.unique(tris[flipped])
    remap = np.full(len(dst), -1)
    remap[back] = len(dst) + np.arange(len(back))
    far = verts[back].copy()
    far[:, 2] = BEHIND
    out_tris = tris.copy()
    out_tris[flipped] = remap[tris[flipped]]
    return np.concatenate([verts, far]), np.concatenate([src, src[back]]), out_tris


def warp_image(
    image: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    triangles: np.ndarray,
    smooth: float = 0.0,
    exact: list[np.ndarray] | None = None,
) -> np.ndarray:
    """`image` with the content at control points `src` moved to `dst` (both (N, 2), image pixels, pixel-centre
    convention j + 0.5) by the piecewise-affine backward map over `triangles` (folds drawn by `layered`);
    pixels outside the triangles' hull are the source's. Only the box around the points is resampled.

    `smooth` > 0: the map's displacement is blurred (Gaussian, `smooth` px) outside the `exact` polygons (dst
    pixels; kept exact within `smooth` px of them, blended over as much again): a piecewise-affine map bends
    at every triangle edge, and a large edit (brows raised over a forehead of few, large triangles) shows
    those bends as straight creases and corners in the skin."""
    out = image.copy()
    box = _box(np.concatenate([src, dst]), image.shape[:2], 2.0)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    verts, attrs, tris = layered(src, dst, triangles)
    verts[:, :2] -= [x0, y0]
    frags = rasterize(verts, tris, y1 - y0, x1 - x0)
    where = interpolate(attrs.astype(np.float32) - 0.5, tris, frags)  # cv2 puts pixel j's centre at j
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
    covered = frags.mask
    map_x = np.where(covered, where[..., 0], gx)
    map_y = np.where(covered, where[..., 1], gy)
    if smooth > 0:
        map_x, map_y = _smoothed_map(map_x, map_y, gx, gy, smooth, exact or [], (x0, y0))
    out[y0:y1, x0:x1] = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out


def _smoothed_map(map_x, map_y, gx, gy, sigma: float, exact: list[np.ndarray], origin: tuple[int, int]):
    """The backward map with its displacement blurred by `sigma` px, kept as it is in and near `exact`. The blur
    and the blend mask are computed at 1/f of the resolution (f = sigma // 2: the blurred field and the mask are
    smooth at that scale) and the blend is made at full resolution."""
    h, w = map_x.shape
    f = max(1, int(sigma // 2))
    small = (max(1, round(w / f)), max(1, round(h / f)))
    dx, dy = map_x - gx, map_y - gy
    disp = cv2.merge([dx, dy])
    low = cv2.resize(disp, small, interpolation=cv2.INTER_AREA) if f > 1 else disp
    low = cv2.GaussianBlur(low, (0, 0), sigma / f, borderType=cv2.BORDER_REPLICATE)
    keep = np.zeros(small[::-1], np.float32)
    for polygon in exact:
        scaled = (polygon - origin) * (small[0] / w, small[1] / h) + origin
        keep = np.maximum(keep, polygon_alpha(scaled, origin[0], origin[1], small[0], small[1]))
    if keep.any():
        reach = int(np.ceil(sigma / f))
        keep = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1)))
        keep = np.clip(cv2.GaussianBlur(keep, (0, 0), sigma / f / 2) * 2, 0, 1)
    lx, ly = cv2.split(low)  # per channel, 2-D: a broadcast (h, w, 1) blend costs ~10x more
    if f > 1:
        lx, ly, keep = (cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR) for a in (lx, ly, keep))
    return gx + lx + keep * (dx - lx), gy + ly + keep * (dy - ly)


@dataclass(frozen=True)
class EyeLook:
    """What a source eye's opening shows: its sclera colour and its iris as a circle (source image pixels)."""

    sclera: np.ndarray  # (3,) float32
    cx: float
    cy: float
    r: float


def eye_look(
    patch: np.ndarray, inside: np.ndarray, top: np.ndarray, bottom: np.ndarray, x0: int, y0: int, width: float
):
    """The sclera and iris of an opening: `patch` (h, w, 3) the image in the opening's box (top left x0, y0),
    `inside` (h, w) the opening, `top`/`bottom` (w,) its rows per column (image pixels), `width` the distance
    between its corners. Sclera: the median colour of the brightest fifth of the opening's pixels; iris: a circle
    of IRIS_RADIUS eye widths about the darkness-weighted centre of the columns, at the row where its dark part
    is widest (halfway between the lids when nothing is dark).
    None when the two cannot be told apart (a closed or shaded eye, sunglasses): too small an opening or too
    little contrast between the brightest and the darkest column."""
    counts = inside.sum(0)
    if inside.sum() < 12 or (bottom - top)[counts > 0].max() < EYE_MIN_OPENING:
        return None
    lum = patch.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    bright = inside & (lum >= np.percentile(lum[inside], 80))  # the iris may fill half the opening
    sclera = np.median(patch[bright].astype(np.float32), 0)
    filled = counts >= 2
    col_lum = (lum * inside).sum(0) / np.maximum(counts, 1)
    level = float(np.percentile(lum[inside], 90))
    if level - col_lum[filled].min() < SCLERA_CONTRAST:
        return None
    weight = np.where(filled, np.maximum(level - col_lum, 0.0), 0.0) ** 2
    k = float((weight * np.arange(len(weight))).sum() / weight.sum())
    j = int(round(k - 0.5))
    # the iris's centre row: where its visible part is widest (its horizontal diameter), counted in the iris's own
    # columns between the lash band under the upper lid and the waterline above the lower one (halfway between
    # the lids put it too low where the upper lid hides the iris's top: a white band crossed above the iris)
    r = IRIS_RADIUS * width
    rows_img = y0 + np.arange(inside.shape[0], dtype=np.float32)[:, None] + 0.5
    band = np.maximum(LASH_MIN, LASH_BAND * (bottom - top))[None]
    clean = (rows_img >= top[None] + band) & (rows_img <= bottom[None] - LASH_MIN)
    near = np.abs(np.arange(inside.shape[1]) + 0.5 - (k + 0.5)) <= r
    dark = inside & clean & near[None] & (lum < 0.5 * (level + float(col_lum[filled].min())))
    widths = dark.sum(1)
    if widths.max() > 0:
        rows = np.flatnonzero(widths >= 0.9 * widths.max())
        cy = y0 + 0.5 * float(rows.min() + rows.max()) + 0.5
    else:
        cy = 0.5 * float(top[j] + bottom[j])
    return EyeLook(sclera, x0 + k + 0.5, cy, r)


def eye_layer(image: np.ndarray, out: np.ndarray, src_eye: np.ndarray, dst_eye: np.ndarray) -> None:
    """Redraw one eye's opening in `out`: the source eye (of `image`) moved rigidly with its corners. Where the
    edited upper lid rises above the source's, the eye it uncovers is drawn (`_uncovered_eye`: the lash line
    kept at the lid, the iris continued as a circle, sclera elsewhere, shaded under the lid); an eye whose
    sclera and iris cannot be told apart (`eye_look`) repeats rows from inside its opening instead
    (`_repeated_rows`). Contours (16, 2) in image pixels."""
    box = _box(dst_eye, out.shape[:2], 2.0)
    sbox = _box(src_eye, image.shape[:2], 1.0)
    if box is None or sbox is None:
        return
    x0, y0, x1, y1 = box
    shift = dst_eye[[0, 8]].mean(0) - src_eye[[0, 8]].mean(0)
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32) + 0.5, np.arange(y0, y1, dtype=np.float32) + 0.5)
    qx, qy = gx - shift[0], gy - shift[1]  # each output pixel's place in the source eye
    # the source opening per column: where its lids are, sampled on the source contour's own box
    sx0, sy0, sx1, sy1 = sbox
    inside = polygon_alpha(src_eye, sx0, sy0, sx1 - sx0, sy1 - sy0) > 0.5
    cols = np.flatnonzero(inside.any(0))
    if len(cols) == 0:
        return
    top = np.argmax(inside, 0).astype(np.float32) + sy0 + 0.5
    bottom = (inside.shape[0] - 1 - np.argmax(inside[::-1], 0)).astype(np.float32) + sy0 + 0.5
    col = np.clip(np.floor(qx).astype(int) - sx0, cols[0], cols[-1])
    lo, hi = top[col], bottom[col]
    alpha = polygon_alpha(dst_eye, x0, y0, x1 - x0, y1 - y0)
    width = float(np.linalg.norm(src_eye[8] - src_eye[0]))
    look = eye_look(image[sy0:sy1, sx0:sx1], inside, top, bottom, sx0, sy0, width)
    if look is None:
        qy, sclera = _repeated_rows(qy, lo, hi), None
    else:
        qx, qy, sclera = _uncovered_eye(qy, qx, lo, hi, alpha > 0.5, y0 - shift[1], look)
    qx = np.clip(qx, cols[0] + sx0 - 0.5, cols[-1] + sx0 + 1.5)
    qx, qy = (np.asarray(q, np.float32) - 0.5 for q in (qx, qy))
    layer = cv2.remap(image, qx, qy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if sclera is not None:
        mask, shade = sclera
        layer[mask] = np.clip(look.sclera[None] * shade[mask][:, None] + 0.5, 0, 255).astype(np.uint8)
    _composite(out, layer, alpha, box)


def _repeated_rows(qy: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Rows beyond the source opening (more than a pixel: the lid margin keeps its own, anti-aliased) repeat
    the rows EYE_FILL_BAND of the opening inside it."""
    band = EYE_FILL_BAND * (hi - lo)
    qy = np.where(qy < lo - 1.0, np.minimum(lo + band, (lo + hi) / 2), qy)
    return np.where(qy > hi + 1.0, np.maximum(hi - band, (lo + hi) / 2), qy)


def _uncovered_eye(
    qy: np.ndarray, qx: np.ndarray, lo: np.ndarray, hi: np.ndarray, dst_in: np.ndarray, row0: float, look: EyeLook
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Source columns and rows for an eye whose edited upper lid may rise above the source's (`dst_in`: the
    edited opening in the output box, whose first row sits at source row `row0`), and the sclera pixels with
    their shading. Where the lid rose by more than a pixel, the lid carries its margin: the source's rows from a
    pixel above its lid down to the opening's clean middle (LASH_BAND below the lid: its lashes and their
    shadow) follow it up, and the strip between that band and the clean middle is uncovered eye (with only the
    lid's edge kept, the lashes were painted over with a bright crescent under a thin dark line: eyeliner):
    in the iris's circle the iris, sampled at the same distance from its centre on its horizontal diameter;
    sclera elsewhere, in the lid's shadow near it. A lower lid that falls repeats its margin's row: it uncovers
    little, and a white crescent under the iris reads as an outline."""
    has = dst_in.any(0)
    dtop = np.where(has, np.argmax(dst_in, 0) + row0 + 0.5, np.inf)[None]
    margin = np.maximum(LASH_MIN, LASH_BAND * (hi - lo))
    clean_lo = np.minimum(lo + margin, 0.5 * (lo + hi))
    raised = dtop < lo - 1.0
    band = clean_lo - lo + LASH_PX  # the lid's margin with its lashes and their shadow: the source's, moved up
    lash = raised & (qy - dtop < band)
    uncovered = raised & (qy < clean_lo) & ~lash
    dx, dy = qx - look.cx, qy - look.cy
    in_iris = uncovered & (dx**2 + dy**2 <= look.r**2)
    # the iris is drawn radially: a hidden pixel takes the one at the same distance from its centre on its
    # horizontal diameter, the iris's most visible row in any open eye (its ring stays a ring, the pupil round)
    rho = np.sqrt(dx**2 + dy**2)
    rows = np.where(lash, lo - LASH_PX + (qy - dtop), np.where(qy > hi + 1.0, hi + 1.0, qy))
    rows = np.where(in_iris, look.cy, rows)
    cols = np.where(in_iris, look.cx + np.where(dx < 0, -1.0, 1.0) * rho, qx)
    # sclera under a raised upper lid is in its shadow: SCLERA_SHADE at the lid, full 3 margins below it
    shade = SCLERA_SHADE + (1.0 - SCLERA_SHADE) * np.clip((qy - dtop - band) / (3.0 * margin), 0.0, 1.0)
    return cols, rows, (uncovered & ~in_iris, shade.astype(np.float32))


def warp_face(image: np.ndarray, src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """`warp_image` plus the rigid eyes: control points (468 + ring, 2) in `image`'s pixels. The map is smoothed
    (MAP_SMOOTH of the face's size) outside the eyes with their lid margins (out to EYE_RINGS' second ring) and
    the lips, which keep their exact contours (measured: blurring the brows' motion into the lids narrowed one eye
    of an angry edit behind glasses on a turned face, eye asymmetry 0.21 -> 0.35)."""
    size = float(np.ptp(dst[:N_MESH], axis=0).max())
    out = warp_image(image, src, dst, tris, MAP_SMOOTH * size, [dst[region] for region in EXACT_REGIONS])
    for eye in EYES:
        eye_layer(image, out, src[eye], dst[eye])
    return out


def stretch_map(src: np.ndarray, dst: np.ndarray, tris: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32: log of how much the warp enlarges each triangle's area (0 = unchanged, > 0 stretched,
    < 0 squeezed), at the edited positions `dst`, 0 outside the triangles; clipped to [-2, 2]."""
    ratio = np.log(
        np.maximum(np.abs(signed_areas(dst, tris)), 1e-3) / np.maximum(np.abs(signed_areas(src, tris)), 1e-3)
    )
    verts = np.zeros((len(dst), 3), np.float32)
    verts[:, :2] = dst
    idx = rasterize(verts, tris, size, size).face_idx
    return np.where(idx >= 0, np.clip(ratio, -2.0, 2.0)[idx], 0.0).astype(np.float32)


# the mouth opening's strip over the 20 INNER_LIPS points (their local indices)
_MOUTH = np.array(
    _strip(*([INNER_LIPS.index(i) for i in chain] for chain in (INNER_LIPS_UPPER, INNER_LIPS_LOWER))), np.int32
)


def polygon_area(points: np.ndarray) -> np.ndarray:
    """Shoelace area of (..., N, 2) closed polygons."""
    x, y = points[..., 0], points[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y).sum(-1))


@dataclass
class ClipWarp:
    """The warp of one clip to edited parameters: meshes in aligned-crop pixels, fixed triangulation."""

    clip: Clip
    src: np.ndarray  # (T, 468 + ring, 2) source control points
    dst: np.ndarray  # (T, 468 + ring, 2) edited control points (displacement smoothed over time)
    triangles: np.ndarray
    donors: np.ndarray  # (T,) frame whose mouth fills frame t's, -1 for none
    seekable = True  # any frame renders on its own (renderer.interface.RenderPlan)

    @classmethod
    def plan(cls, model, clip: Clip, face: Mapping[str, np.ndarray], smooth: float = SMOOTH_SIGMA) -> ClipWarp:
        src_face, face = clip.face(keys=FACE_PARAMS), {k: face[k] for k in FACE_PARAMS}
        n = len(src_face["expr"])
        if len(face["expr"]) != n:
            raise ValueError(f"edited parameters have {len(face['expr'])} frames, the clip {n}")
        src = np.empty((n, RING + len(FACE_OVAL), 2), np.float32)  # float32, decoded in blocks: long videos
        disp = np.empty((n, N_MESH, 2), np.float32)
        for s in frame_blocks(n):
            src_mesh = model.decode(frames_of(src_face, s))[:, :N_MESH, :2]
            disp[s] = model.decode(frames_of(face, s))[:, :N_MESH, :2] - src_mesh
            src[s] = [control_points(m) for m in src_mesh]
        if smooth > 0 and n > 1:
            gaussian_filter1d(disp, smooth, axis=0, mode="nearest", output=disp)
        weights = edit_weights(clip.track(keys=["valid"])["valid"])
        disp *= weights[:, None, None].astype(np.float32)
        dst = src.copy()
        dst[:, :N_MESH] += disp
        del disp
        dst[:, :N_MESH] = keep_lid_margins(src[:, :N_MESH], keep_brow_hair(src[:, :N_MESH], dst[:, :N_MESH]))
        dst[:, :N_MESH] = keep_lip_volume(src[:, :N_MESH], dst[:, :N_MESH])
        tris = triangles()
        dst = unfold_clip(src, dst, tris, FIXED)
        dst[weights == 0] = src[weights == 0]  # unedited where the face is lost (the smoothed correction reaches in)
        donors = choose_donors(src[:, INNER_LIPS], dst[:, INNER_LIPS], clip.meta.crop_size)
        return cls(clip, src, dst, tris, donors)

    @property
    def n_frames(self) -> int:
        return len(self.src)

    def frame(self, t: int, image: np.ndarray, to_image: np.ndarray | None = None) -> np.ndarray:
        """Frame t rendered from `image` (its source frame, or its aligned crop when `to_image` is None);
        `to_image` = the (2, 3) aligned -> image transform of frame t."""
        to_image = IDENTITY if to_image is None else to_image
        out = warp_face(image, apply_affine(to_image, self.src[t]), apply_affine(to_image, self.dst[t]), self.triangles)
        donor = int(self.donors[t])
        if donor >= 0:
            mouth_layer(
                out, self.clip.faces.read(donor), self.src[donor, INNER_LIPS], self.dst[t, INNER_LIPS], to_image
            )
        return out

    def faces(self, progress: bool = False) -> Iterator[np.ndarray]:
        """Aligned faces (crop, crop, 3) uint8 of every frame, warped from the clip's aligned crops."""
        for t in tqdm(range(self.n_frames), desc="warp", unit="frame", disable=not progress, mininterval=5):
            yield self.frame(t, self.clip.faces.read(t))

    def edit_frame(
        self, t: int, frame: np.ndarray, to_frame: np.ndarray, blend: Blend
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Source frame t warped in frame coordinates: nothing to blend, no aligned face of its own."""
        return self.frame(t, frame, to_frame), None


def mouth_layer(
    out: np.ndarray, donor: np.ndarray, donor_lips: np.ndarray, dst_lips: np.ndarray, to_image: np.ndarray
) -> None:
    """Fill the edited inner-lip polygon of `out` with the inside of another frame's mouth: `donor` is that
    frame's aligned crop, `donor_lips` / `dst_lips` (20, 2) its and the edited inner lips in aligned pixels,
    `to_image` the aligned -> `out` transform. The map is the lip correspondence (a strip between the lips)."""
    box = _box(apply_affine(to_image, dst_lips), out.shape[:2], 2.0)
    if box is None:
        return
    x0, y0, x1, y1 = box
    s = donor.shape[0]
    verts = np.zeros((len(dst_lips), 3), np.float32)
    verts[:, :2] = dst_lips
    frags = rasterize(verts, _MOUTH, s, s)
    strip = interpolate(donor_lips.astype(np.float32) - 0.5, _MOUTH, frags)  # aligned (edited) -> donor, cv2 coords
    inv = invert_affine(to_image)
    gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float32) + 0.5, np.arange(y0, y1, dtype=np.float32) + 0.5)
    ax = (inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2] - 0.5).astype(np.float32)
    ay = (inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2] - 0.5).astype(np.float32)
    where = cv2.remap(strip, ax, ay, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.remap(frags.mask.astype(np.float32), ax, ay, cv2.INTER_LINEAR) > 0.99
    layer = cv2.remap(donor, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = cv2.erode(polygon_alpha(apply_affine(to_image, dst_lips), x0, y0, x1 - x0, y1 - y0), np.ones((3, 3)))
    _composite(out, layer, alpha * inside, box)


def edit_weights(valid: np.ndarray) -> np.ndarray:
    """(T,) how much of the edit each frame gets: 0 in runs of more than LOST_RUN frames where the face was
    lost (the face is gone or turned away: the frame is the source, unedited), 1 elsewhere (short dropouts are
    interpolated by the tracker and edited), ramping over EDIT_RAMP frames at the edges of a lost run."""
    runs, _ = label(~np.asarray(valid, bool))  # 0 where tracked, k for the k-th lost run
    weight = np.where((np.bincount(runs)[runs] > LOST_RUN) & (runs > 0), 0.0, 1.0)
    if (weight == 1).all():
        return weight
    distance = distance_transform_edt(weight > 0)  # frames to the nearest unedited frame
    return np.minimum(weight, np.clip(distance / (EDIT_RAMP + 1), 0.0, 1.0))


def choose_donors(src_lips: np.ndarray, dst_lips: np.ndarray, crop: int) -> np.ndarray:
    """(T,) for each frame the frame whose inner lips (20, 2, centred) best match the edited ones, where the edit
    uncovers clearly more mouth than the frame shows; -1 elsewhere. The previous frame's donor is kept while it
    fits within DONOR_HYSTERESIS of the best one, so the inside of the mouth does not flicker between donors."""
    src_area, dst_area = polygon_area(src_lips), polygon_area(dst_lips)
    needs = dst_area > MOUTH_DONOR_RATIO * src_area + MOUTH_DONOR_FLOOR * crop * crop
    donors = np.full(len(src_lips), -1, np.int64)
    shapes = (src_lips - src_lips.mean(1, keepdims=True)).reshape(len(src_lips), -1)
    previous = -1
    for t in range(len(src_lips)):
        if not needs[t]:
            previous = -1
            continue
        want = (dst_lips[t] - dst_lips[t].mean(0)).reshape(-1)
        cost = ((shapes - want) ** 2).sum(1)
        best = int(np.argmin(cost))
        if previous >= 0 and cost[previous] <= DONOR_HYSTERESIS * cost[best]:
            best = previous
        previous = best
        if best != t:
            donors[t] = best
    return donors


class WarpRenderer:
    """`--renderer warp`: no weights, any face fitted on the FaceMesh topology (it moves FaceMesh's own points: the
    eye and inner-lip contours, the face oval). `checkpoint` names the method's version for caches and markers."""

    kind = "warp"
    checkpoint = f"warp-v{VERSION}"
    version = checkpoint
    topologies = (FACEMESH_468,)
    actor = ""
    data_dir = ""  # decodes with the edit's face model

    def __init__(self, smooth: float = SMOOTH_SIGMA):
        self.smooth = smooth

    def check_clip(self, clip: Clip) -> None:
        """Any clip: the warp keeps no face model of its own."""

    def plan(self, model: FaceModel, clip: Clip, face: Mapping[str, np.ndarray] | None = None) -> ClipWarp:
        require_topology(self, model)
        return ClipWarp.plan(model, clip, clip.face(keys=FACE_PARAMS) if face is None else face, self.smooth)
