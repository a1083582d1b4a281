"""Local response normalisation as Triton kernels, forward and backward: the GPU analogue of the
fused C kernel (kernels/lrn.c), for CUDA tensors in fp32, fp16 or bf16 (float64 too, for gradcheck).

    b_c = a_c * D_c ** -beta,   D_c = k + alpha * sum_{j in win(c)} a_j^2,   a = ReLU(x) with relu=True
    da_i = g_i * D_i ** -beta - 2 alpha beta a_i * sum_{c in win(i)} g_c b_c / D_c

(the window is symmetric, so the channels whose window holds i are win(i)). Sums and powers are in
fp32 whatever the storage dtype, as in ``lrn._lrn_torch``, so fp16's range cannot overflow.
``triton_lrn_pool`` fuses the following 3x3 stride-2 max pool, as lrn.c does on the CPU.

Neither is the default on CUDA: they have been checked against the formula through Triton's
interpreter only (``TRITON_INTERPRET=1``, CPU tensors), never compiled on a GPU, so
``local_response_norm`` and ``pooling.max_pool`` keep the torch operations there and
``benchmarks/gpu_check.py`` times both and checks they agree; that run decides whether they are wired
in. CPU tensors are accepted only under ``TRITON_INTERPRET=1`` (slow, for tests): the CPU's own fast
path is the C kernel.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable

import torch
from torch import Tensor

from alexnet_zoo.ops.geometry import LRNConvention, pool_output_size

__all__ = ["triton_available", "triton_lrn", "triton_lrn_pool"]

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
    _check(x, size, convention, "triton_lrn")
    scaled_alpha = alpha / size if convention == "caffe" else alpha
    return _TritonLRN.apply(x, size, float(scaled_alpha), float(beta), float(k), bool(relu))


def triton_lrn_pool(x: Tensor, ceil_mode: bool, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                    k: float = 2.0, convention: LRNConvention = "paper", *, relu: bool = False) -> Tensor:
    """``max_pool2d(LRN(x), 3, 2, ceil_mode=ceil_mode)`` (of ReLU(x) with ``relu``) in one pass, as
    ``pooling.max_pool`` composes it, differentiable: the full-size LRN map is never written, only
    the pooled one (a quarter of it), in x's dtype and layout."""
    _check(x, size, convention, "triton_lrn_pool")
    if min(x.shape[-2:]) < 3:
        raise ValueError(f"triton_lrn_pool needs maps of at least 3x3 (one 3x3 window), got {tuple(x.shape[-2:])}")
    scaled_alpha = alpha / size if convention == "caffe" else alpha
    return _TritonLRNPool.apply(x, bool(ceil_mode), size, float(scaled_alpha), float(beta), float(k), bool(relu))


def _check(x: Tensor, size: int, convention: str, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"LRN size must be a positive odd number (a window centred on each channel), got {size}")
    if convention not in ("paper", "caffe"):
        raise ValueError(f"LRN convention must be 'paper' or 'caffe', got {convention!r}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"{name} computes fp32, fp16, bf16 or float64 tensors, got {x.dtype}")
    if not (x.is_cuda or (x.device.type == "cpu" and _interpreting())):
        raise ValueError(f"{name} runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got a "
                         f"{x.device.type} tensor")
    if not triton_available():
        raise ModuleNotFoundError(f"{name} needs Triton (shipped with torch's CUDA wheels): pip install triton")


class _TritonLRN(torch.autograd.Function):
    """Forward and backward kernels; the input is saved, D is recomputed in the backward (as lrn.c
    keeps no scale buffer) rather than stored for the whole batch."""

    @staticmethod
    def forward(ctx, x: Tensor, size: int, alpha: float, beta: float, k: float, relu: bool) -> Tensor:
        x = _dense(x)
        ctx.save_for_backward(x)
        ctx.params = (size, alpha, beta, k, relu)
        y = torch.empty_like(x)  # empty_like keeps a dense tensor's layout
        _launch(_kernels(not x.is_cuda)["lrn_forward"], (x, y), size, alpha, beta, k, relu)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        size, alpha, beta, k, relu = ctx.params
        return _lrn_backward(x, grad.contiguous(memory_format=_layout(x)), size, alpha, beta, k, relu), \
            None, None, None, None, None


class _TritonLRNPool(torch.autograd.Function):
    """LRN and the 3x3 stride-2 max pool: the forward writes only the pooled map; the backward finds
    each window's largest value again, adds its gradient there (a full-size fp32 map) and runs LRN's
    backward on that."""

    @staticmethod
    def forward(ctx, x: Tensor, ceil_mode: bool, size: int, alpha: float, beta: float, k: float,
                relu: bool) -> Tensor:
        x = _dense(x)
        ctx.save_for_backward(x)
        ctx.params = (size, alpha, beta, k, relu)
        n, c, h, w = x.shape
        y = torch.empty((n, c, pool_output_size(h, ceil_mode), pool_output_size(w, ceil_mode)), dtype=x.dtype,
                        device=x.device, memory_format=_layout(x))
        _launch_pool(_kernels(not x.is_cuda)["lrn_pool_forward"], x, (x, y), y, size, alpha, beta, k, relu)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        size, alpha, beta, k, relu = ctx.params
        g = grad.contiguous(memory_format=_layout(x))
        unpooled = torch.zeros_like(x, dtype=_accumulator(x))  # the pool's gradient, at each window's maximum
        _launch_pool(_kernels(not x.is_cuda)["lrn_pool_scatter"], x, (x, g, unpooled), g, size, alpha, beta, k, relu)
        return None if not ctx.needs_input_grad[0] else _lrn_backward(x, unpooled, size, alpha, beta, k, relu), \
            None, None, None, None, None, None


def _accumulator(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _lrn_backward(x: Tensor, g: Tensor, size: int, alpha: float, beta: float, k: float, relu: bool) -> Tensor:
    """dL/dx of LRN(ReLU(x)) for the gradient ``g`` of its output (x's shape and layout)."""
    kernels = _kernels(not x.is_cuda)
    direct = torch.empty_like(x, dtype=_accumulator(x))  # g_i D_i^-beta
    spread = torch.empty_like(x, dtype=_accumulator(x))  # g_c b_c / D_c, summed over windows in the second pass
    _launch(kernels["lrn_backward_terms"], (x, g, direct, spread), size, alpha, beta, k, relu)
    dx = torch.empty_like(x)
    _launch(kernels["lrn_backward_combine"], (x, direct, spread, dx), size, alpha, beta, k, relu)
    return dx


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
    strides = _strides(x)
    grid = (-(-positions // _BLOCK_P), -(-channels // _BLOCK_C), n)
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    kernel[grid](*tensors, channels, positions, *strides, alpha, beta, k, SIZE=size, RELU=relu, ACC=acc,
                 BLOCK_C=_BLOCK_C, BLOCK_P=_BLOCK_P)


def _strides(t: Tensor) -> tuple[int, int, int]:
    """(image, channel, position) strides of a dense NCHW or channels-last tensor."""
    _, channels, h, w = t.shape
    if _layout(t) == torch.channels_last:
        return h * w * channels, 1, channels
    return h * w * channels, h * w, 1


def _launch_pool(kernel: Callable, x: Tensor, tensors: tuple[Tensor, ...], pooled: Tensor, size: int, alpha: float,
                 beta: float, k: float, relu: bool) -> None:
    """Run a pool kernel over (output-position blocks, channel blocks, images); ``pooled`` has the
    output's shape (and x's layout), the other tensors x's."""
    import triton.language as tl

    n, channels, h, w = x.shape
    oh, ow = pooled.shape[-2:]
    if pooled.numel() == 0:
        return
    grid = (-(-(oh * ow) // _BLOCK_P), -(-channels // _BLOCK_C), n)
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    kernel[grid](*tensors, channels, h, w, oh, ow, *_strides(x), *_strides(pooled), alpha, beta, k, SIZE=size,
                 RELU=relu, ACC=acc, BLOCK_C=_BLOCK_C, BLOCK_P=_BLOCK_P)


@functools.cache
def _kernels(interpret: bool) -> dict[str, Callable]:
    """The kernels by name, compiled for the GPU or wrapped by Triton's interpreter (the choice Triton
    makes at ``@triton.jit`` time from TRITON_INTERPRET, made here per call so both can coexist)."""
    import triton

    from alexnet_zoo.ops import lrn_triton_kernels as source

    functions = {name: getattr(source, name) for name in source.__all__}
    knobs = getattr(triton, "knobs", None)
    if knobs is None:  # Triton before 3.4 decides from the variable alone, at each @triton.jit
        if interpret != _interpreting():
            raise RuntimeError("this Triton cannot choose its interpreter per call: set TRITON_INTERPRET=1 for CPU "
                               "tensors only, before the first call")
        return {name: triton.jit(fn) for name, fn in functions.items()}
    with knobs.runtime.scope():
        knobs.runtime.interpret = interpret
        return {name: triton.jit(fn) for name, fn in functions.items()}
