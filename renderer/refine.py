"""The generic warp refiner (`--renderer warp_refine`): one small network for every identity that repairs what
the warp renderer cannot do (shading, the inside of the mouth, stretched texture). No per-person training:

  python -m renderer.refine --config configs/refiner/base.yaml [--config configs/refiner/demo.yaml] [key=value …]

Training pairs come from the training clips of every identity: the aligned crop of frame t is warped (the
warp renderer's own `warp_face`) from frame t's tracked mesh to the tracked mesh of frame t' of the same clip
(|t - t'| <= `max_gap`), and the network learns to turn that into the real crop of frame t'. Its input is the
warped crop, the warp's stretch map (log area change per triangle), and the edited mouth and eye openings
(7 channels); its output is a correction added to the warped crop (the last layer starts at zero, so an
untrained refiner is the warp itself). Loss: L1 inside the face mask of frame t', plus VGG19 perceptual when
its weights are present. Presets: `size=tiny|small`. Run dir `<runs_root>/refiner/<name>` (default
`default`, which `--renderer warp_refine` uses), with resume and a TensorBoard image grid
(warped | refined | real) every `sample_every` steps.

At edit time the whole frame is warped first (`renderer.warp`), then the aligned crop of the warped frame is
refined and blended back inside the edited face's hull (`postprocessing.edit_video`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.checkpoint import load_run
from common.cli import parse_cli
from common.config import choice
from common.distributed import select_device
from common.engine import Engine, EngineConfig
from common.errors import ConfigError, UserError, cli_entry
from common.formats import Clip, read_clip_index
from common.schedules import lr_at, set_lr
from facemodel.geometry import aligned_points
from facemodel.render import hull_mask
from renderer.conditioning import resize_square
from renderer.losses import build_perceptual
from renderer.warp import (
    EYES,
    INNER_LIPS,
    ClipWarp,
    WarpRenderer,
    control_points,
    polygon_alpha,
    stretch_map,
    triangles,
    warp_face,
)

IN_CHANNELS = 7  # warped RGB (3), stretch (1), mouth opening (1), eye openings (1), face hull (1)
KIND = "warp_refine"


@dataclass(frozen=True)
class RefinerSize:
    base: int  # width of the first level
    depth: int  # stride-2 levels


SIZES = {"tiny": RefinerSize(16, 3), "small": RefinerSize(32, 4)}


class RefineNet(nn.Module):
    """A small U-Net: (N, 7, S, S) inputs -> (N, 3, S, S) correction in [-1, 1] image units (S divisible by
    2**depth). The output layer is zero-initialised."""

    def __init__(self, size: RefinerSize):
        super().__init__()
        widths = [size.base * 2**i for i in range(size.depth + 1)]
        self.stem = nn.Sequential(nn.Conv2d(IN_CHANNELS, widths[0], 3, padding=1), nn.LeakyReLU(0.2, True))
        self.down = nn.ModuleList(_block(widths[i], widths[i + 1], stride=2) for i in range(size.depth))
        self.up = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(size.depth)))
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for layer in self.down:
            skips.append(layer(skips[-1]))
        h = skips.pop()
        for layer in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = layer(torch.cat([h, skip], 1))
        return self.head(h)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(c_out, c_out, 3, 1, 1),
        nn.LeakyReLU(0.2, True),
    )


def refine_inputs(warped: np.ndarray, src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(7, S, S) float32 network input for one aligned crop: `warped` (S, S, 3) uint8 and the control points
    (468 + ring, 2) it was warped from / to, in the crop's pixels."""
    s = warped.shape[0]
    eyes = np.maximum(*(polygon_alpha(dst[eye], 0, 0, s, s) for eye in EYES))
    planes = [
        stretch_map(src, dst, tris, s) / 2.0,
        polygon_alpha(dst[INNER_LIPS], 0, 0, s, s),
        eyes,
        hull_mask(dst, s).astype(np.float32) / 255.0,
    ]
    rgb = warped.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    return np.concatenate([rgb, np.stack(planes)], 0).astype(np.float32)


class PairData:
    """Warp pairs (frame t warped to frame t''s mesh -> real frame t') from the clips of every identity."""

    def __init__(self, data_dir: str | Path, splits: tuple[str, ...], image_size: int, max_gap: int):
        self.root = Path(data_dir)
        index = read_clip_index(self.root)
        self.dirs = [c["dir"] for c in index["clips"] if c["split"] in splits]
        if not self.dirs:
            raise UserError(f"{data_dir}: no clips in split(s) {', '.join(splits)}")
        self.size, self.max_gap = image_size, max_gap
        self.tris = triangles()
        self._points: dict[int, np.ndarray] = {}
        self.n_frames = np.array([Clip(self.root / d).n_frames for d in self.dirs], np.float64)

    def points(self, c: int) -> np.ndarray:
        """(T, 468 + ring, 2) control points of clip c from its tracked landmarks, aligned-crop pixels."""
        if c not in self._points:
            tracked = aligned_points(Clip(self.root / self.dirs[c]).track())[..., :2]
            self._points[c] = np.stack([control_points(p) for p in tracked])
        return self._points[c]

    def pair(self, c: int, t: int, u: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input (7, S, S), real crop of frame u (3, S, S) in [-1, 1], its face mask (1, S, S))."""
        clip = Clip(self.root / self.dirs[c])
        pts = self.points(c)
        scale = self.size / clip.meta.crop_size
        image = resize_square(clip.faces.read(t), self.size)
        src, dst = pts[t] * scale, pts[u] * scale
        warped = warp_face(image, src, dst, self.tris)
        real = resize_square(clip.faces.read(u), self.size).astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
        mask = resize_square(clip.masks.read(u), self.size).astype(np.float32)[None] / 255.0
        return refine_inputs(warped, src, dst, self.tris), real, mask

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[torch.Tensor, ...]:
        xs, reals, masks = [], [], []
        for c in rng.choice(len(self.dirs), batch_size, p=self.n_frames / self.n_frames.sum()):
            n = int(self.n_frames[c])
            t = int(rng.integers(0, n))
            u = int(np.clip(t + rng.integers(-self.max_gap, self.max_gap + 1), 0, n - 1))
            x, real, mask = self.pair(int(c), t, u)
            xs.append(x)
            reals.append(real)
            masks.append(mask)
        return tuple(torch.from_numpy(np.stack(a)) for a in (xs, reals, masks))


@dataclass
class RefinerConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_steps=20000, log_every=50, ckpt_every=1000))
    data_dir: str = "data/processed/toy_mead"
    splits: list[str] = field(default_factory=lambda: ["train"])
    size: str = choice("small", list(SIZES))
    image_size: int = 256
    batch_size: int = 4
    max_gap: int = 15  # frames between the warped frame and its target
    lr: float = 2e-4
    lr_schedule: str = choice("cosine", ["constant", "linear", "cosine"])
    lambda_l1: float = 10.0
    lambda_perceptual: float = 10.0
    perceptual: str = choice("auto", ["auto", "on", "off"], "VGG19 loss: auto = when the weights are present")
    perceptual_weights: str = ""  # default $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth
    sample_every: int = 500  # TensorBoard image grid: warped | refined | real


def apply(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Refined crops in [-1, 1]: the warped crop (x's first 3 channels) plus the network's correction."""
    return (x[:, :3] + net(x)).clamp(-1, 1)


def image_grid(x: torch.Tensor, fake: torch.Tensor, real: torch.Tensor, n: int = 4) -> np.ndarray:
    rows = [torch.cat([x[i, :3], fake[i], real[i]], 2) for i in range(min(n, len(x)))]
    grid = ((torch.cat(rows, 1).detach().float().cpu() + 1) / 2).clamp(0, 1)
    return (grid.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(RefinerConfig, argv, prog="python -m renderer.refine", doc=__doc__)
    if cfg.image_size % 2 ** SIZES[cfg.size].depth:
        raise ConfigError(f"image_size={cfg.image_size} must be divisible by {2 ** SIZES[cfg.size].depth} ({cfg.size})")
    engine = Engine("refiner", cfg)
    data = PairData(cfg.data_dir, tuple(cfg.splits), cfg.image_size, cfg.max_gap)
    dev = engine.device
    net = engine.ddp(RefineNet(SIZES[cfg.size]).to(dev))
    nets = {"refiner": net}
    optims = {"refiner": torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999))}
    start = engine.resume(nets, optims)
    perceptual = build_perceptual(cfg.perceptual, cfg.perceptual_weights)
    if perceptual is not None:
        perceptual.to(dev)
    engine.log.info(
        "refiner: %d clips, %s at %d px, perceptual %s",
        len(data.dirs),
        cfg.size,
        cfg.image_size,
        "on" if perceptual else "off",
    )
    extra = {"kind": KIND, "size": cfg.size, "image_size": cfg.image_size, "data_dir": cfg.data_dir}
    for step in engine.steps(start):
        set_lr(optims["refiner"], lr_at(step, cfg.lr, cfg.lr_schedule, 0, cfg.engine.max_steps, min_lr_ratio=0.05))
        rng = np.random.default_rng([cfg.engine.seed, step, engine.dist.rank])
        x, real, mask = (a.to(dev) for a in data.sample(rng, cfg.batch_size))
        with engine.autocast():
            fake = apply(net, x)
            l1 = (torch.abs(fake.float() - real) * mask).sum() / (3 * mask.sum()).clamp_min(1.0)
            loss = cfg.lambda_l1 * l1
            warp_l1 = (torch.abs(x[:, :3] - real) * mask).sum() / (3 * mask.sum()).clamp_min(1.0)
            logs = {"l1": l1.item(), "l1_warp": warp_l1.item()}  # the refiner should beat the warp
            if perceptual is not None:
                vgg = perceptual(fake * mask, real * mask)
                loss = loss + cfg.lambda_perceptual * vgg
                logs["vgg"] = vgg.item()
        optims["refiner"].zero_grad(set_to_none=True)
        loss.backward()
        optims["refiner"].step()
        done = step + 1
        if done % cfg.engine.log_every == 0:
            engine.log_metrics(done, logs | {"total": loss.item(), "lr": optims["refiner"].param_groups[0]["lr"]})
        if engine.is_main and (done % cfg.sample_every == 0 or done == cfg.engine.max_steps):
            engine.log_image("train/warped_refined_real", image_grid(x, fake, real), done)
        engine.maybe_save(step, nets, optims, extra=extra)
    engine.close()


class RefineRenderer(WarpRenderer):
    """`--renderer warp_refine`: the warp renderer, then the aligned crop of each warped frame is refined by a
    trained `RefineNet` and blended back inside the edited face's hull (`postprocessing.edit_video`)."""

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

    def faces(self, plan: ClipWarp) -> Iterator[np.ndarray]:
        """Aligned faces of every frame: warped from the clip's aligned crops, refined, blended in the hull."""
        for t, warped in enumerate(plan.faces()):
            refined, w = self.refine(warped, plan.src[t], plan.dst[t], plan.triangles)
            yield (warped * (1 - w[..., None]) + refined * w[..., None] + 0.5).astype(np.uint8)


if __name__ == "__main__":
    main()
