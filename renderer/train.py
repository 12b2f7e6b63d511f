"""Train a neural renderer for one identity:

  python -m renderer.train --config configs/renderer/base.yaml actor=W001 [key=value …]

Per step (`renderer.steps.train_step`): `batch_size` runs of `frames_per_step` consecutive frames, generated
one after the other, each from the conditioning of `n_frames_g` frames and the previous `n_frames_g - 1`
generated frames (zeros before the run's first frame, as NED's `no_first_img`; previous outputs detached).
Losses: LSGAN + feature matching on a multi-scale image discriminator and a mouth-ROI discriminator (eyes
optional), L1 on the composited frame, VGG19 perceptual when its weights are present. With `scmcl.enabled`
the SCMCL image-level terms are added (see `renderer.scmcl`). The run dir is `<runs_root>/renderer/<actor>`
unless `engine.name` is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.cli import parse_cli
from common.config import choice
from common.engine import Engine, EngineConfig, eval_mode, unwrap
from common.errors import ConfigError, UserError, cli_entry
from common.formats import Clip
from common.schedules import lr_at, set_lr
from common.video import write_video
from facemodel import face_model_for
from manipulator.data import dataset_basis_hash
from renderer.data import Batch, IdentityFrames, identity_clips
from renderer.evaluate import evaluate_clip, mean_scores
from renderer.losses import build_perceptual
from renderer.ned import NED_N_FRAMES, NED_SIZE, load_ned, ned_spec
from renderer.networks import SIZES, build_renderer
from renderer.neural import NeuralRenderer
from renderer.scmcl import RendererScmclConfig, ScmclImageTerms
from renderer.steps import RendererLosses, build_optimizers, roi_size, train_step


@dataclass
class RendererConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_steps=20000, log_every=50, ckpt_every=1000))
    data_dir: str = "data/processed/toy_mead"
    actor: str = ""  # the identity to train (required)
    splits: list[str] = field(default_factory=lambda: ["train"])
    val_split: str = "test"  # held-out clips of the same identity: val/psnr, val/ssim and the sample videos
    size: str = choice("ned", list(SIZES))
    image_size: int = 256
    n_frames_g: int = 3
    frames_per_step: int = 4  # consecutive frames generated per sample (NED: max_frames_per_gpu)
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_schedule: str = choice("constant", ["constant", "linear", "cosine"])
    lambda_feat: float = 10.0  # feature matching and perceptual weight (NED)
    lambda_l1: float = 10.0
    lambda_mouth: float = 1.0  # mouth discriminator terms (GAN + FM)
    mouth_d: bool = True
    eyes_d: bool = False
    perceptual: str = choice("auto", ["auto", "on", "off"], "VGG19 loss: auto = when the weights are present")
    perceptual_weights: str = ""  # default $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth
    augment: bool = True
    channels_last: bool = True  # on CUDA only
    sample_every: int = 500  # TensorBoard image grid: conditioning | generated | real
    init_from: str = ""  # renderer run (or checkpoint), or NED's checkpoints dir[@epoch] (renderer.ned), to start from
    scmcl: RendererScmclConfig = field(default_factory=RendererScmclConfig)


def image_grid(batch: Batch, fake: torch.Tensor) -> np.ndarray:
    """Rows = frames of the first run; columns: NMFC | eye gaze | shape | generated | real (uint8 HWC)."""
    n_g = batch.cond.shape[1] - batch.real.shape[1] + 1
    rows = []
    for i in range(batch.real.shape[1]):
        c = batch.cond[0, i + n_g - 1].float().cpu()
        tiles = [c[0:3], c[3:6], c[6:9], (fake[0, i].float().cpu() + 1) / 2, (batch.real[0, i].float().cpu() + 1) / 2]
        rows.append(torch.cat(tiles, 2))
    grid = torch.cat(rows, 1).clamp(0, 1)
    return (grid.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _check_init_from(cfg) -> tuple[Path, str | None] | None:
    """(dir, epoch) when `init_from` names NED's renderer checkpoints (`<dir>` or `<dir>@<epoch>`), checked to
    fit this run's networks; None for one of our runs."""
    ned = ned_spec(cfg.init_from) if cfg.init_from else None
    if ned is not None and (cfg.size != NED_SIZE or cfg.n_frames_g != NED_N_FRAMES):
        raise ConfigError(
            f"init_from={cfg.init_from} is NED's renderer: it needs size={NED_SIZE} n_frames_g="
            f"{NED_N_FRAMES} (NED's nets), not size={cfg.size} n_frames_g={cfg.n_frames_g}"
        )
    return ned


def _init_from(cfg, nets: dict, log) -> None:
    ned = _check_init_from(cfg)
    if ned is not None:
        load_ned(nets, *ned, log)
        return
    path = cfg.init_from
    p = Path(path)
    ckpt_path = p if p.is_file() else latest_checkpoint(p / "checkpoints")
    if ckpt_path is None:
        raise ConfigError(f"init_from={path}: no renderer checkpoint there")
    state = load_checkpoint(ckpt_path)["nets"]
    for name, net in nets.items():
        if name in state:
            unwrap(net).load_state_dict(state[name])
    log.info("initialised from %s", ckpt_path)


def derived_defaults(cfg) -> dict:
    """Defaults that depend on other keys: the run name from the actor, and an SCMCL fine-tuning run starts
    from the identity's trained renderer."""
    out = {}
    if cfg.engine.name == "default" and cfg.actor:
        out["engine.name"] = f"{cfg.actor}{'_scmcl' if cfg.scmcl.enabled else ''}"
    if cfg.scmcl.enabled and not cfg.init_from and cfg.actor:
        out["init_from"] = f"{cfg.engine.runs_root}/renderer/{cfg.actor}"
    return out


@cli_entry
def main(argv: list[str] | None = None) -> None:
    train(parse_cli(RendererConfig, argv, prog="python -m renderer.train", doc=__doc__, derive=derived_defaults))


def train(cfg) -> Path:
    """Train (or resume, or find finished) the renderer run `cfg` describes; returns its run dir."""
    if not cfg.actor:
        raise ConfigError("actor= is required: the renderer is trained per identity (e.g. actor=W001)")
    if cfg.n_frames_g < 1 or cfg.frames_per_step < 1:
        raise ConfigError("n_frames_g and frames_per_step must be at least 1")
    _check_init_from(cfg)  # before the run dir is made
    engine = Engine("renderer", cfg)
    data = IdentityFrames(cfg.data_dir, cfg.actor, tuple(cfg.splits), cfg.image_size, cfg.n_frames_g, cfg.augment)
    raw = build_renderer(cfg.size, cfg.n_frames_g, cfg.mouth_d, cfg.eyes_d)
    dev = engine.device
    fmt = torch.channels_last if (cfg.channels_last and dev.type == "cuda") else torch.contiguous_format
    for net in raw.values():
        net.to(dev, memory_format=fmt)
    nets = {name: engine.ddp(net) for name, net in raw.items()}
    optims = build_optimizers(nets, cfg.lr, (cfg.beta1, cfg.beta2))
    start = engine.resume(nets, optims)
    if start == 0 and cfg.init_from:
        _init_from(cfg, nets, engine.log)
    perceptual = build_perceptual(cfg.perceptual, cfg.perceptual_weights)
    if perceptual is not None:
        perceptual.to(dev)
    losses = RendererLosses(cfg, nets, perceptual, roi_size(cfg.image_size))
    scmcl = ScmclImageTerms(cfg, engine, data) if cfg.scmcl.enabled else None
    engine.log.info(
        "renderer %s: %d clips, %d frames, %s at %d px, perceptual %s, SCMCL %s",
        cfg.actor,
        len(data.dirs),
        len(data),
        cfg.size,
        cfg.image_size,
        "on" if perceptual else "off",
        "on" if scmcl else "off",
    )
    extra = {
        "actor": cfg.actor,
        "image_size": cfg.image_size,
        "n_frames_g": cfg.n_frames_g,
        "size": cfg.size,
        "basis_hash": dataset_basis_hash(cfg.data_dir),
    }
    scores: dict[str, float] = {}
    for step in engine.steps(start):
        for opt in optims.values():
            set_lr(opt, lr_at(step, cfg.lr, cfg.lr_schedule, 0, cfg.engine.max_steps, min_lr_ratio=0.0))
        rng = np.random.default_rng([cfg.engine.seed, step, engine.dist.rank])
        batch = data.sample(rng, cfg.batch_size, cfg.frames_per_step).to(dev)
        logs, g_loss, fake = train_step(nets, optims, losses, batch, cfg.n_frames_g, engine.autocast, scmcl, rng)
        done = step + 1
        if done % cfg.engine.log_every == 0:
            engine.log_metrics(done, logs | {"g/total": g_loss.item(), "lr": optims["generator"].param_groups[0]["lr"]})
        if engine.is_main and (done % cfg.sample_every == 0 or done == cfg.engine.max_steps):
            engine.log_image("train/cond_generated_real", image_grid(batch, fake), done)
            video = engine.run_dir / "samples" / f"step_{done:09d}.mp4"
            scores = validate(cfg, unwrap(nets["generator"]), dev, video)
            if scores:
                engine.log_metrics(done, scores, echo=True)
                engine.log_video("val/sample", video, done)
        engine.maybe_save(step, nets, optims, extra=extra)
    engine.log_hparams(scores)  # {} without validation; rank 0 only
    engine.close()
    return Path(engine.run_dir)


VAL_CLIPS = 2  # held-out clips rendered at each validation (whole clips: a few seconds each on a CPU)


def validate(cfg, generator: torch.nn.Module, device: torch.device, sample: Path) -> dict[str, float]:
    """val/psnr and val/ssim (inside the face mask) of the identity's first VAL_CLIPS clips of `val_split`,
    rendered from their own parameters (renderer.evaluate.evaluate_clip), and `sample`: the first one's real |
    generated faces with its audio. {} when the split has no clip of the identity."""
    try:
        dirs = identity_clips(cfg.data_dir, cfg.actor, (cfg.val_split,))[:VAL_CLIPS]
    except UserError:
        return {}
    renderer = NeuralRenderer(generator, cfg.image_size, cfg.n_frames_g, cfg.actor, cfg.data_dir, "training", device)
    model = face_model_for(cfg.data_dir)
    with eval_mode([generator]):
        clips = [Clip(Path(cfg.data_dir) / d) for d in dirs]
        rendered: list[np.ndarray] = []  # the first clip's faces, for the sample video
        scores = [evaluate_clip(renderer, model, clip, rendered if i == 0 else None) for i, clip in enumerate(clips)]
        write_sample(clips[0], rendered, cfg.image_size, sample)
    return {f"val/{k}": v for k, v in mean_scores(scores).items()}


def write_sample(clip: Clip, fakes: list[np.ndarray], size: int, out: Path) -> Path:
    """The clip's real aligned faces | its rendered faces (`fakes`), side by side at `size`, with its audio."""

    def frames():
        for t, fake in enumerate(fakes):
            real = cv2.resize(clip.faces.read(t), (size, size), interpolation=cv2.INTER_AREA)
            yield np.concatenate([real, cv2.resize(fake, (size, size), interpolation=cv2.INTER_AREA)], axis=1)

    out.parent.mkdir(parents=True, exist_ok=True)
    write_video(out, frames(), clip.meta.fps, clip.audio())
    return out


if __name__ == "__main__":
    main()
