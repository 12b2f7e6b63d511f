"""The mesh face model (embedded default): a linear expression model on MediaPipe's 468-point mesh.

- Pose normalisation: each frame's 3D landmarks are aligned (similarity Procrustes on rigid points) to
  the dataset mean shape, which is scaled so that the outer eye corners are 1 apart.
- expr[:, 0] = mouth opening: the vertical inner-lip gap (landmark 14 minus 13) of the pose-normalised
  mesh, i.e. normalised by face size. It is a linear function g(x) of the mesh; it decodes along
  `mouth_dir` (the mesh change that regresses on it, scaled so g(mouth_dir) = 1), and the PCA basis is
  fitted in the null space of g, so decode(expr) has exactly the mouth opening expr[:, 0].
- expr[:, 1:] = coefficients of an orthonormal PCA basis fitted once on the train split's pose-normalised
  meshes minus each actor's mean shape, after removing the mouth component.
- identity (per clip) = the part of the clip's mean shape outside the expression span, so a clip-long
  expression (an emotion) stays in `expr`.
- pose = axis-angle rotation (3); cam = (scale, tx, ty): aligned-crop pixels = scale * R @ X + (tx, ty).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from common.errors import FormatError, UserError
from common.fsutil import atomic_write_bytes
from common.geometry import normalize_coords
from facemodel.geometry import aligned_points, frame_blocks, frames_of
from facemodel.render import LEFT_EYE, RIGHT_EYE
from facemodel.symmetry import mirror_offsets, symmetry_plane
from facemodel.topology import FACEMESH_468, vertex_indices

N_VERTS = 468
# Points that do not move with expressions: forehead, temples, nose bridge and tip, outer eye corners,
# cheekbones. The mean-shape alignment uses only these.
RIGID_POINTS = vertex_indices(
    """
    10 151 9 8 168 6 197 195 5 4 1 33 263 133 362 127 356 234 454 93 323
    116 345 123 352 21 251 54 284 103 332 67 297 109 338
    """
)
MOUTH_UPPER, MOUTH_LOWER = 13, 14
EYE_OUTER = (33, 263)
FILE_VERSION = 1


def procrustes(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising |s R src + t - dst|^2 for (N, 3) point sets (det R = +1)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d) / (a**2).sum())
    return scale, rot, mu_d - scale * rot @ mu_s


def normalize_poses(points: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose-normalise frames (T, 468, 3) onto `mean`: returns X (T, 468, 3), rotvec (T, 3), cam (T, 3)."""
    out = np.empty_like(points, dtype=np.float64)
    rotvec = np.empty((len(points), 3))
    cam = np.empty((len(points), 3))
    for t, p in enumerate(points):
        s, r, tr = procrustes(mean[RIGID_POINTS], p[RIGID_POINTS])
        out[t] = (p - tr) @ r / s  # inverse similarity: R^T (p - t) / s
        rotvec[t] = Rotation.from_matrix(r).as_rotvec()
        cam[t] = (s, tr[0], tr[1])
    return out, rotvec, cam


def mouth_opening(x: np.ndarray) -> np.ndarray:
    """Vertical inner-lip gap of pose-normalised meshes (..., 468, 3) -> (...); linear in the mesh."""
    return x[..., MOUTH_LOWER, 1] - x[..., MOUTH_UPPER, 1]


def gap_of_flat(flat: np.ndarray) -> np.ndarray:
    """mouth_opening for flattened (..., 1404) meshes or mesh offsets."""
    return flat[..., 3 * MOUTH_LOWER + 1] - flat[..., 3 * MOUTH_UPPER + 1]


@dataclass
class MeshBasis:
    """The dataset-level model, saved once per dataset (`face_model_mesh.npz`)."""

    mean: np.ndarray  # (468, 3) mean shape, outer eye corners 1 apart
    mouth_dir: np.ndarray  # (1404,) mesh change per unit of mouth opening
    mouth_mean: float  # mean mouth opening on the train split
    basis: np.ndarray  # (D - 1, 1404) orthonormal rows, orthogonal to mouth_dir
    triangles: np.ndarray  # (F, 3) int32, oriented towards the camera on the mean shape
    nmfc_colors: np.ndarray  # (468, 3) in [0, 1]
    expr_mean: np.ndarray  # (D,) mean of expr on the train split (for normalising)
    expr_std: np.ndarray  # (D,) one shared scale (see `global_scale`), stored per channel
    config_hash: str = ""

    @property
    def expr_dim(self) -> int:
        return 1 + len(self.basis)

    def save(self, path: str | Path) -> None:
        buf = io.BytesIO()
        np.savez(
            buf,
            version=np.array(FILE_VERSION),
            mean=self.mean.astype(np.float32),
            mouth_dir=self.mouth_dir.astype(np.float32),
            mouth_mean=np.array(self.mouth_mean, np.float32),
            basis=self.basis.astype(np.float32),
            triangles=self.triangles.astype(np.int32),
            nmfc_colors=self.nmfc_colors.astype(np.float32),
            expr_mean=self.expr_mean.astype(np.float32),
            expr_std=self.expr_std.astype(np.float32),
            config_hash=np.array(self.config_hash),
        )
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> MeshBasis:
        path = Path(path)
        if not path.is_file():
            raise UserError(
                f"{path}: mesh face model not found; preprocess the training set first (mode train), "
                "or point basis_file=... at its face_model_mesh.npz"
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["version"]) != FILE_VERSION:
                    raise FormatError(f"{path}: face model file version {int(z['version'])}, expected {FILE_VERSION}")
                return cls(
                    mean=z["mean"].astype(np.float64),
                    mouth_dir=z["mouth_dir"].astype(np.float64),
                    mouth_mean=float(z["mouth_mean"]),
                    basis=z["basis"].astype(np.float64),
                    triangles=z["triangles"],
                    nmfc_colors=z["nmfc_colors"],
                    expr_mean=z["expr_mean"],
                    expr_std=z["expr_std"],
                    config_hash=str(z["config_hash"]),
                )
        except (KeyError, ValueError, OSError) as exc:
            raise FormatError(f"{path}: not a valid mesh face model file ({exc})") from None


FIT_VERSION = 2  # bump when fit_basis fits differently: a dataset's face model and its clips are fitted again
# (2: channel 0's direction regressed within each clip, `speech_direction`)


def mean_shape(clips: Sequence[np.ndarray], iterations: int = 3) -> np.ndarray:
    """Generalised Procrustes mean of all frames, scaled so the outer eye corners are 1 apart."""
    frames = np.concatenate(clips).astype(np.float64)
    mean = frames[0].copy()
    for _ in range(iterations):
        x, _, _ = normalize_poses(frames, mean)
        mean = x.mean(axis=0)
        mean -= mean[RIGID_POINTS].mean(axis=0)
        mean /= np.linalg.norm(mean[EYE_OUTER[1]] - mean[EYE_OUTER[0]])
    return mean


def global_scale(channel_std: np.ndarray) -> float:
    """One scale for all channels (RMS of the per-channel std): normalising every channel to unit variance
    would blow the near-empty last PCA channels up to the size of the real expression channels."""
    return float(max(np.sqrt(np.mean(channel_std**2)), 1e-6))


def orient_triangles(triangles: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Flip triangles whose normal points away from the camera (+z is away in crop coordinates)."""
    tri = verts[triangles]
    normal_z = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2]
    out = triangles.copy()
    flip = normal_z > 0
    out[flip] = out[flip][:, [0, 2, 1]]
    return out


def speech_direction(r: np.ndarray, g: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """(1404,) the mesh change per unit of mouth opening that speaking makes: `r` (N, 1404) mesh offsets whose
    mouth openings are `g` (N,), in consecutive clips of `lengths` frames, regressed within each clip (its own
    mean shape and opening removed).

    Regressed across clips instead (each actor's mean removed only), the direction also took what an emotion
    moves together with its open mouth: a surprise drops the jaw and raises the brows and lids, so on toy MEAD
    channel 0 carried +0.09 eye opening and +0.10 brow height (eye distances) per unit of its spread, and an edit
    that kept the source's mouth opening (`manipulator.editing.keep_speech`) narrowed the surprised eyes it had
    widened (real-face panel: surprise's eye opening 0.136 -> 0.100 on a held-out face, its brows raised: a
    sleepy look). Within a clip the opening varies with the speech alone."""
    lengths = np.asarray([n for n in lengths if n > 0])
    if lengths.sum() != len(r):
        raise ValueError(f"clip lengths add up to {lengths.sum()} frames, the offsets have {len(r)}")
    starts = np.cumsum([0, *lengths[:-1]])
    gc = g - np.repeat(np.add.reduceat(g, starts) / lengths, lengths)  # each clip's own mean opening removed
    if float(gc @ gc) < 1e-12 * max(float(g @ g), 1e-30):  # no clip's opening varies (one-frame clips): across them
        gc = g - g.mean()
    # gc sums to 0 within each clip (or overall), so the clips' mean shapes drop out: no centred copy of r needed
    direction = gc @ r / max(float(gc @ gc), 1e-12)
    return direction / gap_of_flat(direction)  # unit mouth opening per unit coefficient


def fit_basis(
    clips: Sequence[np.ndarray],
    actors: Sequence[str],
    triangles: np.ndarray,
    expr_dim: int,
    config_hash: str = "",
) -> MeshBasis:
    """Fit the model on train clips: clips[i] is (T_i, 468, 3) aligned-crop landmarks of actor actors[i]."""
    if expr_dim < 2:
        raise UserError("expr_dim must be at least 2 (mouth opening + one basis vector)")
    clips = [c[:, :N_VERTS] for c in clips]
    mean = mean_shape(clips)
    normalised = [normalize_poses(c, mean)[0] for c in clips]
    residuals = []
    for actor in sorted(set(actors)):
        own = [x for x, a in zip(normalised, actors, strict=True) if a == actor]
        actor_mean = np.concatenate(own).mean(axis=0)
        residuals += [(x - actor_mean).reshape(len(x), -1) for x in own]
    lengths = [len(x) for x in residuals] * 2  # the clips, then (below) their mirror images
    r = np.concatenate(residuals)
    # each frame and its mirror image: the basis then holds the mirror of every direction it holds (an emotion
    # fitted on one actor's lopsided clips is not one-sided in the model), so an edit's change can be made
    # left-right symmetric exactly (facemodel.symmetry)
    partner, _, axis = symmetry_plane(mean)
    r = np.concatenate([r, mirror_offsets(r.reshape(len(r), N_VERTS, 3), partner, axis).reshape(len(r), -1)])
    g = gap_of_flat(r)  # mouth opening of each frame relative to its actor's mean
    mouth_dir = speech_direction(r, g, lengths)
    r_perp = r - np.outer(g, mouth_dir)  # now every row has zero mouth opening
    n_comp = min(expr_dim - 1, r_perp.shape[0] - 1, r_perp.shape[1] - 1)
    if n_comp < expr_dim - 1:
        raise UserError(f"only {len(r)} training frames: too few to fit {expr_dim - 1} expression components")
    stride = max(1, len(r_perp) // 20000)  # the SVD does not need more than ~20k frames
    _, _, vt = np.linalg.svd(r_perp[::stride] - r_perp[::stride].mean(axis=0), full_matrices=False)
    basis = MeshBasis(
        mean=mean,
        mouth_dir=mouth_dir,
        mouth_mean=float(mouth_opening(np.concatenate(normalised)).mean()),
        basis=vt[:n_comp],
        triangles=orient_triangles(triangles, mean),
        nmfc_colors=normalize_coords(mean),
        expr_mean=np.zeros(expr_dim, np.float32),
        expr_std=np.ones(expr_dim, np.float32),
        config_hash=config_hash,
    )
    exprs = np.concatenate([MeshFaceModel(basis).fit(c)["expr"] for c in clips])
    basis.expr_mean = exprs.mean(axis=0).astype(np.float32)
    basis.expr_std = np.full(expr_dim, global_scale(exprs.std(axis=0)), np.float32)
    return basis


# 20 outer-lip points of the FaceMesh topology (the mouth discriminator's ROI centre)
OUTER_LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]


class MeshFaceModel:
    """Encode clips to face.npz arrays and decode them back to meshes (DESIGN section 4)."""

    name = "mesh"
    topology = FACEMESH_468

    def __init__(self, basis: MeshBasis):
        self.b = basis
        self.triangles = basis.triangles
        self.nmfc_colors = basis.nmfc_colors
        span = np.vstack([self.b.mouth_dir / np.linalg.norm(self.b.mouth_dir), self.b.basis])
        self._span_q, _ = np.linalg.qr(span.T)  # orthonormal columns spanning the expression space

    @property
    def expr_dim(self) -> int:
        return self.b.expr_dim

    def fit(self, points: np.ndarray) -> dict[str, np.ndarray]:
        """points: (T, 478, 3) aligned-crop landmarks -> face.npz arrays (expr, pose, cam, identity, landmarks2d)."""
        return self._fit(points[s] for s in frame_blocks(len(points)))

    def _fit(self, blocks: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
        """`fit` over consecutive blocks of frames, one pass: expr is linear in the pose-normalised mesh, so each
        block keeps only its projections and the identity (the clip mean) is subtracted at the end."""
        proj, gaps, rotvecs, cams = [], [], [], []
        total, n = np.zeros(3 * N_VERTS), 0
        for points in blocks:
            x, rotvec, cam = normalize_poses(points[:, :N_VERTS].astype(np.float64), self.b.mean)
            flat = (x - self.b.mean).reshape(len(x), -1)
            total += flat.sum(axis=0)
            n += len(flat)
            proj.append(flat @ self.b.basis.T)
            gaps.append(mouth_opening(x))
            rotvecs.append(rotvec)
            cams.append(cam)
        clip_mean = total / n
        identity = clip_mean - self._span_q @ (self._span_q.T @ clip_mean)
        gap = np.concatenate(gaps)
        mouth = np.outer(self._mouth_coef(gap, identity), self.b.mouth_dir @ self.b.basis.T)
        expr = np.concatenate([gap[:, None], np.concatenate(proj) - identity @ self.b.basis.T - mouth], axis=1)
        face = {
            "expr": expr.astype(np.float32),
            "pose": np.concatenate(rotvecs).astype(np.float32),
            "cam": np.concatenate(cams).astype(np.float32),
            "identity": identity.astype(np.float32),
        }
        face["landmarks2d"] = self.landmarks2d(face)
        return face

    def _mouth_coef(self, gap: np.ndarray, identity: np.ndarray) -> np.ndarray:
        """Coefficient on mouth_dir that gives the mesh the opening `gap` (the basis adds none)."""
        return gap - float(mouth_opening(self.b.mean)) - float(gap_of_flat(identity))

    def decode_normalised(self, expr: np.ndarray, identity: np.ndarray) -> np.ndarray:
        """Pose-normalised meshes (T, 468, 3) from expr (T, D) and identity (1404,); their opening is expr[:, 0]."""
        mouth = np.outer(self._mouth_coef(expr[:, 0], identity), self.b.mouth_dir)
        flat = self.b.mean.reshape(-1) + identity + mouth + expr[:, 1:] @ self.b.basis
        return flat.reshape(len(expr), N_VERTS, 3)

    def fit_clip(self, faces: Iterable[np.ndarray], track: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """face.npz arrays of a tracked clip (the mesh model needs only the tracked landmarks, not `faces`)."""
        return self._fit(aligned_points(track, s) for s in frame_blocks(len(track["align"])))

    def landmarks2d(self, face: dict[str, np.ndarray]) -> np.ndarray:
        """face.npz's `landmarks2d` for (possibly edited) parameters: the decoded mesh, (T, 468, 2)."""
        n = len(face["expr"])
        out = np.empty((n, N_VERTS, 2), np.float32)
        for s in frame_blocks(n):
            out[s] = self.decode(frames_of(face, s))[:, :, :2]
        return out

    def symmetry(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(partner, centre, lateral axis) of the mean shape, the mirror `fit_basis` fitted the basis with."""
        return symmetry_plane(self.b.mean)  # a few milliseconds: computed per edit, not kept

    def eyes(self, verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Eye centres (T, 2, 2) and lid openings (T, 2) of decoded meshes, (right, left) eye."""
        centres = np.stack([verts[:, RIGHT_EYE, :2].mean(1), verts[:, LEFT_EYE, :2].mean(1)], 1)
        openings = np.stack([np.abs(verts[:, e[12], 1] - verts[:, e[4], 1]) for e in (RIGHT_EYE, LEFT_EYE)], 1)
        return centres, openings

    def mouth_centre(self, verts: np.ndarray) -> np.ndarray:
        """(T, 2): median of the outer-lip points."""
        return np.median(verts[:, OUTER_LIPS, :2], axis=1)

    def decode(self, face: dict[str, np.ndarray]) -> np.ndarray:
        """Posed meshes (T, 468, 3) in aligned-crop pixels (x, y, depth) from face.npz arrays."""
        x = self.decode_normalised(face["expr"].astype(np.float64), face["identity"].astype(np.float64))
        rot = Rotation.from_rotvec(face["pose"].astype(np.float64)).as_matrix()  # (T, 3, 3)
        cam = face["cam"].astype(np.float64)
        posed = cam[:, 0, None, None] * np.einsum("tij,tvj->tvi", rot, x)
        posed[:, :, :2] += cam[:, None, 1:3]
        return posed
