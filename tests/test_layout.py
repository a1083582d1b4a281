"""The package's layout: one architecture table that every option derives from."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from alexnet_zoo.config import ARCHS
from alexnet_zoo.transforms import DEFAULT_PREPROCESSING


def _arch_options(parser: argparse.ArgumentParser, where: str) -> Iterator[tuple[str, argparse.Action]]:
    """Every ``--arch`` option of ``parser`` and of its subparsers, named by the command path."""
    for action in parser._actions:
        if "--arch" in action.option_strings:
            yield where, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _arch_options(sub, f"{where} {name}")


def test_the_arch_table_is_defined_once():
    from alexnet_zoo.benchmarks.imagenet import build_parser as imagenet_parser
    from alexnet_zoo.cli import build_parser
    from alexnet_zoo.train.recipe import get_args_parser

    options = [*_arch_options(build_parser(), "alexnet-zoo"), *_arch_options(get_args_parser(), "train"),
               *_arch_options(imagenet_parser(), "benchmarks.imagenet")]
    where = {w for w, _ in options}
    # the parsers that take a model: a walk that found none of them would prove nothing
    assert {"alexnet-zoo summary", "alexnet-zoo classify", "alexnet-zoo extract", "alexnet-zoo weights convert",
            "train", "benchmarks.imagenet"} <= where
    assert {w: list(a.choices) for w, a in options} == {w: sorted(ARCHS) for w, _ in options}
    assert set(DEFAULT_PREPROCESSING) == set(ARCHS)
