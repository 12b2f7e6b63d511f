"""Face tracking: MediaPipe FaceMesh (478 landmarks incl. irises) on every frame, one subject per clip,
lost frames interpolated, zero-lag smoothing, square crop boxes and a per-frame alignment to a template.

Rules
- Subject: up to `max_faces` faces are found per frame; the first tracked frame takes the largest face,
  later frames the face whose box overlaps the previous subject's most (IoU), so a second person never
  steals the track. MediaPipe's legacy FaceMesh reports no per-face score, so "most confident" is the
  largest face at the start. With `detector=mtcnn` the subject is MTCNN's most probable face at the start
  (NED's rule), then the detection overlapping it most; FaceMesh supplies the landmarks of that face.
- Lost frames (no face, or no face overlapping the subject): marked `valid = False`; their landmarks are
  linearly interpolated between the nearest tracked frames (held constant before the first / after the
  last tracked frame). A clip with fewer than `min_tracked_fraction` tracked frames is rejected.
- Small faces: when FaceMesh finds no face on the whole frame, or only one smaller than SMALL_FACE of the
  frame's shorter side (a 150 px face in a 1080p frame), the tracker switches for the rest of the clip to
  crops: MediaPipe's full-range face detector finds the face on the full frame, FaceMesh runs on a square crop
  of ROI_SCALE times its box, and the landmarks are mapped back; each next crop follows the previous frame's
  landmarks, and the detector runs again whenever the face is lost.
- Smoothing: boxes (centre, size) and alignment parameters are filtered with a centred Gaussian (zero
  phase, so no lag), after a 5-frame running median that removes single-frame outliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter

from common.errors import UserError
from facemodel.geometry import ALIGN_LANDMARKS, align_template, apply_affine, frame_blocks, invert_affine
from preprocessing.mediapipe_mesh import QuietFaceFinder, face_mesh

SMALL_FACE = 0.2  # faces smaller than this fraction of the frame's shorter side are tracked in crops
ROI_SCALE = 2.0  # crop side / face box side

# Rigid landmarks for the alignment (outer/inner eye corners, nose bridge and tip), and their template
# in units of the outer-eye-corner distance, origin at the corners' midpoint, y down (measured on frontal
# faces and symmetrised).


@dataclass
class RawTrack:
    landmarks: np.ndarray  # (T, 478, 3) frame pixels (z scaled like x); NaN where lost
    valid: np.ndarray  # (T,) bool


class FaceTracker:
    """MediaPipe FaceMesh in video mode; feed frames in order with `add`, then `finish`."""

    def __init__(self, max_faces: int = 2, min_confidence: float = 0.5, detector=None, state: dict | None = None):
        """`state`: what `state()` returned at the end of an earlier part of the same video (the subject's box
        and whether the face is tracked in crops), so a video can be tracked in blocks (`track_blocks`)."""
        self._mesh = face_mesh(static_image_mode=False, max_num_faces=max_faces, min_confidence=min_confidence)
        self._frames: list[np.ndarray] = []
        state = state or {}
        box = state.get("prev_box")
        self._prev_box: np.ndarray | None = None if box is None or not np.isfinite(box).all() else np.asarray(box)
        self._detector = detector  # e.g. MTCNN: picks the subject by detection probability, then by overlap
        self._min_confidence = min_confidence
        self._crops = bool(state.get("crops", False))  # small faces: FaceMesh on crops (see the module docstring)
        self._crop_mesh = None
        self._finder: QuietFaceFinder | None = None

    def add(self, frame: np.ndarray) -> None:
        """frame: (H, W, 3) uint8 RGB."""
        h, w = frame.shape[:2]
        faces = [] if self._crops else _landmarks(self._mesh.process(frame), 0.0, 0.0, w, h)
        if not self._crops and (not faces or max(_side(f) for f in faces) < SMALL_FACE * min(h, w)):
            self._crops = True
        if self._crops:
            faces = self._faces_in_crops(frame)
        chosen = self._choose(faces) if self._detector is None else self._choose_detected(frame, faces)
        self._frames.append(chosen if chosen is not None else np.full((478, 3), np.nan, np.float32))

    def _faces_in_crops(self, frame: np.ndarray) -> list[np.ndarray]:
        """Faces found by FaceMesh in a crop around the previous subject, else around each detected face."""
        if self._crop_mesh is None:
            self._crop_mesh = face_mesh(static_image_mode=True, max_num_faces=1, min_confidence=self._min_confidence)
        boxes = [self._prev_box] if self._prev_box is not None else []
        faces = self._mesh_in(frame, boxes)
        if not faces:  # lost, or the first frame: find the face on the whole frame
            if self._finder is None:
                self._finder = QuietFaceFinder(self._min_confidence)
            faces = self._mesh_in(frame, self._finder.boxes(frame))
        return faces

    def _mesh_in(self, frame: np.ndarray, boxes: list[np.ndarray]) -> list[np.ndarray]:
        h, w = frame.shape[:2]
        faces = []
        for box in boxes:
            centre = 0.5 * (box[:2] + box[2:])
            half = 0.5 * ROI_SCALE * max(box[2] - box[0], box[3] - box[1])
            x0, y0 = np.floor(np.maximum(centre - half, 0)).astype(int)
            x1, y1 = np.ceil(np.minimum(centre + half, [w, h])).astype(int)
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
            faces += _landmarks(self._crop_mesh.process(crop), x0, y0, x1 - x0, y1 - y0)
        return faces

    def _choose(self, faces: list[np.ndarray]) -> np.ndarray | None:
        if not faces:
            return None
        boxes = [_box(f) for f in faces]
        if self._prev_box is None:
            k = int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
        else:
            overlaps = [_iou(b, self._prev_box) for b in boxes]
            k = int(np.argmax(overlaps))
            if overlaps[k] < 0.1:  # nobody where the subject was: treat as lost, keep the old box
                return None
        self._prev_box = boxes[k]
        return faces[k]

    def _choose_detected(self, frame: np.ndarray, faces: list[np.ndarray]) -> np.ndarray | None:
        """Subject = the most probable detection at the start (NED's MTCNN rule), then the detection that
        overlaps the previous subject most; its landmarks are the FaceMesh face overlapping it most."""
        det = self._detector.detect(frame)
        if not len(det.boxes) or not faces:
            return None
        if self._prev_box is None:
            subject = det.boxes[int(np.argmax(det.probs))]
        else:
            overlaps = [_iou(b, self._prev_box) for b in det.boxes]
            if max(overlaps) < 0.1:
                return None
            subject = det.boxes[int(np.argmax(overlaps))]
        overlaps = [_iou(_box(f), subject) for f in faces]
        k = int(np.argmax(overlaps))
        if overlaps[k] < 0.1:
            return None
        self._prev_box = subject
        return faces[k]

    def state(self) -> dict:
        """The tracker's state between frames: the subject's box (NaN before any) and the crop mode."""
        box = np.full(4, np.nan) if self._prev_box is None else np.asarray(self._prev_box, np.float64)
        return {"prev_box": box, "crops": self._crops}

    def finish(self) -> RawTrack:
        self._mesh.close()
        for extra in (self._crop_mesh, self._finder):
            if extra is not None:
                extra.close()
        landmarks = np.stack(self._frames) if self._frames else np.zeros((0, 478, 3), np.float32)
        return RawTrack(landmarks, np.isfinite(landmarks[:, 0, 0]))


def _landmarks(result, x0: float, y0: float, w: float, h: float) -> list[np.ndarray]:
    """FaceMesh results on an image of w x h placed at (x0, y0) of the frame -> (478, 3) frame pixels each
    (z in the same pixel scale as x)."""
    return [
        np.array([(x0 + p.x * w, y0 + p.y * h, p.z * w) for p in face.landmark], dtype=np.float32)
        for face in result.multi_face_landmarks or []
    ]


def _side(lm: np.ndarray) -> float:
    box = _box(lm)
    return float(max(box[2] - box[0], box[3] - box[1]))


def _box(lm: np.ndarray) -> np.ndarray:
    return np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def fill_lost(landmarks: np.ndarray, valid: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Interpolate lost frames linearly between tracked neighbours (hold at the ends); a copy (same dtype), or
    `landmarks` itself filled with `in_place`."""
    out = landmarks if in_place else landmarks.copy()
    if valid.all():
        return out
    tracked = np.flatnonzero(valid)
    for t in np.flatnonzero(~valid):
        k = np.searchsorted(tracked, t)  # tracked[k - 1] < t < tracked[k]
        before, after = tracked[max(k - 1, 0)], tracked[min(k, len(tracked) - 1)]
        w = 0.0 if after == before else (t - before) / (after - before)
        out[t] = (1 - w) * landmarks[before] + w * landmarks[after]
    return out


def smooth(signal: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase smoothing along axis 0: 5-frame running median, then a centred Gaussian."""
    if sigma <= 0 or len(signal) < 3:
        return signal.astype(np.float64)
    size = min(5, len(signal) - (1 - len(signal) % 2))
    med = median_filter(signal.astype(np.float64), size=(size,) + (1,) * (signal.ndim - 1), mode="nearest")
    return gaussian_filter1d(med, sigma, axis=0, mode="nearest")


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2D similarity (Umeyama): (2, 3) matrix M with dst ~ M @ [src, 1]."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / (s**2).sum(axis=1).mean()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def _similarity_params(m: np.ndarray) -> np.ndarray:
    """(a, b, tx, ty) with M = [[a, -b, tx], [b, a, ty]] (smoothing these keeps M a similarity)."""
    return np.array([m[0, 0], m[1, 0], m[0, 2], m[1, 2]])


def _similarity_matrix(p: np.ndarray) -> np.ndarray:
    a, b, tx, ty = p
    return np.array([[a, -b, tx], [b, a, ty]])


@dataclass
class Track:
    """The processed track of one clip (what track.npz stores, plus z for the face model)."""

    boxes: np.ndarray  # (T, 4) float32 crop box in frame pixels
    crop_to_frame: np.ndarray  # (T, 2, 3)
    align: np.ndarray  # (T, 2, 3) crop -> aligned crop
    landmarks: np.ndarray  # (T, 478, 2) crop pixels
    landmarks_z: np.ndarray  # (T, 478) depth in crop pixel scale
    valid: np.ndarray  # (T,) bool

    def arrays(self) -> dict[str, np.ndarray]:
        """The track.npz arrays (common.formats.TRACK_SPEC)."""
        return {
            "boxes": self.boxes,
            "crop_to_frame": self.crop_to_frame,
            "align": self.align,
            "landmarks": self.landmarks,
            "valid": self.valid,
            "landmarks_z": self.landmarks_z,
        }


def build_track(
    raw: RawTrack, crop_size: int, margin: float, sigma: float, min_fraction: float, in_place: bool = False
) -> Track:
    """Fill, smooth and crop a raw track; raise UserError if too few frames were tracked. `in_place`: fill the
    lost frames in `raw.landmarks` itself (a long video's landmarks are not copied; `raw` is then spent)."""
    n = len(raw.valid)
    tracked = int(raw.valid.sum())
    if n == 0 or tracked == 0:
        raise UserError(
            "no face found in any frame (the tracker finds frontal faces down to ~30 px wide; a smaller, "
            "turned-away or hidden face cannot be edited)"
        )
    if tracked < min_fraction * n:
        raise UserError(f"face found in only {tracked}/{n} frames (need {min_fraction:.0%})")
    lm = fill_lost(raw.landmarks, raw.valid, in_place)  # float32: per-frame arrays stay small for long videos
    lo, hi = lm[:, :, :2].min(axis=1).astype(np.float64), lm[:, :, :2].max(axis=1).astype(np.float64)
    centre = smooth(0.5 * (lo + hi), sigma)
    side = smooth((hi - lo).max(axis=1, keepdims=True), sigma * 2)[:, 0] * (1 + 2 * margin)
    boxes = np.concatenate([centre - side[:, None] / 2, centre + side[:, None] / 2], axis=1)
    scale = side / crop_size
    crop_to_frame = np.zeros((n, 2, 3))
    crop_to_frame[:, 0, 0] = crop_to_frame[:, 1, 1] = scale
    crop_to_frame[:, :, 2] = boxes[:, :2]
    frame_to_crop = invert_affine(crop_to_frame)
    template = align_template(crop_size)
    lm_crop = np.empty((n, lm.shape[1], 2), np.float32)
    params = np.empty((n, 4))
    for s in frame_blocks(n):  # in blocks: float64 work on a long video's every landmark would not fit
        block = apply_affine(frame_to_crop[s], lm[s, :, :2].astype(np.float64))
        lm_crop[s] = block
        params[s] = [_similarity_params(similarity_fit(p[ALIGN_LANDMARKS], template)) for p in block]
    z_crop = (lm[:, :, 2] / scale[:, None].astype(np.float32)).astype(np.float32, copy=False)
    align = np.stack([_similarity_matrix(p) for p in smooth(params, sigma)])
    return Track(
        boxes.astype(np.float32),
        crop_to_frame.astype(np.float32),
        align.astype(np.float32),
        lm_crop,
        z_crop,
        raw.valid.copy(),
    )
