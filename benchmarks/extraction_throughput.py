"""Feature extraction speed on real JPEGs: ``extract_to_shards`` against a straightforward pipeline.

Both contenders turn the same list of JPEGs into fc7 vectors (the 4096-d penultimate layer) with
the same weights, batch size and number of DataLoader workers, and time everything a user waits for:
starting the workers, reading, decoding, resizing, the forward passes and (ours) writing the shards.

* ``ours fp32`` / ``ours bf16`` - ``alexnet_zoo.retrieval.extraction.extract_to_shards`` with a
                      ``FeatureExtractor(model, "fc7", precision=...)`` of ``alexnet_owt`` (torchvision's
                      layout; ``--arch alexnet``: the paper's), default loader (``alexnet_zoo.data.batching``);
* ``straightforward`` - what one writes from the torchvision docs: ``torchvision.models.alexnet(weights=None)
                      .eval()``, a Dataset doing ``PIL.Image.open(path).convert("RGB")`` + ``Resize(256)``,
                      ``CenterCrop(224)``, ``ToTensor()``, ``Normalize`` per image, a DataLoader, and
                      ``classifier[:-1]`` of the batch (fc7 after its ReLU) under ``torch.inference_mode``.

For ``alexnet_owt`` our model gets the torchvision model's weights, so the two must produce the same
vectors up to resizing differences (and bfloat16 rounding): their cosines are printed as a check that
the work is the same. Rounds alternate which contender goes first; the median round is reported.

    PYTHONPATH=. python benchmarks/extraction_throughput.py --repeat 2 --workers 2 --batch-size 32 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from _environment import environment  # benchmarks/_environment.py, beside this script
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from alexnet_zoo import alexnet, alexnet_owt
from alexnet_zoo.paths import write_json
from alexnet_zoo.retrieval.extraction import extract_to_shards, list_images
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.retrieval.shards import read_features
from alexnet_zoo.weights.convert.from_torchvision import remap_torchvision_state_dict

__all__ = ["main", "ours", "straightforward"]

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet_samples"


class _PilFiles(Dataset):
    """The textbook Dataset: PIL opens and converts each file, torchvision transforms it."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


def straightforward(model: torch.nn.Module, paths: list[str], batch_size: int, workers: int) -> tuple[float, np.ndarray]:
    """(seconds, fc7 vectors) of the torchvision pipeline over ``paths``."""
    start = time.perf_counter()
    loader = DataLoader(_PilFiles(paths), batch_size=batch_size, num_workers=workers)
    out = []
    with torch.inference_mode():
        for batch in loader:
            x = torch.flatten(model.avgpool(model.features(batch)), 1)
            out.append(model.classifier[:-1](x).numpy())
    return time.perf_counter() - start, np.concatenate(out)


def ours(extractor: FeatureExtractor, paths: list[str], workers: int, scratch: Path) -> tuple[float, np.ndarray]:
    """(seconds, fc7 vectors) of ``extract_to_shards`` into a fresh folder (one shard)."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    start = time.perf_counter()
    extract_to_shards(extractor, paths, out, shard_size=len(paths), workers=workers, progress=False)
    seconds = time.perf_counter() - start
    vectors, _, _ = read_features(out)
    return seconds, vectors


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--data", type=Path, default=SAMPLES, help="folder of JPEGs (default: the 200 samples)")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the pictures per run (200 -> 400)")
    parser.add_argument("--arch", choices=("alexnet_owt", "alexnet"), default="alexnet_owt")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"],
                        help="our extractor's arithmetic (the straightforward pipeline is fp32)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    paths = [p for p in list_images(args.data) if p.lower().endswith((".jpg", ".jpeg"))] * args.repeat
    if not paths:
        raise SystemExit(f"{args.data}: no JPEGs")
    torch.manual_seed(0)
    reference = torchvision.models.alexnet(weights=None).eval()
    model = (alexnet_owt if args.arch == "alexnet_owt" else alexnet)()
    if args.arch == "alexnet_owt":  # the same weights: the same vectors are expected
        model.load_state_dict(remap_torchvision_state_dict(reference.state_dict(), model))
    extractors = {f"ours {p}": FeatureExtractor(model, "fc7", normalize=False, device="cpu", batch_size=args.batch_size,
                                                precision=p) for p in args.precisions}
    env = environment("cpu", workers=args.workers, batch_size=args.batch_size, precision="+".join(args.precisions))
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    print(f"{len(paths)} JPEGs ({len(paths) // args.repeat} x {args.repeat}) from {args.data}; ours: {args.arch}")

    names = ["straightforward", *extractors]
    timings: dict[str, list[float]] = {name: [] for name in names}
    vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for extractor in extractors.values():  # warm-up: kernels compiled, caches filled
            ours(extractor, paths[:args.batch_size], 0, Path(scratch))
        straightforward(reference, paths[:args.batch_size], args.batch_size, 0)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # each contender leads a round in turn
                if name == "straightforward":
                    seconds, vectors[name] = straightforward(reference, paths, args.batch_size, args.workers)
                else:
                    seconds, vectors[name] = ours(extractors[name], paths, args.workers, Path(scratch))
                timings[name].append(len(paths) / seconds)
                print(f"  round {r + 1} {name:<16} {timings[name][-1]:7.1f} images/s", flush=True)
    medians = {k: statistics.median(v) for k, v in timings.items()}
    ratios = {name: medians[name] / medians["straightforward"] for name in extractors}
    check = {}
    if args.arch == "alexnet_owt":
        b = vectors["straightforward"]
        for name in extractors:
            a = vectors[name]
            cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
            check[name] = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
    report = {"command": " ".join(sys.argv) if argv is None else argv, "environment": env, "images": len(paths),
              "arch": args.arch, "images_per_s": medians, "rounds": timings, "ratio": ratios,
              "same_vectors": check}
    for name in extractors:
        print(f"{name} {medians[name]:.1f} images/s, straightforward {medians['straightforward']:.1f} images/s, "
              f"ratio {ratios[name]:.2f}x (median of {args.rounds})"
              + (f"; fc7 cosine to straightforward mean {check[name]['mean_cosine']:.5f}, "
                 f"min {check[name]['min_cosine']:.5f}" if name in check else ""))
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
