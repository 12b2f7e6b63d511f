"""Run a project command (`python -m module args`) inside the test process, as the shell would run it.

A fresh interpreter per command costs about 2 s of imports (torch, OpenCV, MediaPipe) on a 2-core machine, and
the suite runs about a hundred commands: most of them end in a second. In-process, the command gets what a
subprocess gets — its `main(argv)` behind `cli_entry`, the given environment, `sys.argv`, its own stdout and
stderr, its exit code (a user error: 2 with the one-line message; an unexpected exception: 1 with the traceback)
— and the test process gets back what the command may change: environment, working directory, torch's thread
count, determinism and default dtype, the RNGs, signal handlers, root logging handlers and warning filters.

Commands whose point is the process itself (torchrun, a kill, a fork-based data builder) still run in a
subprocess: `run_module(..., isolate=True)`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import random
import signal
import subprocess
import sys
import traceback
import warnings

import numpy as np
import torch

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def entry_point(module: str):
    """The `main` that `python -m module` calls (a package's lives in its `__main__`)."""
    mod = importlib.import_module(module)
    main = getattr(mod, "main", None)
    if main is None:
        main = getattr(importlib.import_module(f"{module}.__main__"), "main", None)
    if main is None:
        raise AssertionError(f"{module} has no main(argv): run it with isolate=True")
    return main


@contextlib.contextmanager
def _process_state(env: dict[str, str], argv0: str):
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    saved_torch = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.get_default_dtype(),
        torch.is_grad_enabled(),
        torch.get_rng_state(),
    )
    saved_np, saved_py = np.random.get_state(), random.getstate()
    saved_signals = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [argv0]
    try:
        with warnings.catch_warnings():
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        threads, deterministic, dtype, grad, rng = saved_torch
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.set_rng_state(rng)
        np.random.set_state(saved_np)
        random.setstate(saved_py)
        for sig, handler in saved_signals.items():
            signal.signal(sig, handler)
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])


def run_in_process(module: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m module *args` in this process: a CompletedProcess with its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with _process_state(env, module), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            entry_point(module)(list(args))
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # sys.exit("message"): the message on stderr, exit code 1
                print(exc.code, file=sys.stderr)
                code = 1
        except Exception:  # what the interpreter prints for an uncaught exception
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    return subprocess.CompletedProcess([sys.executable, "-m", module, *args], code, out.getvalue(), err.getvalue())
