"""Check the licensed DECA/FLAME files you placed: `python -m DECA.check_assets [--data DIR] [--write-sums]`.

For each file: present, loadable by our (restricted) loaders, the keys and shapes our code needs, and its
SHA-256. We do not ship reference checksums of licensed files; `--write-sums` records the current ones in
`<data>/SHA256SUMS` (sha256sum format) and later runs verify against it, so a truncated copy or a swapped
file is caught. Exit status 0 when every required file is usable, 1 otherwise.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import parse_cli
from common.config import arg
from common.errors import FormatError, UserError, cli_entry
from DECA.assets import ASSETS, data_dir, load_flame_pickle, load_landmark_embedding, missing_message
from DECA.flame import check_flame_arrays
from DECA.model import load_networks

SUMS_FILE = "SHA256SUMS"


@dataclass
class CheckAssetsConfig:
    data: str = arg("", "folder with the files (default DECA/data or $SPFEM_DECA_DATA)")
    write_sums: bool = arg(False, f"record the current checksums in <data>/{SUMS_FILE}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_flame(path: Path) -> str:
    model = load_flame_pickle(path)
    check_flame_arrays(model, str(path))
    return (
        f"{np.asarray(model['v_template']).shape[0]} vertices, {np.asarray(model['f']).shape[0]} faces, "
        f"{np.asarray(model['shapedirs']).shape[2]} blend shapes"
    )


def _check_embedding(path: Path) -> str:
    emb = load_landmark_embedding(path)
    for key, n in (("full_lmk_faces_idx", 68), ("full_lmk_bary_coords", 68 * 3)):
        if key not in emb or np.asarray(emb[key]).size != n:
            raise FormatError(f"{path}: {key} missing or of the wrong size")
    return "68 landmarks"


def _check_deca(path: Path) -> str:
    nets = load_networks(path)
    n = sum(p.numel() for net in nets.values() for p in net.state_dict().values())
    return f"E_flame, E_detail, D_detail load strictly ({n / 1e6:.1f} M values)"


def _check_albedo(path: Path) -> str:
    with np.load(path, allow_pickle=False) as z:
        if "MU" not in z.files or "PC" not in z.files:
            raise FormatError(f"{path}: expected arrays MU and PC, found {', '.join(z.files)}")
        mu, pc = z["MU"], z["PC"]
    if mu.reshape(-1).shape[0] != pc.shape[0]:
        raise FormatError(f"{path}: MU has {mu.size} values but PC has {pc.shape[0]} rows")
    return f"albedo basis {pc.shape}"


CHECKS = {
    "generic_model.pkl": _check_flame,
    "landmark_embedding.npy": _check_embedding,
    "deca_model.tar": _check_deca,
    "FLAME_albedo_from_BFM.npz": _check_albedo,
}


def check(directory: Path, write_sums: bool = False) -> bool:
    """Print one line per file; True when every required file is present and valid."""
    sums_path = directory / SUMS_FILE
    recorded = {}
    if sums_path.is_file():
        for line in sums_path.read_text().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                recorded[name.strip().lstrip("*")] = digest
    ok, digests = True, {}
    for name, asset in ASSETS.items():
        path = directory / name
        if not path.is_file():
            status = "MISSING" if asset.required else "absent (optional)"
            ok &= not asset.required
            print(f"{status:<10} {name}")
            continue
        try:
            detail = CHECKS[name](path)
        except (FormatError, UserError) as exc:
            ok &= not asset.required
            print(f"{'INVALID':<10} {name}: {exc}")
            continue
        digest = digests[name] = sha256(path)
        if name in recorded and recorded[name] != digest:
            ok = False
            print(f"{'CHANGED':<10} {name}: sha256 {digest} differs from {sums_path}")
            continue
        note = "checksum matches" if name in recorded else "sha256 " + digest
        print(f"{'ok':<10} {name}: {detail}; {note}")
    if write_sums and digests:
        sums_path.write_text("".join(f"{d}  {n}\n" for n, d in digests.items()))
        print(f"checksums written to {sums_path}")
    return ok


@cli_entry
def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(CheckAssetsConfig, argv, prog="python -m DECA.check_assets", doc=__doc__)
    directory = data_dir(cfg.data)
    print(f"DECA/FLAME files in {directory}:")
    ok = check(directory, cfg.write_sums)
    msg = missing_message(directory, [n for n, a in ASSETS.items() if a.required])
    if msg:
        print(msg, file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
