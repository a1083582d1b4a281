"""Architecture configurations: every choice that distinguishes one AlexNet from another, named.

A config is plain data (it round-trips through JSON for ``config.json`` beside saved weights), so a
model is fully described by it: the paper's two-tower network, the BVLC/Caffe variant of it, and
torchvision's one-tower "one weird trick" layout are three values of the same dataclass.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alexnet_zoo.data.categories import MAX_CLASSES
from alexnet_zoo.errors import InvalidConfig, WeightsError
from alexnet_zoo.ops.geometry import LRNConvention, pool_output_size
from alexnet_zoo.paths import read_capped

if TYPE_CHECKING:
    from alexnet_zoo.data.transforms import Preprocessing

__all__ = ["ARCHS", "AlexNetConfig", "ConfigFile", "MAX_CONFIG_BYTES", "OWT", "PAPER", "POOLED_CONVS",
           "arch_of", "check_weights_fit", "feature_sizes", "read_config_file"]

MAX_CONFIG_BYTES = 8 << 20  # save_pretrained writes ~2 KB; a long class list still fits
CONFIG_FORMAT_VERSION = 1  # the config.json layout save_pretrained writes and the newest one read
_MAX_DEPTH = 32  # JSON nesting; deeper would recurse in dataclasses.asdict, json.dumps, ==

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
            config = cls().replace(**_checked_fields(cls, data, _CONFIG_RULES, where, prefix))
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


# ---- config.json: read as untrusted input --------------------------------------------------------

_MAX_MIN_INPUT = 1023  # AlexNet searches its smallest usable input below 1024 px


@dataclass(frozen=True)
class _Rule:
    """What one field accepts beyond its annotated type: a closed range (``lo_open``: lo excluded),
    a sequence length, odd numbers only."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    length: int | None = None
    odd: bool = False


# LRN constants keep (k + alpha * sum) ** -beta finite in fp32; std keeps the division finite
_CONFIG_RULES: dict[str, _Rule] = {
    "widths": _Rule(1, 1 << 14, length=5), "groups": _Rule(1, 1 << 14, length=5),
    "kernels": _Rule(1, 64, length=5), "paddings": _Rule(0, 64, length=5), "conv1_stride": _Rule(1, 64),
    "pool_ceil": _Rule(), "lrn": _Rule(), "lrn_size": _Rule(1, 63, odd=True), "lrn_alpha": _Rule(0, 1e3),
    "lrn_beta": _Rule(0, 10), "lrn_k": _Rule(1e-3, 1e3), "lrn_convention": _Rule(),
    "hidden": _Rule(1, 1 << 16), "dropout": _Rule(0, 1, hi_open=True), "dropout_placement": _Rule(), "init": _Rule(),
    "num_classes": _Rule(0, MAX_CLASSES), "in_chans": _Rule(1, 1 << 14), "input_size": _Rule(1, 1 << 13),
    "extra": _Rule(),
}
_PREPROCESSING_RULES: dict[str, _Rule] = {
    "resize": _Rule(1, 1 << 13), "resize_mode": _Rule(), "crop": _Rule(1, 1 << 13), "interpolation": _Rule(),
    "channel_order": _Rule(), "scale": _Rule(0, 1e6, lo_open=True), "mean": _Rule(-1e6, 1e6, length=3),
    "std": _Rule(1e-4, 1e6, length=3),
}


def _show(value: Any) -> str:
    """A value for a message: repr (escapes control characters and surrogates), cut short."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _kind(hint: Any) -> str:
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a finite number"
    return "a JSON object" if typing.get_origin(hint) is dict or hint is dict else str(hint)


def _checked_value(hint: Any, value: Any, rule: _Rule, name: str, where: str) -> Any:
    """``value`` converted to the dataclass's type, or InvalidConfig saying what ``name`` accepts."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if type(value) is not str or value not in choices:
            raise InvalidConfig(f"{where}: {name} must be one of {', '.join(map(repr, choices))}, got {_show(value)}")
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0]
        if not isinstance(value, (list, tuple)) or len(value) != rule.length:
            raise InvalidConfig(f"{where}: {name} must be a list of {rule.length} values ({_kind(item)} each), "
                                f"got {_show(value)}")
        return tuple(_checked_value(item, v, rule, f"{name}[{i}]", where) for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise InvalidConfig(f"{where}: {name} must be a JSON object, got {_show(value)}")
        return value
    if hint is bool:
        if type(value) is not bool:
            raise InvalidConfig(f"{where}: {name} must be true or false, got {_show(value)}")
        return value
    if hint is int:
        ok = type(value) is int  # bool is an int subclass: true is no width
    elif hint is float:
        ok = type(value) in (int, float) and math.isfinite(value)
    else:
        raise TypeError(f"no check for {name}: {hint}")  # a new field type: teach this function
    lo, hi = rule.lo, rule.hi
    if ok:
        ok = ((lo is None or (value > lo if rule.lo_open else value >= lo)) and (hi is None or (value < hi if rule.hi_open else value <= hi))
              and (not rule.odd or value % 2 == 1))
    if not ok:
        bounds = f" in {'(' if rule.lo_open else '['}{lo:g}, {hi:g}{')' if rule.hi_open else ']'}" if lo is not None and hi is not None else ""
        odd = ", odd" if rule.odd else ""
        raise InvalidConfig(f"{where}: {name} must be {_kind(hint)}{bounds}{odd}, got {_show(value)}")
    return float(value) if hint is float else value


def _checked_fields(cls: type, data: Any, rules: Mapping[str, _Rule], where: str, prefix: str) -> dict[str, Any]:
    """``data`` (a JSON object) as keyword arguments for ``cls``, each field type- and range-checked."""
    if not isinstance(data, dict):
        raise InvalidConfig(f"{where}: {prefix.rstrip('.') or cls.__name__} must be a JSON object of "
                            f"{cls.__name__} fields, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise InvalidConfig(f"{where}: unknown {cls.__name__} field(s) {', '.join(_show(prefix + str(k)) for k in unknown)}"
                            f"; expected some of {', '.join(names)}")
    return {k: _checked_value(hints[k], v, rules[k], prefix + k, where) for k, v in data.items()}


def _checked_preprocessing(data: Any, where: str) -> Preprocessing:
    """config.json's ``preprocessing`` entry, checked field by field (``std: 0`` would divide by zero)."""
    from alexnet_zoo.data.transforms import Preprocessing

    fields = _checked_fields(Preprocessing, data, _PREPROCESSING_RULES, where, "preprocessing.")
    resize, crop = fields.get("resize", Preprocessing.resize), fields.get("crop", Preprocessing.crop)
    if crop > resize:
        raise InvalidConfig(f"{where}: preprocessing.crop must be at most preprocessing.resize ({resize}), got {crop}")
    return Preprocessing(**fields)


@dataclass(frozen=True)
class ConfigFile:
    """A checked ``config.json``: the architecture it names, its config and preprocessing, and the
    whole document (provenance, metrics) for ``Checkpoint.meta``."""

    arch: str
    config: AlexNetConfig
    preprocessing: Preprocessing | None
    info: dict[str, Any]


# top-level entries the library reads back, and the JSON type each must have; others are free-form meta
_META_TYPES: dict[str, tuple[type, ...]] = {"format": (str,), "format_version": (int,), "num_classes": (int,),
                                            "weights": (dict, type(None)), "metrics": (list,),
                                            "converted_from": (str,), "source": (str,), "description": (str,),
                                            "license": (str,), "citation": (str,)}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {_show(twice)} appears twice in one object")
    return out


def _depth(doc: Any) -> int:
    """Nesting depth of a parsed JSON document, without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= _MAX_DEPTH:
            children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _parse(path: Path) -> Any:
    """The JSON document at ``path``, read only up to MAX_CONFIG_BYTES."""
    try:
        raw = read_capped(path, MAX_CONFIG_BYTES)
    except OSError as err:
        raise InvalidConfig(f"{path}: cannot read this config.json ({err.strerror or err})") from err
    if len(raw) > MAX_CONFIG_BYTES:
        raise InvalidConfig(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; not an alexnet_zoo config.json "
                            f"(save_pretrained writes a few KB)")
    try:
        text = raw.decode("utf-8-sig")  # Windows editors write a BOM
        doc = json.loads(text, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as err:
        raise InvalidConfig(f"{path}: not an alexnet_zoo config.json (not UTF-8 text at byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise InvalidConfig(f"{path}: not an alexnet_zoo config.json (invalid JSON at line {err.lineno} column "
                            f"{err.colno}: {err.msg})") from err
    except RecursionError as err:
        raise InvalidConfig(f"{path}: not an alexnet_zoo config.json (nested deeper than {_MAX_DEPTH})") from err
    except ValueError as err:  # a duplicate key; an integer of more than 4300 digits
        raise InvalidConfig(f"{path}: not an alexnet_zoo config.json ({err})") from err
    if _depth(doc) > _MAX_DEPTH:
        raise InvalidConfig(f"{path}: not an alexnet_zoo config.json (nested deeper than {_MAX_DEPTH})")
    return doc


def read_config_file(path: str | os.PathLike, *, architectures: Collection[str]) -> ConfigFile:
    """Read and check a ``config.json`` written by ``save_pretrained``, treating it as untrusted:
    its size is bounded before reading, every field the library uses is type- and range-checked,
    and anything wrong raises :class:`InvalidConfig` naming the file, the field and what it accepts.
    ``architectures``: the names ``architecture`` may take."""
    path = Path(path)
    doc = _parse(path)
    where = str(path)
    if not isinstance(doc, dict):
        raise InvalidConfig(f"{where}: not an alexnet_zoo config.json (the top level must be a JSON object with "
                            f"architecture and config, got {type(doc).__name__})")
    for key, types in _META_TYPES.items():
        if key in doc and (type(doc[key]) not in types):
            names = " or ".join({str: "a string", int: "an integer", dict: "a JSON object", list: "a list",
                                 type(None): "null"}[t] for t in types)
            raise InvalidConfig(f"{where}: {key} must be {names}, got {_show(doc[key])}")
    if doc.get("format", "alexnet_zoo") != "alexnet_zoo":
        raise InvalidConfig(f"{where}: format must be 'alexnet_zoo', got {_show(doc['format'])}")
    version = doc.get("format_version", CONFIG_FORMAT_VERSION)
    if not 1 <= version <= CONFIG_FORMAT_VERSION:
        raise InvalidConfig(f"{where}: format_version must be an integer in [1, {CONFIG_FORMAT_VERSION}] (newer "
                            f"files need a newer alexnet_zoo), got {_show(version)}")
    weights = doc.get("weights") or {}
    if "name" in weights and type(weights["name"]) is not str:
        raise InvalidConfig(f"{where}: weights.name must be a string, got {_show(weights['name'])}")
    for key in ("architecture", "config"):
        if key not in doc:
            raise InvalidConfig(f"{where}: not an alexnet_zoo config.json (no {key!r} entry)")
    arch = doc["architecture"]
    if type(arch) is not str or arch not in architectures:
        raise InvalidConfig(f"{where}: unknown architecture {_show(arch)}; expected one of "
                            f"{', '.join(map(repr, sorted(architectures)))}")
    config = AlexNetConfig.from_dict(doc["config"], where=where, prefix="config.")
    recorded = doc.get("preprocessing")
    preprocessing = None if recorded is None or recorded == {} else _checked_preprocessing(recorded, where)
    return ConfigFile(arch, config, preprocessing, doc)


def check_weights_fit(weights: str | os.PathLike, config: AlexNetConfig, arch: str,
                      config_name: str = "config.json") -> None:
    """Compare the tensor names, shapes and dtypes in a safetensors file's header with those
    ``config`` implies, before anything is built or loaded: whatever a config claims, memory then
    stays bounded by the size of a file that really holds those tensors. Raises WeightsError."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for damaged headers
        raise WeightsError(f"{weights}: not a readable safetensors file ({err})") from err
    check_shapes(config.parameter_shapes(), header, f"{weights} does not fit the {arch} its {config_name} describes")


def check_shapes(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[tuple[int, ...], str]],
                 what: str) -> None:
    """Raise WeightsError ``what: problems`` unless ``found`` (name -> (shape, safetensors dtype))
    holds exactly the ``expected`` names and shapes, in a floating-point dtype."""
    problems = [f"{k} missing" for k in expected if k not in found]
    problems += [f"{k} unexpected" for k in found if k not in expected]
    problems += [f"{k} is {found[k][0]}, expected {shape}" for k, shape in expected.items()
                 if k in found and found[k][0] != shape]
    problems += [f"{k} is {found[k][1]}, expected a floating-point dtype" for k in expected
                 if k in found and found[k][1] not in _FLOAT_DTYPES]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise WeightsError(f"{what}: {'; '.join(problems[:5])}{more}")


_FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "float64", "float32", "float16", "bfloat16"})
