"""The ``export`` and ``quantize`` commands of ``alexnet-zoo``: a model to ONNX or TorchScript,
or to int8 weights in our format, calibrated once on a folder of pictures.

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

DEFAULT_CALIBRATION_COUNT = 256  # deploy.quantize's; repeated so the parser does not import the model stack

FORMATS = ("onnx", "torchscript")


def _check_out(out: Path, *, folder: bool) -> None:
    """Refuse an --out of the wrong kind before any weights are loaded or pictures read."""
    if folder and out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder; quantize writes a folder "
                         f"(config.json + model.safetensors)")
    if not folder and out.is_dir():
        raise ValueError(f"--out {out}: is a folder; export writes one file there, e.g. --out {out / 'alexnet.onnx'}")


def _export(args: argparse.Namespace) -> int:
    # weight loading: imported by the command, not the parser (startup)
    from alexnet_zoo.factory import model_for_weights

    _check_out(args.out, folder=False)
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


def _quantize(args: argparse.Namespace) -> int:
    # weight loading and calibration: imported by the command, not the parser (startup)
    from alexnet_zoo.deploy.quantize import quantize
    from alexnet_zoo.factory import model_for_weights
    from alexnet_zoo.weights.store import save_pretrained

    _check_out(args.out, folder=True)
    model = model_for_weights(args.pretrained, arch=args.arch).eval()
    known = weights_name(model)
    weights = known if known != "unnamed" else str(args.pretrained)
    q = quantize(model, args.calibration, count=args.count, batch_size=args.batch_size,
                 progress=not args.no_progress)
    q.quantization["weights"] = weights
    out = save_pretrained(q, args.out)
    seen = q.quantization["calibration"]
    skipped = f", {seen['skipped']} unreadable skipped" if seen["skipped"] else ""
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"{model.arch} ({weights}) -> {out}: int8 ({q.qengine}), calibrated on {seen['pictures']} pictures from "
          f"{args.calibration}{skipped}, {size:.1f} MB")
    return 0


def add_commands(commands: Any) -> None:
    """Register ``export`` and ``quantize`` on the CLI's subparsers."""
    export = commands.add_parser("export", help="write a model as an ONNX graph or a TorchScript program, with its "
                                                "preprocessing and labels inside (int8 weights: ONNX's QDQ form)")
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

    quant = commands.add_parser("quantize", help="int8 weights (post-training static quantization, calibrated on a "
                                                 "folder of pictures), saved in our format for --pretrained")
    quant.add_argument("--arch", choices=sorted(ARCHS), default="alexnet")
    quant.add_argument("--pretrained", default="default",
                       help="the fp32 weights: a weight name, hf-hub:org/repo, a local folder or file, 'default'")
    quant.add_argument("--calibration", type=Path, required=True,
                       help="a folder of real pictures (searched recursively) whose activations set the int8 ranges")
    quant.add_argument("--count", type=bounded_int(1, 100_000), default=DEFAULT_CALIBRATION_COUNT,
                       help=f"pictures to calibrate on, spread evenly over the sorted folder (default "
                            f"{DEFAULT_CALIBRATION_COUNT})")
    quant.add_argument("--batch-size", type=bounded_int(1, 1024), default=32)
    quant.add_argument("--out", type=Path, required=True, help="the folder to write (model.safetensors + config.json)")
    quant.add_argument("--no-progress", action="store_true", help="no progress bar")
    quant.set_defaults(run=_quantize)
