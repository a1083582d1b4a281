"""ONNX -> alexnet_zoo: the ONNX model zoo's BVLC AlexNet and torchvision's exported AlexNet.

Why read the whole graph rather than just the initializers: an ONNX file says how its weights are
used (groups, padding, pooling, LRN constants, whether FC weights are transposed), and a file
whose computation differs from the model the weights would be loaded into must be refused, not
silently mis-loaded. The graph is walked from its input to its output as one chain of nodes and
matched, node by node, against AlexNet's layer sequence.

Two layouts are recognised:

* BVLC / Caffe2 (``bvlcalexnet-*.onnx``): initializers ``conv1_w_0`` ... ``fc8_b_0`` (or without
  the ``_0``), LRN after conv1/conv2, groups 2 on conv2/4/5 -> ``alexnet`` with Caffe's LRN
  convention and the graph's own LRN constants. Its weights expect BGR, mean-subtracted 0-255
  input, as Caffe's do; nothing here reorders channels. Its pool1/pool2 round down and pool5 pads
  bottom/right by one (which is exactly Caffe's rounding up): identical to the model's Caffe-style
  pooling at 227 (the size BVLC trained at), not at the graph's nominal 224.
* torchvision (``torch.onnx.export`` of ``torchvision.models.alexnet``): initializers named
  ``features.0.weight`` ... or opaque ``onnx::Conv_*`` / ``onnx::Gemm_*``, taken from the Conv and
  Gemm (or MatMul + Add) nodes in graph order -> ``alexnet_owt``.

``onnx`` (a dependency of the package) is imported only when converting.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from alexnet_zoo.errors import ConversionError
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import ARCHS, AlexNetConfig
from alexnet_zoo.weights.convert.converted import Converted
from alexnet_zoo.weights.convert.from_torchvision import TORCHVISION_KEYS

__all__ = ["convert_onnx"]

_LEARNED = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")

# Initializer names, explicitly, per parameter of ours. BVLC: Caffe2's names, ONNX adds "_0".
_BVLC_NAMES = {f"{layer}.{leaf}": (f"{layer}_{short}_0", f"{layer}_{short}")
               for layer in _LEARNED for leaf, short in (("weight", "w"), ("bias", "b"))}
_TORCHVISION_NAMES = {f"{layer}.{leaf}": (f"{prefix}.{leaf}",)
                      for prefix, layer in TORCHVISION_KEYS.items() for leaf in ("weight", "bias")}
_OPAQUE_PREFIX = "onnx::"  # names torch.onnx.export makes up: the node's place in the graph says what they are

# The node sequence of each architecture: (step name, kind, optional). Kinds are what _classify makes.
_SEQUENCE = {
    "alexnet": (("conv1", "conv", False), ("relu1", "relu", False), ("norm1", "lrn", False), ("pool1", "pool", False),
                ("conv2", "conv", False), ("relu2", "relu", False), ("norm2", "lrn", False), ("pool2", "pool", False),
                ("conv3", "conv", False), ("relu3", "relu", False), ("conv4", "conv", False), ("relu4", "relu", False),
                ("conv5", "conv", False), ("relu5", "relu", False), ("pool5", "pool", False),
                ("flatten", "flatten", True), ("fc6", "fc", False), ("relu6", "relu", False),
                ("fc7", "fc", False), ("relu7", "relu", False), ("fc8", "fc", False), ("prob", "softmax", True)),
}
_SEQUENCE["alexnet_owt"] = tuple(step for step in _SEQUENCE["alexnet"] if step[1] != "lrn")

_IDENTITY_OPS = ("Identity", "Dropout")  # no-ops at inference
_KINDS = {"Relu": "relu", "LRN": "lrn", "MaxPool": "pool", "Softmax": "softmax", "Flatten": "flatten",
          "Reshape": "flatten"}  # parameterless steps (softmax: dropped, the model returns logits)


@dataclass(frozen=True)
class _Step:
    """One computation on the chain: a node (two for MatMul + Add) and its parameters' names."""

    kind: str  # conv, relu, lrn, pool, flatten, fc, softmax
    node: Any  # onnx.NodeProto
    weight: str = ""
    bias: str = ""
    transposed: bool = False  # FC weight stored (in, out): MatMul, or Gemm with transB=0


# ---- loading -------------------------------------------------------------------------------------

def _load(path: Path) -> Any:
    try:
        import onnx
    except ImportError as e:
        raise ImportError("converting ONNX files needs the onnx package: pip install onnx") from e
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=False)  # external data: read per tensor, checked
    except (DecodeError, OSError, ValueError) as e:
        raise ConversionError(f"{path}: not a readable ONNX model ({e})") from e


def _constants(graph: Any) -> dict[str, Any]:
    """Initializers and ``Constant`` node values, by name (TensorProto each)."""
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = value
    return constants


def _array(tensor: Any, path: Path) -> np.ndarray:
    """A tensor's values, reading external data from beside the model file (never outside it)."""
    import onnx
    from onnx import numpy_helper

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        rel = PurePosixPath(location.replace("\\", "/"))
        if not location or rel.is_absolute() or ".." in rel.parts:
            raise ConversionError(f"{path}: initializer {tensor.name!r} keeps its data at {location!r}; "
                                  "expected a file name relative to the model's folder")
    try:
        return numpy_helper.to_array(tensor, base_dir=str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise ConversionError(f"{path}: cannot read initializer {tensor.name!r} ({e})") from e


# ---- the chain of nodes --------------------------------------------------------------------------

def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _describe(node: Any) -> str:
    return f"node {node.name or node.output[0]!r} ({node.op_type})"


def _data_input(graph: Any, constants: dict[str, Any], path: Path) -> str:
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise ConversionError(f"{path}: expected one image input, the graph has {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[1].HasField("dim_value") and dims[1].dim_value != 3:
        raise ConversionError(f"{path}: input {inputs[0].name!r} has {dims[1].dim_value} channels, expected 3")
    return inputs[0].name


def _chain(graph: Any, constants: dict[str, Any], path: Path) -> list[_Step]:
    """The graph's nodes as one chain from the image input to the single output, or an error
    naming the node that branches, reads something else, or is not part of AlexNet."""
    current = _data_input(graph, constants, path)
    steps: list[_Step] = []
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        if node.domain not in ("", "ai.onnx"):
            raise ConversionError(f"{path}: {_describe(node)} is from operator set {node.domain!r}; "
                                  "expected standard ONNX operators only")
        for name in node.input[1:]:
            if name and name not in constants:
                raise ConversionError(f"{path}: {_describe(node)} input {name!r} is not an initializer or "
                                      "constant (missing initializer?); only its first input may be data")
        if not node.input or node.input[0] != current:
            got = node.input[0] if node.input else "(nothing)"
            raise ConversionError(f"{path}: {_describe(node)} reads {got!r}; expected the output of the "
                                  f"previous node, {current!r} (AlexNet is one chain of layers)")
        current = node.output[0]
        _classify(node, steps, constants, path)
    outputs = [o.name for o in graph.output]
    if outputs != [current]:
        raise ConversionError(f"{path}: graph outputs {outputs}; expected only the last node's output {current!r}")
    return steps


def _classify(node: Any, steps: list[_Step], constants: dict[str, Any], path: Path) -> None:
    """Append the step ``node`` performs (nothing for inference no-ops), checking what does not
    depend on the node's place in the network."""
    op, attrs = node.op_type, _attrs(node)
    if op in _IDENTITY_OPS:
        _check_dropout(node, constants, path)
    elif op == "AveragePool" and _is_identity_pool(attrs):
        pass  # torchvision's adaptive 6x6 pooling, exported at 6x6
    elif op in _KINDS:  # attributes are checked once the node's place in the network is known
        steps.append(_Step(_KINDS[op], node))
    elif op == "Conv":
        steps.append(_Step("conv", node, _input(node, 1), _input(node, 2)))
    elif op == "Gemm":
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise ConversionError(f"{path}: {_describe(node)} has transA={attrs.get('transA', 0)}, "
                                  f"alpha={attrs.get('alpha', 1.0)}, beta={attrs.get('beta', 1.0)}; expected 0, 1, 1")
        steps.append(_Step("fc", node, _input(node, 1), _input(node, 2), transposed=not attrs.get("transB", 0)))
    elif op == "MatMul":
        steps.append(_Step("fc", node, _input(node, 1), transposed=True))
    elif op == "Add" and steps and steps[-1].kind == "fc" and not steps[-1].bias:
        steps[-1] = replace(steps[-1], bias=_input(node, 1))  # MatMul + Add = a fully connected layer
    else:
        raise ConversionError(f"{path}: {_describe(node)} is not part of AlexNet's computation; expected only "
                              "Conv, Relu, LRN, MaxPool, Flatten/Reshape, Gemm (or MatMul + Add), Dropout, Softmax")


def _input(node: Any, index: int) -> str:
    """The name of a node's ``index``-th input; "" when it has none."""
    return node.input[index] if len(node.input) > index else ""


def _check_dropout(node: Any, constants: dict[str, Any], path: Path) -> None:
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        if bool(_array(constants[node.input[2]], path).item()):  # opset 12+; older graphs are always inference
            raise ConversionError(f"{path}: {_describe(node)} has training_mode=true; expected an inference graph")


def _is_identity_pool(attrs: dict[str, Any]) -> bool:
    return (list(attrs.get("kernel_shape", [])) == [1, 1] and list(attrs.get("strides", [1, 1])) == [1, 1]
            and not any(attrs.get("pads", [])) and _auto_pad(attrs) == "NOTSET")


def _auto_pad(attrs: dict[str, Any]) -> str:
    """The auto_pad attribute as text; an empty string is ONNX's NOTSET too."""
    return attrs.get("auto_pad", b"NOTSET").decode() or "NOTSET"


def _check_flatten(node: Any, features: int, constants: dict[str, Any], path: Path) -> None:
    """Flatten must keep the batch axis; Reshape must give (batch, ``features``)."""
    attrs = _attrs(node)
    if node.op_type == "Flatten":
        if attrs.get("axis", 1) != 1:
            raise ConversionError(f"{path}: {_describe(node)} has axis={attrs['axis']}; expected 1")
        return
    shape = list(attrs["shape"]) if "shape" in attrs else (  # opset < 5 kept the shape as an attribute
        _array(constants[node.input[1]], path).tolist() if len(node.input) > 1 else [])
    if len(shape) != 2 or shape[1] not in (-1, features) or shape[0] == -1 and shape[1] == -1:
        raise ConversionError(f"{path}: {_describe(node)} reshapes to {shape}; expected (batch, {features})")


# ---- matching the chain to AlexNet ---------------------------------------------------------------

def _match(steps: list[_Step], arch: str, path: Path) -> dict[str, _Step]:
    """Pair the chain's steps with the architecture's named steps, in order."""
    matched: dict[str, _Step] = {}
    i = 0
    for name, kind, optional in _SEQUENCE[arch]:
        if i < len(steps) and steps[i].kind == kind:
            matched[name] = steps[i]
            i += 1
        elif not optional:
            found = f"{_describe(steps[i].node)}" if i < len(steps) else "the end of the graph"
            after = f" after {_describe(steps[i - 1].node)}" if i else ""
            raise ConversionError(f"{path}: found {found}{after}; expected {kind} ({name}) of {arch}")
    if i < len(steps):
        raise ConversionError(f"{path}: {_describe(steps[i].node)} follows {arch}'s last layer; expected nothing more")
    return matched


def _check_conv(step: _Step, index: int, config: AlexNetConfig, path: Path) -> None:
    attrs = _attrs(step.node)
    k, p = config.kernels[index], config.paddings[index]
    stride = config.conv1_stride if index == 0 else 1
    got = {"group": attrs.get("group", 1), "kernel_shape": list(attrs.get("kernel_shape", [k, k])),
           "strides": list(attrs.get("strides", [1, 1])), "pads": list(attrs.get("pads", [0, 0, 0, 0])),
           "dilations": list(attrs.get("dilations", [1, 1])), "auto_pad": _auto_pad(attrs)}
    want = {"group": config.groups[index], "kernel_shape": [k, k], "strides": [stride, stride],
            "pads": [p, p, p, p], "dilations": [1, 1], "auto_pad": "NOTSET"}
    _same(got, want, f"{_describe(step.node)} (conv{index + 1})", path)


def _check_pool(step: _Step, name: str, arch: str, path: Path) -> None:
    """3x3 stride-2 max pooling with the architecture's rounding. Caffe rounds up, and ONNX says
    the same as floor mode plus one pad at the bottom/right. BVLC's ONNX graph rounds pool1/pool2
    down: the same at 227, BVLC's training size, so it is accepted (see the module docstring)."""
    attrs = _attrs(step.node)
    got = {"kernel_shape": list(attrs.get("kernel_shape", [])), "strides": list(attrs.get("strides", [1, 1])),
           "dilations": list(attrs.get("dilations", [1, 1])), "auto_pad": _auto_pad(attrs)}
    want = {"kernel_shape": [3, 3], "strides": [2, 2], "dilations": [1, 1], "auto_pad": "NOTSET"}
    _same(got, want, f"{_describe(step.node)} ({name})", path)
    rounding = (attrs.get("ceil_mode", 0), list(attrs.get("pads", [0, 0, 0, 0])))
    allowed = [(0, [0, 0, 0, 0])] + ([(1, [0, 0, 0, 0]), (0, [0, 0, 1, 1])] if arch == "alexnet" else [])
    if rounding not in allowed:
        raise ConversionError(f"{path}: {_describe(step.node)} ({name}) has ceil_mode={rounding[0]}, "
                              f"pads={rounding[1]}; expected one of {allowed} for {arch}")


def _lrn_config(steps: list[_Step], path: Path) -> dict[str, Any]:
    """The LRN constants (ONNX's alpha is divided by size: Caffe's convention); both layers agree."""
    found = []
    for step in steps:
        attrs = _attrs(step.node)
        if "size" not in attrs or attrs["size"] < 1 or attrs["size"] % 2 == 0:
            raise ConversionError(f"{path}: {_describe(step.node)} has size={attrs.get('size')}; "
                                  "expected a positive odd size")
        found.append({"lrn_convention": "caffe", "lrn_k": _f32(attrs.get("bias", 1.0)),
                      "lrn_alpha": _f32(attrs.get("alpha", 1e-4)), "lrn_beta": _f32(attrs.get("beta", 0.75)),
                      "lrn_size": int(attrs["size"])})
    if any(f != found[0] for f in found):
        raise ConversionError(f"{path}: the LRN nodes differ ({found}); expected one setting for norm1 and norm2")
    return found[0]


def _f32(value: float) -> float:
    """The shortest decimal that is the same float32 (1e-4, not 9.999999747378752e-05)."""
    return float(str(np.float32(value)))


def _same(got: dict[str, Any], want: dict[str, Any], what: str, path: Path) -> None:
    wrong = {k: got[k] for k in want if got[k] != want[k]}
    if wrong:
        raise ConversionError(f"{path}: {what} has {wrong}; expected {({k: want[k] for k in wrong})}")


# ---- weights -------------------------------------------------------------------------------------

def _detect_arch(constants: dict[str, Any]) -> str:
    bvlc = {name for names in _BVLC_NAMES.values() for name in names}
    return "alexnet" if bvlc & set(constants) else "alexnet_owt"


def _check_name(name: str, key: str, arch: str, path: Path) -> None:
    """A parameter's initializer name must be the one the layout's table gives for ``key`` (or our
    own name, or an exporter's opaque name, which only its node's place explains)."""
    table = _BVLC_NAMES if arch == "alexnet" else _TORCHVISION_NAMES
    if name in table[key] or name == key or name.startswith(_OPAQUE_PREFIX):
        return
    raise ConversionError(f"{path}: {key} reads initializer {name!r}; expected {' or '.join(table[key])}")


def _tensor(name: str, key: str, transposed: bool, constants: dict[str, Any],
            expected: dict[str, Tensor], path: Path) -> Tensor:
    array = _array(constants[name], path)
    if not np.issubdtype(array.dtype, np.floating):
        raise ConversionError(f"{path}: initializer {name!r} ({key}) is {array.dtype}; expected floating point")
    if transposed:
        array = array.T
    want = tuple(expected[key].shape)
    if array.shape != want:
        raise ConversionError(f"{path}: initializer {name!r} ({key}) has shape {array.shape}"
                              f"{' once transposed' if transposed else ''}; expected {want}")
    return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))


def _state_dict(matched: dict[str, _Step], arch: str, constants: dict[str, Any], path: Path) -> dict[str, Tensor]:
    with torch.device("meta"):
        expected = AlexNet(ARCHS[arch]).state_dict()
    out: dict[str, Tensor] = {}
    for layer in _LEARNED:
        step = matched[layer]
        for leaf, name in (("weight", step.weight), ("bias", step.bias)):
            key = f"{layer}.{leaf}"
            if not name:
                raise ConversionError(f"{path}: {_describe(step.node)} ({layer}) has no {leaf}; expected {key}")
            _check_name(name, key, arch, path)
            out[key] = _tensor(name, key, step.transposed and leaf == "weight", constants, expected, path)
    return out


# ---- entry point ---------------------------------------------------------------------------------

def convert_onnx(path: str | PathLike, arch: str | None = None) -> Converted:
    """Read an AlexNet ONNX file into our parameter names, checking every node and shape.

    ``arch`` ("alexnet" or "alexnet_owt") defaults to what the initializer names say: BVLC's
    names mean ``alexnet``, anything else ``alexnet_owt``. Raises ConversionError naming the
    node or initializer that differs from that architecture.
    """
    path = Path(path)
    model = _load(path)
    graph = model.graph
    constants = _constants(graph)
    arch = arch or _detect_arch(constants)
    if arch not in ARCHS:
        raise ConversionError(f"{path}: unknown architecture {arch!r}; expected one of {sorted(ARCHS)}")
    matched = _match(_chain(graph, constants, path), arch, path)
    config = ARCHS[arch]
    for i in range(5):
        _check_conv(matched[f"conv{i + 1}"], i, config, path)
    for name in ("pool1", "pool2", "pool5"):
        _check_pool(matched[name], name, arch, path)
    if "flatten" in matched:
        _check_flatten(matched["flatten"].node, config.widths[4] * 36, constants, path)
    implied = _lrn_config([matched["norm1"], matched["norm2"]], path) if arch == "alexnet" else {}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    layout = "BVLC/Caffe2" if arch == "alexnet" else "torchvision"
    return Converted(arch=arch, state_dict=_state_dict(matched, arch, constants, path), config=implied,
                     source=f"{path.name}: ONNX opset {opset}, {layout} layout, producer "
                            f"{model.producer_name or 'unknown'!r}")
