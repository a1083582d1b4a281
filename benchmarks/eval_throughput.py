"""Evaluation throughput: the whole pipeline on real JPEGs against the model-only ceiling.

For each protocol, two measurements of the same per-batch code (``alexnet_zoo.eval.protocols.predict``):

* ``model only``  - ``model_throughput``: random uint8 256x256 images already in memory, through the
                    protocol's crops, normalisation, forward pass, softmax averaging and ranking;
* ``pipeline``    - ``evaluate`` on the JPEGs of ``--data`` (read, decoded, resized), start-up
                    included, once per loader of ``alexnet_zoo.data.batching``: ``processes`` (DataLoader
                    workers decoding while the model computes) and ``threads`` (a thread pool
                    decoding each batch between forward passes).

Their ratio says how well decoding hides behind compute (1.0: entirely). Runs are interleaved
round by round and the median is reported; the weights are random (the speed does not depend on
them). ``--repeat`` goes through the image list that many times per pipeline run, so the fixed cost
of starting workers and filling the first batch weighs as little as in a 50,000-image run.

    python benchmarks/eval_throughput.py                                  # center, ten, dense
    python benchmarks/eval_throughput.py --protocols ten --workers 2 --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from _environment import environment  # benchmarks/_environment.py, beside this script

from alexnet_zoo import alexnet, alexnet_owt
from alexnet_zoo.data.datasets import find_labelled_images
from alexnet_zoo.eval.loop import dataset_for, evaluate
from alexnet_zoo.eval.protocols import PROTOCOLS
from alexnet_zoo.eval.throughput import model_throughput
from alexnet_zoo.models.config import ARCHS
from alexnet_zoo.paths import write_json

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet_samples"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--data", type=Path, default=SAMPLES)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="alexnet")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-niceness", type=int, default=10)
    parser.add_argument("--loaders", nargs="+", choices=("processes", "threads"), default=["processes", "threads"],
                        help="pipelines to time against the model alone (alexnet_zoo.data.batching)")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the image list per pipeline run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    model = (alexnet if args.arch == "alexnet" else alexnet_owt)().eval()
    found = find_labelled_images(args.data)
    samples = list(found.samples) * args.repeat
    env = environment("cpu", workers=args.workers, batch_size=args.batch_size, precision=args.precision,
                      worker_niceness=args.worker_niceness)
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    print(f"{found.describe()}, x{args.repeat} per pipeline run")
    rows = []
    for protocol in args.protocols:
        dataset = dataset_for(samples, model, protocol)
        batches = -(-len(samples) // args.batch_size)
        evaluate(model, dataset_for(samples[:args.batch_size], model, protocol), protocol,  # warm-up: kernels, packing
                 batch_size=args.batch_size, workers=0, device="cpu", precision=args.precision, progress=False)
        rounds: dict[str, list[float]] = {"model_only": [], **{loader: [] for loader in args.loaders}}
        for _ in range(args.rounds):
            rounds["model_only"].append(model_throughput(model, protocol, batch_size=args.batch_size, batches=batches,
                                                         device="cpu", precision=args.precision))
            for loader in args.loaders:
                result = evaluate(model, dataset, protocol, batch_size=args.batch_size, workers=args.workers,
                                  device="cpu", precision=args.precision, keep_predictions=False, loader=loader,
                                  worker_niceness=args.worker_niceness, progress=False)
                if result.failed:
                    print(f"warning: {len(result.failed)} unreadable images", file=sys.stderr)
                rounds[loader].append(result.images_per_second)
            print(f"  {protocol}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rounds.items()) + " img/s")
        ceiling = statistics.median(rounds["model_only"])
        row = {"protocol": protocol, "sizes": list(dataset.sizes), "images": len(samples),
               "model_only_images_per_s": ceiling, "rounds": rounds,
               **{f"{loader}_images_per_s": statistics.median(rounds[loader]) for loader in args.loaders},
               **{f"{loader}_ratio": statistics.median(rounds[loader]) / ceiling for loader in args.loaders}}
        rows.append(row)
        print(f"{protocol:<7} model only {ceiling:7.1f} img/s   " + "   ".join(
            f"{loader} {row[f'{loader}_images_per_s']:7.1f} img/s (ratio {row[f'{loader}_ratio']:.2f})"
            for loader in args.loaders))
    report = {"environment": env, "data": str(args.data), "repeat": args.repeat, "results": rows}
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
