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
from alexnet_zoo.ops.lrn import KERNEL_SUFFIX, local_response_norm, native_applies

__all__ = ["max_pool"]


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
