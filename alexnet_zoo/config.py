"""Architecture configurations: every choice that distinguishes one AlexNet from another, named.

A config is plain data (it round-trips through JSON for ``config.json`` beside saved weights), so a
model is fully described by it: the paper's two-tower network, the BVLC/Caffe variant of it, and
torchvision's one-tower "one weird trick" layout are three values of the same dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from alexnet_zoo.lrn import LRNConvention

__all__ = ["AlexNetConfig", "PAPER", "OWT"]

InitScheme = Literal["paper", "caffe", "torch"]
DropoutPlacement = Literal["after_relu", "before_fc"]


@dataclass(frozen=True)
class AlexNetConfig:
    """One AlexNet variant. Defaults are the paper's network (section 3.5)."""

    widths: tuple[int, ...] = (96, 256, 384, 384, 256)  # conv1..conv5 output channels
    groups: tuple[int, ...] = (1, 2, 1, 2, 2)  # 2 = the two-GPU towers (conv3 sees both)
    kernels: tuple[int, ...] = (11, 5, 3, 3, 3)
    paddings: tuple[int, ...] = (0, 2, 1, 1, 1)  # torchvision pads conv1 by 2
    conv1_stride: int = 4
    pool_ceil: bool = True  # Caffe rounds pooling up: 227 and 224 both reach 6x6 at pool5
    lrn: bool = True  # after ReLU of conv1 and conv2 (section 3.3)
    lrn_size: int = 5
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    lrn_k: float = 2.0  # the paper; BVLC's weights were trained with k=1
    lrn_convention: LRNConvention = "paper"  # "paper": alpha * sum; "caffe": alpha / size * sum
    hidden: int = 4096  # fc6, fc7
    dropout: float = 0.5
    dropout_placement: DropoutPlacement = "after_relu"  # paper/Caffe; torchvision drops before fc6, fc7
    init: InitScheme = "paper"  # "caffe": std 0.005 for fc6/fc7, biases 0.1; "torch": nn defaults
    num_classes: int = 1000
    in_chans: int = 3
    input_size: int = 227  # the geometry the weights were trained on; other sizes work too
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance, ignored by the model

    def __post_init__(self) -> None:
        for name in ("widths", "groups", "kernels", "paddings"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != 5:
                raise ValueError(f"AlexNetConfig.{name} needs one entry per conv layer (5), got {value}")
        chans = (self.in_chans, *self.widths)
        for i, g in enumerate(self.groups):
            if g < 1 or chans[i] % g or chans[i + 1] % g:
                raise ValueError(f"conv{i + 1}: groups={g} must divide its {chans[i]} input and "
                                 f"{chans[i + 1]} output channels")
        if self.lrn_convention not in ("paper", "caffe"):
            raise ValueError(f"lrn_convention must be 'paper' or 'caffe', got {self.lrn_convention!r}")
        if self.init not in ("paper", "caffe", "torch"):
            raise ValueError(f"init must be 'paper', 'caffe' or 'torch', got {self.init!r}")
        if self.dropout_placement not in ("after_relu", "before_fc"):
            raise ValueError(f"dropout_placement must be 'after_relu' or 'before_fc', got {self.dropout_placement!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = no classifier), got {self.num_classes}")

    def replace(self, **changes: Any) -> AlexNetConfig:
        """A copy with some fields changed; unknown names raise TypeError naming them."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown AlexNet config field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlexNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise, so a newer file is not half-read."""
        return cls().replace(**data)


PAPER = AlexNetConfig()
OWT = AlexNetConfig(widths=(64, 192, 384, 256, 256), groups=(1, 1, 1, 1, 1), paddings=(2, 2, 1, 1, 1),
                    pool_ceil=False, lrn=False, dropout_placement="before_fc", init="torch", input_size=224)
