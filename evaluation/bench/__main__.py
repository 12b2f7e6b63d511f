"""Speed benchmarks with printed numbers and a JSON report: `python -m evaluation.bench [--only NAME …]`.

Sections grow with the pipeline; each measures one stage on data it generates. Currently:
- raster: rasterize + interpolate (NMFC colours) frames/s at 256x256 for a ~900-triangle mesh and at
  224x224 for a ~10k-triangle mesh, on one thread.
- index: chunked vs dense top-k retrieval time and peak memory.
- manipulator: training windows/s per size preset (the trainer's NED iteration, both branches).
- renderer: the trainer's step time and inference frames/s (tiny / ned at 256, the demo's tiny at 128).
- refiner: the warp refiner trainer's step time (the demo's tiny at 128, small at 256).
- postprocess: blending frames/s per method (256 face into a 1280x720 frame).
- deca: DECA encode frames/s at batch 32 and NMFC/shape rendering of a FLAME-sized mesh.
- preprocess: ms per frame per step on a generated toy clip; metric: training pairs/s (the trainer's step);
  edit: manipulate + render + blend frames/s; evaluation: the published metrics' networks, frames/s.
- warp: the warp renderer's frames/s on one thread at 512 and 256, and the whole edit of a 512x512 25 fps clip
  (manipulate + warp + encode with the side-by-side video) against real time; the warp refiner's frames/s.
Every section runs in its own process and reports its peak memory (max RSS). `--only` may be repeated.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from common.cli import parse_cli
from common.config import arg
from common.errors import UserError, cli_entry
from common.fsutil import atomic_write_text
from evaluation.bench import run_isolated
from evaluation.bench.index import bench_index
from evaluation.bench.pipeline import bench_edit, bench_postprocess, bench_warp
from evaluation.bench.preprocess import bench_deca, bench_preprocess
from evaluation.bench.raster import bench_raster
from evaluation.bench.scores import bench_evaluation
from evaluation.bench.training import bench_manipulator, bench_metric, bench_refiner, bench_renderer

SECTIONS: dict[str, Callable[[], dict]] = {
    "raster": bench_raster,
    "index": bench_index,
    "manipulator": bench_manipulator,
    "renderer": bench_renderer,
    "refiner": bench_refiner,
    "postprocess": bench_postprocess,
    "deca": bench_deca,
    "preprocess": bench_preprocess,
    "metric": bench_metric,
    "edit": bench_edit,
    "warp": bench_warp,
    "evaluation": bench_evaluation,
}


@dataclass
class BenchConfig:
    only: list[str] = arg([], "run only these sections (default: all): " + ", ".join(SECTIONS))
    out: str = arg("runs/bench/bench.json", "JSON report path")


def machine_info() -> dict:
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(BenchConfig, argv, prog="python -m evaluation.bench", doc=__doc__)
    unknown = [name for name in cfg.only if name not in SECTIONS]
    if unknown:
        raise UserError(f"--only {unknown[0]}: no such section; choose from {', '.join(sorted(SECTIONS))}")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    report, failed = {"machine": machine_info()}, []
    for name in list(cfg.only) or sorted(SECTIONS):
        try:
            result, peak_mb = run_isolated(SECTIONS[name])
        except ChildProcessError as exc:  # its traceback is on stderr already
            report[name], failed = {"error": str(exc)}, [*failed, name]
            print(f"{name}: failed ({exc})", flush=True)
            continue
        report[name] = result | {"peak_rss_mb": peak_mb}
        print(f"{name}: peak memory {peak_mb} MB", flush=True)
    atomic_write_text(Path(cfg.out), json.dumps(report, indent=2) + "\n")
    print(f"wrote {cfg.out}")
    if failed:
        raise UserError(f"section(s) failed: {', '.join(failed)} (see above)")


if __name__ == "__main__":
    main()
