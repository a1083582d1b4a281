"""Caffe -> alexnet_zoo: BVLC's ``bvlc_alexnet.caffemodel``, read without Caffe or generated code.

Why a hand-written reader: a ``.caffemodel`` is a protobuf ``NetParameter``, but only a handful of
its fields hold weights, and generating bindings from ``caffe.proto`` (or installing Caffe) for
them would be a heavy dependency for a one-off read. The protobuf wire format is small: varints,
length-delimited fields, fixed 32/64-bit values, and repeated numbers packed or one per record.

Fields read (numbers from caffe.proto): NetParameter.layer (100, LayerParameter: name 1, type 2,
blobs 7), the legacy NetParameter.layers (2, V1LayerParameter: name 4, type 5, blobs 6, and the
older V0LayerParameter in its field 1: name 1, type 2, blobs 50); BlobProto: shape 7 (BlobShape.dim
1), legacy num/channels/height/width 1..4, data 5 (float), double_data 8. Everything else is
skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from alexnet_zoo.errors import ConversionError
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import PAPER
from alexnet_zoo.weights.convert.converted import Converted

__all__ = ["convert_caffemodel"]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

# BVLC layer name -> (our layer, the layer types it may have in the V2 / V1 / V0 formats)
_CONV = ("Convolution", 4, "conv")  # V1LayerParameter.LayerType.CONVOLUTION = 4
_FC = ("InnerProduct", 14, "innerproduct")  # INNER_PRODUCT = 14
_LAYERS = {"conv1": ("conv1", _CONV), "conv2": ("conv2", _CONV), "conv3": ("conv3", _CONV),
           "conv4": ("conv4", _CONV), "conv5": ("conv5", _CONV), "fc6": ("fc6", _FC),
           "fc7": ("fc7", _FC), "fc8": ("fc8", _FC)}


class _Malformed(Exception):
    """The bytes are not valid protobuf; the caller adds the file name."""


@dataclass(frozen=True)
class _Blob:
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True)
class _Layer:
    name: str
    type: str | int
    blobs: tuple[_Blob, ...]
    format: str  # "layer" (V2), "layers" (V1) or "layers.layer" (V0)


# ---- protobuf wire format ------------------------------------------------------------------------

def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed(f"a varint runs past the end of its message at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Malformed(f"a varint longer than 10 bytes at byte {pos}")


class _Fields:
    """A message's fields, in order: (field number, wire type, value, position of its key), the
    value an int for varints, the start offset for fixed32/64, a (start, end) span for
    length-delimited fields. A reader may move ``pos`` on to consume a run of records at once."""

    def __init__(self, buf: memoryview, start: int, end: int) -> None:
        self.buf, self.pos, self.end = buf, start, end

    def __iter__(self):
        buf, end = self.buf, self.end
        while self.pos < end:
            key_pos = self.pos
            key, pos = _varint(buf, key_pos, end)
            field, wire = key >> 3, key & 7
            if wire == _VARINT:
                value, pos = _varint(buf, pos, end)
            elif wire in (_I64, _I32):
                value, pos = pos, pos + (8 if wire == _I64 else 4)
            elif wire == _LEN:
                length, pos = _varint(buf, pos, end)
                value, pos = (pos, pos + length), pos + length
            else:
                raise _Malformed(f"wire type {wire} (field {field}) at byte {key_pos}: not a message Caffe writes")
            if pos > end or field == 0:
                raise _Malformed(f"field {field} at byte {key_pos} runs past the end of its message (truncated file?)")
            self.pos = pos
            yield field, wire, value, key_pos


def _text(buf: memoryview, span: tuple[int, int]) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Malformed(f"a layer name at byte {span[0]} is not UTF-8") from e


def _packed(buf: memoryview, span: tuple[int, int], dtype: str) -> np.ndarray:
    start, end = span
    width = np.dtype(dtype).itemsize
    if (end - start) % width:
        raise _Malformed(f"packed {dtype} data at byte {start} is {end - start} bytes, not a multiple of {width}")
    return np.frombuffer(buf, dtype, count=(end - start) // width, offset=start)


def _unpacked_run(buf: memoryview, key_pos: int, key_len: int, end: int, dtype: str) -> tuple[np.ndarray, int]:
    """Unpacked repeated fixed-width numbers: the run of records starting at ``key_pos`` with the
    same key, read at once (one float per record would be 60 M Python steps). Returns the values
    and the position after the run."""
    width = np.dtype(dtype).itemsize
    stride = key_len + width
    n = (end - key_pos) // stride
    records = np.frombuffer(buf, np.uint8, count=n * stride, offset=key_pos).reshape(n, stride)
    same = (records[:, :key_len] == records[0, :key_len]).all(axis=1)
    run = n if same.all() else int(np.argmin(same))
    return np.ascontiguousarray(records[:run, key_len:]).view(dtype).ravel(), key_pos + run * stride


def _signed(value: int) -> int:
    """An int32 / int64 field's value: protobuf writes negative numbers as 10-byte two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _varints(buf: memoryview, span: tuple[int, int]) -> list[int]:
    values, pos = [], span[0]
    while pos < span[1]:
        value, pos = _varint(buf, pos, span[1])
        values.append(value)
    return values


# ---- Caffe messages ------------------------------------------------------------------------------

def _blob(buf: memoryview, start: int, end: int) -> _Blob:
    """A BlobProto: its shape (BlobShape, else legacy num/channels/height/width) and values."""
    dims: list[int] = []
    legacy = [0, 0, 0, 0]
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    fields = _Fields(buf, start, end)
    for field, wire, value, key_pos in fields:
        if field == 7 and wire == _LEN:
            for f, w, v, pos in _Fields(buf, *value):
                if f == 1 and w not in (_LEN, _VARINT):
                    raise _Malformed(f"BlobShape.dim at byte {pos} has wire type {w}; expected a varint")
                if f == 1:
                    dims.extend(map(_signed, _varints(buf, v) if w == _LEN else [v]))
        elif 1 <= field <= 4 and wire == _VARINT:
            legacy[field - 1] = _signed(value)
        elif field in (5, 8):
            dtype, chunks = ("<f4", floats) if field == 5 else ("<f8", doubles)
            if wire == _LEN:
                chunks.append(_packed(buf, value, dtype))
            elif wire == (_I32 if field == 5 else _I64):
                run, fields.pos = _unpacked_run(buf, key_pos, value - key_pos, end, dtype)
                chunks.append(run)
            else:
                raise _Malformed(f"BlobProto field {field} at byte {key_pos} has wire type {wire}")
    if floats and doubles:
        raise _Malformed(f"the blob at byte {start} holds both float and double data")
    data = np.concatenate(floats or doubles) if floats or doubles else np.zeros(0, np.float32)
    return _Blob(tuple(dims) if dims else tuple(legacy), data)


def _layer(buf: memoryview, span: tuple[int, int], name_field: int, type_field: int, blobs_field: int,
           fmt: str) -> _Layer:
    name, kind, blobs, v0 = "", "", [], None
    for field, wire, value, key_pos in _Fields(buf, *span):
        if field == name_field and wire == _LEN:
            name = _text(buf, value)
        elif field == type_field:
            if wire not in (_LEN, _VARINT):
                raise _Malformed(f"a layer type at byte {key_pos} has wire type {wire}; expected a string or enum")
            kind = _text(buf, value) if wire == _LEN else value
        elif field == blobs_field and wire == _LEN:
            blobs.append(_blob(buf, *value))
        elif fmt == "layers" and field == 1 and wire == _LEN:
            v0 = _layer(buf, value, 1, 2, 50, "layers.layer")  # a V0 layer nested in a V1 entry
    if v0 is not None and not blobs and not name:
        return v0
    return _Layer(name, kind, tuple(blobs), fmt)


def _layers(buf: memoryview) -> list[_Layer]:
    """NetParameter.layer (V2) and NetParameter.layers (V1/V0) entries, in file order."""
    out = []
    for field, wire, value, _ in _Fields(buf, 0, len(buf)):
        if field == 100 and wire == _LEN:
            out.append(_layer(buf, value, 1, 2, 7, "layer"))
        elif field == 2 and wire == _LEN:
            out.append(_layer(buf, value, 4, 5, 6, "layers"))
    return out


# ---- mapping onto AlexNet ------------------------------------------------------------------------

def _fit(blob: _Blob, want: tuple[int, ...], what: str, path: Path) -> Tensor:
    """The blob as a float32 tensor of shape ``want``. Legacy 4-D shapes pad with leading ones
    ((1, 1, out, in) for a weight matrix, (1, 1, 1, out) for a bias): those are dropped, nothing
    else is reshaped."""
    shape = blob.shape
    if blob.data.size != math.prod(shape):  # exact: numpy's product of int64 dims would wrap around
        raise ConversionError(f"{path}: {what} declares shape {shape} but holds {blob.data.size} values")
    lead = len(shape) - len(want)
    if shape != want and not (lead > 0 and all(d == 1 for d in shape[:lead]) and shape[lead:] == want):
        raise ConversionError(f"{path}: {what} has shape {shape}; expected {want}")
    return torch.from_numpy(np.array(blob.data, dtype=np.float32).reshape(want))


def _state_dict(layers: list[_Layer], path: Path) -> dict[str, Tensor]:
    with torch.device("meta"):
        expected = AlexNet(PAPER).state_dict()
    out: dict[str, Tensor] = {}
    for layer in layers:
        if not layer.blobs:
            continue  # ReLU, pooling, LRN, data, loss: nothing learned
        if layer.name not in _LAYERS:
            raise ConversionError(f"{path}: layer {layer.name!r} ({layer.type}) has learned blobs but is not one of "
                                  f"AlexNet's {', '.join(_LAYERS)}")
        ours, types = _LAYERS[layer.name]
        if layer.type not in types:
            raise ConversionError(f"{path}: layer {layer.name!r} has type {layer.type!r}; expected {types[0]}")
        if f"{ours}.weight" in out:
            raise ConversionError(f"{path}: layer {layer.name!r} appears twice")
        if len(layer.blobs) != 2:
            raise ConversionError(f"{path}: layer {layer.name!r} has {len(layer.blobs)} blobs; "
                                  "expected 2 (weight, bias)")
        for blob, leaf in zip(layer.blobs, ("weight", "bias")):
            key = f"{ours}.{leaf}"
            out[key] = _fit(blob, tuple(expected[key].shape), f"layer {layer.name!r} {leaf} blob", path)
    missing = [name for name, (ours, _) in _LAYERS.items() if f"{ours}.weight" not in out]
    if missing:
        raise ConversionError(f"{path}: no learned blobs for {', '.join(missing)}; expected BVLC AlexNet's "
                              f"{', '.join(_LAYERS)}")
    return out


def convert_caffemodel(path: str | PathLike) -> Converted:
    """Read a BVLC AlexNet ``.caffemodel`` (any of Caffe's three layer formats) into our names.

    The weights say nothing about LRN: its constants live in the prototxt. BVLC's deploy.prototxt
    gives local_size 5, alpha 1e-4, beta 0.75 and Caffe's default k = 1, with alpha divided by
    the size, hence ``config = {"lrn_convention": "caffe", "lrn_k": 1.0}``. conv1 sees BGR,
    mean-subtracted 0-255 input, as in Caffe; channels are not reordered.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    buf = memoryview(path.read_bytes())
    try:
        layers = _layers(buf)
    except _Malformed as e:
        raise ConversionError(f"{path}: not a readable Caffe NetParameter: {e}") from e
    state_dict = _state_dict(layers, path)
    formats = sorted({layer.format for layer in layers if layer.blobs})
    return Converted(arch="alexnet", state_dict=state_dict, config={"lrn_convention": "caffe", "lrn_k": 1.0},
                     source=f"{path.name}: Caffe NetParameter, {len(layers)} layers ({', '.join(formats)} format)")
