"""Check this installation end to end on a tiny synthetic example: `python -m common.selfcheck [--out DIR]`.

Renders a turning synthetic face mesh (NMFC colours, shaded shape, mask) with the rasterizer, writes it as
an H.264 mp4 with an AAC tone track, reads it back and checks frame count, fps and audio length; then
checks that torch, MediaPipe FaceMesh and the config system load. Prints one line per check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import parse_cli
from common.config import arg
from common.errors import UserError, cli_entry
from common.formats import AUDIO_SR, frame_to_sample
from common.geometry import (
    ellipsoid_grid,
    lambert_shade,
    normalize_coords,
    rotation_matrix,
    to_screen,
    vertex_normals,
)
from common.raster import interpolate, rasterize
from common.video import probe_video, read_audio, write_video


@dataclass
class SelfCheckConfig:
    out: str = arg("demo_out", "folder for the check video")


def render_turntable(n_frames: int, size: int) -> np.ndarray:
    """(T, size, 3*size, 3) uint8: NMFC | shaded shape | mask of a mesh turning left and right."""
    verts, faces = ellipsoid_grid(40, 40)
    nmfc_colours = normalize_coords(verts)
    frames = []
    for t in range(n_frames):
        rot = rotation_matrix(0.5 * np.sin(2 * np.pi * t / n_frames), 0.1, 0.0).astype(np.float32)
        posed = verts @ rot.T
        frags = rasterize(to_screen(posed, size * 0.35, (size / 2, size / 2)), faces, size, size)
        nmfc = interpolate(nmfc_colours, faces, frags)
        shape = interpolate(lambert_shade(vertex_normals(posed, faces)), faces, frags)
        mask = frags.mask[..., None].astype(np.float32)
        panel = np.concatenate([nmfc, np.repeat(shape, 3, -1), np.repeat(mask, 3, -1)], axis=1)
        frames.append((panel * 255).astype(np.uint8))
    return np.stack(frames)


def check_video(out_dir: Path, fps: int = 25, n_frames: int = 50, size: int = 128) -> str:
    t0 = time.time()
    frames = render_turntable(n_frames, size)
    render_s = time.time() - t0
    n_samples = frame_to_sample(n_frames, fps)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n_samples) / AUDIO_SR).astype(np.float32)
    path = out_dir / "selfcheck_turntable.mp4"
    write_video(path, frames, fps, tone)
    info = probe_video(path)
    audio = read_audio(path)
    if info.n_frames != n_frames or info.fps != fps or len(audio) != n_samples:
        raise UserError(f"{path}: read back {info.n_frames} frames at {info.fps} fps, {len(audio)} samples")
    return f"rasterizer + video I/O: {n_frames} frames rendered in {render_s:.2f} s, wrote and re-read {path}"


def check_mediapipe() -> str:
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise UserError(f"mediapipe is not installed ({exc}); run `make setup`") from None
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        mesh.process(np.zeros((64, 64, 3), np.uint8))
    return f"mediapipe {mp.__version__} FaceMesh loads (weights from the wheel)"


def check_torch() -> str:
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {cuda}"


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(SelfCheckConfig, argv, prog="python -m common.selfcheck", doc=__doc__)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for check in (check_torch, lambda: check_video(out_dir), check_mediapipe):
        print(f"ok  {check()}", flush=True)


if __name__ == "__main__":
    main()
