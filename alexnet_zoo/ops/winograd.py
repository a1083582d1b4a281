"""Winograd F(2x2, 3x3) convolution for fp32 CPU inference (Lavin and Gray, CVPR 2016).

conv3 of the paper's net (256 -> 384 channels on 13x13) is its largest ungrouped 3x3
convolution. Winograd's minimal filtering turns it into 16 independent matrix products with
16/36 of the multiplies; the products run as one ``torch.bmm`` and the tile transforms as native
kernels (``kernels/winograd.c``). Measured on 2 cores it beats oneDNN's direct convolution for
ungrouped layers at batch >= 4, and loses on the grouped ones (conv4, conv5), so only the
former take it. Results differ from direct convolution by rounding only (about 2e-6 relative).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor, nn

from alexnet_zoo.ops import onednn
from alexnet_zoo.ops.kernels import load_kernel
from alexnet_zoo.ops.prepared import prepared

__all__ = ["applies", "conv2d", "transform_weight"]

_MIN_TILES = 4 * 49  # below about 4 images of 13x13, the batched products are too small to win
# G of F(2x2, 3x3): U = G g G^T maps a 3x3 kernel to its 4x4 Winograd-domain form
_G = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def applies(conv: nn.Conv2d, x: Tensor) -> bool:
    """True for a 3x3, stride-1, pad-1, ungrouped convolution on a big enough fp32 CPU batch
    where the fast path applies at all."""
    if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.groups != 1:
        return False
    if conv.dilation != (1, 1) or onednn.compute_dtype(x) != torch.float32 or x.dim() != 4:
        return False
    tiles = x.shape[0] * ((x.shape[2] + 1) // 2) * ((x.shape[3] + 1) // 2)
    return tiles >= _MIN_TILES and onednn.applies(x, conv) and load_kernel("winograd") is not None


def transform_weight(weight: Tensor) -> Tensor:
    """(C_out, C_in, 3, 3) -> (16, C_in, C_out): the 16 Winograd-domain matrices."""
    cout, cin = weight.shape[:2]
    u = _G.to(weight) @ weight @ _G.T.to(weight)  # (C_out, C_in, 4, 4)
    return u.reshape(cout, cin, 16).permute(2, 1, 0).contiguous()


def conv2d(conv: nn.Conv2d, x: Tensor, relu: bool) -> Tensor:
    """``relu(conv(x))`` (or ``conv(x)``) by Winograd; the caller checked :func:`applies`."""
    lib = load_kernel("winograd")
    x = x.to(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    tiles = n * ((h + 1) // 2) * ((w + 1) // 2)
    u, bias = prepared(conv, "winograd", torch.float32, None, transform_weight)
    v = torch.empty(16, tiles, c)
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    if lib.wino_input_f32(ptr(x.data_ptr()), ptr(v.data_ptr()), i64(n), i64(h), i64(w), i64(c), i64(1)):
        raise MemoryError("the Winograd input transform could not allocate its work buffer")
    m = torch.bmm(v, u)
    y = torch.empty((n, conv.out_channels, h, w), memory_format=torch.channels_last)
    bias_ptr = ptr(bias.data_ptr()) if bias is not None else None
    if lib.wino_output_f32(ptr(m.data_ptr()), bias_ptr, ptr(y.data_ptr()), i64(n), i64(h), i64(w),
                           i64(conv.out_channels), i64(1), ctypes.c_int(int(relu))):
        raise MemoryError("the Winograd output transform could not allocate its work buffer")
    return y
