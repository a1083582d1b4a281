"""Architecture configurations: every choice that distinguishes one AlexNet from another, named.

A config is plain data (it round-trips through JSON for ``config.json`` beside saved weights), so a
model is fully described by it: the paper's two-tower network, the BVLC/Caffe variant of it, and
torchvision's one-tower "one weird trick" layout are three values of the same dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from alexnet_zoo.data.categories import MAX_CLASSES
from alexnet_zoo.errors import InvalidConfig
from alexnet_zoo.models._fields import Rule, checked_fields
from alexnet_zoo.ops.geometry import LRNConvention, pool_output_size

__all__ = ["ARCHS", "OWT", "PAPER", "POOLED_CONVS", "AlexNetConfig", "arch_of", "feature_sizes"]

_MAX_MIN_INPUT = 1023  # AlexNet searches its smallest usable input below 1024 px

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
    def from_dict(cls, data: Any, *, where: str = "AlexNetConfig", prefix: str = "") -> AlexNetConfig:
        """Inverse of :meth:`to_dict`, for data from a file: every field's type and range is checked
        (bool is no int, NaN no float) and unknown keys raise, so a newer or hostile file is neither
        half-read nor able to ask for an 11 GB layer. Raises :class:`InvalidConfig` naming ``where``
        and ``prefix`` + the field."""
        try:
            config = cls().replace(**checked_fields(cls, data, _CONFIG_RULES, where, prefix))
        except InvalidConfig:
            raise
        except ValueError as err:  # __post_init__: groups that do not divide the channels
            raise InvalidConfig(f"{where}: {prefix}groups: {err}") from err
        sizes = feature_sizes(config, _MAX_MIN_INPUT)
        if sizes["pool5"] < 1:
            raise InvalidConfig(f"{where}: {prefix}kernels, {prefix}paddings and {prefix}conv1_stride must leave "
                                f"a pool5 map for some input up to {_MAX_MIN_INPUT} px, got {sizes}")
        if feature_sizes(config, config.input_size)["pool5"] < 1:
            raise InvalidConfig(f"{where}: {prefix}input_size must be large enough to reach pool5 with these "
                                f"layers, got {config.input_size}")
        return config

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """The state dict's names and shapes for this config, by arithmetic (no tensor is made), so
        weights can be checked against a config before a byte of either is allocated."""
        shapes: dict[str, tuple[int, ...]] = {}
        chans = (self.in_chans, *self.widths)
        for i in range(5):
            k = self.kernels[i]
            shapes[f"conv{i + 1}.weight"] = (chans[i + 1], chans[i] // self.groups[i], k, k)
            shapes[f"conv{i + 1}.bias"] = (chans[i + 1],)
        shapes["fc6.weight"], shapes["fc6.bias"] = (self.hidden, self.widths[4] * 36), (self.hidden,)
        shapes["fc7.weight"], shapes["fc7.bias"] = (self.hidden, self.hidden), (self.hidden,)
        if self.num_classes > 0:
            shapes["fc8.weight"], shapes["fc8.bias"] = (self.num_classes, self.hidden), (self.num_classes,)
        return shapes


PAPER = AlexNetConfig()
OWT = AlexNetConfig(widths=(64, 192, 384, 256, 256), groups=(1, 1, 1, 1, 1), paddings=(2, 2, 1, 1, 1),
                    pool_ceil=False, lrn=False, dropout_placement="before_fc", init="torch", input_size=224)

# The one architecture table: builder name -> base config. Every --arch choice, config.json's
# "architecture" and each per-arch default derive from it.
ARCHS: dict[str, AlexNetConfig] = {"alexnet": PAPER, "alexnet_owt": OWT}
# the fields that make a layout one architecture; the others (LRN constants, dropout, init,
# classes) are settings of it
_STRUCTURAL = ("widths", "groups", "kernels", "paddings", "conv1_stride", "lrn")


def arch_of(config: AlexNetConfig) -> str | None:
    """The architecture whose layout ``config`` has (structural fields only), or None for a
    custom variant, which no builder makes."""
    for arch, base in ARCHS.items():
        if all(getattr(config, f) == getattr(base, f) for f in _STRUCTURAL):
            return arch
    return None


# ---- geometry ------------------------------------------------------------------------------------

POOLED_CONVS = (1, 2, 5)  # max pooling follows these convs



def feature_sizes(config: AlexNetConfig, size: int) -> dict[str, int]:
    """Spatial side of each conv output and pool (before pool5's adaptation to 6x6) for a square
    input of side ``size``; 0 where the input is too small to get that far. Here, beside the
    config, because validating a config.json needs it and the model is built from a config."""
    sizes: dict[str, int] = {}
    n = size
    for i in range(5):
        stride = config.conv1_stride if i == 0 else 1
        n = max(0, (n + 2 * config.paddings[i] - config.kernels[i]) // stride + 1) if n else 0
        sizes[f"conv{i + 1}"] = n
        if i + 1 in POOLED_CONVS:
            n = pool_output_size(n, config.pool_ceil)
            sizes[f"pool{i + 1}"] = n
    return sizes


# LRN constants keep (k + alpha * sum) ** -beta finite in fp32; std keeps the division finite
_CONFIG_RULES: dict[str, Rule] = {
    "widths": Rule(1, 1 << 14, length=5), "groups": Rule(1, 1 << 14, length=5),
    "kernels": Rule(1, 64, length=5), "paddings": Rule(0, 64, length=5), "conv1_stride": Rule(1, 64),
    "pool_ceil": Rule(), "lrn": Rule(), "lrn_size": Rule(1, 63, odd=True), "lrn_alpha": Rule(0, 1e3),
    "lrn_beta": Rule(0, 10), "lrn_k": Rule(1e-3, 1e3), "lrn_convention": Rule(),
    "hidden": Rule(1, 1 << 16), "dropout": Rule(0, 1, hi_open=True), "dropout_placement": Rule(), "init": Rule(),
    "num_classes": Rule(0, MAX_CLASSES), "in_chans": Rule(1, 1 << 14), "input_size": Rule(1, 1 << 13),
    "extra": Rule(),
}
