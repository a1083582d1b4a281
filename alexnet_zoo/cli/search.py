"""The ``extract`` and ``index build|query`` commands of ``alexnet-zoo`` (``index dedupe`` is
:mod:`alexnet_zoo.cli.dedupe`'s, ``index add|remove`` :mod:`alexnet_zoo.cli.index_update`'s).

Argument parsing and printing only: the work is :mod:`alexnet_zoo.retrieval`'s (extraction, the
index, queries, grids), so ``cli/main.py`` only registers these commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from alexnet_zoo.cli.dedupe import add_dedupe_command
from alexnet_zoo.cli.index_update import add_update_commands, pca_train_vectors, recall_line
from alexnet_zoo.cli.options import bounded_int, device_arg
from alexnet_zoo.data.batching import LOADER_HELP, LOADER_MODES
from alexnet_zoo.eval.precision_names import PRECISION_HELP, PRECISIONS
from alexnet_zoo.models.config import ARCHS
from alexnet_zoo.retrieval.extraction import extract_to_shards
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.retrieval.index import VectorIndex
from alexnet_zoo.retrieval.index_policy import KINDS, parse_size
from alexnet_zoo.retrieval.query import extractor_for, index_device, weights_claim, weights_reference
from alexnet_zoo.retrieval.shards import live_count, printable, provenance, read_features
from alexnet_zoo.retrieval.vector_checks import zero_rows

__all__ = ["add_commands"]


def _memory(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _device(text: str) -> str:
    """An argparse type: a device this machine has, checked by the one check every command uses
    (:func:`alexnet_zoo.devices.resolve_device`), before any model or file is touched."""
    return str(device_arg(text))


def _show(text: str) -> str:
    return printable(str(text))


def _init_distributed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")


def _extract(args: argparse.Namespace) -> int:
    # weight loading: imported by the command, not the parser
    from alexnet_zoo.factory import model_for_weights

    _init_distributed()
    model = model_for_weights(args.pretrained, arch=args.arch)
    extractor = FeatureExtractor(model, args.layer, pool=None if args.pool == "none" else args.pool,
                                 normalize=not args.no_normalize, dtype=args.dtype, device=args.device,
                                 batch_size=args.batch_size, precision=args.precision,
                                 weights=weights_reference(args.pretrained, model),
                                 weights_spec=weights_claim(args.pretrained, model))
    manifest = extract_to_shards(extractor, args.source, args.out, shard_size=args.shard_size, workers=args.workers,
                                 loader=args.loader, progress=not args.quiet)
    grown = f", {len(manifest.get('removed', []))} removed, {len(manifest.get('increments', []))} incremental runs" \
        if "increments" in manifest else ""
    print(f"{_show(args.source)} -> {_show(args.out)}: {live_count(manifest)} vectors of {manifest['dim']} "
          f"({args.layer}, {args.dtype}), {len(manifest['shards'])} shards, {len(manifest['failures'])} unreadable"
          f"{grown}")
    return 0


def _build(args: argparse.Namespace) -> int:
    if args.pca is None and (args.whiten or args.pca_train is not None):
        raise ValueError("--whiten and --pca-train need --pca D, the dimensions to project to")
    vectors, paths, manifest = read_features(args.features)
    train = pca_train_vectors(args.pca_train, manifest) if args.pca_train is not None else None
    index = VectorIndex.build(vectors, paths, kind=args.kind, metric=args.metric, memory=args.memory,
                              meta=provenance(manifest), device=args.device, pca=args.pca, whiten=args.whiten,
                              pca_train=train, train_size=args.train_size)
    index.save(args.out)
    info = index.info
    pca = f"PCA{'-whitened' if args.whiten else ''} to {args.pca} dims, " if args.pca is not None else ""
    print(f"{_show(args.features)} -> {_show(args.out)}: {pca}{info['factory']} over {info['count']} vectors, "
          f"{recall_line(info)}, {info['bytes_per_vector']} bytes/vector")
    return 0


def _query(args: argparse.Namespace) -> int:
    index = VectorIndex.load(args.index, device=index_device(args.device))
    extractor = extractor_for(index.info, pretrained=args.pretrained, device=args.device, folder=args.index)
    vectors = extractor(list(args.images))
    zero = set(zero_rows(vectors).tolist()) if index.info["metric"] == "cosine" else set()
    live = [i for i in range(len(args.images)) if i not in zero]
    found = iter(index.search(vectors[live], args.k) if live else [])
    results = [[] if i in zero else next(found) for i in range(len(args.images))]
    reason = "zero vector: this layer's activations are all zero for the picture, so no neighbour is nearer than another"
    if args.json:
        print(json.dumps([{"query": str(q), "results": [{"path": h.path, "id": h.id, "score": h.score} for h in hits]}
                          | ({"error": reason} if i in zero else {})
                          for i, (q, hits) in enumerate(zip(args.images, results))], indent=2))
    else:
        for i, (q, hits) in enumerate(zip(args.images, results)):
            print(_show(q))
            if i in zero:
                print(f"  no results: {reason}")
            for h in hits:
                print(f"  {h.score:8.4f}  {h.id:>8}  {_show(h.path)}")
    if args.grid and live:
        # Pillow's drawing and fonts: only for --grid
        from alexnet_zoo.retrieval.grids import draw_grid

        draw_grid([[(args.images[i], "query")] + [(h.path, f"{h.score:.4f}") for h in results[i]] for i in live],
                  args.grid, size=args.thumb)
    for i in sorted(zero):
        print(f"alexnet-zoo index query: {_show(args.images[i])}: {reason}", file=sys.stderr)
    return 1 if zero else 0


_SOURCE_HELP = ("a folder (recursive), a glob pattern, or a list file: .txt with one path a line (split on "
                "newlines only; NUL-separated when it holds a NUL, as `find -print0` writes, for names with "
                "newlines) or .jsonl with one JSON string a line; relative paths are from the list's folder")


def add_commands(commands: Any) -> None:
    """Register ``extract`` and ``index build|query|dedupe|add|remove`` on the CLI's subparsers."""
    extract = commands.add_parser("extract", help="features of a folder / list / glob of images, as resumable shards; "
                                                  "rerun on a finished --out to add the source's new pictures")
    extract.add_argument("source", help=_SOURCE_HELP)
    extract.add_argument("--out", type=Path, required=True)
    extract.add_argument("--arch", choices=sorted(ARCHS), default="alexnet")
    extract.add_argument("--pretrained", default="default", help="weight name, local folder / file, 'default' or "
                                                                 "'none' (random; such an index cannot be queried)")
    extract.add_argument("--layer", default="fc7")
    extract.add_argument("--pool", choices=("avg", "max", "none"), default="avg", help="conv layers: over space")
    extract.add_argument("--no-normalize", action="store_true", help="keep raw vectors (default: unit length)")
    extract.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                         help="storage of the vectors (default float16: half the disk, and unit vectors keep a "
                              "cosine > 0.9999 to float32's; float32 for raw vectors beyond float16's range)")
    extract.add_argument("--fp16", action="store_const", const="float16", dest="dtype", help=argparse.SUPPRESS)
    extract.add_argument("--batch-size", type=bounded_int(1, 65536), default=32)
    extract.add_argument("--workers", type=bounded_int(0, 1024), default=2)
    extract.add_argument("--loader", choices=LOADER_MODES, default="auto", help=LOADER_HELP)
    extract.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    extract.add_argument("--shard-size", type=bounded_int(1), default=10_000, help="images a shard (default 10000)")
    extract.add_argument("--device", type=_device, default=None,
                         help="cpu, cuda, cuda:N or mps (default: a CUDA GPU, else mps, else the CPU)")
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(run=_extract)

    index = commands.add_parser("index", help="build, query, dedupe, add to and remove from a FAISS index of "
                                              "extracted features")
    isub = index.add_subparsers(dest="index_command", required=True)
    build = isub.add_parser("build", help="index a features folder")
    build.add_argument("features", type=Path)
    build.add_argument("--out", type=Path, required=True)
    build.add_argument("--kind", choices=("auto", *KINDS), default="auto",
                       help="auto: exact up to 50,000 vectors, then HNSW up to 2M, IVF past it (raw vectors) "
                       "or IVF-PQ when they exceed --memory; ivfpq needs at least 256")
    build.add_argument("--metric", choices=("cosine", "l2"), default="cosine", help="l2: the paper's distance")
    build.add_argument("--memory", type=_memory, default="4GB", help="memory budget for the index, e.g. 4GB")
    build.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                       help="auto: train and fill exact / IVF indexes on a GPU when faiss-gpu sees one")
    build.add_argument("--train-size", type=bounded_int(1), default=None, metavar="N",
                       help="most vectors the IVF / PQ k-means trains on (default: 50 a list, at least "
                            "20,000, within 1 GiB)")
    build.add_argument("--pca", type=bounded_int(1), default=None, metavar="D",
                       help="project to D dimensions first (PCA; at most the vectors' dim and their count)")
    build.add_argument("--whiten", action="store_true", help="with --pca: PCA whitening (each direction to unit "
                                                             "variance, Babenko et al. 2014)")
    build.add_argument("--pca-train", type=Path, default=None, metavar="FOLDER_OR_NPY",
                       help="with --pca: learn it on these features (a features folder of the same model / layer, or "
                            "an (N, dim) .npy) instead of the indexed ones")
    build.set_defaults(run=_build)
    query = isub.add_parser("query", help="nearest indexed images of query images",
                            epilog="exit status 1: some queries had a zero vector (no results; listed on stderr)")
    query.add_argument("index", type=Path)
    query.add_argument("images", nargs="+")
    query.add_argument("-k", type=bounded_int(1), default=10, help="neighbours a query (capped at the index size)")
    query.add_argument("--json", action="store_true")
    query.add_argument("--grid", type=Path, default=None, help="draw queries and neighbours (Figure 4) to a PNG")
    query.add_argument("--thumb", type=bounded_int(16, 1024), default=128, help="side of each picture in the grid, in pixels")
    query.add_argument("--pretrained", default=None,
                       help="weights (default: those info.json names, if a spec, an hf-hub: repo or inside the "
                            "index folder; other local weights must be passed here)")
    query.add_argument("--device", type=_device, default=None,
                       help="cpu, cuda, cuda:N or mps for the model; the index uses a GPU where faiss sees one "
                            "(default: the best device here)")
    query.set_defaults(run=_query)
    add_dedupe_command(isub)
    add_update_commands(isub)
