"""The int8 model's input boundary: fp32 pictures to a channels-last quint8 tensor in one pass.

``torch.quantize_per_tensor`` keeps the NCHW layout it is given and the first int8 convolution
then copies the batch to channels-last (fbgemm's layout): at batch 32 the two passes cost about
as much as one of the small convolutions. The native kernel (``kernels/quantize.c``) quantises
and interleaves in one pass with the same rounding, so its bytes are quantize_per_tensor's; where
it does not apply (tracing for export, no compiler, ``ALEXNET_ZOO_NATIVE=0``, an unusual input)
the torch operation runs instead, with the same values in its own layout. A NaN has no quint8 value
(torch writes 0 or 255 depending on its code path): a batch holding one is refused, so an int8 model
never answers for a picture it did not see, where fp32 would have returned NaN.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from alexnet_zoo.ops.kernels import load_kernel, native_enabled

__all__ = ["block_geometry", "blocks_apply", "quantize_input", "quantize_input_blocks"]

_MAX_CHANNELS = 8  # kernels/quantize.c's MAX_C
_MAX_STRIDE = 8  # and the strides its space-to-depth layout takes
_MAX_ROW = 1024  # BLOCK: the longest padded row it buffers (wider pictures run conv1 directly)


def quantize_input(x: Tensor, scale: float, zero_point: int) -> Tensor:
    """``torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)`` of an (N, C, H, W) batch,
    channels-last where the native kernel runs. Raises ValueError for a batch holding NaN."""
    x = x.float()
    if not (x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous() and 0 < x.shape[1] <= _MAX_CHANNELS
            and not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and native_enabled()
            and load_kernel("quantize") is not None):
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):  # a traced graph has no Python checks
            _refuse_nans(int(torch.isnan(x).sum()))
        return torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
    n, c, h, w = x.shape
    y = torch._empty_affine_quantized((n, c, h, w), scale=scale, zero_point=zero_point, dtype=torch.quint8,
                                      memory_format=torch.channels_last)
    nans = ctypes.c_int64(0)
    status = load_kernel("quantize").quantize_nchw_to_nhwc_u8(
        ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()), ctypes.c_int64(n), ctypes.c_int64(c),
        ctypes.c_int64(h * w), ctypes.c_float(scale), ctypes.c_int(zero_point), ctypes.byref(nans))
    if status:  # the channel count was checked above: a kernel that refuses it is a bug, not an input error
        raise RuntimeError(f"the native quantize kernel refused {c} channels")
    _refuse_nans(nans.value)
    return y


def block_geometry(size: int, kernel: int, stride: int, padding: int) -> tuple[int, int]:
    """(blocks a side, block kernel side) of a stride-``stride`` ``kernel`` convolution in
    space-to-depth form: a side of ``size`` pixels becomes output + block kernel - 1 blocks."""
    k = -(-kernel // stride)
    return (size + 2 * padding - kernel) // stride + k, k


def blocks_apply(x: Tensor, kernel: int, stride: int, padding: int) -> bool:
    """True where :func:`quantize_input_blocks` runs (the native kernel, not while tracing, an input
    the convolution has at least one output pixel for)."""
    return (x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous() and 0 < x.shape[1] <= _MAX_CHANNELS
            and 1 < stride <= _MAX_STRIDE and min(x.shape[-2:]) + 2 * padding >= kernel
            and block_geometry(x.shape[-1], kernel, stride, padding)[0] * stride <= _MAX_ROW
            and not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and native_enabled()
            and load_kernel("quantize") is not None)


def quantize_input_blocks(x: Tensor, scale: float, zero_point: int, kernel: int, stride: int,
                          padding: int) -> Tensor:
    """``x`` quantised as :func:`quantize_input` does, in the space-to-depth layout of a stride-
    ``stride`` ``kernel`` x ``kernel`` convolution with ``padding``: (N, stride^2 C, HB, WB)
    channels-last, channel (dy * stride + dx) * C + c of block (by, bx) holding pixel
    (by * stride + dy - padding, bx * stride + dx - padding), the zero point outside the picture.
    The convolution is then a stride-1 one of the block kernel (:func:`block_geometry`) over it:
    conv1's 11x11 / 4 over 3 channels becomes 3x3 over 48, which int8 kernels run faster. The
    caller checked :func:`blocks_apply`. Raises ValueError for a batch holding NaN."""
    x = x.float()
    n, c, h, w = x.shape
    hb, wb = block_geometry(h, kernel, stride, padding)[0], block_geometry(w, kernel, stride, padding)[0]
    y = torch._empty_affine_quantized((n, stride * stride * c, hb, wb), scale=scale, zero_point=zero_point,
                                      dtype=torch.quint8, memory_format=torch.channels_last)
    nans, i64 = ctypes.c_int64(0), ctypes.c_int64
    status = load_kernel("quantize").quantize_nchw_to_blocks_u8(
        ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()), i64(n), i64(c), i64(h), i64(w), i64(stride),
        i64(padding), i64(hb), i64(wb), ctypes.c_float(scale), ctypes.c_int(zero_point), ctypes.byref(nans))
    if status:  # blocks_apply checked the channels, stride and row length: a refusal is a bug
        raise RuntimeError(f"the native quantize kernel refused {c} channels at stride {stride}")
    _refuse_nans(nans.value)
    return y


def _refuse_nans(count: int) -> None:
    if count:
        raise ValueError(f"the input batch holds {count} NaN value(s), which int8 cannot represent (the fp32 "
                         f"model would return NaN for those pictures); check how the batch was made")
