"""Exact search as the oracle, and the tuning of approximate indexes against it.

An approximate index (IVF + PQ, HNSW) is as good as its search parameter: :func:`tune` tries
nprobe / efSearch from cheap to dear until the 1-recall@10 of held-out rows, measured against
brute force, reaches :data:`TARGET_RECALL` (plus two standard deviations of the sample, so a fresh
sample reaches it too). numpy and faiss only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np

from alexnet_zoo.retrieval.vector_checks import Metric, check_vectors, faiss_metric, prepare

__all__ = ["TARGET_RECALL", "exact_knn", "heldout_recall", "heldout_truth", "recall_at", "sample_rows", "search_grid",
           "tune", "tune_on_rows"]

TARGET_RECALL = 0.95
Knn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (queries, k) -> (scores, ids), best first


def exact_knn(database: np.ndarray, queries: np.ndarray, k: int, metric: Metric = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """The oracle: brute-force (scores, ids) of the k nearest rows of ``database``."""
    db = prepare(check_vectors(database, None, "database"), metric)
    q = prepare(check_vectors(queries, None, "queries"), metric)
    return faiss.knn(q, db, min(k, len(db)), metric=faiss_metric(metric))


def recall_at(found: np.ndarray, truth_first: np.ndarray) -> float:
    """1-recall@k: the share of queries whose true nearest neighbour is among ``found`` (Q, k)."""
    return float(np.mean([t in row for t, row in zip(truth_first, found)])) if len(found) else 1.0


def sample_rows(n: int, rng: np.random.Generator, queries: int) -> np.ndarray:
    """``queries`` distinct row numbers of ``n`` (all when fewer), sorted: the held-out queries."""
    return np.sort(rng.choice(n, min(queries, n), replace=False))


def heldout_truth(x: np.ndarray, ids: np.ndarray, metric: Metric, space: np.ndarray | None = None) -> np.ndarray:
    """The true nearest other row of each row ``ids`` of the indexed (prepared) ``x``: exact search
    over ``space`` (the same rows as another index sees them: after its PCA), or over ``x`` itself.
    One brute-force pass over every row, so :func:`tune` computes it once, not once a grid step."""
    space = x if space is None else space
    _, truth = faiss.knn(space[ids], space, min(2, len(space)), metric=faiss_metric(metric))
    return np.where(truth[:, 0] == ids, truth[:, -1], truth[:, 0])


def heldout_recall(x: np.ndarray, ids: np.ndarray, metric: Metric, knn: Knn, space: np.ndarray | None = None, *,
                   truth: np.ndarray | None = None) -> float:
    """1-recall@10 of rows ``ids`` of the indexed (prepared) ``x`` used as queries through ``knn``,
    their own row excluded from both sides, against ``truth`` (:func:`heldout_truth`, computed
    here when not given)."""
    if len(x) < 2:
        return 1.0  # no other vector to find
    first = heldout_truth(x, ids, metric, space) if truth is None else truth
    _, found = knn(x[ids], 11)
    found = [[f for f in row if f != q][:10] for row, q in zip(found, ids)]
    return recall_at(np.array(found, dtype=object) if found else np.zeros((0, 10)), first)


def search_grid(kind: str, nlist: int) -> list[dict[str, int]]:
    """The search parameters :func:`tune` tries, cheapest first: efSearch for HNSW, nprobe up to
    every one of the ``nlist`` lists for IVF."""
    if kind == "hnsw":
        return [{"efSearch": e} for e in (16, 32, 64, 128, 256, 512)]
    return [{"nprobe": p} for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p < nlist] + [{"nprobe": nlist}]


def tune(grid: list[dict[str, int]], target: float, queries: int, *, apply: Callable[[dict[str, int]], None],
         recall: Callable[[], float]) -> dict[str, int]:
    """The first (cheapest) parameters of ``grid`` whose ``recall()`` on a tuning sample of
    ``queries`` rows, once ``apply``-ed, reaches ``target``; the last (dearest) if none does."""
    # the recall of a fresh sample scatters around the tuning one by ~sqrt(r(1-r)/q): ask for two
    # standard deviations more, so the stored (and the user's) recall also reaches ``target``
    need = min(1.0, target + 2 * math.sqrt(target * (1 - target) / max(queries, 1)))
    for params in grid:
        apply(params)
        if recall() >= need:
            return params
    return grid[-1]


def tune_on_rows(grid: list[dict[str, int]], target: float, x: np.ndarray, ids: np.ndarray, metric: Metric,
                 knn: Knn, *, apply: Callable[[dict[str, int]], None], space: np.ndarray | None = None
                 ) -> dict[str, int]:
    """:func:`tune` with rows ``ids`` of ``x`` as the tuning queries: their exact neighbours are
    found once (a brute-force pass over every row: minutes at 10M), not once a grid step."""
    truth = heldout_truth(x, ids, metric, space) if len(x) >= 2 else None
    return tune(grid, target, len(ids), apply=apply,
                recall=lambda: heldout_recall(x, ids, metric, knn, space, truth=truth))
