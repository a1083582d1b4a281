"""Near-duplicate pairs of an index's vectors, found in blocks so memory stays bounded at any size.

The stored vectors are decoded ``block`` at a time and searched against the index: exact and IVF
indexes by a range search (every pair above the threshold that the probed lists hold), HNSW by the
``k`` nearest of each vector. For PQ the scores are cosines of the decoded vectors (not unit
length: PQ shrinks them), the same both ways round; zero vectors have no cosine and pair with
nothing. The index is reached through the callables it hands over, so this module knows arrays
only. numpy only.

Groups (:func:`duplicate_groups`) are made of the pairs: ``connected`` (the default) joins every
two pictures a chain of pairs links (connected components, by union-find), so a group may hold two
members below the threshold to each other when a third is near both; ``complete`` takes the pairs
best first and joins two groups only when each member of one pairs with each member of the other
(greedy complete linkage), so every member is at the threshold or above to every other one of its
group. Each member carries its best score: the highest cosine of a pair it has inside its group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from tqdm import tqdm

from alexnet_zoo.retrieval.vector_checks import positive_int

__all__ = ["DEDUPE_BLOCK", "GROUPINGS", "Group", "Member", "Pair", "check_threshold", "duplicate_groups",
           "duplicate_pairs", "probing"]

DEDUPE_BLOCK = 16_384  # vectors decoded and searched at a time by duplicates(): bounded memory at any N
Pair = tuple[int, int, float]
Member = tuple[int, float]  # (id, best score inside its group)
Group = list[Member]
GROUPINGS = ("connected", "complete")
Decode = Callable[[int, int], np.ndarray]  # (lo, hi) -> the stored vectors of ids lo..hi-1
RangeSearch = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray, np.ndarray]]  # -> (lims, scores, ids)
Knn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # (queries, k) -> (scores, ids)


def check_threshold(threshold: Any) -> float:
    """A near-duplicate threshold is a cosine in (0, 1]: at 0 or below nearly every pair qualifies."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
            or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a cosine in (0, 1], got {threshold!r} (at 0 or below nearly every "
                         "pair qualifies: N**2 pairs)")
    return threshold


@contextlib.contextmanager
def probing(apply: Callable[[dict[str, int]], None], kind: str, tuned: dict[str, int],
            nprobe: int | None) -> Iterator[None]:
    """Within the block, IVF indexes probe ``nprobe`` lists (``apply`` sets it); the ``tuned``
    parameters come back after, whatever happens. None changes nothing."""
    if nprobe is None:
        yield
        return
    nprobe = positive_int(nprobe, "nprobe")
    if kind not in ("ivf", "ivfpq"):
        raise ValueError(f"nprobe applies to IVF indexes (ivf, ivfpq); this one is {kind}")
    apply({"nprobe": nprobe})
    try:
        yield
    finally:
        apply(tuned)


def duplicate_pairs(count: int, kind: str, threshold: float, *, decode: Decode, range_search: RangeSearch,
                    knn: Knn, k: int = 10, block: int = DEDUPE_BLOCK) -> list[Pair]:
    """Pairs (i, j, cosine) with i < j and cosine >= ``threshold`` among the ``count`` vectors of a
    cosine index of ``kind``, most similar first (see the module's docstring)."""
    threshold = check_threshold(threshold)
    k, block = positive_int(k, "k"), positive_int(block, "block")
    starts = range(0, count, block)
    norms: np.ndarray | None = None  # None: exact and HNSW hold the unit vectors themselves
    if kind == "ivfpq":  # one decoding pass for the norms the scores are divided by
        norms = np.concatenate([np.linalg.norm(decode(lo, min(lo + block, count)), axis=1)
                                for lo in starts]) if count else np.zeros(0, np.float32)
    smallest = 1.0 if norms is None else float(norms[norms > 1e-6].min(initial=1.0))
    found = []
    for lo in tqdm(starts, unit="block", desc="near-duplicates", disable=None if count > block else True, leave=False):
        x = decode(lo, min(lo + block, count))
        if kind != "hnsw":
            hits = _within_radius(x, lo, threshold, norms, smallest, range_search)
        else:
            s, ids = knn(x, k + 1)
            hits = np.repeat(np.arange(lo, lo + len(x), dtype=np.int64), ids.shape[1]), s.ravel(), ids.ravel()
        if hits is not None:
            found.append(_qualifying(*hits, threshold, norms))
    return _best_first(found)


def _within_radius(x: np.ndarray, lo: int, threshold: float, norms: np.ndarray | None, smallest: float,
                   range_search: RangeSearch) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(rows, scores, ids) of a block's range search, or None when the block is all zero vectors.
    A pair qualifies when ip >= threshold * |x_i| * |x_j|; faiss keeps ip > radius, so the radius is
    that bound at the smallest norms, stepped just below (the caller filters exactly)."""
    rows = np.arange(lo, lo + len(x), dtype=np.int64)
    n_block = np.linalg.norm(x, axis=1) if norms is None else norms[lo:lo + len(x)]
    live = n_block[n_block > 1e-6]
    if not live.size:
        return None
    radius = np.nextafter(np.float32(threshold * live.min() * smallest), np.float32(-2))
    lims, s, ids = range_search(x, float(radius))
    return np.repeat(rows, np.diff(lims).astype(np.int64)), s, ids


def _qualifying(rows: np.ndarray, s: np.ndarray, ids: np.ndarray, threshold: float, norms: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first ids, second ids, cosines) of the hits that pair two vectors at ``threshold`` or above."""
    keep = (ids >= 0) & (ids != rows)
    rows, s, ids = rows[keep], s[keep].astype(np.float64), ids[keep]
    if norms is not None:
        s = s / np.maximum(norms[rows] * norms[ids], 1e-12) * (norms[rows] > 1e-6) * (norms[ids] > 1e-6)
    keep = s >= threshold
    return np.minimum(rows[keep], ids[keep]), np.maximum(rows[keep], ids[keep]), s[keep]


def _best_first(found: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> list[Pair]:
    """Each pair once (the better score of its two directions), most similar first, then by ids."""
    if not found:
        return []
    a, b, s = (np.concatenate(part) for part in zip(*found))
    order = np.lexsort((-s, b, a))  # by pair, the better score of the two directions first
    a, b, s = a[order], b[order], s[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    a, b, s = a[first], b[first], s[first]
    order = np.lexsort((b, a, -s))
    return [(int(i), int(j), float(v)) for i, j, v in zip(a[order], b[order], s[order])]


def duplicate_groups(pairs: Iterable[Pair], grouping: str = "connected") -> list[Group]:
    """Groups of two or more ids from ``pairs`` (i, j, cosine), largest first (then best score, then
    smallest id); members best score first, then by id. ``grouping``: see the module's docstring."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    pairs = sorted(((int(i), int(j), float(s)) for i, j, s in pairs), key=lambda p: (-p[2], p[0], p[1]))
    if any(i == j or i < 0 or j < 0 for i, j, _ in pairs):
        raise ValueError("pairs must join two different ids >= 0")
    parent: dict[int, int] = {}
    members: dict[int, list[int]] = {}  # complete: root -> its members
    linked = {(i, j) for i, j, _ in pairs} | {(j, i) for i, j, _ in pairs} if grouping == "complete" else set()
    for i, j, _ in pairs:
        a, b = _root(parent, i), _root(parent, j)
        if a == b:
            continue
        if grouping == "complete":
            ga, gb = members.setdefault(a, [a]), members.setdefault(b, [b])
            if not all((x, y) in linked for x in ga for y in gb):
                continue
            members[a] = ga + gb
            del members[b]
        parent[b] = a
    best: dict[int, float] = {}
    for i, j, s in pairs:  # best first: the first pair inside a group a member meets is its best
        if _root(parent, i) == _root(parent, j):
            best.setdefault(i, s)
            best.setdefault(j, s)
    groups: dict[int, Group] = {}
    for i in sorted(best, key=lambda m: (-best[m], m)):
        groups.setdefault(_root(parent, i), []).append((i, best[i]))
    return sorted(groups.values(), key=lambda g: (-len(g), -g[0][1], min(m for m, _ in g)))


def _root(parent: dict[int, int], i: int) -> int:
    """The representative of ``i``'s group, halving the path on the way (union-find)."""
    while parent.get(i, i) != i:
        parent[i] = parent.get(parent[i], parent[i])
        i = parent[i]
    return i
