"""argparse types shared by every command line (``alexnet-zoo``, the evaluation recipe, extract and
index): each number and device is checked where it is parsed, with a message that says what is
accepted, so a bad value is argparse's one ``error:`` line and never a traceback later.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["bounded_int", "describe", "device_arg"]


def describe(doc: str | None) -> str:
    """A docstring's first paragraph as one line, without reST quotes: the description a parser
    prints (its first *line* is often half a sentence)."""
    return " ".join((doc or "").strip().split("\n\n")[0].replace("``", "").split())


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (inclusive; no upper bound when
    None), refused with a message that says which numbers are accepted."""
    expected = f"a whole number from {low} to {high}" if high is not None else f"a whole number >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    parse.__name__ = "bounded_int"
    return parse


def device_arg(text: str) -> Any:
    """An argparse type: a device this machine has (:func:`alexnet_zoo.devices.resolve_device`)."""
    from alexnet_zoo.devices import resolve_device

    try:
        return resolve_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
