"""Several stage commands dry-run in one process, for `common.experiment`'s --plan and --dry-run checks.

`run_all([[module, arg, ...], ...])` runs each as `python -m <module> <args> --dry-run` would (runpy, its own
`sys.argv`, its output captured, its exit code kept), in one fresh interpreter, so an experiment's stages pay
their imports (torch, OpenCV) once instead of once per stage. `common.experiment` imports nothing from the
stages; the stages run here by module name, as its subprocesses run them.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import subprocess
import sys

from common.errors import UserError


def run_one(module: str, args: list[str]) -> dict:
    """{code, stdout, stderr} of `python -m module args --dry-run`, run in this process."""
    out, err, saved = io.StringIO(), io.StringIO(), sys.argv
    sys.argv, code = [module, *args, "--dry-run"], 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module(module, run_name="__main__", alter_sys=True)  # its __main__ while it runs
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # a stage that breaks on its own command line: its one line, as the stage would
        code = 1
        err.write(f"{type(exc).__name__}: {exc}\n")
    finally:
        sys.argv = saved
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def serve() -> None:
    """Read the commands (JSON) on stdin, write their results (JSON) on stdout."""
    results = [run_one(command[0], list(command[1:])) for command in json.load(sys.stdin)]
    sys.stdout.write(json.dumps(results))


def run_all(commands: list[list[str]]) -> list[dict]:
    """`run_one` of every command, in one fresh interpreter (this one's imports and state stay untouched)."""
    proc = subprocess.run(
        [sys.executable, "-c", "from common.dry_run import serve; serve()"],
        input=json.dumps(commands),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise UserError(f"the stages' dry run failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return json.loads(proc.stdout)
