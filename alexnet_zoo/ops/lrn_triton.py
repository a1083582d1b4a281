"""Local response normalisation as Triton kernels, forward and backward: the GPU analogue of the
fused C kernel (kernels/lrn.c), for CUDA tensors in fp32, fp16 or bf16 (float64 too, for gradcheck).

    b_c = a_c * D_c ** -beta,   D_c = k + alpha * sum_{j in win(c)} a_j^2,   a = ReLU(x) with relu=True
    da_i = g_i * D_i ** -beta - 2 alpha beta a_i * sum_{c in win(i)} g_c b_c / D_c

(the window is symmetric, so the channels whose window holds i are win(i)). Sums and powers are in
fp32 whatever the storage dtype, as in ``lrn._lrn_torch``, so fp16's range cannot overflow.

It is *not* the default LRN on CUDA: it has been checked against the formula through Triton's
interpreter only (``TRITON_INTERPRET=1``, CPU tensors), never compiled on a GPU, so
``local_response_norm`` keeps the torch expression there and ``benchmarks/gpu_check.py`` times both
and checks they agree; that run decides whether it is wired in. CPU tensors are accepted only under
``TRITON_INTERPRET=1`` (slow, for tests): the CPU's own fast path is the C kernel.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable

import torch
from torch import Tensor

from alexnet_zoo.ops.geometry import LRNConvention

__all__ = ["triton_available", "triton_lrn"]

_BLOCK_C, _BLOCK_P = 32, 64  # a channels x positions tile a program works on
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def triton_available() -> bool:
    """Whether Triton imports here (it ships with torch's CUDA wheels; not with the CPU ones)."""
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    """Whether Triton's interpreter is asked for (``TRITON_INTERPRET=1``, read at each call)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_lrn(x: Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
               convention: LRNConvention = "paper", *, relu: bool = False) -> Tensor:
    """LRN (of ReLU(x) with ``relu``) across the channels of an (N, C, H, W) tensor, differentiable,
    in x's dtype and memory layout (contiguous or channels-last; other strides are made contiguous)."""
    if x.dim() != 4:
        raise ValueError(f"triton_lrn expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"LRN size must be a positive odd number (a window centred on each channel), got {size}")
    if convention not in ("paper", "caffe"):
        raise ValueError(f"LRN convention must be 'paper' or 'caffe', got {convention!r}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"triton_lrn computes fp32, fp16, bf16 or float64 tensors, got {x.dtype}")
    if not (x.is_cuda or (x.device.type == "cpu" and _interpreting())):
        raise ValueError(f"triton_lrn runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got a "
                         f"{x.device.type} tensor")
    if not triton_available():
        raise ModuleNotFoundError("triton_lrn needs Triton (shipped with torch's CUDA wheels): pip install triton")
    scaled_alpha = alpha / size if convention == "caffe" else alpha
    return _TritonLRN.apply(x, size, float(scaled_alpha), float(beta), float(k), bool(relu))


class _TritonLRN(torch.autograd.Function):
    """Forward and backward kernels; the input is saved, D is recomputed in the backward (as lrn.c
    keeps no scale buffer) rather than stored for the whole batch."""

    @staticmethod
    def forward(ctx, x: Tensor, size: int, alpha: float, beta: float, k: float, relu: bool) -> Tensor:
        x = _dense(x)
        ctx.save_for_backward(x)
        ctx.params = (size, alpha, beta, k, relu)
        y = torch.empty_like(x)  # empty_like keeps a dense tensor's layout
        forward, _, _ = _kernels(not x.is_cuda)
        _launch(forward, (x, y), size, alpha, beta, k, relu)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        size, alpha, beta, k, relu = ctx.params
        g = grad.contiguous(memory_format=_layout(x))
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        direct = torch.empty_like(x, dtype=acc)  # g_i D_i^-beta
        spread = torch.empty_like(x, dtype=acc)  # g_c b_c / D_c, summed over windows in the second pass
        _, terms, combine = _kernels(not x.is_cuda)
        _launch(terms, (x, g, direct, spread), size, alpha, beta, k, relu)
        dx = torch.empty_like(x)
        _launch(combine, (x, direct, spread, dx), size, alpha, beta, k, relu)
        return dx, None, None, None, None, None


def _layout(x: Tensor) -> torch.memory_format:
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _dense(x: Tensor) -> Tensor:
    """x itself when contiguous or channels-last (every position then sits one fixed stride from the
    next), else a contiguous copy."""
    return x if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last) else x.contiguous()


def _launch(kernel: Callable, tensors: tuple[Tensor, ...], size: int, alpha: float, beta: float, k: float,
            relu: bool) -> None:
    """Run ``kernel`` over (position blocks, channel blocks, images) of ``tensors``, the first being x:
    all have x's shape and layout."""
    import triton.language as tl

    x = tensors[0]
    n, channels, h, w = x.shape
    positions = h * w
    if x.numel() == 0:
        return
    if _layout(x) == torch.channels_last:
        strides = (positions * channels, 1, channels)  # image, channel, position
    else:
        strides = (positions * channels, positions, 1)
    grid = (-(-positions // _BLOCK_P), -(-channels // _BLOCK_C), n)
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    kernel[grid](*tensors, channels, positions, *strides, alpha, beta, k, SIZE=size, RELU=relu, ACC=acc,
                 BLOCK_C=_BLOCK_C, BLOCK_P=_BLOCK_P)


@functools.cache
def _kernels(interpret: bool) -> tuple[Callable, Callable, Callable]:
    """The three kernels, compiled for the GPU or wrapped by Triton's interpreter (the choice Triton
    makes at ``@triton.jit`` time from TRITON_INTERPRET, made here per call so both can coexist)."""
    import triton

    from alexnet_zoo.ops import lrn_triton_kernels as source

    functions = (source.lrn_forward, source.lrn_backward_terms, source.lrn_backward_combine)
    knobs = getattr(triton, "knobs", None)
    if knobs is None:  # Triton before 3.4 decides from the variable alone, at each @triton.jit
        if interpret != _interpreting():
            raise RuntimeError("this Triton cannot choose its interpreter per call: set TRITON_INTERPRET=1 for CPU "
                               "tensors only, before the first call")
        return tuple(triton.jit(fn) for fn in functions)
    with knobs.runtime.scope():
        knobs.runtime.interpret = interpret
        return tuple(triton.jit(fn) for fn in functions)
