"""Updating a built index (``VectorIndex.add_new`` + ``remove``, what ``index add`` / ``index remove``
do) against building it again over the same rows: time of each, in the same run, and the
1-recall@10 of both against exact search of held-out queries, so the cost of not retraining shows.

The index is built over ``--n`` clustered vectors (``benchmarks/retrieval.py``'s mixture), then
``--add`` new ones are added and ``--remove`` of the original rows removed; the rebuild indexes the
resulting rows from scratch (training, and tuning nprobe / efSearch, included: that is what a
rebuild costs). Saving is left out of both (the same crash-safe save follows either).

    PYTHONPATH=. python benchmarks/index_updates.py --n 200000 --add 20000 --remove 20000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from _environment import environment  # benchmarks/_environment.py, beside this script
from retrieval import mixture  # benchmarks/retrieval.py, beside this script

from alexnet_zoo.paths import write_json
from alexnet_zoo.retrieval.index import VectorIndex
from alexnet_zoo.retrieval.index_tuning import exact_knn, recall_at

__all__ = ["main"]


def _recall(index: VectorIndex, database: np.ndarray, queries: np.ndarray) -> float:
    _, truth = exact_knn(database, queries, 1)
    _, found = index.search_arrays(queries, 10)
    return round(recall_at(found, truth[:, 0]), 4)


def _one_kind(kind: str, x: np.ndarray, n: int, added: int, removed: int, queries: np.ndarray) -> dict[str, Any]:
    paths = [f"v{i}" for i in range(len(x))]
    index = VectorIndex.build(x[:n], paths[:n], kind=kind)
    start = time.perf_counter()
    index.add_new(x[n:n + added], paths[n:n + added])
    index.remove(paths[:removed])
    update = time.perf_counter() - start
    rows = np.arange(removed, n + added)
    start = time.perf_counter()
    rebuilt = VectorIndex.build(x[rows], [paths[i] for i in rows], kind=kind)
    rebuild = time.perf_counter() - start
    assert index.paths == rebuilt.paths
    return {"kind": kind, "factory": index.info["factory"], "update_s": round(update, 3),
            "rebuild_s": round(rebuild, 3), "rebuild_over_update": round(rebuild / update, 1),
            "recall_updated": _recall(index, x[rows], queries), "recall_rebuilt": _recall(rebuilt, x[rows], queries),
            "search_params": index.info["search_params"], "changes_since_recall": index.info.get("changes_since_recall")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--add", type=int, default=20_000)
    parser.add_argument("--remove", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--kinds", nargs="+", choices=("exact", "ivfpq", "hnsw"), default=["exact", "ivfpq", "hnsw"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    data = mixture(args.n + args.add + args.queries, args.dim)
    x, queries = data[:args.n + args.add], data[args.n + args.add:]
    rows = []
    for kind in args.kinds:
        rows.append(_one_kind(kind, x, args.n, args.add, args.remove, queries))
        print(json.dumps(rows[-1]), flush=True)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "results": rows,
              "environment": environment(faiss=faiss.__version__, numpy=np.__version__,
                                         faiss_threads=faiss.omp_get_max_threads(), n=args.n, add=args.add,
                                         remove=args.remove, dim=args.dim, queries=args.queries)}
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
