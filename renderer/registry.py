"""The one registry of renderer kinds: `--renderer <kind>` or a run dir -> a `renderer.interface.Renderer`.

Adding a kind is one module with a class that implements the `Renderer` protocol (and its `RenderPlan`) plus
one entry in RENDERERS: how the kind is loaded from its name alone and/or from a run dir whose checkpoint's
`extra.kind` names it. Nothing outside `renderer/` dispatches on the kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.checkpoint import latest_checkpoint, load_checkpoint
from common.errors import UserError
from renderer.interface import Renderer
from renderer.neural import KIND as NEURAL
from renderer.neural import NeuralRenderer
from renderer.refine.inference import RefineRenderer
from renderer.warp import WarpRenderer


@dataclass(frozen=True)
class RendererKind:
    by_name: Callable[[str, Path], Renderer] | None  # (device, runs_root) -> `--renderer <kind>`; None: a run only
    from_run: Callable[[Path, str], Renderer] | None  # (run dir, device) -> the renderer it holds; None: no runs


RENDERERS: dict[str, RendererKind] = {
    WarpRenderer.kind: RendererKind(lambda device, runs_root: WarpRenderer(), None),
    RefineRenderer.kind: RendererKind(RefineRenderer.load_default, RefineRenderer.load),
    NEURAL: RendererKind(None, NeuralRenderer.load),
}
UNNAMED_RUN = NEURAL  # the kind of a run whose checkpoint names none (renderer.train's runs, NED's imports)


def run_kind(run_dir: Path) -> str:
    """The kind of a renderer run: its newest checkpoint's `extra.kind` (UNNAMED_RUN without one)."""
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    return load_checkpoint(ckpt).get("extra", {}).get("kind", UNNAMED_RUN) if ckpt is not None else UNNAMED_RUN


def load_renderer(spec: str | Path, device: str = "auto", runs_root: str | Path = "runs") -> Renderer:
    """`spec`: a kind's name (`warp`; `warp_refine` = the refiner run `<runs_root>/refiner/default`) or a run
    dir (a refiner run, or a neural renderer run)."""
    named = RENDERERS.get(str(spec))
    if named is not None and named.by_name is not None:
        return named.by_name(device, Path(runs_root))
    run = Path(spec)
    if not run.is_dir():
        names = [k for k, entry in RENDERERS.items() if entry.by_name is not None]
        raise UserError(f"{spec}: no such renderer run dir (give {', '.join(names)} or a run dir)")
    kind = run_kind(run)
    entry = RENDERERS.get(kind)
    if entry is None or entry.from_run is None:
        raise UserError(f"{run}: a run of renderer kind {kind!r}, which this code cannot load")
    return entry.from_run(run, device)


def identity_renderer(spec: str | Path, actor: str, device: str = "auto", runs_root: str | Path = "runs") -> Renderer:
    """The renderer of one identity: `spec` itself when it names a kind or is a run dir, else the identity's run
    in the folder `spec` of per-identity runs (`<spec>/<actor>`)."""
    if str(spec) in RENDERERS or (Path(spec) / "checkpoints").is_dir():
        return load_renderer(spec, device, runs_root)
    run = Path(spec) / actor
    if not run.is_dir():
        raise UserError(
            f"{spec}: no renderer run of {actor} ({run}); train one (python -m renderer.train actor={actor})"
        )
    return load_renderer(run, device, runs_root)


def default_renderer(runs_root: str | Path) -> str:
    """`warp_refine` when a refiner run exists under `runs_root`, else `warp`."""
    has_refiner = latest_checkpoint(RefineRenderer.default_run(runs_root) / "checkpoints") is not None
    return RefineRenderer.kind if has_refiner else WarpRenderer.kind
