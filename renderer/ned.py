"""NED's released renderer checkpoints in our renderer networks: fine-tune ours from NED's meta-renderer (as NED's
`--load_pretrain <dir> --which_epoch 15`), or render with one of NED's per-actor renderers.

  python -m renderer.train --config configs/renderer/base.yaml actor=W001 init_from=checkpoints_meta-renderer@15
  python -m renderer.ned checkpoints_tarantino --out runs/renderer/tarantino --data-dir data/processed/mine

NED (foivospar/NED): renderer/models/networks.py defines the nets; base_model.save_network writes
`<epoch>_net_<G|D|Dm|De>.pth` (torch.save(net.cpu().state_dict()); epoch = a number or `latest`) into the
checkpoints dir. Dm (mouth) is there unless trained with --no_mouth_D, De (eyes) only with --use_eyes_D. With
NED's default options (ngf 64, n_downsample_G 3, n_blocks 9, n_frames_G 3, ndf 64, n_layers_D 3, num_D 2,
getIntermFeat on) they are our size `ned` with n_frames_g=3, under other names:

| NED | ours |
|---|---|
| G model_down_seg.<i>, model_down_img.<i> | generator cond_encoder.<i>, prev_encoder.<i> |
| G model_res_img.<k>, model_up_img.<m>, model_final_img.<f> | generator decoder.<k>, decoder.<4+m>, decoder.<13+f> |
| ResnetBlock conv_block.<j> (and resnetblock_sequential.<j>) | ResBlock body.<j> |
| D, Dm, De scale<num_D-1-s>_layer<j>.<k> | disc_image, disc_mouth, disc_eyes scales.<s>.blocks.<j>.<k> |

- NED's ResnetBlock registers its Sequential twice, so each of its tensors is saved under both names: the two
  copies must be equal (a file with either alone is read too).
- NED's discriminator applies `scale<num_D-1-i>` to the i-th resolution (i = 0: full size): the order is reversed.
- NED's norm is InstanceNorm2d(affine=False, track_running_stats=True), so the files carry running_mean,
  running_var and num_batches_tracked for every norm. NED never puts the renderer in eval mode (training and
  test.py both normalise by the instance's own statistics), so they were never used: they are dropped, and our
  InstanceNorm2d (no tracking, in either mode) computes what NED's did.
- The inputs are the same: per frame NMFC, eye gaze, shape (NED strips each frame's mask channel), frames oldest
  first; the previous outputs oldest first; the discriminators see conditioning (9) + RGB (3); the output is
  composited with the current frame's mask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from common.checkpoint import imported_state, read_foreign_weights, save_imported_run, state_dict_mismatch
from common.cli import parse_cli
from common.config import arg
from common.engine import unwrap
from common.errors import FormatError, UserError, cli_entry
from common.formats import read_clip_index
from manipulator.data import dataset_basis_hash
from renderer.networks import SIZES, RendererSize, build_renderer

NED_SIZE = "ned"
NED_N_FRAMES = 3
NED_NETS = {"G": "generator", "D": "disc_image", "Dm": "disc_mouth", "De": "disc_eyes"}  # NED file tag -> ours
_FILE = re.compile(r"^(.+)_net_(G|D|Dm|De)\.pth$")
_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_BLOCK, _DUPLICATE = "conv_block", "resnetblock_sequential"


def ned_key(net: str, key: str, size: RendererSize = SIZES[NED_SIZE]) -> str:
    """Our key (or module path) in net `net` -> NED's name for it (the layout the files use)."""
    parts = key.split(".")
    if net != "generator":  # scales.<s>.blocks.<j>.<rest>
        return ".".join([f"scale{size.num_d - 1 - int(parts[1])}_layer{parts[3]}", *parts[4:]])
    parts = [_BLOCK if p == "body" else p for p in parts]
    if parts[0] in ("cond_encoder", "prev_encoder"):
        return ".".join(["model_down_seg" if parts[0] == "cond_encoder" else "model_down_img", *parts[1:]])
    k, n_up = int(parts[1]), 3 * size.n_down
    if k < size.n_res_dec:
        name, i = "model_res_img", k
    elif k < size.n_res_dec + n_up:
        name, i = "model_up_img", k - size.n_res_dec
    else:
        name, i = "model_final_img", k - size.n_res_dec - n_up
    return ".".join([name, str(i), *parts[2:]])


def reference_nets() -> dict[str, nn.Module]:
    """Our networks at NED's sizes, all four, without memory (shapes only)."""
    with torch.device("meta"):
        return build_renderer(NED_SIZE, NED_N_FRAMES, mouth_d=True, eyes_d=True)


def to_ours(net: str, state: dict[str, torch.Tensor], ref: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    """A NED-named state dict of net `net` (our name) -> (our state dict, '' or a summary of what does not
    match `ref`, in NED's names). Drops the norms' running statistics and the ResnetBlock duplicates (checked
    equal)."""
    expected = {ned_key(net, k): v for k, v in ref.state_dict().items()}
    ours = {ned_key(net, k): k for k in ref.state_dict()}
    norms = {ned_key(net, m) for m, mod in ref.named_modules() if isinstance(mod, nn.InstanceNorm2d)}
    found, differ = {}, []
    for k, v in state.items():
        key = ".".join(_BLOCK if p == _DUPLICATE else p for p in k.split("."))
        prefix, _, leaf = key.rpartition(".")
        if leaf in _NORM_BUFFERS and prefix in norms:
            continue
        if key != k and key in state:  # the second name of a ResnetBlock tensor
            if state[key].shape != v.shape or not torch.equal(state[key], v):
                differ.append(k)
            continue
        found[key] = v
    problem = state_dict_mismatch(expected, found)
    if differ:
        problem += f"{'; ' if problem else ''}{len(differ)} {_DUPLICATE} tensor(s) differ from their {_BLOCK} copy "
        problem += f"({', '.join(differ[:3])}{' …' if len(differ) > 3 else ''})"
    return {ours[k]: v for k, v in found.items() if k in ours}, problem


def _order(epoch: str) -> tuple:
    return (0, int(epoch), "") if epoch.isdigit() else (1, 0, epoch)


def ned_files(directory: str | Path) -> dict[str, dict[str, Path]]:
    """Epoch label -> {NED net tag (G, D, Dm, De): file} of a NED checkpoints dir, epochs in order (numbers,
    then labels such as `latest`)."""
    d = Path(directory)
    found: dict[str, dict[str, Path]] = {}
    for p in d.iterdir() if d.is_dir() else ():
        if (m := _FILE.match(p.name)) and p.is_file():
            found.setdefault(m.group(1), {})[m.group(2)] = p
    return {e: found[e] for e in sorted(found, key=_order)}


def is_ned_checkpoint_dir(path: str | Path) -> bool:
    """A dir holding at least one NED renderer generator, `<epoch>_net_G.pth`."""
    return any("G" in f for f in ned_files(path).values())


def ned_spec(spec: str) -> tuple[Path, str | None] | None:
    """`<dir>` or `<dir>@<epoch>` naming a NED checkpoints dir -> (dir, epoch or None); None for anything else."""
    if is_ned_checkpoint_dir(spec):
        return Path(spec), None
    head, at, epoch = str(spec).rpartition("@")
    return (Path(head), epoch) if head and epoch and is_ned_checkpoint_dir(head) else None


def ned_epoch(directory: str | Path, epoch: str | None = None) -> str:
    """`epoch` when the dir has its generator (else a one-line error listing the epochs present); by default the
    highest numbered epoch, or `latest` (or another label) when there is no numbered one."""
    epochs = [e for e, f in ned_files(directory).items() if "G" in f]
    if not epochs:
        raise UserError(f"{directory}: no NED renderer checkpoint there (no <epoch>_net_G.pth)")
    if epoch is None:
        numbered = [e for e in epochs if e.isdigit()]
        return numbered[-1] if numbered else epochs[-1]
    if str(epoch) not in epochs:
        raise UserError(
            f"{directory}: no epoch {epoch} of NED's renderer (no {epoch}_net_G.pth); epochs present: "
            f"{', '.join(epochs)}"
        )
    return str(epoch)


def read_ned_renderer(directory: str | Path, epoch: str | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Our state dicts (our net name -> state) from NED's files of one epoch (default: see `ned_epoch`), each
    checked key by key and shape by shape against our `ned` networks: a file that does not match is one
    FormatError naming it and summarising the differences. The generator is required; the discriminators
    present are converted too."""
    epoch = ned_epoch(directory, epoch)
    files = ned_files(directory)[epoch]
    ref = reference_nets()
    states = {}
    for tag, name in NED_NETS.items():
        if tag not in files:
            continue
        what = f"NED's renderer {name} ({tag})"
        state, problem = to_ours(name, read_foreign_weights(files[tag], what), ref[name])
        if problem:
            raise FormatError(f"{files[tag]}: not {what} at NED's default sizes: {problem}")
        states[name] = state
    return states


def load_ned(nets: dict[str, nn.Module], directory: str | Path, epoch: str | None, log) -> list[str]:
    """Initialise (possibly DDP-wrapped) `ned`-size nets from NED's files; returns the names loaded. Logs which
    nets start from NED's weights and which from scratch."""
    epoch = ned_epoch(directory, epoch)
    states = read_ned_renderer(directory, epoch)
    loaded = [name for name in nets if name in states]
    for name in loaded:
        unwrap(nets[name]).load_state_dict(states[name])
    fresh = [name for name in nets if name not in states]
    unused = [name for name in states if name not in nets]
    log.info(
        "initialised %s from NED's renderer %s, epoch %s%s%s",
        ", ".join(loaded),
        directory,
        epoch,
        f"; from scratch (not in NED's files): {', '.join(fresh)}" if fresh else "",
        f"; not used by this run: {', '.join(unused)}" if unused else "",
    )
    return loaded


@dataclass
class ImportConfig:
    ned_dir: str = arg(help="NED's renderer checkpoints dir (<epoch>_net_G.pth …), e.g. checkpoints_tarantino")
    out: str = arg(help="the run dir to write, runs/renderer/<name> (then: renderer.infer <clip> --run <out>)")
    epoch: str = arg("", "NED's epoch label (15, latest, …); default: the highest numbered epoch present")
    actor: str = arg("", "the identity it renders (default: the name of --out)")
    data_dir: str = arg("data/processed/toy_mead", "the processed dataset (clips.json) whose face model conditions it")
    image_size: int = arg(256, "the image size it renders at (NED's loadSize: 256)")


def import_ned(cfg: ImportConfig) -> tuple[Path, str]:
    """Write NED's renderer as one of our renderer runs (one checkpoint, step 0, no optimizer state); returns the
    checkpoint and the dataset's face model."""
    if not is_ned_checkpoint_dir(cfg.ned_dir):
        raise UserError(f"{cfg.ned_dir}: not NED's renderer checkpoints dir (no <epoch>_net_G.pth there)")
    epoch = ned_epoch(cfg.ned_dir, cfg.epoch or None)
    states = read_ned_renderer(cfg.ned_dir, epoch)
    face_model = read_clip_index(cfg.data_dir)["face_model"]
    out = Path(cfg.out)
    actor, source = cfg.actor or out.name, f"{Path(cfg.ned_dir).resolve()}@{epoch}"
    config = {
        "data_dir": str(cfg.data_dir),
        "actor": actor,
        "size": NED_SIZE,
        "image_size": cfg.image_size,
        "n_frames_g": NED_N_FRAMES,
        "mouth_d": "disc_mouth" in states,
        "eyes_d": "disc_eyes" in states,
        "init_from": source,
    }
    extra = {
        "actor": actor,
        "image_size": cfg.image_size,
        "n_frames_g": NED_N_FRAMES,
        "size": NED_SIZE,
        "basis_hash": dataset_basis_hash(cfg.data_dir),
        "imported_from": source,
    }
    return save_imported_run(out, imported_state(states, config, extra)), face_model


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(ImportConfig, argv, prog="python -m renderer.ned", doc=__doc__, positional=["ned_dir"])
    path, face_model = import_ned(cfg)
    print(f"NED's renderer written as a run: {path} (render with python -m renderer.infer <clip> --run {cfg.out})")
    if face_model != "deca":
        print(
            f"note: {cfg.data_dir} is fitted with face model {face_model}; NED's renderer was trained on the "
            "conditioning of DECA fits, so expect poor faces from another face model's"
        )


if __name__ == "__main__":
    main()
