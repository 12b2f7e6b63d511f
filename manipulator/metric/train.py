"""Train the SCMCL audio-visual metric: `python -m manipulator.metric.train --config configs/metric/<name>.yaml`.

Per-modality InfoNCE on DTW-aligned neutral<->emotion frame pairs, plus (when `consistency` is set) the
symmetric term that makes visual distances agree with audio distances: LSCMC's row-softmax agreement or
SCMCL's |φ(D_visual) - D_audio| with a learnable affine φ, from `consistency_start` on. Single-modality
pre-training and joint fine-tuning are configs (`init_from` loads encoders of earlier runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.cli import parse_cli
from common.config import choice, to_object
from common.distributed import all_reduce_mean
from common.engine import Engine, EngineConfig, unwrap
from common.errors import UserError, cli_entry
from common.schedules import lr_at, set_lr
from manipulator.expr_norm import Normaliser
from manipulator.metric.data import METRIC_SPLIT, ClipBank, InputSpec, PairSampler, has_clips
from manipulator.metric.losses import pairwise_distance, retrieval_accuracy
from manipulator.metric.models import SIZES, build_encoders
from manipulator.metric.steps import build_optimizer, embed_pair, pair_inputs, train_step

MODALITIES = ("audio", "visual", "expr")


@dataclass
class MetricConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_steps=3000, log_every=50, ckpt_every=500))
    data_dir: str = "data/processed/toy_mead"
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    val_splits: list[str] = field(default_factory=lambda: ["val"])
    modalities: list[str] = field(default_factory=lambda: ["audio"])
    size: str = choice("base", list(SIZES))
    embed_dim: int = 128
    inputs: InputSpec = field(default_factory=InputSpec)
    batch_size: int = 64
    group_by: str = choice("actor_emotion", ["actor_emotion", "all"], "draw each batch within one actor and emotion")
    min_gap: int = 3  # frames between anchors of one clip inside a batch
    temperature: float = 1.0
    consistency: str = choice("none", ["none", "softmax", "affine"], "symmetric term: LSCMC softmax or SCMCL affine")
    lambda_consistency: float = 1.0
    consistency_start: int = 0  # step from which the consistency term (and φ) is trained
    consistency_max_audio: float | None = None  # affine term only on pairs this close in audio (the near range)
    skip_silent: bool = True  # leave out pairs whose anchor or positive audio is silence (it embeds to one point)
    phi_lr: float = 1e-2  # φ's learning rate (two scalars; the schedule's shape applies)
    lr: float = 1e-4
    lr_schedule: str = choice("cosine", ["constant", "cosine", "linear"])
    warmup_steps: int = 0
    weight_decay: float = 0.0
    init_from: list[str] = field(default_factory=list)  # run dirs whose encoders initialise this run
    val_every: int = 250
    val_batches: int = 8


def check_config(cfg) -> None:
    unknown = [m for m in cfg.modalities if m not in MODALITIES]
    if unknown or not cfg.modalities:
        raise UserError(f"modalities must be a non-empty subset of {', '.join(MODALITIES)}; got {list(cfg.modalities)}")
    if cfg.consistency != "none" and ("audio" not in cfg.modalities or len(cfg.modalities) < 2):
        raise UserError("consistency needs audio and at least one visual modality (visual or expr)")


def init_from_runs(nets: dict[str, torch.nn.Module], run_dirs: list[str], log) -> None:
    """Load each encoder found in the newest checkpoint of the given runs (single-modality pre-training)."""
    for run_dir in run_dirs:
        path = latest_checkpoint(Path(run_dir) / "checkpoints")
        if path is None:
            raise UserError(f"init_from: no checkpoint in {run_dir}/checkpoints; train that stage first")
        state = load_checkpoint(path)["nets"]
        loaded = [name for name in nets if name in state and not name.startswith("phi_")]
        for name in loaded:
            unwrap(nets[name]).load_state_dict(state[name])
        log.info("initialised %s from %s", ", ".join(loaded) or "nothing", path)


def phi_state(cfg, steps_done: int) -> dict[str, bool]:
    """Per visual modality, whether its φ has been trained after `steps_done` steps (recorded in checkpoints:
    φ is only trained by the affine consistency term, from `consistency_start` on)."""
    on = cfg.consistency == "affine" and steps_done > cfg.consistency_start
    return {m: on for m in cfg.modalities if m != "audio"}


def distance_stats(emb) -> dict[str, float]:
    out = {}
    for m, (a, p) in emb.items():
        d = pairwise_distance(a.detach(), p.detach())
        eye = torch.eye(len(d), dtype=torch.bool, device=d.device)
        out[f"dist_pos/{m}"] = float(d[eye].mean())
        out[f"dist_neg/{m}"] = float(d[~eye].mean()) if len(d) > 1 else 0.0
        out[f"acc/{m}"] = retrieval_accuracy(a.detach(), p.detach())
    return out


@torch.no_grad()
def validate(cfg, nets, bank: ClipBank, sampler: PairSampler, device) -> dict[str, float]:
    """Mean in-batch retrieval accuracy and distances on validation pairs (eval mode)."""
    for net in nets.values():
        net.eval()
    sums: dict[str, float] = {}
    for k in range(cfg.val_batches):
        anchors, positives = sampler.refs(sampler.batch(k))
        inputs = pair_inputs(bank, cfg.modalities, anchors, positives)
        emb = {m: embed_pair(nets[m], *inputs[m], device) for m in cfg.modalities}
        for key, value in distance_stats(emb).items():
            sums[f"val/{key}"] = sums.get(f"val/{key}", 0.0) + value / cfg.val_batches
    for net in nets.values():
        net.train()
    return sums


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(MetricConfig, argv, prog="python -m manipulator.metric.train", doc=__doc__)
    check_config(cfg)
    engine = Engine("metric", cfg)
    spec = to_object(cfg.inputs)
    norm = Normaliser.from_index(cfg.data_dir)  # the expression encoder's units, recorded in the checkpoints
    bank = ClipBank(cfg.data_dir, tuple(cfg.train_splits), spec, list(cfg.modalities), METRIC_SPLIT, norm)
    expr_dim = bank.clips[0].expr.shape[1]
    sampler = PairSampler(
        bank, cfg.batch_size, cfg.group_by, cfg.min_gap, cfg.engine.seed, engine.dist.rank, cfg.skip_silent
    )
    val_bank = val_sampler = None
    if cfg.val_splits and not has_clips(cfg.data_dir, cfg.val_splits, METRIC_SPLIT):
        engine.log.warning("no clips in validation split(s) %s: validation off", ", ".join(cfg.val_splits))
    elif cfg.val_splits:
        val_bank = ClipBank(cfg.data_dir, tuple(cfg.val_splits), spec, list(cfg.modalities), METRIC_SPLIT, norm)
        val_sampler = PairSampler(val_bank, cfg.batch_size, cfg.group_by, cfg.min_gap, 12345, 0, cfg.skip_silent)
    raw = build_encoders(list(cfg.modalities), cfg.size, cfg.embed_dim, expr_dim, cfg.inputs.audio_kind)
    init_from_runs(raw, list(cfg.init_from), engine.log)
    nets = {name: engine.ddp(net) for name, net in raw.items()}
    opt = build_optimizer(nets, cfg.lr, cfg.weight_decay, cfg.phi_lr)
    start = engine.resume(nets, {"opt": opt})
    engine.log.info(
        "metric: %d training pairs, modalities %s, consistency %s",
        len(sampler),
        ",".join(cfg.modalities),
        cfg.consistency,
    )
    for step in engine.steps(start):
        set_lr(opt, lr_at(step, cfg.lr, cfg.lr_schedule, cfg.warmup_steps, cfg.engine.max_steps, min_lr_ratio=0.01))
        anchors, positives = sampler.refs(sampler.batch(step))
        inputs = pair_inputs(bank, cfg.modalities, anchors, positives)
        loss, terms, emb = train_step(cfg, nets, opt, inputs, step, engine.device, engine.autocast)
        done = step + 1
        if done % cfg.engine.log_every == 0:
            stats = {k: all_reduce_mean(v.detach(), engine.dist).item() for k, v in terms.items()}
            stats |= distance_stats(emb)
            for m in cfg.modalities:
                if m != "audio":
                    phi = unwrap(nets[f"phi_{m}"])
                    stats[f"phi/{m}_weight"], stats[f"phi/{m}_bias"] = phi.weight.item(), phi.bias.item()
            engine.log_metrics(done, {"loss": loss.item(), "lr": opt.param_groups[0]["lr"], **stats})
        if val_bank is not None and (done % cfg.val_every == 0 or done == cfg.engine.max_steps):
            engine.log_metrics(done, validate(cfg, nets, val_bank, val_sampler, engine.device))
        extra = {"expr_dim": expr_dim, "phi_trained": phi_state(cfg, done)} | norm.as_extra()
        engine.maybe_save(step, nets, {"opt": opt}, extra=extra)
    engine.close()


if __name__ == "__main__":
    main()
