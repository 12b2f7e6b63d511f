"""DECA: coarse encoder (+ detail encoder/decoder) and FLAME, loaded from the user's licensed files.

    deca = DECA.load()                      # DECA/data/ (or $SPFEM_DECA_DATA); clear message if files are missing
    codes = deca.encode(images)             # (B, 3, 224, 224) RGB in [0, 1] -> shape, tex, exp, pose, cam, light
    verts = deca.flame(shape, exp, pose)    # (B, 5023, 3)
    ndc = project(verts, cam)               # orthographic: s * (X_xy + t), y up

`deca_model.tar` must hold `E_flame`, `E_detail` and `D_detail` state dicts whose keys and shapes match
ours exactly (strict loading; DECA's own loader silently skipped mismatches).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.checkpoint import state_dict_mismatch
from common.errors import FormatError, UserError
from DECA.assets import REQUIRED, data_dir, load_flame_pickle, load_landmark_embedding, require
from DECA.encoders import N_DETAIL, DetailGenerator, ResnetEncoder, split_code
from DECA.flame import FLAME

NETS = {
    "E_flame": lambda: ResnetEncoder(236),
    "E_detail": lambda: ResnetEncoder(N_DETAIL),
    "D_detail": lambda: DetailGenerator(),
}


def load_networks(path: str | Path) -> dict[str, nn.Module]:
    """The three networks of deca_model.tar, strictly (every key present with its shape, nothing extra)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise FormatError(f"{path}: not a readable PyTorch checkpoint ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(ckpt, dict):
        raise FormatError(f"{path}: expected a dict with E_flame, E_detail, D_detail")
    absent = [name for name in NETS if name not in ckpt]
    if absent:
        raise FormatError(f"{path}: missing {', '.join(repr(n) for n in absent)} (found {', '.join(map(str, ckpt))})")
    nets = {}
    for name, build in NETS.items():
        net = build()
        problem = state_dict_mismatch(net.state_dict(), ckpt[name])
        if problem:
            raise FormatError(f"{path}: {name} does not match DECA's architecture: {problem}")
        net.load_state_dict(ckpt[name], strict=True)
        nets[name] = net.eval()
    return nets


class DECA(nn.Module):
    def __init__(self, nets: dict[str, nn.Module], flame: FLAME):
        super().__init__()
        self.E_flame, self.E_detail, self.D_detail = nets["E_flame"], nets["E_detail"], nets["D_detail"]
        self.flame = flame
        self.eval()

    @classmethod
    def load(cls, directory: str | Path | None = None, device: str | torch.device = "cpu") -> DECA:
        d = data_dir(directory)
        require(d, REQUIRED)
        flame = FLAME(load_flame_pickle(d / "generic_model.pkl"), load_landmark_embedding(d / "landmark_embedding.npy"))
        return cls(load_networks(d / "deca_model.tar"), flame).to(device)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, detail: bool = False) -> dict[str, torch.Tensor]:
        """(B, 3, 224, 224) RGB in [0, 1] -> DECA's code (shape, tex, exp, pose, cam, light[, detail])."""
        if images.shape[-2:] != (224, 224):
            raise UserError(f"DECA encodes 224x224 images, got {tuple(images.shape[-2:])}")
        codes = split_code(self.E_flame(images))
        if detail:
            codes["detail"] = self.E_detail(images)
        return codes

    @torch.no_grad()
    def displacement(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Detail displacement map (B, 1, 256, 256) from jaw pose, expression and detail code."""
        return self.D_detail(torch.cat([codes["pose"][:, 3:], codes["exp"], codes["detail"]], 1))


def project(verts: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """DECA's orthographic camera: (s * (x + tx), s * (y + ty), s * z), y pointing up (image y = -y)."""
    xy = cam[:, None, :1] * (verts[..., :2] + cam[:, None, 1:3])
    return torch.cat([xy, cam[:, None, :1] * verts[..., 2:]], -1)
