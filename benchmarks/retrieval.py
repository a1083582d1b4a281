"""Index kinds against exact search: build time, bytes per vector, queries/s and 1-recall@10.

The vectors are a Gaussian mixture with a low intrinsic dimension (clusters in a 16-d subspace
embedded in ``--dim`` dimensions, plus small noise), closer to image features than uniform noise.
Usage: ``PYTHONPATH=. python benchmarks/retrieval.py --n 1000000 --dim 64 --kinds exact ivfpq hnsw``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import faiss
import numpy as np

from alexnet_zoo.index import VectorIndex, exact_knn, recall_at

__all__ = ["main", "mixture"]


def mixture(n: int, dim: int, *, clusters: int = 1000, intrinsic: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(intrinsic, dim)).astype(np.float32)
    centres = rng.normal(size=(clusters, intrinsic)).astype(np.float32) * 2
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, 100_000):
        m = min(100_000, n - lo)
        latent = centres[rng.integers(0, clusters, m)] + rng.normal(size=(m, intrinsic)).astype(np.float32)
        out[lo:lo + m] = latent @ basis + 0.2 * rng.normal(size=(m, dim)).astype(np.float32)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--kinds", nargs="+", default=["exact", "ivfpq", "hnsw"])
    args = parser.parse_args(argv)
    x = mixture(args.n + args.queries, args.dim)
    db, q = x[:args.n], x[args.n:]  # queries are held out: not in the index
    paths = [str(i) for i in range(args.n)]
    _, truth = exact_knn(db, q, 1)
    rows = []
    for kind in args.kinds:
        start = time.perf_counter()
        index = VectorIndex.build(db, paths, kind=kind, queries=500)
        build = time.perf_counter() - start
        index.search_arrays(q[:10], 10)  # warm up
        start = time.perf_counter()
        _, ids = index.search_arrays(q, 10)
        qps = len(q) / (time.perf_counter() - start)
        rows.append({"kind": kind, "factory": index.info["factory"], "params": index.info["search_params"],
                     "build_s": round(build, 1), "bytes_per_vector": index.info["bytes_per_vector"],
                     "queries_per_s": round(qps), "recall_at_10": recall_at(ids, truth[:, 0])})
        print(json.dumps(rows[-1]), flush=True)
    exact = next((r for r in rows if r["kind"] == "exact"), None)
    print(f"# {args.n} x {args.dim}, {len(q)} held-out queries, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    for r in rows:
        speed = f"{r['queries_per_s'] / exact['queries_per_s']:.1f}x" if exact else "-"
        print(f"| {r['kind']} | {r['factory']} {r['params']} | {r['build_s']} | {r['bytes_per_vector']} | "
              f"{r['queries_per_s']} ({speed}) | {r['recall_at_10']:.3f} |")
    return rows


if __name__ == "__main__":
    main()
