"""Image retrieval benchmarks with AlexNet features, scored as each dataset's own evaluation scores them.

    python -m alexnet_zoo.benchmarks.retrieval --dataset holidays --data ~/holidays/jpg \\
        --layer fc6 --json holidays.json --csv holidays_queries.csv

``--dataset``: ``holidays`` (INRIA Holidays, mAP), ``ukbench`` (N-S score out of 4), ``oxford5k`` and
``paris6k`` (mAP with junk ignored, queries cropped to their boxes), ``copydays`` (INRIA Copydays:
the attacked copies as queries against the originals and ``--distractors``; mAP of each attack
family and level, and over all), ``groups`` (a user's CSV of
``path,group``, mAP). The layouts are :mod:`alexnet_zoo.retrieval.benchmark_sets`'; the figures
:mod:`alexnet_zoo.retrieval.metrics`' (the reference ``compute_ap`` and N-S). Features come from
:class:`~alexnet_zoo.retrieval.features.FeatureExtractor`; the search is exact. ``--pca D
[--whiten] [--pca-train DIR_OR_FEATURES_OR_NPY]`` ranks them after PCA (whitening) to D dimensions
learned on a separate set, as Babenko et al. 2014 do (:mod:`alexnet_zoo.benchmarks.retrieval_pca`).
Numbers to expect: docs/retrieval.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alexnet_zoo.cli.failures import CommandError, report_errors
from alexnet_zoo.cli.options import bounded_int, describe, device_arg
from alexnet_zoo.devices import DEVICE_HELP
from alexnet_zoo.eval.precision import PRECISIONS
from alexnet_zoo.models.config import ARCHS
from alexnet_zoo.paths import atomic_write, write_json
from alexnet_zoo.retrieval.benchmark_sets import DATASETS

__all__ = ["LAYERS", "add_arguments", "build_parser", "main", "run"]

LAYERS = ("fc7", "fc6", "pool5")  # the layers Babenko et al. compare (their layers 7, 6 and 5)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser.add_argument("--dataset", choices=DATASETS, required=True,
                        help="holidays, ukbench, oxford5k, paris6k, copydays: the dataset's own layout and "
                             "ground truth; "
                             "groups: your own labelled set (--groups)")
    parser.add_argument("--data", type=Path, required=True,
                        help="the dataset's folder (its images; for oxford5k / paris6k also gt_files/)")
    parser.add_argument("--groups", type=Path, default=None,
                        help="--dataset groups: CSV of path,group lines, paths relative to --data")
    parser.add_argument("--distractors", default=None, metavar="DIR_OR_COUNT",
                        help="--dataset copydays: a folder of pictures added to the database, or a count: the first "
                             "N (sorted) of --data/distractors/")
    parser.add_argument("--layer", choices=LAYERS, default="fc7", help="the layer whose activations are the vector")
    parser.add_argument("--pretrained", default="default",
                        help="weight name, hf-hub:org/repo, local folder or file; 'default' (the arch's default "
                             "weights) or 'none' (random)")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="alexnet",
                        help="architecture when --pretrained does not imply one")
    parser.add_argument("--no-normalize", action="store_true",
                        help="keep the raw vectors and rank by Euclidean distance (default: unit vectors, cosine)")
    parser.add_argument("--query-flip", action="store_true",
                        help="each query's vector is the mean of its picture's and its mirror image's")
    parser.add_argument("--pca", type=bounded_int(1), default=None, metavar="D",
                        help="rank after PCA to D dimensions (the index's own PCA), re-normalised for cosine")
    parser.add_argument("--whiten", action="store_true", help="--pca: PCA whitening (each direction to unit variance)")
    parser.add_argument("--pca-train", type=Path, default=None, metavar="DIR_OR_FEATURES_OR_NPY",
                        help="--pca: learn it on these instead of the evaluated database (a folder of pictures, "
                             "extracted as the benchmark extracts; a features folder of the same model, weights, "
                             "layer and preprocessing; or a .npy of (N, dim) vectors)")
    parser.add_argument("--recall-k", type=bounded_int(1), nargs="+", default=[1, 5, 10], metavar="K",
                        help="the k of recall@k and precision@k (default: 1 5 10)")
    parser.add_argument("--batch-size", type=bounded_int(1), default=32, help="images per forward pass")
    parser.add_argument("--device", type=device_arg, default=None, help=f"{DEVICE_HELP} (default: auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the arithmetic of the forward pass (auto: as alexnet-zoo extract chooses)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--csv", type=Path, default=None, help="write one line per query here")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="python -m alexnet_zoo.benchmarks.retrieval",
                                                 description=describe(__doc__)))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its figures, write --json / --csv, and return the report."""
    return run(build_parser().parse_args(argv))


def _print_figures(figures: dict[str, Any], primary: str) -> None:
    if primary == "ns":
        print(f"N-S score {figures['ns_score']:.3f} / 4 (mean count of the query's group in the top 4)")
    print(f"mAP {figures['mAP']:.4f} over {figures['queries']:,} queries")
    for k, value in figures["recall_at"].items():
        print(f"recall@{k} {value:.4f}   precision@{k} {figures['precision_at'][k]:.4f}")
    for key in ("families", "levels"):
        for name, part in figures.get(key, {}).items():
            print(f"  {name:<12} mAP {part['mAP']:.4f} over {part['queries']:,} queries")


def _write_csv(target: Path, bset: Any, results: Sequence[Any], ks: Sequence[int]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["query", "image", "positives", "junk", "ap", "ns", *[f"recall@{k}" for k in ks],
                          *[f"precision@{k}" for k in ks], "best"])
            for q, r in zip(bset.queries, results):
                out.writerow([q.name, str(q.image), len(q.positives), len(q.junk), f"{r.ap:.6f}",
                              "" if r.ns is None else r.ns, *[f"{r.recall[k]:.6f}" for k in ks],
                              *[f"{r.precision[k]:.6f}" for k in ks], str(bset.images[r.best])])

    atomic_write(target, write)


def _separate_pca(args: argparse.Namespace, extractor: Any, bset: Any) -> tuple[Any, dict[str, Any] | None]:
    """(projection, training set report) learned on --pca-train before the database is read, so a
    refusal (D beyond the layer or the training rows) comes first; (None, None) when not asked."""
    from alexnet_zoo.benchmarks.retrieval_pca import check_pca_dim, learn_benchmark_pca, training_set

    if args.pca is None:
        if args.whiten or args.pca_train is not None:
            raise CommandError("--whiten and --pca-train apply to a PCA: add --pca D")
        return None, None
    check_pca_dim(args.pca, extractor.dim, args.layer)
    if args.pca_train is None:
        return None, None
    train, training = training_set(args.pca_train, extractor, bset, progress=not args.no_progress)
    projection = learn_benchmark_pca(train, args.pca, whiten=args.whiten, metric=_metric(args),
                                     what=f"--pca-train {args.pca_train}", d_in=extractor.dim)
    training["rows"] = len(train)
    return projection, training


def _pca_space(args: argparse.Namespace, database: Any, queries: Any, projection: Any,
               training: dict[str, Any] | None) -> tuple[Any, Any, dict[str, Any]]:
    """Database and queries after the PCA (learned on the database itself without --pca-train)."""
    from alexnet_zoo.benchmarks.retrieval_pca import apply_pca, learn_benchmark_pca, pca_line, pca_report

    d_in = database.shape[1]
    if projection is None:
        projection = learn_benchmark_pca(database, args.pca, whiten=args.whiten, metric=_metric(args),
                                         what="the evaluated database (no --pca-train)", d_in=d_in)
    rows = len(database) if training is None else training.pop("rows")
    info = pca_report(args.pca, d_in, args.whiten, rows, training)
    print(pca_line(info))
    database, queries = apply_pca(database, queries, projection, _metric(args))
    return database, queries, info


def _metric(args: argparse.Namespace) -> Any:
    return "l2" if args.no_normalize else "cosine"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`main` on parsed arguments."""
    # heavy imports here, not at the top: the parser (docs checks, --help) stays light
    from alexnet_zoo.benchmarks.imagenet import environment
    from alexnet_zoo.factory import model_for_weights
    from alexnet_zoo.retrieval.benchmark_eval import embed_benchmark, evaluate_rankings, summarize
    from alexnet_zoo.retrieval.benchmark_sets import read_benchmark
    from alexnet_zoo.retrieval.features import FeatureExtractor, weights_label

    ks = sorted(set(args.recall_k))
    bset = read_benchmark(args.dataset, args.data, args.groups, args.distractors)
    print(bset.describe())
    for note in bset.notes:
        print(f"note: {note}")
    model = model_for_weights(args.pretrained, arch=args.arch)
    weights = weights_label(model, args.pretrained)
    extractor = FeatureExtractor(model, args.layer, normalize=not args.no_normalize, device=args.device,
                                 batch_size=args.batch_size, weights=weights, precision=args.precision)
    measure = "Euclidean distance" if args.no_normalize else "cosine"
    print(f"weights {weights}, layer {args.layer} ({extractor.dim}-d), {measure}, "
          f"query flip {'on' if args.query_flip else 'off'}; device {extractor.device}")
    start = time.perf_counter()
    projection, training = _separate_pca(args, extractor, bset)
    database, queries = embed_benchmark(extractor, bset, query_flip=args.query_flip, progress=not args.no_progress)
    pca = None
    if args.pca:
        database, queries, pca = _pca_space(args, database, queries, projection, training)
    results = evaluate_rankings(database, queries, bset, ks, cosine=not args.no_normalize,
                                progress=not args.no_progress)
    seconds = time.perf_counter() - start
    figures = summarize(results, ks, bset.queries)
    _print_figures(figures, bset.primary)
    report = {"dataset": bset.dataset, "primary": "ns_score" if bset.primary == "ns" else "mAP", **figures,
              "data": {"root": str(bset.root), "images": len(bset.images), "queries": len(bset.queries),
                       "notes": list(bset.notes), "groups": str(args.groups) if args.groups else None,
                       "distractors": args.distractors},
              "features": extractor.info(), "measure": "euclidean" if args.no_normalize else "cosine",
              "query_flip": args.query_flip, "pca": pca, "search": "exact (numpy)", "weights": weights,
              "arch": model.pretrained_cfg.get("architecture", args.arch), "seconds": seconds,
              "environment": environment(str(extractor.device), 0, args.batch_size, extractor.precision)}
    if args.json:
        write_json(args.json, report)
        print(f"report -> {args.json}")
    if args.csv:
        _write_csv(args.csv, bset, results, ks)
        print(f"per-query results -> {args.csv}")
    return report


def _command() -> int:
    main()
    return 0


if __name__ == "__main__":
    sys.exit(report_errors("retrieval", _command))
