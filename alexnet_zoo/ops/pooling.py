"""AlexNet's overlapping 3x3 stride-2 max pooling, optionally preceded by LRN, fused on the CPU.

Pooling right after LRN (conv1, conv2) reads the 37 MB conv1 map once instead of three times,
and skips the int64 index tensor ``F.max_pool2d`` allocates even under ``inference_mode``
(four times the size of a bf16 output). Channels-last CPU inference takes the native kernel;
everything else composes the torch operations, with identical results.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor

from alexnet_zoo.ops.geometry import LRNConvention, pool_output_size
from alexnet_zoo.ops.kernels import load_kernel
from alexnet_zoo.ops.kernels import native_enabled
from alexnet_zoo.ops.lrn import KERNEL_SUFFIX, local_response_norm, native_applies

__all__ = ["lrn_pool_quint8", "max_pool"]


def max_pool(x: Tensor, ceil_mode: bool, lrn: tuple[int, float, float, float, LRNConvention] | None = None,
             *, relu: bool = False) -> Tensor:
    """``max_pool2d(LRN(ReLU(x)), 3, 2)``, where ``lrn`` = (size, alpha, beta, k, convention) or
    None for no LRN, and ``relu`` adds the ReLU."""
    if native_applies(x) and x.is_contiguous(memory_format=torch.channels_last) and min(x.shape[-2:]) >= 3:
        return _native(x, ceil_mode, lrn, relu)
    if relu:
        x = F.relu(x)
    if lrn is not None:
        x = local_response_norm(x, *lrn)
    return F.max_pool2d(x, 3, 2, ceil_mode=ceil_mode)


def _native(x: Tensor, ceil_mode: bool, lrn: tuple | None, relu: bool) -> Tensor:
    n, c, h, w = x.shape
    oh, ow = pool_output_size(h, ceil_mode), pool_output_size(w, ceil_mode)
    y = torch.empty((n, c, oh, ow), dtype=x.dtype, memory_format=torch.channels_last)
    size, alpha, beta, k, convention = lrn if lrn is not None else (0, 0.0, 1.0, 1.0, "paper")
    if convention == "caffe":
        alpha = alpha / size
    fn = getattr(load_kernel("lrn"), f"lrn_pool_nhwc_{KERNEL_SUFFIX[x.dtype]}")
    i64 = ctypes.c_int64
    status = fn(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()), i64(n), i64(h), i64(w), i64(c),
                i64(oh), i64(ow), i64(size), ctypes.c_float(alpha), ctypes.c_float(beta), ctypes.c_float(k),
                ctypes.c_int(int(relu)))
    if status:
        raise MemoryError("the native LRN/pooling kernel could not allocate its work buffer")
    return y


def lrn_pool_quint8(x: Tensor, ceil_mode: bool, lrn: tuple[int, float, float, float, LRNConvention],
                    scale: float, zero_point: int) -> Tensor:
    """``max_pool2d(LRN(x))`` of a quint8 (N, C, H, W) tensor, requantised with (``scale``,
    ``zero_point``): the int8 model's LRN boundary. LRN is computed in fp32 either way; the native
    kernel does it in one pass over the uint8 values (no fp32 copy of the map), the fallback
    dequantises, runs :func:`max_pool` and quantises again (equal up to one rounding step)."""
    if (x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last) and min(x.shape[-2:]) >= 3
            and not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and native_enabled()
            and load_kernel("lrn") is not None):
        n, c, h, w = x.shape
        oh, ow = pool_output_size(h, ceil_mode), pool_output_size(w, ceil_mode)
        y = torch._empty_affine_quantized((n, c, oh, ow), scale=scale, zero_point=zero_point, dtype=torch.quint8,
                                          memory_format=torch.channels_last)
        size, alpha, beta, k, convention = lrn
        alpha = alpha / size if convention == "caffe" else alpha
        i64, f32, i32 = ctypes.c_int64, ctypes.c_float, ctypes.c_int
        status = load_kernel("lrn").lrn_pool_nhwc_u8(
            ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()), i64(n), i64(h), i64(w), i64(c), i64(oh),
            i64(ow), i64(size), f32(alpha), f32(beta), f32(k), f32(x.q_scale()), i32(x.q_zero_point()),
            f32(1.0 / scale), i32(zero_point), i32(0), i32(255))
        if status:
            raise MemoryError("the native LRN/pooling kernel could not allocate its work buffer")
        return y
    return torch.quantize_per_tensor(max_pool(x.dequantize(), ceil_mode, lrn), scale, zero_point, torch.quint8)
