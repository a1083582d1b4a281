"""CPU inference through oneDNN with prepacked weights and ReLU fused into the layer.

Eager ``F.conv2d`` re-lays out each convolution's weights on every call and runs ReLU as a second
pass; ``F.linear`` goes through a GEMM that is about 1.6x slower than oneDNN's for fc6 at batch 32.
These are the same kernels ``torch.compile`` picks on the CPU (``torch.ops.mkldnn``), used without
its half-minute compile. bf16 takes this path only where oneDNN can build bf16 primitives on this
CPU (``capabilities.py``): on AVX2 it refuses them, and torch's generic kernels compute instead.
Packed weights are cached on the layer (``packing.py``) and rebuilt whenever the parameter is
replaced or changed in place. Anything else (CUDA, autograd, tracing, fp16) uses the plain torch
operations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnet_zoo.ops.capabilities import cpu_capabilities, warn_emulated_bf16
from alexnet_zoo.ops.kernels import native_enabled
from alexnet_zoo.ops.prepared import prepared

__all__ = ["applies", "compute_dtype", "conv2d", "linear"]

def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the layer would compute in: autocast's on the CPU, else the input's."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return x.dtype


def applies(x: Tensor, layer: nn.Module) -> bool:
    """True when the prepacked oneDNN path may replace the plain one for this call."""
    dtype = compute_dtype(x)
    if x.device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return False
    if dtype == torch.bfloat16:
        caps = cpu_capabilities()
        if not caps.native_bf16:
            warn_emulated_bf16()
        if not caps.onednn_bf16:
            return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in layer.parameters())):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    return _available() and native_enabled()


def _available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def conv2d(conv: nn.Conv2d, x: Tensor, relu: bool) -> Tensor:
    """``relu(conv(x))`` (or ``conv(x)``), channels-last output, on the fastest applicable path."""
    if not applies(x, conv):
        if x.device.type == "cpu" and compute_dtype(x) == torch.bfloat16 and not cpu_capabilities().onednn_bf16:
            x = x.contiguous(memory_format=torch.channels_last)  # torch's generic bf16 conv: 4x NCHW's speed
        y = conv(x)
        return F.relu(y, inplace=True) if relu else y
    dtype = compute_dtype(x)
    x = x.to(dtype=dtype, memory_format=torch.channels_last)
    args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    weight, bias = prepared(conv, "onednn", dtype, tuple(x.shape),
                            lambda w: torch.ops.mkldnn._reorder_convolution_weight(w, *args, list(x.shape)))
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *args, "relu" if relu else "none", [], "")


def linear(fc: nn.Linear, x: Tensor, relu: bool) -> Tensor:
    """``relu(fc(x))`` (or ``fc(x)``) on the fastest applicable path."""
    if not applies(x, fc):
        y = fc(x)
        return F.relu(y, inplace=True) if relu else y
    dtype = compute_dtype(x)
    weight, bias = prepared(fc, "onednn", dtype, None, lambda w: w.contiguous())
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype).contiguous(), weight, bias,
                                              "relu" if relu else "none", [], "")
