"""Where a training process runs: its device (``--device``, ``auto``, a torchrun rank's own GPU,
the two ``--towers``), the autocast dtype those devices have, and the backend flags set for them.

Which devices exist, which one ``auto`` means and which copies may be asynchronous is
:mod:`alexnet_zoo.devices`' rule, shared with every command; this module adds what is training's
own (one GPU per torchrun process, MPS in one process only, ``--amp``) and says it in the
recipe's words, naming the option, before any data is loaded.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alexnet_zoo import devices
from alexnet_zoo.devices import best_device, device_issue, non_blocking

__all__ = ["AMP_DTYPES", "Placement", "available_devices", "check_device", "place"]

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def available_devices() -> list[str]:
    """The devices this process can train on, for error messages (each GPU by its index)."""
    return [name for name in devices.available_devices() if name != "cuda"]


def check_device(name: str) -> torch.device | None:
    """The device ``name`` stands for (None for ``auto``), or ValueError naming it and what this
    machine has: ``--device cuda`` without a GPU used to be a torch traceback at the first copy."""
    if name == "auto":
        return None
    have = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name!r} is not a device name (cpu, cuda, cuda:N, mps); available here: {have}") from None
    issue = device_issue(device)
    if issue == "no-cuda":
        why = ("this torch build has no CUDA support" if torch.version.cuda is None else
               f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU or driver")
        raise ValueError(f"{name}: no CUDA GPU is available ({why}); available here: {have}")
    if issue == "cuda-index":
        raise ValueError(f"{name}: there are {torch.cuda.device_count()} CUDA GPUs; available here: {have}")
    if issue == "no-mps":
        built = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_built()
        why = "no Metal device (macOS 12.3+ on an Apple GPU)" if built else "this torch build has no MPS support"
        raise ValueError(f"{name}: Apple's MPS is not available ({why}); available here: {have}")
    if issue == "mps-index":
        raise ValueError(f"{name}: there is one MPS device, 'mps'; available here: {have}")
    if issue == "unsupported":
        raise ValueError(f"{name}: training runs on cpu, cuda or mps; available here: {have}")
    return device


def _device(name: str, local_rank: int, world: int = 1) -> torch.device:
    """The training device: ``name`` checked, ``auto`` resolved, ``cuda`` made this process's GPU."""
    device = check_device(name)
    if device is None:  # auto
        device = best_device(processes=world)
    if device.type == "cuda" and device.index is None:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {local_rank} of this node has no GPU of its own: {torch.cuda.device_count()} "
                             f"CUDA GPUs for {world} processes")
        device = torch.device("cuda", local_rank)
    if device.type == "mps":
        device = torch.device("mps")
        if world > 1:
            raise ValueError("--device mps trains in one process: torch.distributed has no backend for MPS tensors")
    return device


def _amp_dtype(name: str, targets: Sequence[torch.device]) -> torch.dtype | None:
    """--amp's dtype, refused up front where autocast would fail on these devices (bf16 on a GPU
    without it); bf16 on a CPU without native bf16 runs on generic kernels (alexnet_zoo.ops.onednn)."""
    dtype = AMP_DTYPES[name]
    for device in targets:
        if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"--amp bf16: {device} ({torch.cuda.get_device_name(device)}) has no bf16; "
                             f"use --amp fp16")
        if dtype == torch.bfloat16 and device.type == "mps" and not torch.backends.mps.is_macos_or_newer(14, 0):
            raise ValueError("--amp bf16 on mps needs macOS 14 or newer; use --amp fp16")
    return dtype


@dataclass(frozen=True)
class Placement:
    """Where this process trains: ``device`` takes the batches (with towers, the first tower's),
    ``towers`` the two devices of the paper's model parallelism (or None), ``amp_dtype``
    autocast's dtype (None: fp32), ``pin_memory`` whether loaders pin for asynchronous copies."""

    device: torch.device
    towers: list[str] | None
    amp_dtype: torch.dtype | None
    pin_memory: bool


def place(args: argparse.Namespace, local_rank: int, world: int) -> Placement:
    """Resolve --device / --towers / --amp for this process and set the backend flags they ask
    for (cuDNN autotuning unless --deterministic, TF32 matmuls, deterministic kernels)."""
    device = _device(args.device, local_rank, world)
    towers = [d.strip() for d in args.towers.split(",")] if args.towers else None
    if towers:  # the first tower's device takes the batches (pinned memory when it is a GPU)
        device = torch.device(towers[0])
    amp_dtype = _amp_dtype(args.amp, [torch.device(d) for d in towers] if towers else [device])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.deterministic
        if args.tf32:  # matmuls in TF32 (convolutions already are, by PyTorch's default)
            torch.set_float32_matmul_precision("high")
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return Placement(device, towers, amp_dtype, non_blocking(device))
