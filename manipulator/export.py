"""Bundle a trained manipulator as a self-contained model folder, or check a folder against a run:

  python -m manipulator.export runs/model/manipulator/scmcl --out models/spfem-toy
  python -m manipulator.export runs/model/manipulator/scmcl --out models/spfem-toy --check

The folder holds what editing needs and nothing a training run keeps: `manipulator.pt` (the generator, style
encoder and mapping network, the expression normaliser, the emotions, the face model's hash; no
discriminator, optimiser or RNG state), the face model's file (`face_model_<backend>.npz`: videos are
preprocessed with it), and `model.json`, the recipe: the training config, a digest of the training set
(every clip's name, split, identity, emotion and level, and the face model's config hash), the identities
it saw, the checkpoint's step and every file's SHA-256. Its `MODEL_CARD.md` is written by hand and kept.

`--check` rebuilds the recipe from the run and compares it with the folder's: the same config and the same
training set mean `make model` reproduced the committed model's recipe (the weights themselves differ from
one CPU to another in the last bits, so they are not compared); exit status 1 and the differences otherwise.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch

from common import __version__
from common.checkpoint import latest_checkpoint, load_checkpoint
from common.cli import parse_cli
from common.config import arg
from common.errors import UserError, cli_entry
from common.formats import CLIPS_FILE, read_clip_index
from common.fsutil import atomic_path, atomic_write_text
from facemodel import basis_filename, read_model_file
from manipulator.edit import MODEL_FILE, MODEL_INFO, REPO, resolve_data_dir

EDIT_NETS = ("generator", "style", "mapping")  # what editing runs (manipulator.edit.Editor)
# config keys that name places, not the recipe (they differ between a checkout and a user's machine)
PLACES = (("engine", "runs_root"), ("engine", "name"), ("engine", "device"), ("data_dir",), ("init_from",))
PLACES_SCMCL = ("metric_run", "index_dir")


@dataclass
class ExportConfig:
    run: str = arg(help="a manipulator run dir (its newest checkpoint is exported)")
    out: str = arg("models/spfem-toy", "the model folder")
    check: bool = arg(False, "compare the run's recipe with the folder's model.json instead of writing")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def recipe_config(config: dict) -> dict:
    """The training config without the keys that name places (paths, run names, device)."""
    out = json.loads(json.dumps(config))
    for keys in PLACES:
        node = out
        for k in keys[:-1]:
            node = node.get(k, {})
        node.pop(keys[-1], None)
    for k in PLACES_SCMCL:
        out.get("scmcl", {}).pop(k, None)
    return out


def source_settings(index: dict) -> list[dict]:
    """The generator settings of the toy MEAD sets a processed index was made from (their dataset.json: options
    and the emotion prototypes' digest), portraits by file name; [] for other sources."""
    roots: dict[Path, dict] = {}
    for clip in index["clips"]:
        video = Path(clip.get("video", ""))
        video = video if video.is_absolute() or video.exists() else REPO / video  # made from the repository root
        for parent in video.parents:
            if parent in roots or (parent / "dataset.json").is_file():
                if parent not in roots:
                    settings = json.loads((parent / "dataset.json").read_text()).get("settings", {})
                    roots[parent] = settings | {"portraits": [Path(p).name for p in settings.get("portraits", [])]}
                break
    return sorted(roots.values(), key=lambda s: json.dumps(s, sort_keys=True))


def data_digest(index: dict) -> tuple[str, list[str], int]:
    """(digest, identities, clip count) of a processed training set (its clips.json): its clips (name, split,
    identity, emotion, level), the settings of the toy MEAD sets it came from and its face model's config hash;
    independent of where it lies and of float details."""
    clips = sorted(
        (c["rel_dir"], c.get("split") or "", c.get("actor") or "", c.get("emotion") or "", int(c.get("level") or 0))
        for c in index["clips"]
    )
    model_hash = read_model_file(index["basis_file"])["config_hash"]
    payload = json.dumps(
        {
            "clips": clips,
            "sources": source_settings(index),
            "face_model": index.get("face_model", "mesh"),
            "hash": model_hash,
        },
        sort_keys=True,
    )
    actors = sorted({c[2] for c in clips if c[2]})
    return hashlib.sha256(payload.encode()).hexdigest(), actors, len(clips)


def run_recipe(run: Path) -> tuple[dict, dict, dict]:
    """(its checkpoint's contents, its training set's clips.json, the recipe) of a manipulator run."""
    path = latest_checkpoint(run / "checkpoints")
    if path is None:
        raise UserError(f"{run}: no manipulator checkpoint to export (train it first: make model)")
    ckpt = load_checkpoint(path)
    data_dir = resolve_data_dir(ckpt["config"]["data_dir"])
    if not (data_dir / CLIPS_FILE).is_file():
        raise UserError(f"{run}: its training set {data_dir} is not here (the recipe records its digest)")
    index = read_clip_index(data_dir)
    digest, actors, n_clips = data_digest(index)
    recipe = {
        "config": recipe_config(ckpt["config"]),
        "data_digest": digest,
        "identities": actors,
        "clips": n_clips,
    }
    return ckpt, index, recipe


def export(run: Path, out: Path) -> Path:
    """Write the model folder `out` from `run` (files replaced atomically, MODEL_CARD.md kept)."""
    ckpt, index, recipe = run_recipe(run)
    backend = index.get("face_model", "mesh")
    model = {
        "config": ckpt["config"],
        "extra": ckpt["extra"],
        "step": ckpt["step"],
        "code_version": ckpt.get("code_version", __version__),
        "nets": {k: ckpt["nets"][k] for k in EDIT_NETS},
    }
    with atomic_path(out / MODEL_FILE) as tmp:
        torch.save(model, tmp)
    face_file = basis_filename(backend)
    with atomic_path(out / face_file) as tmp:
        shutil.copyfile(index["basis_file"], tmp)
    info = {
        "format": 1,
        "exported": date.today().isoformat(),
        "run": str(run),
        "step": ckpt["step"],
        "face_model": backend,
        "face_model_file": face_file,
        "recipe": recipe,
        "files": {name: sha256(out / name) for name in (MODEL_FILE, face_file)},
    }
    atomic_write_text(out / MODEL_INFO, json.dumps(info, indent=2) + "\n")
    return out


def differences(recorded: dict, rebuilt: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ between two nested dicts, as 'a.b: recorded -> rebuilt'."""
    out = []
    for key in sorted(set(recorded) | set(rebuilt)):
        a, b = recorded.get(key), rebuilt.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def check(run: Path, out: Path) -> list[str]:
    """Differences between the folder's recorded recipe and the run's (empty: the same recipe)."""
    if not (out / MODEL_INFO).is_file():
        raise UserError(f"{out}: no {MODEL_INFO} (not a model folder: python -m manipulator.export <run> --out {out})")
    recorded = json.loads((out / MODEL_INFO).read_text())
    bad = [name for name, digest in recorded["files"].items() if sha256(out / name) != digest]
    rebuilt = run_recipe(run)[2]
    return [f"{name}: changed since export" for name in bad] + differences(recorded["recipe"], rebuilt)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(ExportConfig, argv, prog="python -m manipulator.export", doc=__doc__, positional=["run"])
    run, out = Path(cfg.run), Path(cfg.out)
    if cfg.check:
        diffs = check(run, out)
        if diffs:
            print(f"{run} does not reproduce the recipe of {out}:")
            print("\n".join(f"  {d}" for d in diffs))
            raise SystemExit(1)
        print(f"{run} reproduces the recipe of {out} (config and training set)")
        return
    export(run, out)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"model written to {out} ({size / 1e6:.1f} MB); describe it in {out / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
