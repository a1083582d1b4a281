"""Numeric precision of inference, one vocabulary for evaluation and feature extraction.

``fp32`` is the reference. ``bf16`` autocast runs the convolutions and fc layers on bfloat16
and keeps fc7 vectors within a cosine of 0.999 of fp32's (tested); it is 1.8x fp32 on a CPU with
native bf16 (AVX512-BF16, AMX; docs/benchmarks.md) but about 10x *slower* on one without (AVX2), where
it still runs, correctly, with one warning. ``fp16`` is the CUDA choice. ``auto`` is the fastest
precision that meets that fidelity bound on this machine: fp16 on CUDA, bf16 on a CPU with native
bf16 (``capabilities.py``), fp32 elsewhere.
"""

from __future__ import annotations

import contextlib

import torch

from alexnet_zoo.capabilities import cpu_capabilities

__all__ = ["PRECISIONS", "autocast", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA, bf16 on a CPU with native bf16, else fp32; other names are checked
    and returned."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_capabilities().native_bf16 else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (none for fp32)."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
