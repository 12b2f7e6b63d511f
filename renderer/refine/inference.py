"""`--renderer warp_refine`: the warp renderer, then the aligned crop of each warped frame refined by a trained
`RefineNet` and blended back inside the edited face's hull."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import load_run
from common.distributed import select_device
from common.errors import UserError
from common.formats import Clip
from facemodel import FaceModel
from facemodel.geometry import crop_frame
from facemodel.render import hull_mask
from renderer.conditioning import resize_square
from renderer.interface import Blend
from renderer.refine.data import refine_inputs
from renderer.refine.net import SIZES, RefineNet, apply
from renderer.warp import ClipWarp, WarpRenderer

KIND = "warp_refine"  # the registry's name, and `extra.kind` of the trainer's checkpoints


class RefineRenderer(WarpRenderer):
    """The warp renderer (its topology, its version) followed by the refiner network of one run."""

    kind = KIND

    def __init__(self, net: RefineNet, image_size: int, checkpoint: str, device: torch.device):
        super().__init__()
        self.net, self.image_size, self.device = net, image_size, device
        self.checkpoint = checkpoint  # the file (caches and render markers key on it)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> RefineRenderer:
        path, ckpt = load_run(run_dir, "train the refiner first (python -m renderer.refine)")
        if ckpt.get("extra", {}).get("kind") != KIND:
            raise UserError(f"{path}: not a warp refiner checkpoint (python -m renderer.refine writes those)")
        dev = select_device(device)
        net = RefineNet(SIZES[ckpt["extra"]["size"]])
        net.load_state_dict(ckpt["nets"]["refiner"])
        return cls(net.to(dev).eval(), int(ckpt["extra"]["image_size"]), str(path), dev)

    @staticmethod
    def default_run(runs_root: str | Path) -> Path:
        """The run `--renderer warp_refine` means: `<runs_root>/refiner/default`."""
        return Path(runs_root) / "refiner" / "default"

    @classmethod
    def load_default(cls, device: str, runs_root: str | Path) -> RefineRenderer:
        run = cls.default_run(runs_root)
        if not run.is_dir():
            raise UserError(
                f"--renderer {KIND}: no refiner run at {run}; train one (python -m renderer.refine "
                f"engine.runs_root={runs_root}) or use --renderer warp"
            )
        return cls.load(run, device)

    def plan(self, model: FaceModel, clip: Clip, face: Mapping[str, np.ndarray] | None = None) -> RefinePlan:
        return RefinePlan(self, super().plan(model, clip, face))

    @torch.no_grad()
    def refine(
        self, warped: np.ndarray, src: np.ndarray, dst: np.ndarray, tris: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The refined aligned crop (S, S, 3) uint8 of a warped aligned crop (control points in its pixels) and the
        soft weight (S, S) float32 with which to blend it: the edited face's hull."""
        s = warped.shape[0]
        scale = self.image_size / s
        small = resize_square(warped, self.image_size)
        x = torch.from_numpy(refine_inputs(small, src * scale, dst * scale, tris))[None].to(self.device)
        out = apply(self.net, x)[0].float().cpu().numpy().transpose(1, 2, 0)
        out = ((out + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        weight = hull_mask(dst, s).astype(np.float32) / 255.0
        return resize_square(out, s), weight


class RefinePlan:
    """A clip's warp, refined frame by frame."""

    seekable = True

    def __init__(self, renderer: RefineRenderer, warp: ClipWarp):
        self.renderer, self.warp = renderer, warp
        self.track = warp.clip.track(keys=["crop_to_frame", "align"])
        self.crop_size = warp.clip.meta.crop_size

    def faces(self, progress: bool = False) -> Iterator[np.ndarray]:
        """Aligned faces of every frame: warped from the clip's aligned crops, refined, blended in the hull."""
        w = self.warp
        for t, warped in enumerate(w.faces(progress)):
            refined, weight = self.renderer.refine(warped, w.src[t], w.dst[t], w.triangles)
            yield (warped * (1 - weight[..., None]) + refined * weight[..., None] + 0.5).astype(np.uint8)

    def edit_frame(
        self, t: int, frame: np.ndarray, to_frame: np.ndarray, blend: Blend
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame t warped in frame coordinates, then the aligned crop of the warped frame refined and blended back
        inside the edited face's hull."""
        w = self.warp
        edited = w.frame(t, frame, to_frame)
        crop = crop_frame(edited, self.track["crop_to_frame"][t], self.track["align"][t], self.crop_size)
        refined, weight = self.renderer.refine(crop, w.src[t], w.dst[t], w.triangles)
        return blend(t, edited, refined, weight, to_frame), None
