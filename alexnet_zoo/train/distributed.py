"""The few torch.distributed calls the recipe makes, each a no-op in a single process: joining
the process group torchrun set up, and the collectives (sum, gather, barrier) that keep every
rank's counts, checkpoints and logs the same; and the one printer of messages (rank 0).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_reduce", "barrier", "gather", "init_distributed", "leave_distributed", "say"]


def init_distributed(backend: str, device: str = "auto") -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group when torchrun started several
    (auto: NCCL when the processes train on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            on_gpu = device.startswith("cuda") or device == "auto"
            backend = "nccl" if torch.cuda.is_available() and on_gpu else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return rank, world, local_rank


def leave_distributed() -> None:
    """Destroy the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(x: Tensor, op: str = "sum") -> Tensor:
    """``x`` summed (or averaged: ``op="mean"``) over the processes, in place."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        if op == "mean":
            x /= dist.get_world_size()
    return x


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj`` (all_gather_object under DDP; [obj] alone)."""
    if dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    """Wait for every process (nothing to wait for alone)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def say(rank: int, message: str) -> None:
    """Print ``message`` once for the run: on rank 0."""
    if rank == 0:
        print(message, flush=True)
