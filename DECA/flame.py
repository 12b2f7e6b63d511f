"""FLAME head model (linear blend skinning) as DECA uses it, written from the model's definition.

Inputs per frame: shape (n_shape, default 100) and expression (n_exp, default 50) coefficients, pose (6) =
global rotation (axis-angle, 3) + jaw rotation (axis-angle, 3); neck and eyes stay at rest. Joints:
0 root/global, 1 neck, 2 jaw, 3 left eye, 4 right eye. Steps: shape/expression blend shapes on the template,
joints regressed from the shaped mesh, pose-corrective blend shapes from the rotations of joints 1..4, then
skinning with the model's weights. Landmarks (68, iBUG order) come from the barycentric embedding
(`full_lmk_faces_idx`, `full_lmk_bary_coords` of `landmark_embedding.npy`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.errors import FormatError

FLAME_KEYS = {  # key -> expected shape (None = any size on that axis)
    "v_template": (None, 3),
    "shapedirs": (None, 3, None),
    "posedirs": (None, 3, 36),
    "J_regressor": (5, None),
    "kintree_table": (2, 5),
    "weights": (None, 5),
    "f": (None, 3),
}


def check_flame_arrays(model: dict, path: str, n_shape: int = 100, n_exp: int = 50) -> None:
    """Keys, ranks and sizes of a loaded FLAME model; raises FormatError naming `path`."""
    for key, shape in FLAME_KEYS.items():
        if key not in model:
            raise FormatError(f"{path}: not a FLAME model, missing {key!r}")
        arr = np.asarray(model[key])
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape, strict=True)):
            raise FormatError(f"{path}: {key} has shape {arr.shape}, expected {shape}")
    n_verts = np.asarray(model["v_template"]).shape[0]
    for key in ("shapedirs", "posedirs", "weights"):
        if np.asarray(model[key]).shape[0] != n_verts:
            raise FormatError(f"{path}: {key} has {np.asarray(model[key]).shape[0]} vertices, template has {n_verts}")
    if np.asarray(model["shapedirs"]).shape[2] < 300 + n_exp or n_shape > 300:
        raise FormatError(
            f"{path}: shapedirs has {np.asarray(model['shapedirs']).shape[2]} components; FLAME 2020 "
            f"has 300 identity + 100 expression"
        )


def rodrigues(rvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle (N, 3) -> rotation matrices (N, 3, 3)."""
    angle = torch.linalg.vector_norm(rvec + 1e-8, dim=1, keepdim=True)
    axis = rvec / angle
    sin, cos = torch.sin(angle)[:, :, None], torch.cos(angle)[:, :, None]
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    zeros = torch.zeros_like(x)
    k = torch.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], 1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=rvec.dtype, device=rvec.device)[None]
    return eye + sin * k + (1 - cos) * (k @ k)


class FLAME(nn.Module):
    def __init__(self, model: dict, landmarks: dict | None = None, n_shape: int = 100, n_exp: int = 50):
        super().__init__()
        check_flame_arrays(model, "FLAME model", n_shape, n_exp)
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.n_shape, self.n_exp = n_shape, n_exp
        shapedirs = np.asarray(model["shapedirs"], np.float32)
        self.register_buffer("v_template", f32(model["v_template"]))
        self.register_buffer(
            "shapedirs", f32(np.concatenate([shapedirs[:, :, :n_shape], shapedirs[:, :, 300 : 300 + n_exp]], 2))
        )
        self.register_buffer("posedirs", f32(np.asarray(model["posedirs"]).reshape(-1, 36).T))  # (36, V*3)
        self.register_buffer("J_regressor", f32(model["J_regressor"]))
        self.register_buffer("lbs_weights", f32(model["weights"]))
        parents = np.asarray(model["kintree_table"])[0].astype(np.int64)
        parents[0] = -1
        self.parents = parents.tolist()
        self.register_buffer("faces", torch.as_tensor(np.asarray(model["f"], np.int64)))
        if landmarks is not None:
            idx = np.asarray(landmarks["full_lmk_faces_idx"]).reshape(-1).astype(np.int64)
            bary = np.asarray(landmarks["full_lmk_bary_coords"], np.float32).reshape(-1, 3)
            if len(idx) != 68 or bary.shape != (68, 3):
                raise FormatError(f"landmark embedding: expected 68 full landmarks, found {len(idx)}")
            self.register_buffer("lmk_faces", torch.as_tensor(idx))
            self.register_buffer("lmk_bary", torch.as_tensor(bary))
        else:
            self.lmk_faces = None

    @property
    def n_verts(self) -> int:
        return self.v_template.shape[0]

    def forward(self, shape: torch.Tensor, exp: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """shape (B, n_shape), exp (B, n_exp), pose (B, 6) -> vertices (B, V, 3) in FLAME's metric space."""
        b = shape.shape[0]
        betas = torch.cat([shape, exp], 1)
        v_shaped = self.v_template[None] + torch.einsum("bl,vkl->bvk", betas, self.shapedirs)
        joints = torch.einsum("bvk,jv->bjk", v_shaped, self.J_regressor)
        zeros = torch.zeros(b, 3, dtype=pose.dtype, device=pose.device)
        full = torch.cat([pose[:, :3], zeros, pose[:, 3:6], zeros, zeros], 1)  # root, neck, jaw, eyes
        rots = rodrigues(full.view(-1, 3)).view(b, 5, 3, 3)
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        pose_feature = (rots[:, 1:] - eye).reshape(b, 36)
        v_posed = v_shaped + (pose_feature @ self.posedirs).view(b, -1, 3)
        transforms = self._rigid_transforms(rots, joints)  # (B, 5, 4, 4)
        t = torch.einsum("vj,bjkl->bvkl", self.lbs_weights, transforms)
        homo = torch.cat([v_posed, torch.ones_like(v_posed[..., :1])], -1)
        return torch.einsum("bvkl,bvl->bvk", t, homo)[..., :3]

    def _rigid_transforms(self, rots: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """World transforms of the joints, relative to their rest positions (for skinning)."""
        b = rots.shape[0]
        rel = joints.clone()
        for i, p in enumerate(self.parents):
            if p >= 0:
                rel[:, i] = joints[:, i] - joints[:, p]
        local = torch.zeros(b, 5, 4, 4, dtype=rots.dtype, device=rots.device)
        local[:, :, :3, :3] = rots
        local[:, :, :3, 3] = rel
        local[:, :, 3, 3] = 1
        chain = [local[:, 0]]
        for i in range(1, 5):
            chain.append(chain[self.parents[i]] @ local[:, i])
        world = torch.stack(chain, 1)
        rest = torch.einsum("bjkl,bjl->bjk", world[:, :, :3, :3], joints)
        world = world.clone()
        world[:, :, :3, 3] = world[:, :, :3, 3] - rest
        return world

    def landmarks(self, verts: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) -> (B, 68, 3) by the barycentric embedding."""
        if self.lmk_faces is None:
            raise FormatError("FLAME was built without a landmark embedding")
        tri = verts[:, self.faces[self.lmk_faces]]  # (B, 68, 3, 3)
        return torch.einsum("blkc,lk->blc", tri, self.lmk_bary)
