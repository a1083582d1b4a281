"""alexnet_zoo: the 2012 AlexNet of Krizhevsky, Sutskever and Hinton, exact and fast."""

from alexnet_zoo.config import OWT, PAPER, AlexNetConfig
from alexnet_zoo.factory import alexnet, alexnet_owt, create_model
from alexnet_zoo.lrn import LocalResponseNorm, local_response_norm
from alexnet_zoo.model import (AlexNet, AlexNetFeatures, DenseAlexNet, PretrainedCfg, load_torchvision_state_dict,
                               remap_torchvision_state_dict)

__all__ = ["AlexNet", "AlexNetConfig", "AlexNetFeatures", "DenseAlexNet", "LocalResponseNorm", "OWT", "PAPER",
           "PretrainedCfg", "alexnet", "alexnet_owt", "create_model", "get_weight_spec", "list_pretrained",
           "load_torchvision_state_dict", "local_response_norm", "remap_torchvision_state_dict", "save_pretrained"]
__version__ = "0.1.0"

_WEIGHTS_API = {"get_weight_spec": "alexnet_zoo.weights", "list_pretrained": "alexnet_zoo.weights",
                "save_pretrained": "alexnet_zoo.pretrained"}


def __getattr__(name: str):
    """The weights API (huggingface_hub, filelock, safetensors) is imported on first use, so
    ``import alexnet_zoo`` stays as light as torch itself."""
    if name in _WEIGHTS_API:
        import importlib

        return getattr(importlib.import_module(_WEIGHTS_API[name]), name)
    raise AttributeError(f"module 'alexnet_zoo' has no attribute {name!r}")
