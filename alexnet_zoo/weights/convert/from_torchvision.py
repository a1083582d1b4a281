"""torchvision -> alexnet_zoo: ``alexnet-owt-7be5be79.pth`` and other torchvision AlexNet state dicts.

Why a converter for a PyTorch file: torchvision names layers by their index in ``features`` and
``classifier``, ours by the paper's names, and a ``.pth`` is a pickle. It is opened only with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers, so a
hostile file cannot run code.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alexnet_zoo.errors import ConversionError
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.config import OWT
from alexnet_zoo.weights.convert.converted import Converted

__all__ = ["TORCHVISION_KEYS", "convert_torchvision", "load_torchvision_state_dict", "remap_torchvision_state_dict"]

# torchvision.models.alexnet key prefix -> ours: features.{0,3,6,8,10}, classifier.{1,4,6}
TORCHVISION_KEYS = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3",
                     "features.8": "conv4", "features.10": "conv5", "classifier.1": "fc6",
                     "classifier.4": "fc7", "classifier.6": "fc8"}
_WRAPPERS = ("model", "state_dict")  # torchvision's reference recipe saves {"model": ..., "optimizer": ...}


def _load(path: Path) -> Any:
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # what weights_only raises for code or unknown classes
        raise ConversionError(f"{path}: not a plain state dict (a pickled model? save model.state_dict() "
                              f"instead): {e}") from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise ConversionError(f"{path}: not a readable torch checkpoint ({e})") from e


def _state_dict(obj: Any, path: Path) -> Mapping[str, Tensor]:
    """The bare state dict, or the one a checkpoint keeps under "model" / "state_dict"."""
    if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        obj = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), obj)
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: expected a state dict of tensors (features.0.weight, ...), "
                              f"got {type(obj).__name__}")
    return obj


def convert_torchvision(path: str | PathLike) -> Converted:
    """Read a torchvision ``alexnet`` state dict (bare, or under "model" in a recipe checkpoint)
    into our names for ``alexnet_owt``, every key and shape checked, as float32."""
    path = Path(path)
    state = _state_dict(_load(path), path)
    with torch.device("meta"):
        model = AlexNet(OWT)
    try:
        mapped = remap_torchvision_state_dict(state, model)
    except (KeyError, ValueError) as e:
        raise ConversionError(f"{path}: {e.args[0]}") from e
    out: dict[str, Tensor] = {}
    for key, value in mapped.items():
        if not value.is_floating_point():
            raise ConversionError(f"{path}: {key} is {value.dtype}; expected floating point")
        out[key] = value.detach().to(torch.float32).contiguous()
    return Converted(arch="alexnet_owt", state_dict=out, config={},
                     source=f"{path.name}: torchvision AlexNet state dict")


def remap_torchvision_state_dict(state_dict: Mapping[str, Tensor], model: AlexNet) -> dict[str, Tensor]:
    """torchvision ``alexnet`` keys -> ours, every key accounted for and every shape checked."""
    expected = model.state_dict()
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix not in TORCHVISION_KEYS:
            raise KeyError(f"unexpected key {key!r} in a torchvision AlexNet state dict")
        ours = f"{TORCHVISION_KEYS[prefix]}.{leaf}"
        if ours not in expected:
            raise KeyError(f"{key!r} -> {ours!r} has no place in this model")
        if tuple(value.shape) != tuple(expected[ours].shape):
            raise ValueError(f"{key!r} has shape {tuple(value.shape)}, but {ours!r} needs "
                             f"{tuple(expected[ours].shape)}")
        out[ours] = value
    missing = sorted(set(expected) - set(out))
    if missing:
        raise KeyError(f"the torchvision state dict lacks {', '.join(missing)}")
    return out


def load_torchvision_state_dict(model: AlexNet, state_dict: Mapping[str, Tensor]) -> AlexNet:
    """Load ``torchvision.models.alexnet().state_dict()`` into an ``alexnet_owt`` model."""
    model.load_state_dict(remap_torchvision_state_dict(state_dict, model))
    return model
