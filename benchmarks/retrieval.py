"""Index kinds against exact search: build time, bytes per vector, queries/s and 1-recall@10.

The vectors imitate image features rather than uniform noise: a Gaussian mixture whose clusters
live in a ``--intrinsic``-d subspace of ``--dim`` dimensions (image descriptors have an intrinsic
dimension of a few tens), with heavy-tailed cluster sizes (Zipf-like: a few big classes, many
small ones), cluster spreads that differ, small isotropic noise, and ``--duplicates`` of the rows
being slightly perturbed copies of others (the resized / recompressed copies real collections hold).
Queries come from the same distribution but are held out of the index. Search speed is the median
of ``--rounds`` rounds, interleaved between the kinds so a busy moment of the machine hits them all.
Extraction speed has its own script: ``benchmarks/extraction_throughput.py``.

``--features DIR`` runs the same comparison on real vectors instead (a folder `alexnet-zoo extract`
wrote; ``--queries`` of its rows, drawn at random, are held out as the queries), and ``--pca D``
(``--whiten``) puts that PCA in front of every kind; the truth stays exact search of the original
vectors, so the recall counts what the PCA loses too.

    PYTHONPATH=. python benchmarks/retrieval.py --n 1000000 --dim 64 --kinds exact ivfpq hnsw --dedupe 0.99 \
        --json out.json
    PYTHONPATH=. python benchmarks/retrieval.py --features feats --queries 100 --pca 128 --whiten
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from _environment import environment  # benchmarks/_environment.py, beside this script

from alexnet_zoo.errors import AlexNetZooError
from alexnet_zoo.paths import write_json
from alexnet_zoo.retrieval.index import VectorIndex
from alexnet_zoo.retrieval.index_tuning import exact_knn, recall_at
from alexnet_zoo.retrieval.shards import read_features

__all__ = ["main", "mixture", "pair_recall"]


def mixture(n: int, dim: int, *, clusters: int = 1000, intrinsic: int = 16, zipf: float = 0.7,
            duplicates: float = 0.02, noise: float = 0.2, seed: int = 0) -> np.ndarray:
    """``n`` clustered float32 vectors of ``dim`` (see the module docstring), made in chunks so a
    few million rows need no more memory than the result."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(intrinsic, dim)).astype(np.float32)
    centres = rng.normal(size=(clusters, intrinsic)).astype(np.float32) * 2
    weights = 1.0 / np.arange(1, clusters + 1) ** zipf
    weights /= weights.sum()
    spread = rng.uniform(0.5, 1.5, clusters).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        c = rng.choice(clusters, m, p=weights)
        latent = centres[c] + spread[c, None] * rng.normal(size=(m, intrinsic)).astype(np.float32)
        rows = latent @ basis + noise * rng.normal(size=(m, dim)).astype(np.float32)
        copies = np.flatnonzero(rng.random(m) < duplicates)
        rows[copies] = rows[rng.integers(0, m, copies.size)] + 0.02 * rng.normal(size=(copies.size, dim))
        out[lo:lo + m] = rows
    return out


def _data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(indexed rows, held-out query rows, what they are): the synthetic mixture, or the rows of a
    features folder with ``args.queries`` of them drawn out at random."""
    if args.features is None:
        x = mixture(args.n + args.queries, args.dim, clusters=args.clusters, intrinsic=args.intrinsic,
                    duplicates=args.duplicates)
        return x[:args.n], x[args.n:], {"n": args.n, "dim": args.dim, "intrinsic": args.intrinsic,
                                        "clusters": args.clusters, "duplicates": args.duplicates}
    try:
        vectors, _, manifest = read_features(args.features)
    except (AlexNetZooError, OSError) as error:
        sys.exit(f"retrieval.py: {error}")
    if not 0 < args.queries < len(vectors):
        sys.exit(f"--queries must be between 1 and {len(vectors) - 1}: {args.features} holds {len(vectors)} vectors")
    held = np.zeros(len(vectors), bool)
    held[np.random.default_rng(0).choice(len(vectors), args.queries, replace=False)] = True
    x = np.asarray(vectors, np.float32)
    return x[~held], x[held], {"features": str(args.features), "n": int((~held).sum()), "dim": x.shape[1],
                               "layer": manifest.get("layer"), "pretrained": manifest.get("pretrained")}


def pair_recall(db: np.ndarray, pairs: list[tuple[int, int, float]], threshold: float, sample: int = 200,
                seed: int = 0) -> dict[str, float | int]:
    """The share of the true pairs (cosine >= ``threshold``, found by brute force) of ``sample``
    random rows that ``pairs`` holds: the recall of an approximate dedupe, without the N^2 truth."""
    rows = np.sort(np.random.default_rng(seed).choice(len(db), min(sample, len(db)), replace=False))
    q = db[rows] / np.linalg.norm(db[rows], axis=1, keepdims=True)
    true = set()
    for lo in range(0, len(db), 250_000):
        chunk = db[lo:lo + 250_000]
        sims = q @ (chunk / np.linalg.norm(chunk, axis=1, keepdims=True)).T
        for r, j in zip(*np.nonzero(sims >= threshold)):
            if lo + j != rows[r]:
                true.add((min(int(rows[r]), lo + int(j)), max(int(rows[r]), lo + int(j))))
    found = {(i, j) for i, j, _ in pairs}
    return {"sample_rows": len(rows), "true_pairs": len(true),
            "pair_recall": round(len(true & found) / len(true), 4) if true else 1.0}


def _queries_per_second(index: VectorIndex, q: np.ndarray, min_seconds: float = 0.5) -> float:
    """Whole query batches until ``min_seconds`` have passed (fast kinds need several)."""
    done, start = 0, time.perf_counter()
    while True:
        index.search_arrays(q, 10)
        done += len(q)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--intrinsic", type=int, default=16)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--duplicates", type=float, default=0.02, help="share of rows that are perturbed copies")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--kinds", nargs="+", default=["exact", "ivf", "ivfpq", "hnsw"])
    parser.add_argument("--train-size", type=int, default=None,
                        help="most rows IVF / PQ training sees (default: the library's, 50 a list within 1 GiB)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved search rounds; the median is reported")
    parser.add_argument("--dedupe-nprobe", type=int, default=None, metavar="N",
                        help="--dedupe: lists each IVF range search probes (default: the tuned k-NN nprobe)")
    parser.add_argument("--dedupe", type=float, default=None, metavar="THRESHOLD",
                        help="also time duplicates(THRESHOLD) over the whole index (approximate kinds)")
    parser.add_argument("--features", type=Path, default=None, help="a features folder: real vectors, not synthetic")
    parser.add_argument("--pca", type=int, default=None, metavar="D", help="PCA to D dims in front of every kind")
    parser.add_argument("--whiten", action="store_true", help="with --pca: PCA whitening")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.whiten and args.pca is None:
        parser.error("--whiten needs --pca D")
    for name in ("n", "dim", "queries", "rounds", "train_size", "pca", "dedupe_nprobe"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")

    started = datetime.now(timezone.utc)
    db, q, data = _data(args)  # queries are held out: not in the index
    if args.pca is not None and args.pca > db.shape[1]:
        sys.exit(f"retrieval.py: --pca {args.pca} is more than the vectors' {db.shape[1]} dimensions")
    try:
        command = " ".join([os.path.basename(sys.executable), *sys.argv]) if argv is None else argv
        return _measure(args, db, q, data, {"command": command, "started_utc": started.isoformat(timespec="seconds")})
    except AlexNetZooError as error:  # e.g. a whitened PCA wider than the directions the rows vary in
        sys.exit(f"retrieval.py: {error}")


def _measure(args: argparse.Namespace, db: np.ndarray, q: np.ndarray, data: dict[str, Any],
             run: dict[str, Any]) -> dict[str, Any]:
    """Build every kind, search, time interleaved rounds, print the table, write the JSON report."""
    paths = [str(i) for i in range(len(db))]
    _, truth = exact_knn(db, q, 1)
    pca = {} if args.pca is None else {"pca": args.pca, "whiten": args.whiten}
    indexes, rows = {}, []
    for kind in args.kinds:
        start = time.perf_counter()
        index = VectorIndex.build(db, paths, kind=kind, queries=min(500, len(db)), train_size=args.train_size, **pca)
        build = time.perf_counter() - start
        _, ids = index.search_arrays(q, 10)  # also the warm-up
        indexes[kind] = index
        rows.append({"kind": kind, "factory": index.info["factory"], "params": index.info["search_params"],
                     "build_s": round(build, 1), "bytes_per_vector": index.info["bytes_per_vector"],
                     "recall_at_10": recall_at(ids, truth[:, 0]),
                     "stored_recall_at_10": index.info["recall_at_10"], "qps_rounds": []})
        if args.dedupe is not None and kind != "exact":  # exact: a range search over all N^2 pairs
            start = time.perf_counter()
            nprobe = args.dedupe_nprobe if kind in ("ivf", "ivfpq") else None
            pairs = index.duplicates(args.dedupe, nprobe=nprobe)
            rows[-1].update(dedupe_s=round(time.perf_counter() - start, 1), dedupe_pairs=len(pairs),
                            dedupe_nprobe=nprobe, dedupe_check=pair_recall(db, pairs, args.dedupe))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "qps_rounds"}), flush=True)
    for _ in range(args.rounds):
        for row in rows:
            row["qps_rounds"].append(round(_queries_per_second(indexes[row["kind"]], q)))
    for row in rows:
        row["queries_per_s"] = round(statistics.median(row["qps_rounds"]))
    exact = next((r for r in rows if r["kind"] == "exact"), None)
    for row in rows:
        row["speedup_vs_exact"] = round(row["queries_per_s"] / exact["queries_per_s"], 1) if exact else None
    env = environment(faiss=faiss.__version__, numpy=np.__version__, faiss_threads=faiss.omp_get_max_threads(),
                      gpus=faiss.get_num_gpus())
    started = datetime.fromisoformat(run["started_utc"])
    report = {**run, "seconds": round((datetime.now(timezone.utc) - started).total_seconds()),
              "environment": env, "data": {**data, "queries": len(q), "metric": "cosine", **pca},
              "dedupe_threshold": args.dedupe, "results": rows}
    print(f"# {data['n']} x {data['dim']}{' ' + str(args.features) if args.features else ''}"
          f"{f', PCA {args.pca}' + (' whitened' if args.whiten else '') if pca else ''}, {len(q)} held-out queries, {env['cpu']}, {env['cpu_count']} cores, "
          f"faiss {faiss.__version__}, {env['faiss_threads']} threads, load {env.get('load_average')}")
    extra = (f" dedupe >= {args.dedupe} |", "---|") if args.dedupe is not None else ("", "")
    print(f"| kind | factory (tuned) | build s | bytes/vector | queries/s (vs exact) | 1-recall@10 |{extra[0]}")
    print(f"|---|---|---|---|---|---|{extra[1]}")
    for r in rows:
        params = ", ".join(f"{k} {v}" for k, v in r["params"].items())
        speed = f"{r['speedup_vs_exact']}x" if exact else "-"
        dedupe = (f" {r['dedupe_s']} s, {r['dedupe_pairs']} pairs, pair recall {r['dedupe_check']['pair_recall']}"
                  f" |") if "dedupe_s" in r else (
            " - |" if args.dedupe is not None else "")
        print(f"| {r['kind']} | {r['factory']}{', ' + params if params else ''} | {r['build_s']} | "
              f"{r['bytes_per_vector']} | {r['queries_per_s']} ({speed}) | {r['recall_at_10']:.3f} |{dedupe}")
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
