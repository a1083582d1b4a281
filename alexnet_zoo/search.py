"""Search by picture: the thin layer between an index folder (numpy / FAISS only) and the model.

It rebuilds the extractor an index was made with (model, weights, layer, pooling), extracts the
query images and searches by vector; it also holds the ``extract`` and ``index`` commands of the
command line, so ``cli.py`` only registers them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alexnet_zoo.features import FeatureExtractor, weights_label
from alexnet_zoo.index import IndexMismatch, SearchHit, VectorIndex
from alexnet_zoo.loading import LOADER_HELP, LOADER_MODES
from alexnet_zoo.precision import PRECISIONS

__all__ = ["add_commands", "extractor_for", "index_device", "search_images", "weights_reference"]


def weights_reference(pretrained: str, model: Any) -> str:
    """What to record as the weights: the spec name, an absolute local path, or "random"."""
    if pretrained == "none":
        return "random"
    label = weights_label(model)
    if label not in ("random", "local"):
        return label
    return os.path.abspath(pretrained) if os.path.exists(pretrained) else pretrained


def extractor_for(info: dict[str, Any], *, pretrained: str | None = None, device: str | None = None,
                  batch_size: int = 32) -> FeatureExtractor:
    """The extractor whose vectors match ``info`` (an index's or a features manifest's)."""
    from alexnet_zoo.factory import model_for_weights

    ref = pretrained or info.get("weights")
    if not ref or ref == "random":
        raise IndexMismatch("the index was built from randomly initialised weights, which cannot be rebuilt; "
                            "extract with --pretrained NAME|PATH (e.g. a folder saved with save_pretrained)")
    model = model_for_weights(ref, arch=info.get("model", "alexnet"))
    extractor = FeatureExtractor(model, info["layer"], pool=info.get("pool"), normalize=info.get("normalized", True),
                                 dtype=info.get("dtype", "float32"), device=device, batch_size=batch_size,
                                 weights=weights_reference(ref, model), precision=info.get("precision", "auto"))
    for key in ("model", "weights", "layer", "dim"):
        if key in info and extractor.info()[key] != info[key]:
            raise IndexMismatch(f"query features have {key}={extractor.info()[key]!r}, the index {key}={info[key]!r}")
    return extractor


def search_images(index: VectorIndex, extractor: FeatureExtractor, images: Sequence[Any], k: int = 10
                  ) -> list[list[SearchHit]]:
    """The k nearest indexed images of each query image (path, PIL image or tensor)."""
    return index.search(extractor(list(images)), k)


# ---- command line ------------------------------------------------------------------------------

def _init_distributed() -> None:
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")


def _extract(args: argparse.Namespace) -> int:
    from alexnet_zoo.extraction import extract_to_shards
    from alexnet_zoo.factory import model_for_weights

    _init_distributed()
    model = model_for_weights(args.pretrained, arch=args.arch)
    extractor = FeatureExtractor(model, args.layer, pool=None if args.pool == "none" else args.pool,
                                 normalize=not args.no_normalize, dtype="float16" if args.fp16 else "float32",
                                 device=args.device, batch_size=args.batch_size, precision=args.precision,
                                 weights=weights_reference(args.pretrained, model))
    manifest = extract_to_shards(extractor, args.source, args.out, shard_size=args.shard_size, workers=args.workers,
                                 loader=args.loader, progress=not args.quiet)
    print(f"{args.source} -> {args.out}: {manifest['count']} vectors of {manifest['dim']} ({args.layer}), "
          f"{len(manifest['shards'])} shards, {len(manifest['failures'])} unreadable")
    return 0


def _build(args: argparse.Namespace) -> int:
    from alexnet_zoo.extraction import read_features

    vectors, paths, manifest = read_features(args.features)
    index = VectorIndex.build(vectors, paths, kind=args.kind, metric=args.metric, memory=args.memory, meta=manifest,
                              device=args.device)
    index.save(args.out)
    info = index.info
    print(f"{args.features} -> {args.out}: {info['factory']} over {info['count']} vectors, "
          f"1-recall@10 {info['recall_at_10']:.3f}, {info['bytes_per_vector']} bytes/vector")
    return 0


def index_device(torch_device: str | None) -> str:
    """The index's device for a model's --device: cpu stays on the CPU, cuda[:N] asks for a GPU,
    none given lets the index choose (a GPU where faiss sees one)."""
    if torch_device is None:
        return "auto"
    return "cpu" if torch_device.lower().startswith(("cpu", "mps")) else "gpu"


def _query(args: argparse.Namespace) -> int:
    index = VectorIndex.load(args.index, device=index_device(args.device))
    extractor = extractor_for(index.info, pretrained=args.pretrained, device=args.device)
    results = search_images(index, extractor, args.images, args.k)
    if args.json:
        print(json.dumps([{"query": str(q), "results": [{"path": h.path, "id": h.id, "score": h.score} for h in hits]}
                          for q, hits in zip(args.images, results)], indent=2))
    else:
        for q, hits in zip(args.images, results):
            print(q)
            for h in hits:
                print(f"  {h.score:8.4f}  {h.id:>8}  {h.path}")
    if args.grid:
        from alexnet_zoo.grids import draw_grid

        draw_grid([[(q, "query")] + [(h.path, f"{h.score:.4f}") for h in hits]
                   for q, hits in zip(args.images, results)], args.grid, size=args.thumb)
    return 0


def _dedupe(args: argparse.Namespace) -> int:
    index = VectorIndex.load(args.index, device=args.device)
    pairs = index.duplicates(args.threshold, args.k)
    if args.json:
        print(json.dumps([{"a": index.paths[i], "b": index.paths[j], "ids": [i, j], "score": s} for i, j, s in pairs],
                         indent=2))
    else:
        for i, j, s in pairs:
            print(f"{s:.4f}  {index.paths[i]}  {index.paths[j]}")
        print(f"{len(pairs)} pairs at cosine >= {args.threshold}")
    if args.grid and pairs:
        from alexnet_zoo.grids import draw_grid

        draw_grid([[(index.paths[i], f"{i}"), (index.paths[j], f"{s:.4f}")] for i, j, s in pairs[:50]], args.grid,
                  size=args.thumb)
    return 0


def add_commands(commands: Any, archs: Sequence[str]) -> None:
    """Register ``extract`` and ``index build|query|dedupe`` on the CLI's subparsers."""
    extract = commands.add_parser("extract", help="features of a folder / list / glob of images, as resumable shards")
    extract.add_argument("source", help="a folder, a .txt list of paths, or a glob pattern")
    extract.add_argument("--out", type=Path, required=True)
    extract.add_argument("--arch", choices=sorted(archs), default="alexnet")
    extract.add_argument("--pretrained", default="default", help="weight name, local folder / file, 'default' or "
                                                                 "'none' (random; such an index cannot be queried)")
    extract.add_argument("--layer", default="fc7")
    extract.add_argument("--pool", choices=("avg", "max", "none"), default="avg", help="conv layers: over space")
    extract.add_argument("--no-normalize", action="store_true", help="keep raw vectors (default: unit length)")
    extract.add_argument("--fp16", action="store_true", help="store float16 vectors")
    extract.add_argument("--batch-size", type=int, default=32)
    extract.add_argument("--workers", type=int, default=2)
    extract.add_argument("--loader", choices=LOADER_MODES, default="auto", help=LOADER_HELP)
    extract.add_argument("--precision", choices=PRECISIONS, default="auto",
                         help="arithmetic: auto = fp16 on CUDA, fp32 on the CPU; bf16 is ~1.8x fp32 on CPUs "
                              "with bfloat16 units (fc7 cosine to fp32 > 0.999)")
    extract.add_argument("--shard-size", type=int, default=10_000)
    extract.add_argument("--device", default=None)
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(run=_extract)

    index = commands.add_parser("index", help="build, query and dedupe a FAISS index of extracted features")
    isub = index.add_subparsers(dest="index_command", required=True)
    build = isub.add_parser("build", help="index a features folder")
    build.add_argument("features", type=Path)
    build.add_argument("--out", type=Path, required=True)
    build.add_argument("--kind", choices=("auto", "exact", "ivfpq", "hnsw"), default="auto")
    build.add_argument("--metric", choices=("cosine", "l2"), default="cosine", help="l2: the paper's distance")
    build.add_argument("--memory", default="4GB", help="memory budget for the index, e.g. 4GB")
    build.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                       help="auto: train and fill exact / IVF indexes on a GPU when faiss-gpu sees one")
    build.set_defaults(run=_build)
    query = isub.add_parser("query", help="nearest indexed images of query images")
    query.add_argument("index", type=Path)
    query.add_argument("images", nargs="+")
    query.add_argument("-k", type=int, default=10)
    query.add_argument("--json", action="store_true")
    query.add_argument("--grid", type=Path, default=None, help="draw queries and neighbours (Figure 4) to a PNG")
    query.add_argument("--thumb", type=int, default=128, help="side of each picture in the grid, in pixels")
    query.add_argument("--pretrained", default=None, help="weights (default: those the index was built from)")
    query.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... for the model and the index "
                                                      "(default: a GPU where there is one)")
    query.set_defaults(run=_query)
    dedupe = isub.add_parser("dedupe", help="near-duplicate pairs in an index")
    dedupe.add_argument("index", type=Path)
    dedupe.add_argument("--threshold", type=float, default=0.95)
    dedupe.add_argument("-k", type=int, default=10, help="HNSW indexes: neighbours checked per image")
    dedupe.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    dedupe.add_argument("--json", action="store_true")
    dedupe.add_argument("--grid", type=Path, default=None, help="draw the most similar 50 pairs to a PNG")
    dedupe.add_argument("--thumb", type=int, default=128, help="side of each picture in the grid, in pixels")
    dedupe.set_defaults(run=_dedupe)
