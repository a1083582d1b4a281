"""AlexNet as an ONNX graph of standard operators, written node by node from the model's weights.

Why not ``torch.onnx.export``: it would trace the model's LRN as a dozen element-wise operators
(pad, square, add, pow) where ONNX has ``LRN``, and the model's CPU fast paths (oneDNN, Winograd,
the native LRN/pooling kernels) are invisible to an exporter. Built here from the parameters, the
graph is the plain computation by construction: ``Conv`` (``group`` for the two towers), ``Relu``,
``LRN``, ``MaxPool`` with Caffe's ceil rounding where the config has it, ``Flatten`` and ``Gemm``.

ONNX's LRN divides alpha by the window size (Caffe's convention); the paper's alpha multiplies the
raw sum, so it is exported as ``alpha * size``: both compute ``x / (k + alpha_paper * sum) ** beta``.

An int8 model (:class:`~alexnet_zoo.models.quantized.QuantizedAlexNet`) is written in ONNX's QDQ
form: its stored int8 weights behind ``DequantizeLinear`` (per output channel), each activation
through ``QuantizeLinear`` / ``DequantizeLinear`` with the calibrated scale and zero point, biases
as int32 at the input scale times each weight's (as the runtimes' int8 convolutions want them),
LRN and pooling between a dequantise and a requantise as in the model; runtimes fuse the pattern
into their int8 kernels (onnxruntime: ``QLinearConv``, ``QLinearMatMul``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from alexnet_zoo.deploy.metadata import export_metadata
from alexnet_zoo.errors import ExportError
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import POOLED_CONVS, feature_sizes
from alexnet_zoo.models.quantized import QuantizedAlexNet
from alexnet_zoo.paths import atomic_write

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "export_onnx", "onnx_lrn_alpha"]

DEFAULT_OPSET = 18  # onnxruntime 1.17 (the oldest the tests accept) runs it
MIN_OPSET = 13  # LRN, MaxPool's ceil_mode and Gemm as written here are unchanged since
_NORMED = (1, 2)  # LRN follows conv1 and conv2 (when the config has LRN)


def onnx_lrn_alpha(alpha: float, size: int, convention: str) -> float:
    """The ``alpha`` attribute of ONNX's LRN (which uses ``alpha / size``) for the model's alpha."""
    return alpha * size if convention == "paper" else alpha


def _check(model: AlexNet, opset: int, input_size: int | None) -> None:
    import onnx  # protobuf only; imported by the export, not by the package

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ExportError(f"opset {opset}: expected an ONNX opset from {MIN_OPSET} to {newest} (the installed onnx)")
    if not isinstance(model, (AlexNet, QuantizedAlexNet)):
        raise ExportError(f"expected an alexnet_zoo AlexNet to export, got {type(model).__name__}")
    if isinstance(model, QuantizedAlexNet) and input_size is not None and feature_sizes(model.config, input_size)[
            "pool5"] != 6:
        raise ExportError(f"input size {input_size}: an int8 graph is written for sides whose pool5 is 6x6")
    if input_size is not None and feature_sizes(model.config, input_size)["pool5"] < 1:
        raise ExportError(f"input size {input_size}: too small for this network; it needs at least "
                          f"{model.min_input_size} pixels to reach pool5")


def _adaptive_matrix(n: int, out: int = 6) -> np.ndarray:
    """(out, n): row i averages the bins torch's adaptive_avg_pool2d gives output i (separable in H and W)."""
    a = np.zeros((out, n), dtype=np.float32)
    for i in range(out):
        start, end = (i * n) // out, -(-((i + 1) * n) // out)
        a[i, start:end] = 1.0 / (end - start)
    return a


class _Graph:
    """Nodes and initializers being gathered, with fresh tensor names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []

    def const(self, name: str, value: np.ndarray | torch.Tensor) -> str:
        array = value.detach().to("cpu", torch.float32).numpy() if isinstance(value, torch.Tensor) else value
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [name], name=name, **attrs))
        return name


def _features(g: _Graph, model: AlexNet, x: str) -> str:
    """conv1..conv5 with ReLU, LRN and max pooling: the pool5 map's name."""
    c = model.config
    for i in range(1, 6):
        conv: nn.Conv2d = getattr(model, f"conv{i}")
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        x = g.node("Conv", [x, g.const(f"conv{i}.weight", conv.weight), g.const(f"conv{i}.bias", conv.bias)],
                   f"conv{i}", kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p], group=conv.groups)
        x = g.node("Relu", [x], f"relu{i}")
        if c.lrn and i in _NORMED:
            x = g.node("LRN", [x], f"norm{i}", size=c.lrn_size, alpha=onnx_lrn_alpha(c.lrn_alpha, c.lrn_size,
                                                                                    c.lrn_convention),
                       beta=c.lrn_beta, bias=c.lrn_k)
        if i in POOLED_CONVS:
            x = g.node("MaxPool", [x], f"pool{i}", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=int(c.pool_ceil))
    return x


def _head(g: _Graph, model: AlexNet, x: str, input_size: int | None) -> str:
    """pool5 -> 6x6 (adaptive average, as constant matrices, for a fixed size that needs it) -> fc6..fc8."""
    side = feature_sizes(model.config, input_size)["pool5"] if input_size is not None else 6
    if side != 6:
        a = _adaptive_matrix(side)
        x = g.node("MatMul", [x, g.const("pool5.adapt_w", a.T.copy())], "pool5_w")
        x = g.node("MatMul", [g.const("pool5.adapt_h", a), x], "pool5_6x6")
    x = g.node("Flatten", [x], "flatten", axis=1)
    layers = [("fc6", True), ("fc7", True)] + ([("fc8", False)] if isinstance(model.fc8, nn.Linear) else [])
    for name, relu in layers:
        fc: nn.Linear = getattr(model, name)
        x = g.node("Gemm", [x, g.const(f"{name}.weight", fc.weight), g.const(f"{name}.bias", fc.bias)], name,
                   transB=1)
        if relu:
            x = g.node("Relu", [x], f"relu{name[2:]}")
    return x


def _qdq(g: _Graph, model: QuantizedAlexNet, x: str, point: str) -> str:
    """x through the activation's QuantizeLinear / DequantizeLinear pair."""
    scale = g.const(f"{point}.scale", model.tensor(f"{point}.scale").numpy().astype(np.float32))
    zero = g.const(f"{point}.zero_point", model.tensor(f"{point}.zero_point").numpy().astype(np.uint8))
    return g.node("DequantizeLinear", [g.node("QuantizeLinear", [x, scale, zero], f"{point}.q"), scale, zero],
                  f"{point}.dq")


def _int8_layer(g: _Graph, model: QuantizedAlexNet, x: str, name: str, in_point: str, **attrs) -> str:
    """Conv (``attrs``) or Gemm of int8 weights dequantised per channel; bias int32 at in x w scales."""
    w_scale = model.tensor(f"{name}.weight_scale").numpy().astype(np.float32)
    weight = g.node("DequantizeLinear", [g.const(f"{name}.weight_q", model.tensor(f"{name}.weight").numpy()),
                                         g.const(f"{name}.weight_scale", w_scale),
                                         g.const(f"{name}.weight_zero", np.zeros(len(w_scale), np.int8))],
                    f"{name}.weight", axis=0)
    b_scale = (float(model.tensor(f"{in_point}.scale")) * w_scale).astype(np.float32)
    b_q = np.round(model.tensor(f"{name}.bias").numpy() / b_scale).clip(-2 ** 31, 2 ** 31 - 1).astype(np.int32)
    bias = g.node("DequantizeLinear", [g.const(f"{name}.bias_q", b_q), g.const(f"{name}.bias_scale", b_scale),
                                       g.const(f"{name}.bias_zero", np.zeros(len(b_scale), np.int32))],
                  f"{name}.bias", axis=0)
    return g.node("Conv" if attrs else "Gemm", [x, weight, bias], name, **(attrs or {"transB": 1}))


def _int8_network(g: _Graph, model: QuantizedAlexNet, x: str) -> str:
    """The QDQ graph of the int8 model, images -> logits (or fc7)."""
    c = model.config
    x, point = _qdq(g, model, x, "input"), "input"
    for i in range(1, 6):
        k, p = c.kernels[i - 1], c.paddings[i - 1]
        s = c.conv1_stride if i == 1 else 1
        x = _int8_layer(g, model, x, f"conv{i}", point, kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p],
                        group=c.groups[i - 1])
        x, point = _qdq(g, model, g.node("Relu", [x], f"relu{i}"), f"conv{i}"), f"conv{i}"
        if c.lrn and i in _NORMED:
            x = g.node("LRN", [x], f"norm{i}", size=c.lrn_size,
                       alpha=onnx_lrn_alpha(c.lrn_alpha, c.lrn_size, c.lrn_convention), beta=c.lrn_beta, bias=c.lrn_k)
        if i in POOLED_CONVS:
            x = g.node("MaxPool", [x], f"pool{i}", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=int(c.pool_ceil))
        if c.lrn and i in _NORMED:
            x, point = _qdq(g, model, x, f"norm{i}"), f"norm{i}"
    x = g.node("Flatten", [x], "flatten", axis=1)
    for name in ("fc6", "fc7"):
        x = _int8_layer(g, model, x, name, point)
        x, point = _qdq(g, model, g.node("Relu", [x], f"relu{name[2:]}"), name), name
    return _int8_layer(g, model, x, "fc8", point) if model.num_classes else x


def build_onnx(model: AlexNet | QuantizedAlexNet, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
               input_size: int | None = None, weights: str | None = None):
    """The ``onnx.ModelProto`` of ``model`` (see :func:`export_onnx`), checked by onnx's checker."""
    import onnx
    from onnx import TensorProto, helper

    _check(model, opset, input_size)
    g = _Graph()
    with torch.no_grad():
        if isinstance(model, QuantizedAlexNet):
            _int8_network(g, model, "images")
        else:
            _head(g, model, _features(g, model, "images"), input_size)
    g.nodes[-1].output[0] = "logits" if model.num_classes else "features"  # the public name of the last tensor
    batch = "batch" if dynamic_batch else 1
    h, w = (input_size, input_size) if input_size is not None else ("height", "width")
    width = model.num_classes or model.config.hidden
    graph = helper.make_graph(g.nodes, f"{model.arch or 'alexnet'}",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                             [batch, model.config.in_chans, h, w])],
                              [helper.make_tensor_value_info(g.nodes[-1].output[0], TensorProto.FLOAT, [batch, width])],
                              g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, producer_name="alexnet_zoo", opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))  # the oldest runtime that can
    helper.set_model_props(proto, export_metadata(model, weights=weights, input_size=input_size))
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: AlexNet | QuantizedAlexNet, path: str | os.PathLike, *, opset: int | None = DEFAULT_OPSET,
                dynamic_batch: bool = True, input_size: int | None = None, weights: str | None = None) -> Path:
    """Write ``model`` to ``path`` as an ONNX graph, atomically. Input ``images`` (N, 3, H, W)
    float32, preprocessed as the metadata's ``preprocessing`` says; output ``logits`` (fc8), or
    ``features`` (fc7 after ReLU) for a model without a classifier. ``opset``: None for
    :data:`DEFAULT_OPSET`. ``dynamic_batch``: any N (else 1). ``input_size``: H = W fixed to it,
    with pool5 adapted to 6x6 as the model does; None: any side whose pool5 is 6x6 (the metadata
    lists them). ``weights`` names the weights in the metadata (default: the name the model knows).
    An int8 model is written in QDQ form (see the module's docstring)."""
    import onnx

    opset = DEFAULT_OPSET if opset is None else opset
    proto = build_onnx(model, opset=opset, dynamic_batch=dynamic_batch, input_size=input_size, weights=weights)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))
    return path
