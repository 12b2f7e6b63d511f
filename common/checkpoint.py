"""Checkpoints: one dict per step, written atomically, last N kept, loaded with weights_only=True.

Layout of the dict: {"step", "nets": {name: state_dict}, "optims": {name: state_dict},
"rng": [per-rank RNG state], "config": plain dict, "extra": plain data}. RNG states are stored as
tensors and plain Python data so that `torch.load(weights_only=True)` accepts them.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import __version__
from common.errors import FormatError, UserError
from common.fsutil import atomic_path

CKPT_PATTERN = re.compile(r"^step_(\d{9})\.pt$")


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step_{step:09d}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of complete checkpoints, oldest first (temporary files are ignored)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := CKPT_PATTERN.match(p.name))]
    return sorted(found)


def save_checkpoint(ckpt_dir: str | Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write `state` for `step` atomically, then delete all but the newest `keep_last` checkpoints."""
    path = checkpoint_path(ckpt_dir, step)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    if keep_last > 0:
        for _, old in list_checkpoints(ckpt_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def imported_state(nets: dict[str, dict], config: dict, extra: dict) -> dict[str, Any]:
    """A run checkpoint of published weights (converted to our nets): step 0, no optimizer or RNG state, so
    it is for inference or `init_from=`, never for resuming."""
    return {
        "step": 0,
        "nets": nets,
        "optims": {},
        "rng": [],
        "config": config,
        "code_version": __version__,
        "extra": extra,
    }


def save_imported_run(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write `imported_state(...)` as the run's only checkpoint; a run that has trained already is refused."""
    later = [s for s, _ in list_checkpoints(Path(run_dir) / "checkpoints") if s > 0]
    if later:
        raise UserError(f"{run_dir}: already a run (checkpoint of step {later[-1]}); import into another folder")
    return save_checkpoint(Path(run_dir) / "checkpoints", 0, state, keep_last=0)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt or foreign files
        raise UserError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from None


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def load_run(run_dir: str | Path, hint: str) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of a run dir and its contents; a missing one is a one-line error ending in `hint`."""
    path = latest_checkpoint(Path(run_dir) / "checkpoints")
    if path is None:
        raise UserError(f"{run_dir}: no checkpoint; {hint}")
    return path, load_checkpoint(path)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as weights_only-safe data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_lists_to_tuples(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(obj: Any) -> Any:
    return [_tuples_to_lists(x) for x in obj] if isinstance(obj, tuple | list) else obj


def _lists_to_tuples(obj: Any) -> Any:
    return tuple(_lists_to_tuples(x) for x in obj) if isinstance(obj, list) else obj


def state_dict_mismatch(expected: dict, found: dict) -> str:
    """A short description of missing / unexpected keys and wrong shapes ('' when they match exactly)."""
    if not isinstance(found, dict):
        return f"expected a state dict, found {type(found).__name__}"
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", extra)):
        if keys:
            parts.append(f"{len(keys)} {label} key(s) ({', '.join(keys[:3])}{' …' if len(keys) > 3 else ''})")
    if shapes:
        k = shapes[0]
        got, want = tuple(found[k].shape), tuple(expected[k].shape)
        parts.append(f"{len(shapes)} wrong shape(s) ({k}: {got}, expected {want})")
    return "; ".join(parts)


_COUNTER = ".num_batches_tracked"


def read_foreign_weights(path: Path, what: str, inner: str = "") -> dict[str, torch.Tensor]:
    """A published network's state dict (on CPU) from a user-placed file; FormatError naming the file when it
    is not one. DataParallel's `module.` prefix and BatchNorm step counters (absent from files saved before
    PyTorch 0.4.1, unused in eval mode) are dropped, so either save of the same weights reads the same.
    `inner`: the key under which a training checkpoint nests the state dict (a flat file reads as well)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt or foreign files
        first = (str(exc).strip().splitlines() or [""])[0]  # torch's messages run over several lines
        raise FormatError(
            f"{path}: not a PyTorch weight file ({type(exc).__name__}: {first}); expected {what}"
        ) from None
    if inner and isinstance(state, dict) and isinstance(state.get(inner), dict):
        state = state[inner]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise FormatError(f"{path}: not {what} (expected a state dict, found {type(state).__name__})")
    odd = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise FormatError(f"{path}: not {what}: {len(odd)} non-tensor value(s) ({', '.join(odd[:3])})")
    return {k.removeprefix("module."): v for k, v in state.items() if not k.endswith(_COUNTER)}


def load_foreign_weights(net: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, what: str):
    """Load `state` (from read_foreign_weights) into `net` after an exact key and shape check; returns `net`."""
    wanted = {k: v for k, v in net.state_dict().items() if not k.endswith(_COUNTER)}
    problem = state_dict_mismatch(wanted, state)
    if problem:
        raise FormatError(f"{path}: not {what}: {problem}")
    net.load_state_dict(state, strict=False)  # the check above leaves only the step counters unset
    return net


def hub_checkpoint(name: str) -> Path:
    """`$TORCH_HOME/hub/checkpoints/<name>`: where torch keeps published weights (we only read what users place)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def missing_weights(path: Path, source: str) -> str | None:
    """None when the weight file exists, else one line naming it and where it comes from."""
    return None if Path(path).is_file() else f"missing {path} ({source})"
