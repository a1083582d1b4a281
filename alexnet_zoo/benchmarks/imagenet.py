"""ILSVRC-2012 top-1 / top-5 accuracy of pretrained AlexNet weights in one command.

    python -m alexnet_zoo.benchmarks.imagenet --data ~/ILSVRC2012/val --protocol ten --json out.json

``--data`` may hold one folder per WNID, a flat folder with a Caffe ``val.txt`` or a CSV
(``--labels``, or found in the folder), or WNID-prefixed files. Preprocessing and crop size come
from the weights. Unreadable images are counted, listed and left out of the denominator; the run
goes on. Details and the numbers to expect: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alexnet_zoo.datasets import find_labelled_images
from alexnet_zoo.errors import WeightsError
from alexnet_zoo.evaluate import PROTOCOLS, dataset_for, evaluate
from alexnet_zoo.factory import model_for_weights
from alexnet_zoo.loading import LOADER_HELP, LOADER_MODES
from alexnet_zoo.paths import write_json
from alexnet_zoo.precision import PRECISIONS

__all__ = ["build_parser", "environment", "main"]

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alexnet_zoo.benchmarks.imagenet",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="folder of labelled images: WNID folders, a flat folder with a label file, or "
                             "WNID-prefixed files")
    parser.add_argument("--labels", type=Path, default=None,
                        help="Caffe val.txt ('NAME CLASS_INDEX' lines) or CSV (filename,class_index) for --data")
    parser.add_argument("--pretrained", default="default",
                        help="weight name, hf-hub:org/repo, local folder or file; 'default' (the arch's default "
                             "weights) or 'none' (random, for timing)")
    parser.add_argument("--arch", choices=("alexnet", "alexnet_owt"), default="alexnet",
                        help="architecture when --pretrained does not imply one")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="center",
                        help="center: one centre crop; ten: corners + centre and mirrors, softmax averaged (the "
                             "paper); dense: the fully convolutional net over the whole image and its mirror")
    parser.add_argument("--scales", type=int, nargs="+", default=None,
                        help="dense only: sides the square image is resized to (default: the weights' 256)")
    parser.add_argument("--no-flip", action="store_true", help="dense only: leave out the mirrored image")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (ten: x10 crops)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="DataLoader processes decoding JPEGs")
    parser.add_argument("--loader", choices=LOADER_MODES, default="auto", help=LOADER_HELP)
    parser.add_argument("--worker-niceness", type=int, default=10,
                        help="CPU priority of the workers below the model (0-19; higher hides decoding better on "
                             "a dedicated machine, lower is kinder where other jobs compete)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: float16 autocast on CUDA, float32 on the CPU")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate N images, evenly spaced through the (sorted) list")
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")
    parser.add_argument("--predictions", type=Path, default=None,
                        help="CSV path,label,pred1..pred5,prob1..prob5 (class indices)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def environment(device: str, workers: int, batch_size: int, precision: str) -> dict[str, Any]:
    """What a timing depends on."""
    import torchvision

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torchvision": torchvision.__version__, "platform": platform.platform(),
                           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                           "threads": torch.get_num_threads(), "device": device, "workers": workers,
                           "batch_size": batch_size, "precision": precision}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            env["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _evenly(samples: Sequence[Any], n: int | None) -> list[Any]:
    if n is None or n >= len(samples):
        return list(samples)
    if n <= 0:
        raise ValueError(f"--limit must be positive, got {n}")
    return [samples[i * len(samples) // n] for i in range(n)]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the evaluation, print it, write --json / --predictions, and return the report."""
    args = build_parser().parse_args(argv)
    if args.protocol != "dense" and (args.scales or args.no_flip):
        raise ValueError("--scales and --no-flip are for --protocol dense")
    found = find_labelled_images(args.data, args.labels)
    samples = _evenly(found.samples, args.limit)
    model = model_for_weights(args.pretrained, arch=args.arch)
    weights = model.pretrained_cfg.get("weights", {}).get("name") or (
        "random" if args.pretrained == "none" else str(args.pretrained))
    p = model.preprocessing
    dataset = dataset_for(samples, model, args.protocol, args.scales)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    limit = f" (--limit {args.limit})" if len(samples) < len(found.samples) else ""
    print(f"{found.describe()}{limit}")
    if found.missing:
        print(f"note: {len(found.missing):,} files named in {found.label_file} are not in {found.root} "
              f"(first: {found.missing[0]}); evaluating the {len(found.samples):,} present")
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
                 "found": len(found.samples), "missing": len(found.missing), "limit": args.limit},
        "environment": environment(device, args.workers, args.batch_size, args.precision)}
    if args.json:
        write_json(args.json, report)
        print(f"report -> {args.json}")
    if args.predictions:
        result.write_predictions(args.predictions)
        print(f"predictions -> {args.predictions}")
    return report


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError, WeightsError) as err:
        sys.exit(f"imagenet: error: {err}")
