"""NED's released manipulator checkpoints in our networks: edit with NED's manipulator, or fine-tune ours from it.

  python -m manipulator.ned <20_nets_finetuned.pth> --out runs/manipulator/ned_released --data-dir data/processed/mead
  python -m manipulator.train --config configs/manipulator/scmcl.yaml init_from=<20_nets_finetuned.pth> expr_norm=none

NED (foivospar/NED, 22721de): manipulator/models/networks.py defines the nets, manipulator/checkpoint/checkpoint.py
saves one file per epoch, `<epoch>_nets.pth` (`_finetuned` after the MEAD fine-tuning; the released checkpoint
is of that kind), a dict {generator, mapping_network, style_encoder, discriminator} of state dicts (saved from the
module inside DataParallel, so without `module.`; a `module.` prefix is accepted too). Our networks
(`manipulator.models`, size `ned`, absolute output) are NED's with other attribute names:

| NED | ours |
|---|---|
| generator seq1 / LSTM / seq2 | generator pre / lstm / post |
| style_encoder, discriminator seq1 / LSTM / seq2 | style, discriminator trunk.pre / trunk.lstm / trunk.post |
| mapping_network shared / unshared.<k> | mapping shared / heads.<k> |

NED feeds raw coefficients: 51 = [jaw opening pose[3], DECA exp(50)] (manipulator/data/test_dataset.py), no
normalisation, so a run made from NED's weights uses `expr_norm=none`, and its emotions are NED's default
`selected_emotions` order (common.emotions.NED_EMOTIONS, our default) unless the file has another number of heads
(then name them).
The discriminator is optional for editing (the released test code never loads it); a fine-tune without it starts
D from scratch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.checkpoint import imported_state, save_imported_run, state_dict_mismatch
from common.cli import parse_cli
from common.config import arg
from common.emotions import NED_EMOTIONS
from common.errors import FormatError, UserError, cli_entry
from common.formats import read_clip_index
from facemodel import read_model_file
from manipulator.expr_norm import Normaliser
from manipulator.models import build_manipulator

NED_NETS = {
    "generator": "generator",
    "mapping_network": "mapping",
    "style_encoder": "style",
    "discriminator": "discriminator",
}
NED_EXPR_DIM = 51
_PARTS = {"seq1.": "pre.", "LSTM.": "lstm.", "seq2.": "post."}


def our_key(net: str, key: str) -> str:
    """A NED state-dict key of net `net` (our name) -> our key."""
    if net == "mapping":
        return key.replace("unshared.", "heads.", 1) if key.startswith("unshared.") else key
    for ned, ours in _PARTS.items():
        if key.startswith(ned):
            key = ours + key[len(ned) :]
            break
    return f"trunk.{key}" if net in ("style", "discriminator") else key


def is_ned_manipulator(path: str | Path) -> bool:
    """A file (not one of our run dirs or step_*.pt checkpoints) named like NED's: `<epoch>_nets[_finetuned].pth`."""
    p = Path(path)
    return p.is_file() and re.fullmatch(r"\d+_nets(_finetuned)?\.pth", p.name) is not None


def n_heads(state: dict) -> int:
    """The number of emotions of a NED mapping network (its `unshared.<k>` heads)."""
    return len({k.split(".")[1] for k in state if k.startswith("unshared.")})


def read_ned_manipulator(path: str | Path, emotions: list[str] | None = None) -> tuple[dict[str, dict], list[str]]:
    """Our state dicts (net name -> state) from a NED checkpoint, checked key by key and shape by shape against
    our `ned` networks, and the emotions of its heads. One FormatError naming the file and summarising what
    does not match; a missing discriminator is left out (the others are required)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: not found (NED's manipulator checkpoint, e.g. manipulator_checkpoints/20_nets_finetuned.pth)"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for corrupt or foreign files
        raise FormatError(
            f"{path}: not a PyTorch file ({type(exc).__name__}: {exc}); expected NED's manipulator"
        ) from None
    required = [k for k in NED_NETS if k != "discriminator"]
    if not isinstance(raw, dict) or any(k not in raw for k in required):
        found = ", ".join(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise FormatError(f"{path}: not NED's manipulator checkpoint (needs {', '.join(required)}; found {found})")
    heads = n_heads({k.removeprefix("module."): v for k, v in raw["mapping_network"].items()})
    if emotions is None:
        if heads != len(NED_EMOTIONS):
            raise UserError(
                f"{path}: {heads} emotion heads; name them in order with emotions=[...] (NED's default "
                f"is the 7 of {', '.join(NED_EMOTIONS)})"
            )
        emotions = list(NED_EMOTIONS)
    if len(emotions) != heads:
        raise UserError(
            f"{path}: {heads} emotion heads, but {len(emotions)} emotions were named ({', '.join(emotions)})"
        )
    ours = build_manipulator(NED_EXPR_DIM, heads, "ned", residual=False)
    states, problems = {}, []
    for ned_name, name in NED_NETS.items():
        if ned_name not in raw:
            continue
        state = {our_key(name, k.removeprefix("module.")): v for k, v in raw[ned_name].items()}
        problem = state_dict_mismatch(ours[name].state_dict(), state)
        if problem:
            problems.append(f"{ned_name}: {problem}")
        states[name] = state
    if problems:
        raise FormatError(f"{path}: not NED's manipulator at NED's sizes: {'; '.join(problems)}")
    return states, emotions


def load_into(nets: dict[str, torch.nn.Module], states: dict[str, dict]) -> list[str]:
    """Load converted states into (possibly DDP-wrapped) nets; returns the names loaded."""
    for name, state in states.items():
        getattr(nets[name], "module", nets[name]).load_state_dict(state)
    return sorted(states)


@dataclass
class ImportConfig:
    checkpoint: str = arg(help="NED's manipulator checkpoint (<epoch>_nets_finetuned.pth)")
    out: str = arg(help="the run dir to write (then: manipulator.edit --run <out>)")
    data_dir: str = arg(help="a processed dataset (clips.json) of DECA-fitted clips the run will edit")
    emotions: list[str] = field(default_factory=list)  # the heads' emotions, when not NED's default 7


def ned_run_state(states: dict[str, dict], emotions: list[str], data_dir: str | Path, checkpoint: str | Path) -> dict:
    """A checkpoint of our manipulator format holding NED's weights (step 0, identity normalisation)."""
    basis_hash = read_model_file(read_clip_index(data_dir)["basis_file"])["config_hash"]
    config = {
        "data_dir": str(data_dir),
        "size": "ned",
        "residual_generator": False,
        "seq_len_frames": 10,
        "hop": 1,
        "emotions": emotions,
        "expr_norm": "none",
        "init_from": str(checkpoint),
    }
    extra = Normaliser.identity(NED_EXPR_DIM).as_extra() | {
        "emotions": emotions,
        "basis_hash": basis_hash,
        "imported_from": str(Path(checkpoint).resolve()),
    }
    return imported_state(states, config, extra)


def import_ned(cfg: ImportConfig) -> Path:
    """Write NED's weights as one of our manipulator runs (`manipulator.edit --run` and evaluation take it)."""
    states, emotions = read_ned_manipulator(cfg.checkpoint, cfg.emotions or None)
    face_model = read_clip_index(cfg.data_dir)["face_model"]
    if face_model != "deca":
        raise UserError(
            f"{cfg.data_dir}: fitted with face model {face_model}; NED's manipulator edits DECA "
            "coefficients (preprocess with face_model=deca)"
        )
    return save_imported_run(cfg.out, ned_run_state(states, emotions, cfg.data_dir, cfg.checkpoint))


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(ImportConfig, argv, prog="python -m manipulator.ned", doc=__doc__, positional=["checkpoint"])
    path = import_ned(cfg)
    print(f"NED's manipulator written as a run: {path} (edit with python -m manipulator.edit <clip> --run {cfg.out})")


if __name__ == "__main__":
    main()
