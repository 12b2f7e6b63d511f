"""Train the generic warp refiner, one network for every identity (renderer.refine):

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
refined and blended back inside the edited face's hull (`renderer.refine.inference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from common.cli import parse_cli
from common.config import choice
from common.engine import Engine, EngineConfig
from common.errors import ConfigError, cli_entry
from common.schedules import lr_at, set_lr
from renderer.losses import build_perceptual
from renderer.refine.data import PairData
from renderer.refine.inference import KIND
from renderer.refine.net import SIZES, RefineNet
from renderer.refine.step import build_optimizer, train_step


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


def image_grid(x: torch.Tensor, fake: torch.Tensor, real: torch.Tensor, n: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 rows of warped | refined | real for the first `n` pairs of a batch."""
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
    optims = {"refiner": build_optimizer(net, cfg.lr)}
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
        batch = tuple(a.to(dev) for a in data.sample(rng, cfg.batch_size))
        logs, fake = train_step(
            net, optims["refiner"], batch, cfg.lambda_l1, cfg.lambda_perceptual, perceptual, engine.autocast
        )
        done = step + 1
        if done % cfg.engine.log_every == 0:
            engine.log_metrics(done, logs | {"lr": optims["refiner"].param_groups[0]["lr"]})
        if engine.is_main and (done % cfg.sample_every == 0 or done == cfg.engine.max_steps):
            engine.log_image("train/warped_refined_real", image_grid(batch[0], fake, batch[1]), done)
        engine.maybe_save(step, nets, optims, extra=extra)
    engine.close()
