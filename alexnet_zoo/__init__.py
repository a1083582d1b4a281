"""alexnet_zoo: the 2012 AlexNet of Krizhevsky, Sutskever and Hinton, exact and fast.

Every public name below is imported on first use, so ``import alexnet_zoo`` costs nothing beyond
Python itself, and ``from alexnet_zoo import alexnet`` loads the model's modules, not the Hub
client, Pillow's decoders or FAISS. Where each name lives: README.md, "Where things live".
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_NAMES = {
    "alexnet_zoo.factory": ("alexnet", "alexnet_owt", "create_model"),
    "alexnet_zoo.models.config": ("AlexNetConfig", "OWT", "PAPER"),
    "alexnet_zoo.models.alexnet": ("AlexNet", "AlexNetFeatures", "DenseAlexNet"),
    "alexnet_zoo.models.pretrained_cfg": ("PretrainedCfg",),
    "alexnet_zoo.ops.lrn": ("LocalResponseNorm", "local_response_norm"),
    "alexnet_zoo.weights.convert.from_torchvision": ("load_torchvision_state_dict", "remap_torchvision_state_dict"),
    "alexnet_zoo.weights.specs": ("get_weight_spec", "list_pretrained"),
    "alexnet_zoo.weights.store": ("save_pretrained",),
    "alexnet_zoo.data.images": ("load_image",),
    "alexnet_zoo.retrieval.features": ("FeatureExtractor",),
    "alexnet_zoo.retrieval.index": ("VectorIndex",),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}
__all__ = [
    "OWT",
    "PAPER",
    "AlexNet",
    "AlexNetConfig",
    "AlexNetFeatures",
    "DenseAlexNet",
    "FeatureExtractor",
    "LocalResponseNorm",
    "PretrainedCfg",
    "VectorIndex",
    "alexnet",
    "alexnet_owt",
    "create_model",
    "get_weight_spec",
    "list_pretrained",
    "load_image",
    "load_torchvision_state_dict",
    "local_response_norm",
    "remap_torchvision_state_dict",
    "save_pretrained",
]  # = the names of _NAMES (tests/test_layout.py)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports these on first use
    from alexnet_zoo.data.images import load_image
    from alexnet_zoo.factory import alexnet, alexnet_owt, create_model
    from alexnet_zoo.models.alexnet import AlexNet, AlexNetFeatures, DenseAlexNet
    from alexnet_zoo.models.config import OWT, PAPER, AlexNetConfig
    from alexnet_zoo.models.pretrained_cfg import PretrainedCfg
    from alexnet_zoo.ops.lrn import LocalResponseNorm, local_response_norm
    from alexnet_zoo.retrieval.features import FeatureExtractor
    from alexnet_zoo.retrieval.index import VectorIndex
    from alexnet_zoo.weights.convert.from_torchvision import load_torchvision_state_dict, remap_torchvision_state_dict
    from alexnet_zoo.weights.specs import get_weight_spec, list_pretrained
    from alexnet_zoo.weights.store import save_pretrained


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'alexnet_zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
