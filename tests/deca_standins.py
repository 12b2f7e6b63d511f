"""Format-faithful stand-ins for the licensed DECA/FLAME/FSGAN files, written by tests into a temp dir.

Same keys, shapes, dtypes and container formats as the real files (FLAME: a protocol-2 pickle with a
chumpy `Ch` for `shapedirs` and a scipy CSC `J_regressor`; DECA: a torch checkpoint with E_flame, E_detail,
D_detail; the landmark embedding: an object .npy with torch tensors; FSGAN: {'state_dict', 'arch'}), with
made-up values: a face-like half-ellipsoid as the template, a jaw region skinned to the jaw joint, and small
random network weights. Nothing here is the real model.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

from common.geometry import ellipsoid_grid

N_VERTS, N_FACES = 5023, 9976


def _fake_class(module: str, name: str):
    """A class that pickles as `module.name` (registered in sys.modules only while dumping)."""
    cls = type(name, (), {})
    cls.__module__ = module
    return cls


def flame_template() -> tuple[np.ndarray, np.ndarray]:
    """(5023, 3) vertices (x right, y up, z towards the camera, metres) and (9976, 3) faces."""
    grid_v, grid_f = ellipsoid_grid(71, 70)  # 4970 vertices, 9660 faces
    v = grid_v.astype(np.float64) * 0.09
    v[:, 1] *= -1  # y up
    v[:, 2] *= -1  # bulging towards +z
    extra = N_VERTS - len(v)  # hidden vertices behind the face (real FLAME has the back of the head)
    rng = np.random.default_rng(0)
    back = np.stack([rng.uniform(-0.05, 0.05, extra), rng.uniform(-0.05, 0.05, extra), np.full(extra, -0.02)], 1)
    verts = np.concatenate([v, back])
    n_extra_f = N_FACES - len(grid_f)
    extra_f = len(v) + np.stack(
        [np.arange(n_extra_f) % extra, (np.arange(n_extra_f) + 1) % extra, (np.arange(n_extra_f) + 2) % extra], 1
    )
    # grid winding flipped with the z flip so that normals still face the camera
    faces = np.concatenate([grid_f[:, [0, 2, 1]], extra_f]).astype(np.int64)
    return verts, faces


def write_flame_pickle(path: Path, seed: int = 0) -> dict:
    verts, faces = flame_template()
    rng = np.random.default_rng(seed)
    jaw = verts[:, 1] < -0.035  # lower face: skinned to the jaw
    weights = np.zeros((N_VERTS, 5))
    weights[jaw, 2] = 1.0
    weights[~jaw, 1] = 1.0  # neck
    shapedirs = rng.normal(0, 1e-3, (N_VERTS, 3, 400))
    posedirs = np.zeros((N_VERTS, 3, 36))
    posedirs[jaw] = rng.normal(0, 1e-4, (int(jaw.sum()), 3, 36))  # pose correctives local to the jaw
    joints = np.array([[0, 0, 0], [0, -0.06, -0.02], [0, -0.03, -0.01], [0.03, 0.03, 0.02], [-0.03, 0.03, 0.02]])
    # J_regressor: each joint = mean of its nearest 10 template vertices, stored as a CSC matrix
    jreg = np.zeros((5, N_VERTS))
    for j, p in enumerate(joints):
        near = np.argsort(np.linalg.norm(verts - p, axis=1))[:10]
        jreg[j, near] = 0.1
    csc = _fake_class("scipy.sparse.csc", "csc_matrix")()
    cols = [np.nonzero(jreg[:, c])[0] for c in range(N_VERTS)]
    csc.__dict__ = {
        "_shape": (5, N_VERTS),
        "maxprint": 50,
        "indices": np.concatenate(cols).astype(np.int32),
        "indptr": np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32),
        "data": np.concatenate([jreg[c, i] for i, c in enumerate(cols)]),
    }
    ch = _fake_class("chumpy.ch", "Ch")()
    ch.__dict__ = {
        "_dirty_vars": set(),
        "_itr": None,
        "_make_dense": False,
        "_make_sparse": False,
        "_depends_on_deps": {},
        "x": shapedirs,
    }
    model = {
        "f": faces.astype(np.uint32),
        "J_regressor": csc,
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "J": joints,
        "bs_style": "lbs",
        "weights": weights,
        "posedirs": posedirs,
        "v_template": verts,
        "shapedirs": ch,
        "bs_type": "lrotmin",
    }
    mods = {"chumpy": types.ModuleType("chumpy")}  # parent package of the fake chumpy.ch
    for obj in (csc, ch):
        mod = types.ModuleType(type(obj).__module__)
        setattr(mod, type(obj).__name__, type(obj))
        mods[mod.__name__] = mod
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        path.write_bytes(pickle.dumps(model, protocol=2))
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return {"verts": verts, "faces": faces, "jaw": jaw, "shapedirs": shapedirs, "J_regressor": jreg}


def landmark_targets() -> np.ndarray:
    """A 68-point iBUG-like layout on the template's front (x, y in metres)."""
    t = np.linspace(0, 1, 17)
    contour = np.stack([-0.07 + 0.14 * t, -0.02 - 0.06 * np.sin(np.pi * t)], 1)
    brows = np.stack([np.r_[np.linspace(-0.055, -0.015, 5), np.linspace(0.015, 0.055, 5)], np.full(10, 0.045)], 1)
    nose = np.stack(
        [np.r_[np.zeros(4), np.linspace(-0.012, 0.012, 5)], np.r_[np.linspace(0.03, 0.0, 4), np.full(5, -0.008)]], 1
    )
    a = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    eye = lambda cx: np.stack([cx + 0.012 * np.cos(a + np.pi), 0.025 + 0.005 * np.sin(a + np.pi)], 1)  # noqa: E731
    b = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    outer = np.stack([0.025 * np.cos(b + np.pi), -0.04 + 0.012 * np.sin(b + np.pi)], 1)
    c = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    inner = np.stack([0.015 * np.cos(c + np.pi), -0.04 + 0.004 * np.sin(c + np.pi)], 1)
    return np.concatenate([contour, brows, nose, eye(-0.03), eye(0.03), outer, inner])


def write_landmark_embedding(path: Path) -> dict:
    verts, faces = flame_template()
    centres = verts[faces[:9660]].mean(1)
    idx = np.array([np.argmin(np.linalg.norm(centres[:, :2] - p, axis=1)) for p in landmark_targets()])
    bary = np.full((68, 3), 1 / 3, np.float32)
    emb = {
        "static_lmk_faces_idx": idx[17:].astype(np.int64),
        "static_lmk_bary_coords": bary[17:].astype(np.float64),
        "dynamic_lmk_faces_idx": torch.zeros(79, 17, dtype=torch.long),
        "dynamic_lmk_bary_coords": torch.full((79, 17, 3), 1 / 3),
        "full_lmk_faces_idx": idx[None].astype(np.int64),
        "full_lmk_bary_coords": bary[None],
    }
    np.save(path, np.array(emb, dtype=object), allow_pickle=True)
    return emb


def random_state(template: dict, g: torch.Generator, gain: float) -> dict:
    """Random values in a state dict's keys and shapes; BatchNorm at identity statistics, biases zero."""
    state = {}
    for k, v in template.items():
        if k.endswith("num_batches_tracked"):
            state[k] = v
        elif k.endswith("running_var"):
            state[k] = torch.ones_like(v)
        elif k.endswith("running_mean") or k.endswith("bias"):
            state[k] = torch.zeros_like(v)
        elif v.ndim == 1:  # BN weight
            state[k] = torch.ones_like(v)
        else:
            state[k] = torch.randn(v.shape, generator=g) * (gain / v[0].numel() ** 0.5)
    return state


def write_deca_model(path: Path, seed: int = 0) -> dict:
    """deca_model.tar with DECA's exact keys and shapes; small random weights, BN at identity statistics."""
    from DECA.model import NETS

    g = torch.Generator().manual_seed(seed)
    ckpt = {name: random_state(build().state_dict(), g, 0.5) for name, build in NETS.items()}
    ckpt["opt"] = {}  # the trainer also saved these; loaders must ignore them
    ckpt["global_step"] = 0
    torch.save(ckpt, path)
    return ckpt


def write_deca_data(directory: Path) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    info = write_flame_pickle(directory / "generic_model.pkl")
    write_landmark_embedding(directory / "landmark_embedding.npy")
    write_deca_model(directory / "deca_model.tar")
    return info


def write_fsgan_weights(path: Path, seed: int = 0) -> dict:
    """FSGAN's segmentation checkpoint format: {'state_dict': UNet keys and shapes, 'arch': …}, random values."""
    from preprocessing.fsgan_seg import UNet

    state = random_state(UNet().state_dict(), torch.Generator().manual_seed(seed), 1.0)
    ckpt = {
        "state_dict": state,
        "arch": "fsgan.models.simple_unet.UNet(n_classes=3,feature_scale=1)",
        "epoch": 0,
        "resolution": 256,
    }
    torch.save(ckpt, path)
    return ckpt


def write_fan_weights(torch_home: Path, seed: int = 0) -> Path:
    """FAN-4 state dict (face-alignment's FAN class, random values) where face-alignment looks for it."""
    from face_alignment.models import FAN

    torch.manual_seed(seed)
    path = torch_home / "hub" / "checkpoints" / "2DFAN4-11f355bf06.pth.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(FAN(4).state_dict(), path)
    return path
