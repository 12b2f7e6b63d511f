"""Speed benchmarks with printed numbers and a JSON report: `python -m evaluation.bench` (see `__main__`).

Each module holds the sections of one part of the pipeline and imports only what they need: a section runs
in a fresh process (`run_isolated`), which imports this package and the section's module and nothing else,
so the peak memory reported is the section's own.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import resource
from collections.abc import Callable
from typing import Any


def _child(fn: Callable, args: tuple, out: Any) -> None:
    result = fn(*args)
    out.put((result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def run_isolated(fn: Callable, *args: Any) -> tuple[Any, float]:
    """fn(*args) in a fresh (spawned) process: its result and the process's peak memory (max RSS, MB).
    Raises ChildProcessError when the process ends without a result (an exception, or killed for memory)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, out))
    proc.start()
    while True:  # read before joining: the process does not end before the pipe has taken its result
        try:
            result, peak_kb = out.get(timeout=1.0)
            break
        except queue.Empty:
            if proc.is_alive():
                continue
            try:  # it may have put its result just before ending
                result, peak_kb = out.get(timeout=1.0)
                break
            except queue.Empty:
                proc.join()
                raise ChildProcessError(f"exit code {proc.exitcode}") from None
    proc.join()
    return result, round(peak_kb / 1024, 1)
