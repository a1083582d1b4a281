"""What every converter returns: the architecture, the state dict in our names, the config it implies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["Converted"]


@dataclass(frozen=True)
class Converted:
    """The result of a conversion: which builder, the state dict in our names, and the config
    fields the source implies (e.g. ``{"lrn_convention": "caffe", "lrn_k": 1.0}`` for BVLC)."""

    arch: str  # "alexnet" or "alexnet_owt"
    state_dict: dict[str, Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # what was read, for provenance in config.json
