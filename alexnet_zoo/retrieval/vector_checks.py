"""The checks every array entering an index passes, and the metric's preparation of it.

Mechanics shared by the index, its oracle and its tuning: vectors are (N, dim) finite float32
(anything else is an :class:`InvalidVectors` saying which rows), paths are ``str``, and a cosine
index holds unit vectors. numpy and faiss only, like every index module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import faiss
import numpy as np

from alexnet_zoo.errors import InvalidVectors, ZeroQuery

__all__ = ["MAX_DIM", "METRICS", "Metric", "check_paths", "check_vectors", "faiss_metric", "positive_int", "prepare",
           "refuse_zero", "zero_rows"]

Metric = Literal["cosine", "l2"]
METRICS = ("cosine", "l2")
MAX_DIM = 2 ** 24  # conv1 unpooled is 290,400; beyond this a "dim" is a corrupt header, not a layer


def check_vectors(vectors: np.ndarray, dim: int | None, what: str) -> np.ndarray:
    """``vectors`` as contiguous float32 (N, dim) rows (one row may come as (dim,)), all finite."""
    x = np.asarray(vectors)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        raise InvalidVectors(f"{what}: expected vectors of shape (N, {dim or 'dim'}), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise InvalidVectors(f"{what}: rows {bad[:10].tolist()} hold NaN or inf ({bad.size} rows)")
    return x


def zero_rows(x: np.ndarray) -> np.ndarray:
    """The rows of (N, dim) vectors that are all zero: no direction, so no cosine ranking."""
    x = np.asarray(x)
    return np.flatnonzero(~(x != 0).any(axis=1)) if x.ndim == 2 and x.shape[1] else np.arange(len(x))


def refuse_zero(q: np.ndarray, metric: Metric) -> np.ndarray:
    """``q``, unless a cosine index is asked about zero vectors: :class:`ZeroQuery` naming the rows."""
    zero = zero_rows(q) if metric == "cosine" else np.zeros(0, np.int64)
    if zero.size:
        raise ZeroQuery(f"queries: rows {zero[:10].tolist()} are zero vectors ({zero.size} of {len(q)}); a zero "
                        "vector has no cosine with anything, so its hits would be arbitrary (the layer's "
                        "activations are all zero for that picture: try another layer)", zero.tolist())
    return q


def prepare(x: np.ndarray, metric: Metric) -> np.ndarray:
    """What the index stores and searches for ``metric``: a unit-length copy for cosine (the inner
    product is then the cosine), the vectors themselves for L2."""
    if metric == "cosine":
        x = x.copy()
        faiss.normalize_L2(x)
    return x


def faiss_metric(metric: Metric) -> int:
    """FAISS's constant for ``metric``: cosine is the inner product of the prepared (unit) vectors."""
    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


def check_paths(paths: Sequence[str], what: str) -> list[str]:
    """Paths are text (``str``; undecodable bytes as surrogateescape): anything else could not be
    stored and would fail at save time, far from the mistake."""
    paths = list(paths)
    bad = [i for i, p in enumerate(paths) if not isinstance(p, str)]
    if bad:
        raise InvalidVectors(f"{what}: paths must be str, got {type(paths[bad[0]]).__name__} at rows {bad[:10]}")
    return paths


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int when it is a whole number >= 1 (not a bool), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)
