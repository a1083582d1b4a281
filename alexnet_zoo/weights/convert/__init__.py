"""Converters from upstream weight files (ONNX, Caffe, torchvision) to alexnet_zoo state dicts.

Each converter reads what its file says and never assumes: layer names are mapped explicitly,
every shape is checked against the target model, and attributes that change the computation
(groups, padding, strides, LRN constants) are read and either mapped to the config or refused
with a :class:`~alexnet_zoo.errors.ConversionError` naming them.

``convert_file`` picks the converter by suffix; each converter returns a :class:`Converted`.
May import: models, ops and the foundation modules.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from alexnet_zoo.errors import ConversionError
from alexnet_zoo.weights.convert.converted import Converted

__all__ = ["Converted", "convert_file"]

# suffix -> the architecture such files hold (None: the file says, as ONNX graphs do)
_SUFFIX_ARCH = {".onnx": None, ".caffemodel": "alexnet", ".pth": "alexnet_owt", ".pt": "alexnet_owt"}


def convert_file(path: str | PathLike, arch: str | None = None) -> Converted:
    """Convert an upstream weight file, chosen by suffix: ``.onnx`` (BVLC or torchvision graph),
    ``.caffemodel`` (BVLC Caffe) or ``.pth`` / ``.pt`` (torchvision state dict). ``arch`` is what
    the caller expects; a file holding another architecture raises ConversionError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIX_ARCH:
        raise ConversionError(f"{path}: unknown weight file type {suffix or '(no suffix)'!r}; expected "
                              f"{', '.join(_SUFFIX_ARCH)}")
    holds = _SUFFIX_ARCH[suffix]
    if arch is not None and holds is not None and arch != holds:
        raise ConversionError(f"{path}: {suffix} files hold {holds} weights, not {arch}")
    # imported here: each converter pulls in its reader (onnx's protobuf, the Caffe schema) only when used
    if suffix == ".onnx":
        from alexnet_zoo.weights.convert.from_onnx import convert_onnx
        return convert_onnx(path, arch)
    if suffix == ".caffemodel":
        from alexnet_zoo.weights.convert.from_caffe import convert_caffemodel
        return convert_caffemodel(path)
    from alexnet_zoo.weights.convert.from_torchvision import convert_torchvision
    return convert_torchvision(path)
