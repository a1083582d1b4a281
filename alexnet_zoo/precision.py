"""Numeric precision of inference, one vocabulary for evaluation and feature extraction.

``fp32`` is the reference. ``bf16`` autocast runs the convolutions and fc layers on bfloat16
(1.8x fp32 on this project's AVX512-BF16 CPU, docs/benchmarks.md) and keeps fc7 vectors within
a cosine of 0.999 of fp32's; ``fp16`` is the CUDA choice. ``auto`` means fp16 on CUDA and fp32
elsewhere, so CPU results stay bit-for-bit the reference unless a user asks for bf16.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["PRECISIONS", "autocast", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA, fp32 elsewhere; other names are checked and returned."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (none for fp32)."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
