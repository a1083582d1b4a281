"""alexnet_zoo: the 2012 AlexNet of Krizhevsky, Sutskever and Hinton, exact and fast."""

from alexnet_zoo.config import OWT, PAPER, AlexNetConfig
from alexnet_zoo.lrn import LocalResponseNorm, local_response_norm
from alexnet_zoo.model import (AlexNet, DenseAlexNet, alexnet, alexnet_owt, load_torchvision_state_dict,
                               remap_torchvision_state_dict)

__all__ = ["AlexNet", "AlexNetConfig", "DenseAlexNet", "LocalResponseNorm", "OWT", "PAPER", "alexnet",
           "alexnet_owt", "load_torchvision_state_dict", "local_response_norm", "remap_torchvision_state_dict"]
__version__ = "0.1.0"
