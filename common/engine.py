"""Training engine: run dir, logging, metrics, TensorBoard, checkpoints with auto-resume, seeding, DDP.

Every trainer owns its explicit loop and uses an `Engine` for the rest:

    engine = Engine("manipulator", cfg)             # cfg.engine is an EngineConfig
    nets, optims = ..., ...
    step = engine.resume(nets, optims)               # newest checkpoint, or 0
    for step in engine.steps(step):                  # progress bar on rank 0
        ...
        engine.log(step, {"loss/g": g.item()})       # every log_every steps
        engine.maybe_save(step, nets, optims)        # every ckpt_every steps and at the end
    engine.close()

Run dir `<runs_root>/<stage>/<name>/`: config.yaml, log.txt, metrics.jsonl, tb/, checkpoints/.
Only rank 0 writes; every rank must call `save` (it gathers the per-rank RNG states).
"""

from __future__ import annotations

import io
import json
import logging
import random
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from common import __version__
from common.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from common.config import choice, config_hash, save_config, to_plain
from common.distributed import (
    autocast,
    gather_objects,
    init_distributed,
    resolve_precision,
    shutdown_distributed,
)
from common.errors import UserError
from common.fsutil import atomic_write_text
from common.video import probe_video, read_frames


@dataclass
class EngineConfig:
    runs_root: str = "runs"
    name: str = "default"  # run dir is <runs_root>/<stage>/<name>
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = choice("auto", ["auto", "bf16", "fp32"], "autocast dtype; auto = bf16 on a capable GPU")
    max_steps: int = 1000
    session_steps: int = 0  # stop (with a checkpoint) after this many steps in this process; 0 = no limit
    log_every: int = 50
    ckpt_every: int = 500
    keep_ckpts: int = 3
    resume: bool = True  # continue from the newest checkpoint in the run dir
    tensorboard: bool = True


def flat_scalars(tree: Mapping, prefix: str = "") -> dict[str, int | float | str | bool]:
    """{dotted key: value} of a nested config's scalars (lists and nulls left out: TensorBoard's hparams take
    scalars only)."""
    out: dict[str, int | float | str | bool] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out |= flat_scalars(value, f"{prefix}{key}.")
        elif isinstance(value, int | float | str | bool):
            out[f"{prefix}{key}"] = value
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def eval_mode(modules: Iterable[torch.nn.Module]) -> Iterator[None]:
    """The modules in eval mode inside the block, each back in its own mode after it (validation, samples)."""
    modules = list(modules)
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


def unwrap(net: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


class Engine:
    def __init__(self, stage: str, cfg: DictConfig, engine_cfg: DictConfig | None = None):
        self.cfg = cfg
        self.ecfg = engine_cfg if engine_cfg is not None else cfg.engine
        self.stage = stage
        self.dist = init_distributed(self.ecfg.device)
        self.device = self.dist.device
        self.amp_dtype = resolve_precision(self.ecfg.precision, self.device)
        self.run_dir = Path(self.ecfg.runs_root) / stage / self.ecfg.name
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.log = logging.getLogger(f"spfem.{stage}.{self.ecfg.name}")
        self._tb = None
        self._metrics_file = None
        self._purge_step: int | None = None  # TensorBoard drops events after this step on resume
        self._session_end = self.ecfg.max_steps
        self.extra: dict[str, Any] = {}  # the `extra` dict of the checkpoint resumed from
        self._t0 = time.time()
        seed_everything(self.ecfg.seed + self.dist.rank)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self._setup_logging()
        self.log.info(
            "%s run %s | device %s | world size %d | precision %s | config %s",
            stage,
            self.run_dir,
            self.device,
            self.dist.world_size,
            "bf16" if self.amp_dtype == torch.bfloat16 else "fp32",
            config_hash(cfg),
        )

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    # -- logging -----------------------------------------------------------------------------------

    def _setup_logging(self) -> None:
        self.log.handlers.clear()
        self.log.propagate = False
        fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        self.log.addHandler(console)
        if self.is_main:
            file_handler = logging.FileHandler(self.run_dir / "log.txt")
            file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            self.log.addHandler(file_handler)
            self.log.setLevel(logging.INFO)
        else:
            self.log.setLevel(logging.WARNING)

    @property
    def tb(self):
        """TensorBoard SummaryWriter on rank 0 (None elsewhere or when disabled)."""
        if self._tb is None and self.is_main and self.ecfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow import

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self._purge_step)
        return self._tb

    def log_metrics(self, step: int, metrics: Mapping[str, float], echo: bool = True) -> None:
        """Record scalars (rank 0): metrics.jsonl, TensorBoard, and a log line when `echo`."""
        if not self.is_main:
            return
        values = {k: float(v) for k, v in metrics.items()}
        if self._metrics_file is None:
            self._metrics_file = open(self.run_dir / "metrics.jsonl", "a")  # noqa: SIM115 - kept open
        record = {"step": step, "time": round(time.time() - self._t0, 3), **values}
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)
        if echo:
            self.log.info("step %d | %s", step, " ".join(f"{k} {v:.4g}" for k, v in values.items()))

    def log_image(self, tag: str, image: np.ndarray | torch.Tensor, step: int) -> None:
        """An image grid to TensorBoard (rank 0). image: (H, W, 3) uint8/float in [0, 1], or (3, H, W)."""
        if self.tb is None:
            return
        arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        dataformats = "CHW" if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3) else "HWC"
        self.tb.add_image(tag, arr, step, dataformats=dataformats)

    def log_video(self, tag: str, video: str | Path, step: int, max_frames: int = 50, width: int = 480) -> None:
        """A sample video to TensorBoard (rank 0) as an animated GIF in its images tab (what add_video makes,
        encoded with Pillow instead of moviepy): at most `max_frames` frames, evenly spaced, `width` px wide."""
        if self.tb is None:
            return
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        frames = read_frames(video)
        n = len(frames)
        frames = frames[np.linspace(0, n - 1, min(max_frames, n)).round().astype(int)]
        h, w = frames.shape[1:3]
        size = (width, max(1, round(h * width / w))) if w > width else (w, h)
        images = [Image.fromarray(f).resize(size) for f in frames]
        buffer = io.BytesIO()
        fps = probe_video(video).fps * len(frames) / n  # the clip's duration, in fewer frames
        images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        image = Summary.Image(height=size[1], width=size[0], colorspace=3, encoded_image_string=buffer.getvalue())
        self.tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def log_hparams(self, metrics: Mapping[str, float]) -> None:
        """The run's settings (every scalar of its config, dotted) with its final `metrics` in TensorBoard's
        HPARAMS tab (rank 0), so seeds and ablations line up; also `hparams.json` in the run dir."""
        if not self.is_main:
            return
        hparams = flat_scalars(to_plain(self.cfg))
        values = {k: float(v) for k, v in metrics.items()}
        path = self.run_dir / "hparams.json"
        if not values and path.is_file():  # a session that measured nothing (a finished run resumed) keeps them
            values = json.loads(path.read_text()).get("metrics", {})
        atomic_write_text(path, json.dumps({"hparams": hparams, "metrics": values}, indent=2))
        if self.tb is not None and values:
            self.tb.add_hparams(hparams, {f"hparam/{k}": v for k, v in values.items()}, run_name="hparams")

    # -- steps, precision, DDP ---------------------------------------------------------------------

    def steps(self, start: int) -> Iterator[int]:
        """Yield steps start..max_steps-1 (fewer with session_steps), with a progress bar on rank 0."""
        total = self.ecfg.max_steps
        if self.ecfg.session_steps > 0:
            self._session_end = min(total, start + self.ecfg.session_steps)
        bar = tqdm(
            range(start, self._session_end),
            initial=start,
            total=total,
            desc=self.stage,
            disable=not self.is_main,
            dynamic_ncols=True,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        )
        yield from bar
        bar.close()

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    def ddp(self, net: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        """Move to the device and wrap in DistributedDataParallel when running on several processes."""
        net = net.to(self.device)
        if not self.dist.distributed:
            return net
        device_ids = [self.device] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(net, device_ids=device_ids, **kwargs)

    # -- checkpoints -------------------------------------------------------------------------------

    def resume(self, nets: Mapping[str, torch.nn.Module], optims: Mapping[str, torch.optim.Optimizer]) -> int:
        """Load the newest checkpoint if resuming is on and one exists; return the step to start from."""
        path = latest_checkpoint(self.ckpt_dir) if self.ecfg.resume else None
        if path is None:
            self._purge_step = None
            self._truncate_metrics(0)
            return 0
        state = load_checkpoint(path, map_location=self.device)
        for name, net in nets.items():
            unwrap(net).load_state_dict(state["nets"][name])
        for name, opt in optims.items():
            try:
                opt.load_state_dict(state["optims"][name])
            except (KeyError, ValueError) as exc:  # an optimizer of another layout (an older version of the stage)
                raise UserError(
                    f"{path}: its optimizer state {name!r} does not fit this stage's optimizer ({exc}); "
                    "train into a new run (engine.name=…) or remove the run folder"
                ) from None
        rng = state.get("rng", [])
        if len(rng) == self.dist.world_size:
            restore_rng_state(rng[self.dist.rank])
        else:
            self.log.warning(
                "checkpoint has RNG states for %d rank(s), this run has %d: reseeding from (seed, step)",
                len(rng),
                self.dist.world_size,
            )
            seed_everything(self.ecfg.seed + self.dist.rank + 1_000_003 * state["step"])
        self.extra = state.get("extra", {})
        step = int(state["step"])
        self._purge_step = step + 1  # metrics are logged with the number of completed steps
        self._truncate_metrics(step)
        self.log.info("resumed from %s (step %d)", path, step)
        return step

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after `step` by an interrupted run, so the file matches the resume."""
        path = self.run_dir / "metrics.jsonl"
        if not self.is_main or not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    def save(
        self,
        step: int,
        nets: Mapping[str, torch.nn.Module],
        optims: Mapping[str, torch.optim.Optimizer],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Checkpoint the state *after* `step` steps. Collective: call on every rank."""
        rng = gather_objects(capture_rng_state(), self.dist)
        if not self.is_main:
            return
        state = {
            "step": step,
            "nets": {name: unwrap(net).state_dict() for name, net in nets.items()},
            "optims": {name: opt.state_dict() for name, opt in optims.items()},
            "rng": rng,
            "config": to_plain(self.cfg),
            "code_version": __version__,
            "extra": dict(extra or {}),
        }
        path = save_checkpoint(self.ckpt_dir, step, state, self.ecfg.keep_ckpts)
        self.log.info("saved %s", path)

    def maybe_save(self, step: int, nets, optims, extra: Mapping[str, Any] | None = None) -> None:
        """Save after step `step` (0-based) when due: every ckpt_every steps and at the end of the session."""
        done = step + 1
        if done % self.ecfg.ckpt_every == 0 or done in (self.ecfg.max_steps, self._session_end):
            self.save(done, nets, optims, extra)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._metrics_file is not None:
            self._metrics_file.close()
        self.log.info("%s finished in %.1f s", self.stage, time.time() - self._t0)
        for handler in list(self.log.handlers):
            handler.close()
            self.log.removeHandler(handler)
        shutdown_distributed()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
