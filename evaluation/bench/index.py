"""Retrieval index benchmark: chunked vs dense top-k time and peak memory, each size in its own process."""

from __future__ import annotations

import resource
import time

import torch

from evaluation.bench import run_isolated
from manipulator.metric.topk import chunked_topk, dense_topk


def _index_job(kind: str, n: int, k: int, dim: int) -> dict:
    """Time one top-k computation and report its peak memory above the start (run in a fresh process)."""
    gen = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(n, dim, generator=gen), torch.randn(n, dim, generator=gen)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if kind == "blocked":
        chunked_topk(queries, keys, k)
    else:
        dense_topk(queries, keys, k)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": round(seconds, 2), "peak_extra_mb": round((peak - base) / 1024, 1)}


def _measure_index(kind: str, n: int, k: int = 10, dim: int = 128) -> dict:
    try:
        return run_isolated(_index_job, kind, n, k, dim)[0]
    except ChildProcessError as exc:
        return {"error": f"{exc} (out of memory?)"}


def bench_index(n_windows: int = 50_000, dense_sizes: tuple[int, ...] = (5_000, 10_000, 20_000, 30_000)) -> dict:
    """Retrieval index top-k (k=10, 128-d) for N windows per emotion: blocked vs a dense cdist matrix."""
    out = {"blocked": {}, "dense": {}}
    for n in sorted({*dense_sizes, n_windows}):
        out["blocked"][n] = _measure_index("blocked", n)
        print(f"index blocked top-k N={n}: {out['blocked'][n]}", flush=True)
    for n in dense_sizes:
        out["dense"][n] = _measure_index("dense", n)
        print(f"index dense cdist N={n}: {out['dense'][n]} (matrix alone {n * n * 4 / 2**20:.0f} MB)", flush=True)
    return out
