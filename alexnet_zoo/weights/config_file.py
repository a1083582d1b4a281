"""``config.json`` beside weights, read as untrusted input: its size bounded before reading, JSON
nesting and duplicate keys refused, every field the library uses type- and range-checked, and the
tensors of the weights file compared with the shapes the config implies before anything is built
(a config claiming ``hidden: 300000`` must not allocate 11 GB). Errors name the file and the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet_zoo.data.transforms import Preprocessing
from alexnet_zoo.errors import InvalidConfig, WeightsError
from alexnet_zoo.models._fields import Rule, checked_fields, show
from alexnet_zoo.models.config import AlexNetConfig
from alexnet_zoo.models.quantized import int8_tensor_specs
from alexnet_zoo.paths import read_capped

__all__ = ["CONFIG_FILE", "CONFIG_FORMAT_VERSION", "MAX_CONFIG_BYTES", "PRECISIONS_STORED", "WEIGHTS_FILE",
           "ConfigFile", "check_shapes", "check_weights_fit", "read_config_file"]

# a folder in alexnet_zoo's format (save_pretrained, the cache, an hf-hub: repo) holds these two files
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
MAX_CONFIG_BYTES = 8 << 20  # save_pretrained writes ~2 KB; a long class list still fits
CONFIG_FORMAT_VERSION = 1  # the config.json layout save_pretrained writes and the newest one read
_MAX_DEPTH = 32  # JSON nesting; deeper would recurse in dataclasses.asdict, json.dumps, ==

_PREPROCESSING_RULES: dict[str, Rule] = {
    "resize": Rule(1, 1 << 13), "resize_mode": Rule(), "crop": Rule(1, 1 << 13), "interpolation": Rule(),
    "channel_order": Rule(), "scale": Rule(0, 1e6, lo_open=True), "mean": Rule(-1e6, 1e6, length=3),
    "std": Rule(1e-4, 1e6, length=3),
}


def _checked_preprocessing(data: Any, where: str) -> Preprocessing:
    """config.json's ``preprocessing`` entry, checked field by field (``std: 0`` would divide by zero)."""
    fields = checked_fields(Preprocessing, data, _PREPROCESSING_RULES, where, "preprocessing.")
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
                                            "license": (str,), "citation": (str,), "precision": (str,),
                                            "quantization": (dict,)}
PRECISIONS_STORED = ("fp32", "int8")  # what model.safetensors holds: float parameters, or int8 + scales


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {show(twice)} appears twice in one object")
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
            raise InvalidConfig(f"{where}: {key} must be {names}, got {show(doc[key])}")
    if doc.get("format", "alexnet_zoo") != "alexnet_zoo":
        raise InvalidConfig(f"{where}: format must be 'alexnet_zoo', got {show(doc['format'])}")
    version = doc.get("format_version", CONFIG_FORMAT_VERSION)
    if not 1 <= version <= CONFIG_FORMAT_VERSION:
        raise InvalidConfig(f"{where}: format_version must be an integer in [1, {CONFIG_FORMAT_VERSION}] (newer "
                            f"files need a newer alexnet_zoo), got {show(version)}")
    if doc.get("precision", "fp32") not in PRECISIONS_STORED:
        raise InvalidConfig(f"{where}: precision must be one of {', '.join(map(repr, PRECISIONS_STORED))}, got "
                            f"{show(doc['precision'])}")
    engine = (doc.get("quantization") or {}).get("qengine", "x86")
    if type(engine) is not str or len(engine) > 32:
        raise InvalidConfig(f"{where}: quantization.qengine must be the name of a torch quantized engine, got "
                            f"{show(engine)}")
    weights = doc.get("weights") or {}
    if "name" in weights and type(weights["name"]) is not str:
        raise InvalidConfig(f"{where}: weights.name must be a string, got {show(weights['name'])}")
    for key in ("architecture", "config"):
        if key not in doc:
            raise InvalidConfig(f"{where}: not an alexnet_zoo config.json (no {key!r} entry)")
    arch = doc["architecture"]
    if type(arch) is not str or arch not in architectures:
        raise InvalidConfig(f"{where}: unknown architecture {show(arch)}; expected one of "
                            f"{', '.join(map(repr, sorted(architectures)))}")
    config = AlexNetConfig.from_dict(doc["config"], where=where, prefix="config.")
    recorded = doc.get("preprocessing")
    preprocessing = None if recorded is None or recorded == {} else _checked_preprocessing(recorded, where)
    return ConfigFile(arch, config, preprocessing, doc)


def check_weights_fit(weights: str | os.PathLike, config: AlexNetConfig, arch: str,
                      config_name: str = CONFIG_FILE, precision: str = "fp32") -> None:
    """Compare the tensor names, shapes and dtypes in a safetensors file's header with those
    ``config`` implies (for ``precision`` "int8": :func:`int8_tensor_specs`, each dtype exact),
    before anything is built or loaded: whatever a config claims, memory then stays bounded by
    the size of a file that really holds those tensors. Raises WeightsError."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for damaged headers
        raise WeightsError(f"{weights}: not a readable safetensors file ({err})") from err
    what = f"{weights} does not fit the {'int8 ' if precision == 'int8' else ''}{arch} its {config_name} describes"
    if precision == "int8":
        _check_int8_header(int8_tensor_specs(config), header, what)
    else:
        check_shapes(config.parameter_shapes(), header, what)


def _check_int8_header(expected: Mapping[str, tuple[tuple[int, ...], str]],
                       found: Mapping[str, tuple[tuple[int, ...], str]], what: str) -> None:
    problems = [f"{k} missing" for k in expected if k not in found]
    problems += [f"{k} unexpected" for k in found if k not in expected]
    problems += [f"{k} is {found[k][0]} {found[k][1]}, expected {shape} {dtype}"
                 for k, (shape, dtype) in expected.items()
                 if k in found and (found[k][0] != shape or found[k][1] != dtype)]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise WeightsError(f"{what}: {'; '.join(problems[:5])}{more}")


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
