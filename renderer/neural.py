"""The Head2Head-style neural renderer of one identity (a `python -m renderer.train` or NED-imported run):
conditioning images rendered from the face parameters through the face model, each aligned face generated from
a window of them and the previous outputs; postprocessing blends the faces into the source frames.

Every frame is generated: the conditioning window is padded at the clip's start by repeating frame 0 and the
previous outputs start as zeros, so frame t of the output is frame t of the source (NED skipped the first
n_frames_g - 1 frames, which shifted boxes and audio).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from common.checkpoint import load_run
from common.distributed import select_device
from common.formats import Clip
from facemodel import FaceModel
from manipulator.data import check_face_model, dataset_basis_hash
from manipulator.edit import resolve_data_dir
from renderer.conditioning import ClipConditioner
from renderer.interface import Blend, require_topology
from renderer.networks import SIZES, Generator

KIND = "neural"  # also the kind of a run whose checkpoint names none (renderer.train's, NED's imports)


@dataclass
class NeuralRenderer:
    generator: Generator
    image_size: int
    n_frames_g: int
    actor: str
    data_dir: str
    checkpoint: str
    device: torch.device
    basis_hash: str = ""  # the face model of its training data (checkpoint; older ones: that dataset's now)
    kind = KIND
    version = ""  # the checkpoint file is all its pixels depend on
    topologies = None  # it draws the face model's own mesh: any topology

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> NeuralRenderer:
        path, ckpt = load_run(run_dir, "train the renderer first (python -m renderer.train actor=…)")
        cfg = ckpt["config"]
        dev = select_device(device)
        gen = Generator(SIZES[cfg["size"]], cfg["n_frames_g"])
        gen.load_state_dict(ckpt["nets"]["generator"])
        gen.to(dev).eval()
        data_dir = resolve_data_dir(cfg["data_dir"])
        basis_hash = ckpt.get("extra", {}).get("basis_hash") or (
            dataset_basis_hash(data_dir) if (data_dir / "clips.json").is_file() else ""
        )
        return cls(gen, cfg["image_size"], cfg["n_frames_g"], cfg["actor"], str(data_dir), str(path), dev, basis_hash)

    def check_clip(self, clip: Clip) -> None:
        """Refuse a clip whose parameters were fitted with another face model than this renderer's data (it
        decodes them with that one)."""
        check_face_model(
            clip,
            self.basis_hash,
            f"the renderer {self.checkpoint} ({self.data_dir})",
            "render it with --run warp, or preprocess it with that dataset's basis_file",
        )

    def plan(self, model: FaceModel, clip: Clip, face: Mapping[str, np.ndarray] | None = None) -> NeuralPlan:
        require_topology(self, model)
        return NeuralPlan(
            self, ClipConditioner(model, clip, self.image_size, face=None if face is None else dict(face))
        )

    @torch.no_grad()
    def frames(self, cond: ClipConditioner, progress: bool = False) -> Iterator[np.ndarray]:
        """Aligned faces (crop, crop, 3) uint8 for frames 0..T-1 of the conditioner's clip, in order."""
        n_g, s = self.n_frames_g, self.image_size
        crop = cond.clip.meta.crop_size
        first = torch.from_numpy(cond.render(0))
        window = [first] * n_g
        prev = torch.zeros(1, 3 * (n_g - 1), s, s, device=self.device)
        for t in tqdm(range(cond.n_frames), desc="render", unit="frame", disable=not progress, mininterval=5):
            if t > 0:
                window = window[1:] + [torch.from_numpy(cond.render(t))]
            c = torch.cat(window, 0)[None].to(self.device)
            mask = torch.from_numpy(cond.mask(t))[None].to(self.device)
            out = self.generator(c, prev, mask)
            if n_g > 1:
                prev = torch.cat([prev[:, 3:], out], 1)
            img = ((out[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
            yield img if s == crop else cv2.resize(img, (crop, crop), interpolation=cv2.INTER_CUBIC)


class NeuralPlan:
    """A clip's conditioning, generated in order (each face depends on the previous outputs)."""

    seekable = False

    def __init__(self, renderer: NeuralRenderer, cond: ClipConditioner):
        self.renderer, self.cond = renderer, cond
        self._stream: Iterator[np.ndarray] | None = None
        self._next = 0  # the frame the stream yields next

    def faces(self, progress: bool = False) -> Iterator[np.ndarray]:
        return self.renderer.frames(self.cond, progress)

    def edit_frame(
        self, t: int, frame: np.ndarray, to_frame: np.ndarray, blend: Blend
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The next generated face blended into source frame t (within the clip's face mask); frames come in
        order from frame 0."""
        if t != self._next:
            raise ValueError(f"a neural render goes in order: frame {t} asked, frame {self._next} next")
        if self._stream is None:
            self._stream = self.faces()
        face = next(self._stream, None)
        if face is None:
            raise ValueError(f"{self.cond.clip.dir}: {t} rendered faces for a clip of {self.cond.clip.n_frames}")
        self._next += 1
        return blend(t, frame, face, None, to_frame), face
