"""Local response normalisation (the paper's section 3.3), fast on every device and dtype.

    b_c = a_c / (k + alpha * sum_{j=max(0, c-n/2)}^{min(N-1, c+n/2)} a_j^2) ** beta

Two conventions exist and both are supported, named explicitly:

* ``"paper"``: alpha multiplies the raw sum (the paper: k=2, n=5, alpha=1e-4, beta=0.75);
* ``"caffe"``: alpha multiplies the mean over the n-window, i.e. alpha / n times the sum (Caffe,
  ONNX and ``torch.nn.LocalResponseNorm``; BVLC's weights used k=1).

On the CPU, inference runs a fused C kernel (one read, one write; ReLU folded in) because torch's
``LocalResponseNorm`` costs a third of AlexNet's forward pass there and fails in fp16. Everywhere
else (CUDA, autograd, tracing, ``torch.compile``) a short differentiable torch expression is used.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnet_zoo.ops.geometry import LRNConvention
from alexnet_zoo.ops.kernels import load_kernel, native_enabled

__all__ = ["KERNEL_SUFFIX", "LocalResponseNorm", "local_response_norm", "native_applies"]

KERNEL_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
_NCHW_TILE = 256  # TILE in kernels/lrn.c


def local_response_norm(x: Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 2.0, convention: LRNConvention = "paper", *,
                        relu: bool = False, inplace: bool = False) -> Tensor:
    """LRN across the channels of an (N, C, H, W) tensor, in x's dtype and memory layout.

    ``relu=True`` computes LRN(ReLU(x)) in the same pass (the model's conv -> ReLU -> LRN).
    ``inplace=True`` lets the native kernel write over x (a fresh 37 MB output costs as much in
    page faults as the arithmetic); callers must not use x afterwards.
    """
    if x.dim() != 4:
        raise ValueError(f"local_response_norm expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"LRN size must be a positive odd number (a window centred on each channel), got {size}")
    if convention not in ("paper", "caffe"):
        raise ValueError(f"LRN convention must be 'paper' or 'caffe', got {convention!r}")
    scaled_alpha = alpha / size if convention == "caffe" else alpha
    if native_applies(x):
        return _lrn_native(x, size, scaled_alpha, beta, k, relu, inplace)
    return _lrn_torch(x, size, scaled_alpha, beta, k, relu)


class LocalResponseNorm(nn.Module):
    """Module form of :func:`local_response_norm`; the convention is part of its repr."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 convention: LRNConvention = "paper") -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.convention = size, alpha, beta, k, convention

    def forward(self, x: Tensor) -> Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k, self.convention)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, convention={self.convention!r}"


def _lrn_torch(x: Tensor, size: int, alpha: float, beta: float, k: float, relu: bool) -> Tensor:
    """Differentiable reference path; sums in fp32 so fp16's range (a^2 > 65504) cannot overflow."""
    a = F.relu(x) if relu else x
    af = a.float() if a.dtype in (torch.float16, torch.bfloat16) else a
    half = size // 2
    squares = F.pad(af.square(), (0, 0, 0, 0, half, half))  # zero channels beyond both ends
    channels = x.shape[1]
    window = squares.narrow(1, 0, channels)
    for j in range(1, size):
        window = window + squares.narrow(1, j, channels)
    out = af * (window * alpha + k).pow(-beta)
    return out.to(x.dtype).contiguous(memory_format=_memory_format(x))


def _memory_format(x: Tensor) -> torch.memory_format:
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def native_applies(x: Tensor) -> bool:
    """True when the fused C kernel may run on ``x``: CPU inference (no autograd, tracing or compiling),
    a supported dtype, a contiguous or channels-last layout, and the kernel built."""
    if x.device.type != "cpu" or x.dtype not in KERNEL_SUFFIX or x.numel() == 0:
        return False
    if x.requires_grad and torch.is_grad_enabled():
        return False  # autograd needs the torch expression
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False  # exporters and compilers must see torch operations
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        return False
    return native_enabled() and load_kernel("lrn") is not None


def _lrn_native(x: Tensor, size: int, alpha: float, beta: float, k: float, relu: bool,
                inplace: bool) -> Tensor:
    lib = load_kernel("lrn")
    n, c, h, w = x.shape
    channels_last = not x.is_contiguous()  # native_applies guaranteed one of the two layouts
    layout = torch.channels_last if channels_last else torch.contiguous_format
    y = x if inplace else torch.empty_like(x, memory_format=layout)  # lrn.c reads a unit before writing it
    suffix = KERNEL_SUFFIX[x.dtype]
    scalars = (ctypes.c_int64(size), ctypes.c_float(alpha), ctypes.c_float(beta), ctypes.c_float(k),
               ctypes.c_int(int(relu)))
    if channels_last:
        fn, units, shape = getattr(lib, f"lrn_nhwc_{suffix}"), n * h * w, (ctypes.c_int64(c),)
    else:
        tiles = -(-(h * w) // _NCHW_TILE)
        fn, units, shape = getattr(lib, f"lrn_nchw_{suffix}"), n * tiles, (ctypes.c_int64(c), ctypes.c_int64(h * w))
    status = fn(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()), ctypes.c_int64(0),
                ctypes.c_int64(units), *shape, *scalars)
    if status:
        raise MemoryError("the native LRN kernel could not allocate its work buffer")
    return y
