"""Renderer reconstruction quality on held-out clips of an identity:

  python -m renderer.evaluate --run runs/renderer/W001 [--split test] [--max-clips 0] [--out FILE.json]
  python -m renderer.evaluate --run warp | runs/refiner/default --actor W001 [--data-dir data/processed/toy_mead]

Each held-out clip is rendered from its own (unedited) parameters and compared with its real aligned
faces inside the face mask: PSNR over the mask pixels and SSIM averaged over the mask (SSIM map of the
whole crop, Gaussian window). Prints per-clip and mean values and writes `<run>/eval_<split>.json` (for
`warp`: `runs/warp/eval_<actor>_<split>.json`). The warp renderer returns the source exactly by construction
(its reconstruction PSNR is infinite up to rounding); the refiner's correction is what it measures there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import parse_cli
from common.config import arg
from common.errors import UserError, cli_entry
from common.formats import Clip
from common.fsutil import atomic_write_text
from common.image_metrics import masked_psnr, masked_ssim, mean_measured
from facemodel import FaceModel, face_model_for
from renderer.data import identity_clips
from renderer.interface import Renderer
from renderer.registry import load_renderer


@dataclass
class EvaluateConfig:
    run: str = arg(help="a neural renderer run dir, warp, or a warp refiner run dir")
    actor: str = arg("", "the identity (warp and refiner; a neural run knows its own)")
    data_dir: str = arg("", "the dataset (warp and refiner; default: the run's, else data/processed/toy_mead)")
    split: str = arg("test", "held-out split of the identity's clips")
    max_clips: int = arg(0, "evaluate at most this many clips (0 = all)")
    out: str = arg("", "JSON report (default <run>/eval_<split>.json)")
    device: str = arg("auto", "auto, cpu or cuda")


def evaluate_clip(
    renderer: Renderer, model: FaceModel, clip: Clip, faces: list[np.ndarray] | None = None
) -> dict[str, float]:
    """Frames, mean masked PSNR and SSIM of the clip rendered from its own parameters against its real faces;
    the rendered faces are appended to `faces` when given (a sample video from the same pass)."""
    psnr, ssim = [], []
    for t, fake in enumerate(renderer.plan(model, clip).faces()):
        real, mask = clip.faces.read(t), clip.masks.read(t) > 127
        psnr.append(masked_psnr(real, fake, mask))
        ssim.append(masked_ssim(real, fake, mask))
        if faces is not None:
            faces.append(fake)
    return {"frames": clip.n_frames, "psnr": mean_measured(psnr), "ssim": mean_measured(ssim)}


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """PSNR and SSIM over clips (evaluate_clip's results), weighted by their frames."""
    frames = np.array([s["frames"] for s in scores], np.float64)
    return {k: float(np.average([s[k] for s in scores], weights=frames)) for k in ("psnr", "ssim")}


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(EvaluateConfig, argv, prog="python -m renderer.evaluate", doc=__doc__)
    renderer = load_renderer(cfg.run, cfg.device)
    actor = renderer.actor or cfg.actor  # a renderer trained on one identity knows it
    data_dir = Path(cfg.data_dir or renderer.data_dir or "data/processed/toy_mead")
    if not actor:
        raise UserError(f"--run {cfg.run}: pass --actor (the {renderer.kind} renderer is not trained per identity)")
    try:
        dirs = identity_clips(data_dir, actor, (cfg.split,))
    except UserError as exc:
        raise UserError(f"nothing to evaluate: {exc}") from None
    if cfg.max_clips > 0:
        dirs = dirs[: cfg.max_clips]
    model = face_model_for(data_dir)
    per_clip = {}
    for rel in dirs:
        per_clip[rel] = evaluate_clip(renderer, model, Clip(data_dir / rel))
        print(f"{rel}: PSNR {per_clip[rel]['psnr']:.2f} dB, SSIM {per_clip[rel]['ssim']:.3f}", flush=True)
    frames = np.array([r["frames"] for r in per_clip.values()], np.float64)
    mean = mean_scores(list(per_clip.values()))
    report = {
        "run": str(cfg.run),
        "checkpoint": renderer.checkpoint,
        "split": cfg.split,
        "clips": len(dirs),
        "frames": int(frames.sum()),
        "mean": mean,
        "per_clip": per_clip,
    }
    run_dir = Path(cfg.run) if Path(cfg.run).is_dir() else Path("runs") / cfg.run  # a kind's name: runs/<kind>
    default = run_dir / (f"eval_{cfg.split}.json" if renderer.actor else f"eval_{actor}_{cfg.split}.json")
    out = Path(cfg.out) if cfg.out else default
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    print(
        f"{actor} ({cfg.split}, {len(dirs)} clips, {int(frames.sum())} frames): "
        f"PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.3f} (inside the face mask) -> {out}"
    )


if __name__ == "__main__":
    main()
