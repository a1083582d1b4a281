"""ILSVRC-2012 top-1 / top-5 accuracy of pretrained AlexNet weights in one command.

    python -m alexnet_zoo.benchmarks.imagenet --data ~/ILSVRC2012/val \\
        --labels ILSVRC2012_val_caffe_labels.txt --protocol ten --json out.json

``alexnet-zoo evaluate`` is the same command with the same options. ``--data`` may hold one folder
per WNID, a flat folder with a Caffe ``val.txt`` or a CSV (``--labels``, or found in the folder), or
WNID-prefixed files. Preprocessing and crop size come
from the weights. Unreadable images are counted, listed and left out of the denominator; the run
goes on. Details and the numbers to expect: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alexnet_zoo.cli.failures import report_errors
from alexnet_zoo.cli.options import bounded_int, describe, device_arg
from alexnet_zoo.data.batching import LOADER_HELP, LOADER_MODES
from alexnet_zoo.devices import DEVICE_HELP
from alexnet_zoo.eval.precision_names import PRECISION_HELP, PRECISIONS
from alexnet_zoo.eval.protocols import MAX_SCALE, PROTOCOLS
from alexnet_zoo.models.config import ARCHS

__all__ = ["add_arguments", "build_parser", "environment", "main", "run"]

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The evaluator's options, on this recipe's parser and on ``alexnet-zoo evaluate`` alike."""
    parser.add_argument("--data", type=Path, required=True,
                        help="folder of labelled images: WNID folders, a flat folder with a label file, or "
                             "WNID-prefixed files")
    parser.add_argument("--labels", type=Path, default=None,
                        help="Caffe val.txt ('NAME CLASS_INDEX' lines) or CSV (filename,class_index) for --data; "
                             "a plain flat val folder needs it")
    parser.add_argument("--pretrained", default="default",
                        help="weight name, hf-hub:org/repo, local folder or file; 'default' (the arch's default "
                             "weights) or 'none' (random, for timing)")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="alexnet",
                        help="architecture when --pretrained does not imply one")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="center",
                        help="center: one centre crop; ten: corners + centre and mirrors, softmax averaged (the "
                             "paper); dense: the fully convolutional net over the whole image and its mirror")
    parser.add_argument("--scales", type=bounded_int(1, MAX_SCALE), nargs="+", default=None, metavar="SIDE",
                        help="dense only: sides the square image is resized to, each at least the crop "
                             f"(default: the weights' 256; at most {MAX_SCALE})")
    parser.add_argument("--no-flip", action="store_true", help="dense only: leave out the mirrored image")
    parser.add_argument("--batch-size", type=bounded_int(1), default=32,
                        help="images per forward pass (ten: x10 crops)")
    parser.add_argument("--workers", type=bounded_int(0), default=DEFAULT_WORKERS,
                        help="DataLoader processes decoding JPEGs (0: decode in this process)")
    parser.add_argument("--loader", choices=LOADER_MODES, default="auto", help=LOADER_HELP)
    parser.add_argument("--worker-niceness", type=bounded_int(0, 19), default=10,
                        help="CPU priority of the workers below the model (0-19; higher hides decoding better on "
                             "a dedicated machine, lower is kinder where other jobs compete)")
    parser.add_argument("--device", type=device_arg, default=None, help=f"{DEVICE_HELP} (default: auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--limit", type=bounded_int(1), default=None,
                        help="evaluate N images, evenly spaced through the (sorted) list")
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")
    parser.add_argument("--predictions", type=Path, default=None,
                        help="CSV path,label,pred1..pred5,prob1..prob5 (class indices)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="python -m alexnet_zoo.benchmarks.imagenet",
                                                 description=describe(__doc__)))


def environment(device: str, workers: int, batch_size: int, precision: str) -> dict[str, Any]:
    """What a timing depends on: the machine and this run's settings."""
    from alexnet_zoo.ops.capabilities import machine_facts

    return {**machine_facts(device), "workers": workers, "batch_size": batch_size, "precision": precision}


def _evenly(samples: Sequence[Any], n: int | None) -> list[Any]:
    if n is None or n >= len(samples):
        return list(samples)
    if n <= 0:
        raise ValueError(f"--limit must be positive, got {n}")
    return [samples[i * len(samples) // n] for i in range(n)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the evaluation, print it, write --json / --predictions, and return the report."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`main` on parsed arguments (``alexnet-zoo evaluate`` calls this)."""
    from alexnet_zoo.data.datasets import find_labelled_images
    from alexnet_zoo.devices import resolve_device
    from alexnet_zoo.eval.loop import dataset_for, evaluate, onto_model_classes
    from alexnet_zoo.factory import model_for_weights
    from alexnet_zoo.paths import write_json
    from alexnet_zoo.retrieval.features import weights_label

    if args.protocol != "dense" and (args.scales or args.no_flip):
        raise ValueError("--scales and --no-flip are for --protocol dense")
    device = str(resolve_device(args.device))
    found = find_labelled_images(args.data, args.labels)
    model = model_for_weights(args.pretrained, arch=args.arch)
    present, foreign = onto_model_classes(found.samples, model)
    if not present:
        raise ValueError(f"{found.root}: none of its {len(found.samples):,} images belong to the "
                         f"{model.config.num_classes} classes these weights record")
    samples = _evenly(present, args.limit)
    weights = weights_label(model, args.pretrained)
    p = model.preprocessing
    dataset = dataset_for(samples, model, args.protocol, args.scales)
    limit = f" (--limit {args.limit})" if len(samples) < len(present) else ""
    print(f"{found.describe()}{limit}")
    if found.missing:
        print(f"note: {len(found.missing):,} files named in {found.label_file} are not in {found.root} "
              f"(first: {found.missing[0]}); evaluating the {len(found.samples):,} present")
    if foreign:
        print(f"note: {foreign:,} images are of classes these weights were not trained on; evaluating the "
              f"{len(present):,} of their {model.config.num_classes} classes")
    views = {"center": f"centre {p.crop}", "ten": f"10 x {p.crop} (corners, centre, mirrored), softmax averaged",
             "dense": f"dense{'' if args.no_flip else ' + mirror'}"}[args.protocol]
    sides = "/".join(map(str, dataset.sizes))
    print(f"weights {weights} ({model.config.num_classes} classes), {p.resize_mode} {sides} {p.channel_order} -> "
          f"{views}; device {device}, batch {args.batch_size}, workers {args.workers}")

    result = evaluate(model, dataset, args.protocol, batch_size=args.batch_size, workers=args.workers, device=device,
                      precision=args.precision, flip=not args.no_flip, keep_predictions=args.predictions is not None,
                      worker_niceness=args.worker_niceness, loader=args.loader, progress=not args.no_progress)

    if result.images:
        print(f"top-1 accuracy {result.top1:7.2%}   error {1 - result.top1:7.2%}")
        print(f"top-5 accuracy {result.top5:7.2%}   error {1 - result.top5:7.2%}")
    print(f"{result.images:,} images in {result.seconds:.1f} s: {result.images_per_second:.1f} images/s")
    if result.failed:
        print(f"{len(result.failed):,} unreadable image(s), left out of the accuracy's denominator:")
        for path, error in result.failed:
            print(f"  {error}" if path in error else f"  {path}: {error}")
    report = result.to_dict() | {
        "weights": weights, "arch": model.pretrained_cfg.get("architecture", args.arch),
        "preprocessing": p.to_dict(), "crop": p.crop, "flip": not args.no_flip,
        "data": {"root": str(found.root), "layout": found.layout,
                 "label_file": str(found.label_file) if found.label_file else None,
                 "found": len(found.samples), "missing": len(found.missing), "other_classes": foreign,
                 "limit": args.limit},
        "environment": environment(device, args.workers, args.batch_size, args.precision)}
    if args.json:
        write_json(args.json, report)
        print(f"report -> {args.json}")
    if args.predictions:
        result.write_predictions(args.predictions)
        print(f"predictions -> {args.predictions}")
    return report


def _command() -> int:
    main()
    return 0


if __name__ == "__main__":
    sys.exit(report_errors("imagenet", _command))
