"""Retrieval metrics as the benchmarks' own evaluation code computes them, so a figure printed here is
comparable with a published one: average precision with junk handling as the Oxford Buildings
reference ``compute_ap.cpp`` does it, the UKBench N-S score, recall@k and precision@k.

A ranking is a sequence of database indices, best first. Scores become a ranking through
:func:`rank`, which settles ties deterministically: equal scores keep database order (the lower index
first, a stable sort), so the same features always give the same figures. Torch-free: numpy only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

__all__ = ["UKBENCH_TOP", "average_precision", "mean_average_precision", "ns_score", "precision_at_k", "rank",
           "recall_at_k"]

UKBENCH_TOP = 4  # the N-S score counts the group's images among the first four results


def rank(scores: np.ndarray) -> np.ndarray:
    """Database indices from best to worst for each row of ``scores`` (higher is better). Ties keep
    database order: a stable sort of the negated scores puts the lower index first."""
    scores = np.asarray(scores)
    if scores.ndim not in (1, 2):
        raise ValueError(f"scores must be one row or a matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or inf: a ranking of them would be arbitrary")
    return np.argsort(-scores, axis=-1, kind="stable")


def _ids(items: Collection[int]) -> np.ndarray:
    return np.fromiter((int(i) for i in items), dtype=np.int64)


def _without_junk(ranking: Sequence[int] | np.ndarray, junk: Collection[int]) -> np.ndarray:
    r = np.asarray(ranking, dtype=np.int64).reshape(-1)
    return r[~np.isin(r, _ids(junk))] if len(junk) else r


def average_precision(ranking: Sequence[int] | np.ndarray, positives: Collection[int],
                      junk: Collection[int] = ()) -> float:
    """The area under the precision-recall curve by trapezoids, as ``compute_ap.cpp`` (Oxford
    Buildings) computes it: junk results are skipped (they neither count nor take a rank), each
    later result moves recall by ``1/len(positives)`` when relevant, and the trapezoid between the
    previous and the current precision is added; the curve starts at precision 1. Positives never
    ranked add nothing. INRIA Holidays' ``holidays_map.py`` gives the same value when the query
    itself is passed as junk (it skips the query in its own results). The loop of the reference is
    done with cumulative sums: only relevant results move recall, so only they add a trapezoid."""
    pos, amb = set(map(int, positives)), set(map(int, junk))
    if not pos:
        raise ValueError("a query without positives has no average precision")
    if pos & amb:
        raise ValueError(f"indices {sorted(pos & amb)[:5]} are both positive and junk")
    hits = np.isin(_without_junk(ranking, amb), _ids(pos))
    if not hits.any():
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    before = np.concatenate(([1.0], precision[:-1]))
    return float(np.sum((before + precision)[hits]) / 2 / len(pos))


def mean_average_precision(aps: Sequence[float]) -> float:
    """The mean of the queries' average precisions (every query weighs the same)."""
    if len(aps) == 0:
        raise ValueError("no queries: a mean average precision needs at least one")
    return float(np.mean(np.asarray(aps, dtype=np.float64)))


def ns_score(ranking: Sequence[int] | np.ndarray, group: Collection[int], top: int = UKBENCH_TOP) -> int:
    """UKBench's score of one query (Nistér and Stewénius): how many of its group's images are among
    the first ``top`` results. The query is in the database and in its own ranking and counts, as
    UKBench counts it, so a perfect query scores 4; the benchmark's N-S is the mean over all queries."""
    top_results = np.asarray(ranking, dtype=np.int64).reshape(-1)[:top]
    return int(np.isin(top_results, _ids(group)).sum())


def _hits_at_k(ranking: Sequence[int] | np.ndarray, positives: Collection[int], k: int,
               junk: Collection[int]) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(np.isin(_without_junk(ranking, junk)[:k], _ids(positives)).sum())


def recall_at_k(ranking: Sequence[int] | np.ndarray, positives: Collection[int], k: int,
                junk: Collection[int] = ()) -> float:
    """The fraction of the positives among the first ``k`` results, junk skipped first (as in
    :func:`average_precision`)."""
    if not positives:
        raise ValueError("a query without positives has no recall")
    return _hits_at_k(ranking, positives, k, junk) / len(set(positives))


def precision_at_k(ranking: Sequence[int] | np.ndarray, positives: Collection[int], k: int,
                   junk: Collection[int] = ()) -> float:
    """The fraction of the first ``k`` results (junk skipped first) that are positives; the
    denominator is ``k`` even where fewer than ``k`` results remain (a short list is not rewarded)."""
    return _hits_at_k(ranking, positives, k, junk) / k
