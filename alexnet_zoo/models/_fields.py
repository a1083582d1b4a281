"""Reading JSON objects into frozen dataclasses as untrusted input: each field converted to its
annotated type and range-checked, unknown keys refused, every message naming the file and the field.
Mechanics shared by the model's config (``AlexNetConfig.from_dict``) and ``config.json``'s
preprocessing entry (weights/config_file.py).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from alexnet_zoo.errors import InvalidConfig

__all__ = ["Rule", "checked_fields", "show"]


@dataclass(frozen=True)
class Rule:
    """What one field accepts beyond its annotated type: a closed range (``lo_open``: lo excluded),
    a sequence length, odd numbers only."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    length: int | None = None
    odd: bool = False


def show(value: Any) -> str:
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


def _checked_value(hint: Any, value: Any, rule: Rule, name: str, where: str) -> Any:
    """``value`` converted to the dataclass's type, or InvalidConfig saying what ``name`` accepts."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if type(value) is not str or value not in choices:
            raise InvalidConfig(f"{where}: {name} must be one of {', '.join(map(repr, choices))}, got {show(value)}")
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0]
        if not isinstance(value, (list, tuple)) or len(value) != rule.length:
            raise InvalidConfig(f"{where}: {name} must be a list of {rule.length} values ({_kind(item)} each), "
                                f"got {show(value)}")
        return tuple(_checked_value(item, v, rule, f"{name}[{i}]", where) for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise InvalidConfig(f"{where}: {name} must be a JSON object, got {show(value)}")
        return value
    if hint is bool:
        if type(value) is not bool:
            raise InvalidConfig(f"{where}: {name} must be true or false, got {show(value)}")
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
        raise InvalidConfig(f"{where}: {name} must be {_kind(hint)}{bounds}{odd}, got {show(value)}")
    return float(value) if hint is float else value


def checked_fields(cls: type, data: Any, rules: Mapping[str, Rule], where: str, prefix: str) -> dict[str, Any]:
    """``data`` (a JSON object) as keyword arguments for ``cls``, each field type- and range-checked."""
    if not isinstance(data, dict):
        raise InvalidConfig(f"{where}: {prefix.rstrip('.') or cls.__name__} must be a JSON object of "
                            f"{cls.__name__} fields, got {show(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise InvalidConfig(f"{where}: unknown {cls.__name__} field(s) {', '.join(show(prefix + str(k)) for k in unknown)}"
                            f"; expected some of {', '.join(names)}")
    return {k: _checked_value(hints[k], v, rules[k], prefix + k, where) for k, v in data.items()}
