"""AlexNet in int8: post-training static quantization, built from stored integers, no observers.

The network is held as plain tensors (our saved format: ``model.safetensors`` beside the fp32
config): per conv / fc layer the int8 weight, one fp32 scale per output channel (symmetric,
zero point 0) and the fp32 bias, and per activation the (scale, zero point) of its quint8 form.
Loading packs those into torch's eager quantized modules (``torch.ao.nn.quantized``, the x86
engine: fbgemm on AVX2, oneDNN VNNI/AMX kernels where the CPU has them), ReLU fused into each conv
and fc6/fc7: nothing is calibrated, traced or compiled on load.

What stays exact: max pooling runs on quint8 (it commutes with the monotone dequantisation), and
LRN runs in fp32 at a dequantised boundary through the same fused LRN + pooling kernel as the fp32
model, then is requantised (``norm1``, ``norm2``). fc8 is a dynamically quantised layer with fp32
logits, so ranking classes is not limited to 256 levels. Activations use 7-bit ranges (torch's
``reduce_range`` for x86): on CPUs without VNNI the u8 x s8 pair sums cannot saturate, so every
CPU computes the same numbers.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn.functional as F
from torch import Tensor, nn

from alexnet_zoo.errors import WeightsError
from alexnet_zoo.models.alexnet import LAYERS, check_images, min_input_size, to_6x6
from alexnet_zoo.models.config import ARCHS, AlexNetConfig, arch_of
from alexnet_zoo.models.pretrained_cfg import PretrainedCfg, feature_info
from alexnet_zoo.ops.capabilities import cpu_capabilities
from alexnet_zoo.ops.pooling import lrn_pool_quint8
from alexnet_zoo.ops.quint8 import block_geometry, blocks_apply, quantize_input, quantize_input_blocks

__all__ = ["QENGINES", "QuantizedAlexNet", "activation_points", "int8_tensor_specs", "pick_qengine"]

# torch 2.14 marks its quantized tensor types deprecated on every creation; they are this engine's
# working format, never stored (the saved file holds plain int8 / fp32 tensors), so the notice says
# nothing a user can act on
warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other "
                                          r"quantized tensor creation", category=UserWarning)

QENGINES = ("x86", "fbgemm", "onednn", "qnnpack")  # preferred first
_WEIGHTED = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
_MAX_ZERO_POINT = 255
_MIN_SCALE, _MAX_SCALE = 1e-30, 1e30  # finite, and 1 / scale too


def activation_points(config: AlexNetConfig) -> tuple[str, ...]:
    """The quantised activations, in network order: the input, each conv / fc6 / fc7 output after
    ReLU, and after LRN + pooling (``norm1``, ``norm2``) where the config has LRN."""
    norm = config.lrn
    return ("input", "conv1", *(("norm1",) if norm else ()), "conv2", *(("norm2",) if norm else ()),
            "conv3", "conv4", "conv5", "fc6", "fc7")


def int8_tensor_specs(config: AlexNetConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, safetensors dtype) of every tensor an int8 ``model.safetensors`` holds for
    ``config``, by arithmetic, so a file's header can be checked before anything is read."""
    specs: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, shape in config.parameter_shapes().items():
        layer, _, kind = name.partition(".")
        specs[name] = (shape, "I8" if kind == "weight" else "F32")
        if kind == "weight":
            specs[f"{layer}.weight_scale"] = ((shape[0],), "F32")
    for point in activation_points(config):
        specs[f"{point}.scale"], specs[f"{point}.zero_point"] = ((), "F32"), ((), "I64")
    return specs


def pick_qengine(preferred: str | None = None) -> str:
    """``preferred`` where this torch supports it, else the first of QENGINES it does."""
    supported = torch.backends.quantized.supported_engines
    if preferred in supported:
        return preferred
    for engine in QENGINES:
        if engine in supported:
            return engine
    raise RuntimeError(f"this torch build has no quantized engine (it supports {supported}); int8 needs one of "
                       f"{', '.join(QENGINES)}")


@contextlib.contextmanager
def _engine(name: str) -> Iterator[None]:
    """Weights are packed for the engine current at packing time; the global setting is restored."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


@functools.cache
def _warn_slow_int8() -> None:
    caps = cpu_capabilities()
    warnings.warn("alexnet_zoo: int8 was requested but this CPU has no AVX2 (or the quantized engine is not x86's), "
                  "so torch's reference int8 kernels compute it: results are correct, but slower than fp32. "
                  f"CPU: {caps.summary()}", RuntimeWarning, stacklevel=3)


class QuantizedAlexNet(nn.Module):
    """An int8 AlexNet with the fp32 model's inference API: ``forward``, ``forward_features``,
    ``forward_head``, ``extract`` (fc7 and every other layer, dequantised to fp32).

    ``tensors``: the stored format (:func:`int8_tensor_specs`); every value is checked (scales
    positive and finite, zero points in [0, 255]) and a bad one raises :class:`WeightsError`
    naming ``where``. ``quantization``: how it was made (engine, calibration), saved with it."""

    precision = "int8"

    def __init__(self, config: AlexNetConfig, tensors: Mapping[str, Tensor], *, arch: str | None = None,
                 quantization: Mapping[str, Any] | None = None, where: str = "int8 weights") -> None:
        super().__init__()
        if arch is not None and arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}")
        self.config = config
        self.arch = arch if arch is not None else arch_of(config)
        self.quantization = dict(quantization or {})
        for name, value in _checked(config, tensors, where).items():
            self.register_buffer(name.replace(".", "__"), value)
        self.num_features = config.hidden
        self.min_input_size = min_input_size(config)
        self.preprocessing = None  # set by the builders, as on AlexNet
        self.pretrained_cfg = PretrainedCfg.describe(self.arch, config)  # the builders record the weights'
        self.qengine = pick_qengine(self.quantization.get("qengine"))
        self._packed: dict[str, nn.Module] | None = None  # engine modules, built on first use, never saved
        self._conv1_blocks: nn.Module | None = None  # conv1 in space-to-depth form, packed with them

    # -- the stored tensors, by their saved names
    def tensor(self, name: str) -> Tensor:
        """A stored tensor by its name in ``model.safetensors`` (``conv1.weight``, ``fc7.scale``)."""
        return getattr(self, name.replace(".", "__"))

    def int8_state(self) -> dict[str, Tensor]:
        """The tensors to save, by their names in ``model.safetensors``."""
        return {name.replace("__", "."): t for name, t in self.named_buffers()}

    def dequantized_weight(self, layer: str) -> Tensor:
        """``layer``'s weight as the int8 model computes with it, in fp32 (int8 x its channel's scale)."""
        q, scales = self.tensor(f"{layer}.weight"), self.tensor(f"{layer}.weight_scale")
        return q.float() * scales.view((-1,) + (1,) * (q.dim() - 1))

    def _qparams(self, point: str) -> tuple[float, int]:
        return float(self.tensor(f"{point}.scale")), int(self.tensor(f"{point}.zero_point"))

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        return feature_info(self.config)

    # -- packing for the engine
    def packed_layers(self) -> dict[str, nn.Module]:
        """The conv / fc layers as torch's quantized modules for this model's engine, packed from
        the stored integers on first use (TorchScript export registers them to trace them)."""
        if self._packed is None:
            if self.qengine not in ("x86", "fbgemm", "onednn") or not cpu_capabilities().avx2:
                _warn_slow_int8()
            with _engine(self.qengine):
                self._packed = {name: self._pack(name) for name in _WEIGHTED if f"{name}.weight" in self.int8_state()}
                c = self.config  # conv1 in space-to-depth form too (conv1_input): not a stored layer, not exported
                self._conv1_blocks = self._pack_conv1_blocks() if c.conv1_stride > 1 and c.groups[0] == 1 else None
        return self._packed

    def _pack_conv1_blocks(self) -> nn.Module:
        """conv1 as the stride-1 convolution of its space-to-depth input (ops.quint8.quantize_input_blocks):
        the kernel zero-padded to a multiple of the stride, each stride x stride x C block one input
        channel. The same integers meet the same weights, so its output bytes are conv1's."""
        q, scales, s = self.tensor("conv1.weight"), self.tensor("conv1.weight_scale"), self.config.conv1_stride
        cout, cin, k = q.shape[0], q.shape[1], q.shape[2]
        kb = block_geometry(k, k, s, 0)[1]
        padded = F.pad(q, (0, kb * s - k, 0, kb * s - k)).view(cout, cin, kb, s, kb, s)
        blocks = padded.permute(0, 3, 5, 1, 2, 4).reshape(cout, s * s * cin, kb, kb)
        weight = torch.quantize_per_channel(blocks.double().mul(scales.double().view(-1, 1, 1, 1)).float(),
                                            scales.double(), torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
        module = nniq.ConvReLU2d(s * s * cin, cout, kb)
        module.set_weight_bias(weight, self.tensor("conv1.bias"))
        module.scale, module.zero_point = self._qparams("conv1")
        return module

    def conv1_input(self, x: Tensor) -> tuple[Tensor, nn.Module]:
        """The input quantised for conv1, and the packed conv1 (+ ReLU) to run on it: in space-to-
        depth form where the native kernel writes that layout (output bytes equal to the direct
        form's, the int8 kernels faster), else directly, channels-last."""
        packed, c = self.packed_layers(), self.config
        if self._conv1_blocks is not None and blocks_apply(x, c.kernels[0], c.conv1_stride, c.paddings[0]):
            blocks = quantize_input_blocks(x, *self._qparams("input"), c.kernels[0], c.conv1_stride, c.paddings[0])
            return blocks, self._conv1_blocks
        return quantize_input(x, *self._qparams("input")), packed["conv1"]

    def _pack(self, name: str) -> nn.Module:
        q, scales = self.tensor(f"{name}.weight"), self.tensor(f"{name}.weight_scale")
        bias = self.tensor(f"{name}.bias")
        dims = (-1,) + (1,) * (q.dim() - 1)
        weight = torch.quantize_per_channel(q.double().mul(scales.double().view(dims)).float(), scales.double(),
                                            torch.zeros(len(scales), dtype=torch.long), 0, torch.qint8)
        if name == "fc8":  # fp32 logits: the input is quantised per batch, the output is not
            module: nn.Module = nnqd.Linear(q.shape[1], q.shape[0], dtype=torch.qint8)
            module.set_weight_bias(weight, bias)
            return module
        if name.startswith("conv"):
            i = int(name[-1]) - 1
            c = self.config
            module = nniq.ConvReLU2d(q.shape[1] * c.groups[i], q.shape[0], c.kernels[i], padding=c.paddings[i],
                                     stride=c.conv1_stride if i == 0 else 1, groups=c.groups[i])
        else:
            module = nniq.LinearReLU(q.shape[1], q.shape[0])
        module.set_weight_bias(weight, bias)
        module.scale, module.zero_point = self._qparams(name)
        return module

    # -- forward
    def _check_input(self, x: Tensor) -> None:
        check_images(x, self.config.in_chans, self.min_input_size)
        if x.device.type != "cpu":
            raise ValueError(f"int8 inference runs on the CPU; this input is on {x.device}")

    def _quantize(self, x: Tensor, point: str) -> Tensor:
        return quantize_input(x, *self._qparams(point))  # the torch operation for a pool5 map, NaN refused

    def _norm_pool(self, a: Tensor, i: int) -> Tensor:
        """Pooling after conv ``i``: LRN in fp32 at a dequantised boundary, or max pooling on quint8."""
        c = self.config
        if not c.lrn:
            return F.max_pool2d(a, 3, 2, ceil_mode=c.pool_ceil)
        lrn = (c.lrn_size, c.lrn_alpha, c.lrn_beta, c.lrn_k, c.lrn_convention)
        return lrn_pool_quint8(a, c.pool_ceil, lrn, *self._qparams(f"norm{i}"))

    def _stages(self, x: Tensor, last: str) -> Iterator[tuple[str, Tensor]]:
        """(layer, quint8 activation after ReLU) for conv1..fc7 and pool5, stopping after ``last``;
        fc8 yields fp32 logits."""
        self._check_input(x)
        packed = self.packed_layers()
        a, conv1 = self.conv1_input(x)
        for i in range(1, 6):
            a = (conv1 if i == 1 else packed[f"conv{i}"])(a)
            yield f"conv{i}", a
            if f"conv{i}" == last:
                return
            if i in (1, 2):
                a = self._norm_pool(a, i)
        a = to_6x6(F.max_pool2d(a, 3, 2, ceil_mode=self.config.pool_ceil))
        yield "pool5", a
        yield from self._head(a, last)

    def _head(self, a: Tensor, last: str) -> Iterator[tuple[str, Tensor]]:
        packed = self.packed_layers()
        a = torch.flatten(a.contiguous(), 1)
        for name in ("fc6", "fc7"):
            if LAYERS.index(name) > LAYERS.index(last):
                return
            a = packed[name](a)
            yield name, a
        if last == "fc8":
            yield "fc8", packed["fc8"](a.dequantize()) if "fc8" in packed else a.dequantize()

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (N, 3, H, W) -> the pool5 map (N, 256, 6, 6), dequantised."""
        return dict(self._stages(x, "pool5"))["pool5"].dequantize()

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """pool5 map (fp32) -> logits, or the fc7 activations with ``pre_logits=True``."""
        out = dict(self._head(self._quantize(x, "conv5"), "fc7" if pre_logits else "fc8"))
        return out["fc7"].dequantize() if pre_logits else out["fc8"]

    def forward(self, x: Tensor) -> Tensor:
        return self.extract(x, ("fc8",))["fc8"]

    def extract(self, x: Tensor, layers: Iterable[str] = ("conv5", "fc7"), *, relu: bool = True) -> dict[str, Tensor]:
        """Named activations as :meth:`AlexNet.extract` gives them, dequantised to fp32. Layers
        are taken after their ReLU only: int8 fuses it into each layer (``relu=False`` is refused)."""
        wanted = tuple(dict.fromkeys(layers))
        unknown = [name for name in wanted if name not in LAYERS]
        if unknown or not wanted:
            raise ValueError(f"unknown layer(s) {unknown or '(none asked)'}; choose from {', '.join(LAYERS)}")
        if not relu:
            raise ValueError("an int8 model fuses ReLU into its layers: pre-ReLU activations need the fp32 model")
        last = max(wanted, key=LAYERS.index)
        return {name: a if name == "fc8" else a.dequantize() for name, a in self._stages(x, last) if name in wanted}

    def to_dense(self) -> nn.Module:
        raise ValueError("dense evaluation is not available in int8: evaluate the fp32 weights for that protocol")


def _checked(config: AlexNetConfig, tensors: Mapping[str, Tensor], where: str) -> dict[str, Tensor]:
    """The tensors, their names, shapes, dtypes and values checked against ``config``."""
    dtypes = {"I8": torch.int8, "F32": torch.float32, "I64": torch.int64}
    specs = int8_tensor_specs(config)
    problems = [f"{k} missing" for k in specs if k not in tensors]
    problems += [f"{k} unexpected" for k in tensors if k not in specs]
    problems += [f"{k} is {tuple(tensors[k].shape)} {tensors[k].dtype}, expected {shape} {dtypes[dt]}"
                 for k, (shape, dt) in specs.items()
                 if k in tensors and (tuple(tensors[k].shape) != shape or tensors[k].dtype != dtypes[dt])]
    if not problems:
        for name, t in tensors.items():
            if name.endswith("scale") and not bool(((t >= _MIN_SCALE) & (t <= _MAX_SCALE)).all()):
                problems.append(f"{name} must be in [{_MIN_SCALE:g}, {_MAX_SCALE:g}]")
            elif name.endswith(".zero_point") and not 0 <= int(t) <= _MAX_ZERO_POINT:
                problems.append(f"{name} must be in [0, {_MAX_ZERO_POINT}], got {int(t)}")
            elif name.endswith(".bias") and not bool(torch.isfinite(t).all()):
                problems.append(f"{name} must be finite")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise WeightsError(f"{where}: not int8 AlexNet weights for this config: {'; '.join(problems[:5])}{more}")
    return {k: tensors[k].clone() for k in specs}
