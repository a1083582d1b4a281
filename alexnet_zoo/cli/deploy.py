"""The ``export`` command of ``alexnet-zoo``: a model to ONNX or TorchScript.

Argument parsing and printing only: the work is :mod:`alexnet_zoo.deploy`'s, so ``cli/main.py``
only registers the command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alexnet_zoo.cli.options import bounded_int
from alexnet_zoo.deploy.metadata import weights_name
from alexnet_zoo.deploy.onnx_graph import DEFAULT_OPSET, MIN_OPSET, export_onnx
from alexnet_zoo.deploy.torchscript import export_torchscript
from alexnet_zoo.models.config import ARCHS

__all__ = ["FORMATS", "add_commands"]

FORMATS = ("onnx", "torchscript")


def _export(args: argparse.Namespace) -> int:
    # weight loading: imported by the command, not the parser (startup)
    from alexnet_zoo.factory import model_for_weights

    model = model_for_weights(args.pretrained, arch=args.arch).eval()
    known = weights_name(model)
    weights = known if known != "unnamed" else str(args.pretrained)
    if args.format == "onnx":
        out = export_onnx(model, args.out, opset=args.opset, input_size=args.input_size, weights=weights)
    else:
        if args.opset is not None:
            raise ValueError("--opset applies to --format onnx only")
        out = export_torchscript(model, args.out, input_size=args.input_size, weights=weights)
    size = out.stat().st_size / 1e6
    print(f"{model.arch} ({weights}) -> {out}: {args.format}, {size:.1f} MB")
    return 0


def add_commands(commands: Any) -> None:
    """Register ``export`` on the CLI's subparsers."""
    export = commands.add_parser("export", help="write a model as an ONNX graph or a TorchScript program, with its "
                                                "preprocessing and labels inside")
    export.add_argument("--arch", choices=sorted(ARCHS), default="alexnet")
    export.add_argument("--pretrained", default="default",
                        help="weight name (see `weights list`), hf-hub:org/repo, a local folder or file, "
                             "'default' (the arch's default weights) or 'none' (random)")
    export.add_argument("--format", choices=FORMATS, required=True)
    export.add_argument("--out", type=Path, required=True, help="the file to write (e.g. alexnet.onnx, alexnet.pt)")
    export.add_argument("--opset", type=bounded_int(MIN_OPSET), default=None,
                        help=f"ONNX opset (default {DEFAULT_OPSET}; at most the installed onnx's newest)")
    export.add_argument("--input-size", type=bounded_int(1, 8192), default=None,
                        help="fix the input side to this many pixels, pool5 adapted to 6x6 as the model does "
                             "(default: any side whose pool5 is 6x6, e.g. 199..230 for alexnet)")
    export.set_defaults(run=_export)
