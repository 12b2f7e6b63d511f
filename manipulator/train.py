"""Train the expression manipulator: `python -m manipulator.train --config configs/manipulator/<name>.yaml`.

NED's StarGAN-v2 iteration (`manipulator.steps`): two D steps and two G steps per iteration, a latent
branch (s = F(z, y_trg)) and a reference branch (s = E(x_ref), y_trg = the reference's own label). The
latent G step updates G, F and E; the reference G step updates G only. With `scmcl.enabled` both G steps
add SCMCL's paired loss to retrieved same-speech target windows (weighted by audio similarity) and the
correlation loss |φ(d_v) - d_a| through the metric's frozen expression encoder and φ.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import load_run
from common.cli import parse_cli
from common.config import choice
from common.emotions import DEFAULT_EMOTIONS, NEUTRAL
from common.engine import Engine, EngineConfig, eval_mode, unwrap
from common.errors import ConfigError, UserError, cli_entry
from common.formats import Clip, read_clip_index
from common.schedules import lr_at, set_lr
from facemodel import face_model_for
from manipulator.data import DIST_THRESH, PIVOT_DISTANCES, Retriever, ScmclBatch, WindowBank, dataset_basis_hash
from manipulator.edit import Editor
from manipulator.evaluate import paired_scores
from manipulator.expr_norm import MODES as NORM_MODES
from manipulator.expr_norm import Normaliser
from manipulator.metric.data import has_clips
from manipulator.metric.diagnose import require_passing
from manipulator.metric.index import default_index_dir
from manipulator.metric.models import load_metric, stored_normaliser
from manipulator.models import SIZES, build_manipulator
from manipulator.ned import is_ned_manipulator, load_into, read_ned_manipulator
from manipulator.plots import edit_plot, sample_video
from manipulator.steps import NedBatch, build_optimizers, loss_weights, ned_iteration
from preprocessing.pairs import PAIRS_FILE


@dataclass
class ScmclConfig:
    enabled: bool = False
    metric_run: str = "runs/metric/joint"  # frozen expression encoder + φ
    index_dir: str = ""  # default <data_dir>/retrieval/<metric run name>, built by that run (checked)
    paired_form: str = choice("cosine", ["cosine", "l1"], "per-frame 1-cos (SCMCL code) or L1 (LSCMC)")
    visual_ref: str = choice("source", ["source", "retrieved"], "d_v: generated vs source (SCMCL code) or retrieved")
    lambda_paired: float = 10.0
    lambda_corr: float = 1.0
    dist_thresh: float | None = DIST_THRESH  # candidates farther (audio distance) are never paired (published)
    pivot_distance: str = choice(
        "source_hop",
        list(PIVOT_DISTANCES),
        "d_a of emotion -> emotion pairs: source -> pivot (published) or pivot -> target",
    )
    corr_max_grad_ratio: float | None = 1.0  # the correlation term's gradient at most this x the paired term's
    corr_start: int = 0  # step from which the correlation term is on (fine-tuning a paired-only manipulator)
    allow_failing_metric: bool = False  # train the correlation term on a metric that fails its diagnosis (recorded)


@dataclass
class ManipulatorConfig:
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(max_steps=2000, log_every=50, ckpt_every=500))
    data_dir: str = "data/processed/toy_mead"
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    val_splits: list[str] = field(default_factory=lambda: ["val"])
    emotions: list[str] = field(default_factory=lambda: list(DEFAULT_EMOTIONS))
    seq_len_frames: int = 10
    hop: int = 1
    size: str = choice("ned", list(SIZES))
    residual_generator: bool = False  # NED: absolute output; true: x + Δ
    batch_size: int = 64
    lr: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.99
    lr_schedule: str = choice("linear", ["constant", "linear", "cosine"])
    lambda_sty: float = 1.0
    lambda_cyc: float = 1.0
    lambda_mouth: float = 1.0
    scmcl: ScmclConfig = field(default_factory=ScmclConfig)
    sample_every: int = 500  # TensorBoard plots of edited validation windows
    expr_norm: str = choice(
        "dataset",
        list(NORM_MODES),
        "normalise coefficients by the face model's statistics, "
        "or feed them raw (NED; needed to fine-tune from NED's weights)",
    )
    init_from: str = ""  # start from NED's <epoch>_nets_finetuned.pth or one of our manipulator runs (new runs only)


class _ScmclTerms:
    """Frozen metric parts and the retriever; produces the SCMCL inputs of compute_g_loss (ScmclBatch)."""

    def __init__(self, cfg, bank: WindowBank, device: torch.device, log):
        self.f_expr = self.phi = None
        self.window = 0
        self.diagnosis = None
        if cfg.lambda_corr > 0:  # the correlation term needs the frozen expression encoder and a trained φ
            pairs = {"dist_thresh": cfg.dist_thresh, "pivot_distance": cfg.pivot_distance}
            self.diagnosis = require_passing(cfg.metric_run, cfg.allow_failing_metric, log, pairs)
            nets, mcfg = load_metric(cfg.metric_run, ["expr", "phi_expr"], device)  # frozen, eval mode
            self.f_expr, self.phi = nets["expr"], nets["phi_expr"]
            self.window = int(mcfg["inputs"]["expr_window"])
            metric_norm = stored_normaliser(cfg.metric_run)
            if not bank.norm.same_as(metric_norm):  # e.g. expr_norm=none: the encoder reads its own units
                log.info("correlation term: expr_norm=%s windows renormalised to the metric's", bank.norm.mode)
                self.f_expr = torch.nn.Sequential(bank.norm.to_other(metric_norm), self.f_expr).to(device)
        index_dir = cfg.index_dir or default_index_dir(bank.root, cfg.metric_run)
        self.retriever = Retriever(bank, index_dir, cfg.metric_run, cfg.dist_thresh, cfg.pivot_distance)
        self.visual_ref = cfg.visual_ref
        self.device = device

    def batch(self, sources: np.ndarray, y_trg: np.ndarray, rng: np.random.Generator) -> ScmclBatch:
        got = self.retriever.fetch(sources, y_trg, rng)
        return got.with_metric(self.device, self.f_expr, self.phi, self.visual_ref, self.window)


def init_from(cfg, nets: dict, log) -> None:
    """Start a new run from NED's released weights (checked against this run's settings) or another run's nets."""
    if is_ned_manipulator(cfg.init_from):
        states, emotions = read_ned_manipulator(cfg.init_from, list(cfg.emotions))
        wrong = {
            k: v
            for k, v in (("size", "ned"), ("residual_generator", False), ("expr_norm", "none"))
            if getattr(cfg, k) != v
        }
        if wrong:
            needs = ", ".join(f"{k}={v}" for k, v in wrong.items())
            raise ConfigError(
                f"init_from={cfg.init_from} is NED's manipulator: it needs {needs} (NED's networks on raw coefficients)"
            )
        log.info(
            "initialised %s from NED's %s (emotions %s)",
            ", ".join(load_into(nets, states)),
            cfg.init_from,
            ", ".join(emotions),
        )
        return
    path, ckpt = load_run(cfg.init_from, "init_from= names NED's <epoch>_nets_finetuned.pth or a manipulator run")
    theirs = ckpt["config"].get("expr_norm", "dataset")
    if theirs != cfg.expr_norm:  # the same weights would read other numbers
        raise ConfigError(
            f"init_from={path} was trained with expr_norm={theirs}; this run has expr_norm={cfg.expr_norm}"
        )
    try:
        load_into(nets, ckpt["nets"])
    except RuntimeError as exc:
        raise ConfigError(f"init_from={path}: its networks do not fit this run's (size, emotions): {exc}") from None
    log.info("initialised from %s", path)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(ManipulatorConfig, argv, prog="python -m manipulator.train", doc=__doc__)
    engine = Engine("manipulator", cfg)
    norm = Normaliser.from_index(Path(cfg.data_dir), cfg.expr_norm)
    windows = (list(cfg.emotions), cfg.seq_len_frames, cfg.hop, norm)
    bank = WindowBank(cfg.data_dir, tuple(cfg.train_splits), *windows)
    val = None
    if cfg.val_splits and not has_clips(cfg.data_dir, cfg.val_splits):
        engine.log.warning("no clips in validation split(s) %s: validation off", ", ".join(cfg.val_splits))
    elif cfg.val_splits:
        val = WindowBank(cfg.data_dir, tuple(cfg.val_splits), *windows)
    raw = build_manipulator(bank.expr_dim, len(cfg.emotions), cfg.size, cfg.residual_generator)
    nets = {name: engine.ddp(net) for name, net in raw.items()}
    optims = build_optimizers(nets, cfg.lr, (cfg.beta1, cfg.beta2))
    start = engine.resume(nets, optims)
    if start == 0 and cfg.init_from:
        init_from(cfg, nets, engine.log)
    scmcl = _ScmclTerms(cfg.scmcl, bank, engine.device, engine.log) if cfg.scmcl.enabled else None
    weights = loss_weights(cfg)
    latent_dim = SIZES[cfg.size].latent_dim
    extra = bank.norm.as_extra() | {"emotions": list(cfg.emotions), "basis_hash": dataset_basis_hash(cfg.data_dir)}
    if scmcl is not None and scmcl.diagnosis is not None:
        extra["metric_diagnosis"] = scmcl.diagnosis  # what the correlation term's metric passed, or its override
    engine.log.info("manipulator: %d train windows, %s, SCMCL %s", len(bank), cfg.size, "on" if scmcl else "off")
    dev = engine.device
    scores: dict[str, float] = {}
    for step in engine.steps(start):
        for opt in optims.values():
            set_lr(opt, lr_at(step, cfg.lr, cfg.lr_schedule, 0, cfg.engine.max_steps, min_lr_ratio=0.05))
        rng = np.random.default_rng([cfg.engine.seed, step, engine.dist.rank])
        src, ref = bank.sample_sources(rng, cfg.batch_size), bank.sample_references(rng, cfg.batch_size)
        x, y_org = bank.windows(src).to(dev), torch.from_numpy(bank.win_label[src]).to(dev)
        x_ref, y_trg = bank.windows(ref).to(dev), torch.from_numpy(bank.win_label[ref]).to(dev)
        z = torch.from_numpy(rng.standard_normal((cfg.batch_size, latent_dim)).astype(np.float32)).to(dev)
        extra_terms = scmcl.batch(src, bank.win_label[ref], rng) if scmcl else None
        if extra_terms is not None and step < cfg.scmcl.corr_start:  # paired-only until corr_start
            extra_terms = replace(extra_terms, phi=None)
        with engine.autocast():
            logs = ned_iteration(nets, optims, weights, NedBatch(x, y_org, x_ref, y_trg, z), extra_terms)
        done = step + 1
        if done % cfg.engine.log_every == 0:
            engine.log_metrics(done, logs | {"lr": optims["generator"].param_groups[0]["lr"]}, echo=True)
        if val is not None and engine.is_main and (done % cfg.sample_every == 0 or done == cfg.engine.max_steps):
            engine.log_image("val/edits", edit_plot({k: unwrap(v) for k, v in nets.items()}, val, latent_dim), done)
            scores = validate(nets, cfg, bank.norm, latent_dim)
            if scores:
                engine.log_metrics(done, scores, echo=True)
            sample = sample_clip(cfg)
            if sample is not None:
                video = engine.run_dir / "samples" / f"step_{done:09d}.mp4"
                with evaluating(editor_of(nets, cfg, bank.norm, latent_dim)) as editor:
                    if sample_video(editor, face_model_for(cfg.data_dir), sample, video) is not None:
                        engine.log_video("val/sample", video, done)
        engine.maybe_save(step, nets, optims, extra=extra)
    engine.log_hparams(scores)  # {} without validation; rank 0 only
    engine.close()


def editor_of(nets: dict, cfg, norm: Normaliser, latent_dim: int) -> Editor:
    """The nets being trained as an Editor (manipulator.edit), to edit whole clips as a trained run does."""
    return Editor(
        {k: unwrap(v) for k, v in nets.items()},
        norm,
        list(cfg.emotions),
        cfg.seq_len_frames,
        latent_dim,
        Path(cfg.data_dir),
    )


@contextmanager
def evaluating(editor: Editor) -> Iterator[Editor]:
    """The editor's nets in eval mode inside the block, back in their modes after it."""
    with eval_mode(editor.nets.values()):
        yield editor


def sample_clip(cfg) -> Clip | None:
    """The first neutral clip of the validation split (what the sample videos show), if there is one."""
    index = read_clip_index(Path(cfg.data_dir))
    dirs = [c["dir"] for c in index["clips"] if c.get("split") in cfg.val_splits and c.get("emotion") == NEUTRAL]
    return Clip(Path(cfg.data_dir) / sorted(dirs)[0]) if dirs else None


def validate(nets: dict, cfg, norm: Normaliser, latent_dim: int) -> dict[str, float]:
    """val/ scalars: the label edits of the validation split's neutral clips against the same sentences spoken
    in each emotion (`manipulator.evaluate.paired_scores`, intensity 1): expression error of the edit and of the
    unedited source (what the edit should bring down), and the mouth channel's Pearson r (speech kept); {} when
    the split has no such pairs."""
    root = Path(cfg.data_dir)
    if not (root / PAIRS_FILE).is_file():
        return {}
    try:
        with evaluating(editor_of(nets, cfg, norm, latent_dim)) as editor:
            average = paired_scores(editor, root, cfg.val_splits[0], intensities=(1.0,))["average"]
    except UserError:  # no neutral clip of the split with a same-sentence pair
        return {}
    return {
        "val/expr_err": average["err_edit"],
        "val/expr_err_source": average["err_source"],
        "val/mouth_r": average["mouth"],
    }


if __name__ == "__main__":
    main()
