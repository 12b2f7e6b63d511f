"""Distributed set-up under `torchrun` (or a single process), device selection and mixed precision.

`torchrun --nproc_per_node N -m <stage>.train ...` sets RANK / WORLD_SIZE / LOCAL_RANK; we then use NCCL
on GPU and gloo on CPU. Without those variables everything runs in one process, no process group.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None when not distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(spec: str, local_rank: int = 0) -> torch.device:
    """`auto` = CUDA if present else CPU; `cuda` = the local rank's GPU; `cuda:N` or `cpu` as given."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec} but CUDA is not available here; use device=auto or device=cpu")
        if spec == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    try:
        return torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device={spec!r} is not a valid torch device (auto, cpu, cuda, cuda:N)") from None


def init_distributed(device_spec: str = "auto") -> DistContext:
    """Join the torchrun process group if launched by torchrun; return this process's context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_spec, local_rank)
    if world_size == 1:
        return DistContext(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return DistContext(rank, world_size, local_rank, device, backend)


def shutdown_distributed() -> None:
    """Leave the process group once every rank has got here.

    Without the barrier a rank that finishes first (rank 1 while rank 0 still writes its checkpoint) tears
    down gloo's pairs while its peer is still connected, and the process can abort at exit ("terminate
    called without an active exception", SIGABRT) after a run that finished.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of `tensor` over ranks (a copy; the input is unchanged)."""
    out = tensor.detach().clone()
    if ctx.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= ctx.world_size
    return out


def gather_objects(obj: object, ctx: DistContext) -> list[object]:
    """Every rank's `obj`, in rank order, on every rank (small picklable objects only)."""
    if not ctx.distributed:
        return [obj]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def shard(items: list, ctx: DistContext) -> list:
    """This rank's share of a work list (round robin), for preprocessing and evaluation."""
    return items[ctx.rank :: ctx.world_size]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for `precision` in {auto, bf16, fp32}: `auto` = bf16 on a GPU that supports it."""
    if precision == "fp32":
        return None
    if precision == "auto":
        bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16_ok else None
    if precision == "bf16":
        return torch.bfloat16
    raise ConfigError(f"precision={precision!r}: use auto, bf16 or fp32")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast context for the forward pass; a no-op when dtype is None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
