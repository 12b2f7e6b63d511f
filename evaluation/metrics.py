"""Evaluation metrics on arrays (no I/O): lip preservation (on landmarks and on decoded parameters), paired
expression error, Fréchet distance. Image quality (PSNR, SSIM) and the averaging rule: `common.image_metrics`.

Lip metrics work on FaceMesh landmarks re-tracked from videos and mapped into the aligned crop frame, so
head motion and framing do not count:
- mouth opening = inner-lip gap (points 13, 14) / outer-eye-corner distance (33, 263);
- lip-sync correlation = Pearson correlation of the source's and the output's mouth-opening series;
- M-LMD = mean Euclidean distance between the mouth landmarks (the 40 lip points), in pixels of a 256 crop.
"""

from __future__ import annotations

import numpy as np

from common.formats import expression_channels
from facemodel.topology import vertex_indices

LIPS = vertex_indices(
    """
    61 146 91 181 84 17 314 405 321 375 291 409 270 269 267 0 37 39 40 185
    78 95 88 178 87 14 317 402 318 324 308 415 310 311 312 13 82 81 80 191
    """
)
UPPER_INNER, LOWER_INNER = 13, 14
EYE_OUTER = (33, 263)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two series: 0 when one is constant and the other moves (a frozen mouth follows
    nothing: it must not escape lip_r as "not measured"), nan when both are constant (nothing to follow)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a, b = a - a.mean(), b - b.mean()
    var_a, var_b = (a * a).sum(), (b * b).sum()
    if var_a > 0 and var_b > 0:
        return float((a * b).sum() / np.sqrt(var_a * var_b))
    return 0.0 if var_a > 0 or var_b > 0 else float("nan")


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, 2) landmarks -> (T,) inner-lip gap in units of the outer-eye-corner distance."""
    gap = np.linalg.norm(landmarks[:, LOWER_INNER] - landmarks[:, UPPER_INNER], axis=-1)
    eyes = np.linalg.norm(landmarks[:, EYE_OUTER[1]] - landmarks[:, EYE_OUTER[0]], axis=-1)
    return gap / np.maximum(eyes, 1e-6)


def m_lmd(a: np.ndarray, b: np.ndarray, crop_size: int, size: int = 256) -> float:
    """Mean distance between the lip landmarks of two aligned landmark tracks (T, 478, 2), in 256-crop pixels."""
    scale = size / crop_size
    return float(np.linalg.norm((a[:, LIPS] - b[:, LIPS]) * scale, axis=-1).mean())


def lip_sync(source: np.ndarray, output: np.ndarray, valid: np.ndarray, crop_size: int) -> tuple[float, float]:
    """lip_r and M-LMD of two aligned landmark tracks (T, 478, 2) over the frames where both were really found
    (`valid` (T,) bool: the re-tracker's interpolated frames would count its guesses); nan with < 2 frames."""
    valid = np.asarray(valid, bool)
    if valid.sum() < 2:
        return float("nan"), float("nan")
    src, out = source[valid], output[valid]
    return pearson(mouth_opening(src), mouth_opening(out)), m_lmd(src, out, crop_size)


def paired_expr_error(edited: np.ndarray, target: np.ndarray, path_a: np.ndarray, path_b: np.ndarray) -> float:
    """Mean squared difference of the expression channels (1:) along a DTW path (edited[a] vs target[b])."""
    return float(((expression_channels(edited[path_a]) - expression_channels(target[path_b])) ** 2).mean())


FACEMESH_POINTS = (468, 478)  # the mesh model's vertices; FaceMesh with irises


def decoded_mouth(model, face: dict) -> np.ndarray | None:
    """Mouth opening (T,) of the landmarks decoded from face parameters; None for a face model whose landmarks
    are not the FaceMesh topology (the lip points are FaceMesh indices; DECA's are 68 points)."""
    points = model.landmarks2d(face)
    return mouth_opening(points) if points.shape[1] in FACEMESH_POINTS else None


def params_lip_r(model, face_a: dict, face_b: dict, a: np.ndarray | None = None, b=None) -> float:
    """lip_r between the decoded meshes of two sets of face parameters (frame by frame, or along the path a, b):
    the manipulator's share of a lip-sync loss, before any rendering."""
    ma, mb = decoded_mouth(model, face_a), decoded_mouth(model, face_b)
    if ma is None or mb is None:
        return float("nan")
    return pearson(ma, mb) if a is None else pearson(ma[a], mb[b])


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows = samples) of a feature set, in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians: |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^1/2) (FID / FAD).

    Like pytorch-fid: a near-singular product gets eps on the diagonals; an imaginary part left by sqrtm's
    round-off is dropped, but one above 1e-3 on the diagonal means the inputs are not covariances (or are
    numerically broken) and raises ValueError instead of giving a silently wrong distance.
    """
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov1)) * 1e-6
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        worst = float(np.abs(np.diagonal(covmean).imag).max())
        if worst > 1e-3:
            raise ValueError(f"Frechet distance: the matrix square root has an imaginary part of {worst:.3g}")
        covmean = covmean.real
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean), 0.0))


def frechet_distance_of(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance of the Gaussian fits of two feature sets (N, D) and (M, D), N, M >= 2.

    Exact, and fast when there are fewer samples than dimensions (the usual case per emotion here: a few
    hundred crops, 512-2048 features): with centred features A, B and C1 = AᵀA/(N-1), C2 = BᵀB/(M-1), the
    non-zero eigenvalues of C1 C2 are the squared singular values of K = A Bᵀ / sqrt((N-1)(M-1)), so
    tr((C1 C2)^1/2) is K's nuclear norm: one (N, M) SVD instead of a (D, D) matrix square root.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(f"need two (N >= 2, D) feature sets of one width, got {x.shape} and {y.shape}")
    if len(x) * len(y) > x.shape[1] ** 2:  # many samples: the covariance route is the cheaper one
        return frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    a, b = x - x.mean(0), y - y.mean(0)
    na, nb = len(x) - 1, len(y) - 1
    diff = x.mean(0) - y.mean(0)
    cross = np.linalg.svd(a @ b.T / np.sqrt(na * nb), compute_uv=False).sum()
    value = diff @ diff + (a * a).sum() / na + (b * b).sum() / nb - 2.0 * cross
    return float(max(value, 0.0))
