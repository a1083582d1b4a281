"""The ``alexnet-zoo`` command line. It parses arguments and calls the library, nothing more;
``main(argv)`` takes an argument list so tests call it directly."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from alexnet_zoo.config import OWT, PAPER
from alexnet_zoo.summary import format_table, summarize

__all__ = ["main"]

_ARCHS = {"alexnet": PAPER, "alexnet_owt": OWT}


def _summary(args: argparse.Namespace) -> int:
    config = _ARCHS[args.arch].replace(num_classes=args.num_classes)
    table = format_table(summarize(config, args.input))
    side = args.input or config.input_size
    print(f"{args.arch} at {side}x{side}\n{table}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alexnet-zoo", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="layer table: output shapes, parameters, multiply-adds")
    summary.add_argument("--arch", choices=sorted(_ARCHS), default="alexnet")
    summary.add_argument("--input", type=int, default=None, help="square input side (default: the arch's own)")
    summary.add_argument("--num-classes", type=int, default=1000)
    summary.set_defaults(run=_summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"alexnet-zoo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
