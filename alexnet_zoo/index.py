"""A FAISS index over image vectors, kept as a folder: ``index.faiss`` + ``paths.txt`` + ``info.json``.

Exact search is the default for small collections and the oracle for the rest: an approximate
index (IVF + PQ, or HNSW) is chosen from the collection size and a memory budget, tuned (nprobe /
efSearch) until its 1-recall@10 against exact search on held-out queries reaches a target, and
that measured recall is stored in info.json beside the factory string, metric and the model /
weights / layer the vectors came from, so a folder built from other vectors is refused on load.
This module works on numpy arrays only and does not import torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

__all__ = ["CorruptIndex", "IndexMismatch", "InvalidVectors", "RetrievalError", "SearchHit", "VectorIndex",
           "choose_factory", "exact_knn", "parse_size", "recall_at"]

Kind = Literal["auto", "exact", "ivfpq", "hnsw"]
Metric = Literal["cosine", "l2"]
INDEX_FILE, PATHS_FILE, INFO_FILE = "index.faiss", "paths.txt", "info.json"
FORMAT = "alexnet_zoo.index"
EXACT_LIMIT = 50_000  # below this many vectors exact search is fast enough (a few ms a query)
TARGET_RECALL = 0.95
_IDENTITY = ("model", "weights", "layer", "pool", "dim")


class RetrievalError(ValueError):
    """Base of the index errors."""


class InvalidVectors(RetrievalError):
    """Vectors with NaN / inf, the wrong shape, or a count that does not match the paths."""


class IndexMismatch(RetrievalError):
    """The index folder holds vectors of another model, weights, layer or dimension than asked."""


class CorruptIndex(RetrievalError):
    """An index folder whose files are missing, unreadable or disagree with each other."""


@dataclass(frozen=True)
class SearchHit:
    """One neighbour: its stable id, path and score (cosine similarity, or L2 distance)."""

    id: int
    path: str
    score: float


def parse_size(text: str | int) -> int:
    """"4GB", "512MiB", "1e9" or an int -> bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([\d.e+]+)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not match:
        raise ValueError(f"memory size {text!r}: expected a number with an optional unit, e.g. 4GB or 512MiB")
    value, unit, _ = match.groups()
    return int(float(value) * 1024 ** ("kmgt".find(unit) + 1)) if unit else int(float(value))


def _check(vectors: np.ndarray, dim: int | None, what: str) -> np.ndarray:
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


def _prepare(x: np.ndarray, metric: Metric) -> np.ndarray:
    if metric == "cosine":
        x = x.copy()
        faiss.normalize_L2(x)
    return x


def exact_knn(database: np.ndarray, queries: np.ndarray, k: int, metric: Metric = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """The oracle: brute-force (scores, ids) of the k nearest rows of ``database``."""
    db, q = _prepare(_check(database, None, "database"), metric), _prepare(_check(queries, None, "queries"), metric)
    return faiss.knn(q, db, min(k, len(db)), metric=faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2)


def recall_at(found: np.ndarray, truth_first: np.ndarray) -> float:
    """1-recall@k: the share of queries whose true nearest neighbour is among ``found`` (Q, k)."""
    return float(np.mean([t in row for t, row in zip(truth_first, found)])) if len(found) else 1.0


def choose_factory(n: int, dim: int, kind: Kind = "auto", memory: int | None = None) -> str:
    """The FAISS factory string for ``n`` vectors of ``dim`` under a memory budget in bytes."""
    raw = n * dim * 4
    if kind == "auto":
        if n <= EXACT_LIMIT:
            kind = "exact"
        elif memory is not None and raw * 1.3 > memory:
            kind = "ivfpq"
        else:
            kind = "hnsw" if n <= 2_000_000 else "ivfpq"
    if kind == "exact":
        return "Flat"
    if kind == "hnsw":
        return "HNSW32,Flat"
    if kind != "ivfpq":
        raise ValueError(f"unknown index kind {kind!r}; choose auto, exact, ivfpq or hnsw")
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points a list
    budget = 256 if memory is None else max(8, min(256, memory // max(n, 1) - 16))  # 16: id + list overhead
    m = max((m for m in (8, 16, 32, 48, 64, 96, 128, 192, 256) if m <= budget and dim % m == 0 and 2 * m <= dim),
            default=None)
    if m is None:
        return f"IVF{nlist},SQ8"
    # for wide features (fc7: 4096) reduce with PCA first so each PQ sub-vector keeps a few dims
    if dim > 4 * m:
        return f"PCAR{4 * m},IVF{nlist},PQ{m}"
    return f"IVF{nlist},PQ{m}"


class VectorIndex:
    """A FAISS index with row-aligned paths, stable ids (``paths[id]``) and its info."""

    def __init__(self, index: faiss.Index, paths: list[str], info: dict[str, Any]) -> None:
        self.index, self.paths, self.info = index, paths, info

    # ---- building ----------------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, paths: list[str], *, kind: Kind = "auto", metric: Metric = "cosine",
              memory: int | str | None = None, meta: dict[str, Any] | None = None, queries: int = 500,
              train_size: int = 100_000, seed: int = 0, target_recall: float = TARGET_RECALL) -> VectorIndex:
        """Index ``vectors`` (row i = ``paths[i]``, id i). ``meta``: model / weights / layer /
        preprocessing of the vectors. Approximate kinds are trained on a sample and tuned on
        ``queries`` held-out rows against exact search."""
        if metric not in ("cosine", "l2"):
            raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
        x = _check(vectors, None, "vectors")
        if len(paths) != len(x):
            raise InvalidVectors(f"{len(x)} vectors but {len(paths)} paths")
        if len(x) == 0:
            raise InvalidVectors("no vectors to index")
        n, dim = x.shape
        x = _prepare(x, metric)
        factory = choose_factory(n, dim, kind, parse_size(memory) if memory is not None else None)
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        start = time.perf_counter()
        inner = faiss.index_factory(dim, factory, faiss_metric)
        rng = np.random.default_rng(seed)
        if "IVF" in factory and hasattr(faiss.extract_index_ivf(inner), "do_polysemous_training"):
            faiss.extract_index_ivf(inner).do_polysemous_training = False  # 3x the training time, unused here
        if not inner.is_trained:
            nlist = faiss.extract_index_ivf(inner).nlist if "IVF" in factory else 1
            size = min(n, train_size, max(50 * nlist, 20_000))  # k-means needs ~40 points a centroid, no more
            sample = x[np.sort(rng.choice(n, size, replace=False))]
            inner.train(sample)
        if factory.startswith("HNSW"):
            faiss.downcast_index(inner).hnsw.efConstruction = 80
        index = faiss.IndexIDMap2(inner)
        index.add_with_ids(x, np.arange(n, dtype=np.int64))
        skip = ("format", "count", "shards", "failures", "inputs", "inputs_sha256", "rank", "slice", "complete")
        info = {"format": FORMAT, **{k: v for k, v in (meta or {}).items() if k not in skip},
                "factory": factory, "dim": dim, "metric": metric, "count": n}
        info["kind"] = "exact" if factory == "Flat" else ("hnsw" if factory.startswith("HNSW") else "ivfpq")
        self = cls(index, list(paths), info)
        self.info["search_params"] = self._tune(x, rng, queries, target_recall) if factory != "Flat" else {}
        self.info["recall_at_10"] = self._measure(x, rng, queries) if factory != "Flat" else 1.0
        self.info["recall_queries"] = min(queries, n)
        self.info["build_seconds"] = round(time.perf_counter() - start, 3)
        self.info["bytes_per_vector"] = round(self._bytes() / n, 1)
        return self

    def _bytes(self) -> int:
        return int(faiss.serialize_index(self.index).nbytes)

    def _apply(self, params: dict[str, int]) -> None:
        inner = faiss.downcast_index(self.index.index)
        if "nprobe" in params:
            faiss.extract_index_ivf(inner).nprobe = params["nprobe"]
        if "efSearch" in params:
            inner.hnsw.efSearch = params["efSearch"]

    def _heldout_recall(self, x: np.ndarray, ids: np.ndarray) -> float:
        """1-recall@10 of rows ``ids`` used as queries, their own row excluded from both sides."""
        metric = self.info["metric"]
        truth_scores, truth = faiss.knn(x[ids], x, min(2, len(x)), metric=faiss.METRIC_INNER_PRODUCT
                                        if metric == "cosine" else faiss.METRIC_L2)
        first = np.where(truth[:, 0] == ids, truth[:, -1], truth[:, 0])
        _, found = self.index.search(x[ids], min(11, len(x)))
        found = [[f for f in row if f != q][:10] for row, q in zip(found, ids)]
        return recall_at(np.array(found, dtype=object) if found else np.zeros((0, 10)), first)

    def _sample(self, x: np.ndarray, rng: np.random.Generator, queries: int) -> np.ndarray:
        return np.sort(rng.choice(len(x), min(queries, len(x)), replace=False))

    def _tune(self, x: np.ndarray, rng: np.random.Generator, queries: int, target: float) -> dict[str, int]:
        """The cheapest nprobe / efSearch whose recall on a tuning sample reaches ``target``."""
        ids = self._sample(x, rng, queries)
        if self.info["kind"] == "hnsw":
            grid = [{"efSearch": e} for e in (16, 32, 64, 128, 256, 512)]
        else:
            nlist = faiss.extract_index_ivf(faiss.downcast_index(self.index.index)).nlist
            grid = [{"nprobe": p} for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p < nlist] + [{"nprobe": nlist}]
        for params in grid:
            self._apply(params)
            if self._heldout_recall(x, ids) >= target:
                return params
        return grid[-1]

    def _measure(self, x: np.ndarray, rng: np.random.Generator, queries: int) -> float:
        """Recall on a fresh sample (not the one the parameters were tuned on)."""
        return round(self._heldout_recall(x, self._sample(x, rng, queries)), 4)

    # ---- adding and searching ----------------------------------------------------------------

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def add(self, vectors: np.ndarray, paths: list[str]) -> np.ndarray:
        """Append vectors; returns their ids (the next free ones: ids never change)."""
        x = _prepare(_check(vectors, self.dim, "added vectors"), self.info["metric"])
        if len(paths) != len(x):
            raise InvalidVectors(f"{len(x)} vectors but {len(paths)} paths")
        ids = np.arange(len(self.paths), len(self.paths) + len(x), dtype=np.int64)
        self.index.add_with_ids(x, ids)
        self.paths += list(paths)
        self.info["count"] = self.count
        return ids

    def search_arrays(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, min(k, count)), best first; missing hits are id -1."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = _prepare(_check(queries, self.dim, "queries"), self.info["metric"])
        return self.index.search(q, min(k, self.count))

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[SearchHit]]:
        """The k nearest (k capped at the index size) of each query, best first, -1 hits dropped."""
        scores, ids = self.search_arrays(queries, k)
        return [[SearchHit(int(i), self.paths[int(i)], float(s)) for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(scores, ids)]

    def vectors(self) -> np.ndarray:
        """The stored vectors (exact for Flat and HNSW, decoded approximations for PQ)."""
        if self.info["kind"] == "ivfpq":
            ivf = faiss.extract_index_ivf(faiss.downcast_index(self.index.index))
            ivf.make_direct_map()
        return self.index.reconstruct_n(0, self.count) if self.info["kind"] != "ivfpq" else np.stack(
            [self.index.reconstruct(i) for i in range(self.count)])

    def duplicates(self, threshold: float = 0.95, k: int = 10) -> list[tuple[int, int, float]]:
        """Pairs (i, j, cosine) with i < j and cosine >= ``threshold``, most similar first. Exact
        indexes use a range search (every pair); approximate ones the k nearest of each vector."""
        if self.info["metric"] != "cosine":
            raise RetrievalError(f"near-duplicates need a cosine index; this one is {self.info['metric']}")
        x = self.vectors()
        pairs: dict[tuple[int, int], float] = {}
        if self.info["kind"] == "exact":
            lims, scores, ids = self.index.range_search(x, threshold)
            for q in range(len(x)):
                for s, j in zip(scores[lims[q]:lims[q + 1]], ids[lims[q]:lims[q + 1]]):
                    if q != j and s >= threshold:
                        pairs[(min(q, int(j)), max(q, int(j)))] = float(s)
        else:
            scores, ids = self.index.search(x, min(k + 1, self.count))
            for q, (srow, irow) in enumerate(zip(scores, ids)):
                for s, j in zip(srow, irow):
                    if j >= 0 and j != q and s >= threshold:
                        pairs[(min(q, int(j)), max(q, int(j)))] = float(s)
        return sorted(((i, j, s) for (i, j), s in pairs.items()), key=lambda p: (-p[2], p[0], p[1]))

    # ---- folders -----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the folder atomically: a temporary sibling folder renamed over ``folder``."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        try:
            faiss.write_index(self.index, str(tmp / INDEX_FILE))
            (tmp / PATHS_FILE).write_text("".join(p + "\n" for p in self.paths))
            (tmp / INFO_FILE).write_text(json.dumps({**self.info, "count": self.count}, indent=2) + "\n")
            old = None
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
                os.replace(folder, old)
            os.replace(tmp, folder)
            if old is not None:
                shutil.rmtree(old)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, mmap: bool = False, **expected: Any) -> VectorIndex:
        """Read an index folder. ``expected`` (model=, weights=, layer=, pool=, dim=) must match
        info.json; a missing, unreadable or inconsistent file raises :class:`CorruptIndex`."""
        folder = Path(folder)
        files = {name: folder / name for name in (INDEX_FILE, PATHS_FILE, INFO_FILE)}
        missing = [name for name, p in files.items() if not p.is_file()]
        if missing:
            raise CorruptIndex(f"{folder}: missing {', '.join(missing)}; expected an index folder from "
                               "`alexnet-zoo index build`")
        try:
            info = json.loads(files[INFO_FILE].read_text())
        except ValueError as err:
            raise CorruptIndex(f"{files[INFO_FILE]}: not JSON ({err})") from err
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise CorruptIndex(f"{files[INFO_FILE]}: not an alexnet_zoo index info.json")
        for key, want in expected.items():
            if key not in _IDENTITY:
                raise TypeError(f"load() got an unexpected check {key!r}; choose from {', '.join(_IDENTITY)}")
            if want is not None and info.get(key) != want:
                raise IndexMismatch(f"{folder}: built from {key}={info.get(key)!r}, expected {key}={want!r}")
        try:
            index = faiss.read_index(str(files[INDEX_FILE]), faiss.IO_FLAG_MMAP if mmap else 0)
        except RuntimeError as err:
            raise CorruptIndex(f"{files[INDEX_FILE]}: not a readable FAISS index ({str(err).splitlines()[0]})") from err
        paths = files[PATHS_FILE].read_text().splitlines()
        if not (index.ntotal == len(paths) == info.get("count")) or index.d != info.get("dim"):
            raise CorruptIndex(f"{folder}: {index.ntotal} vectors of dim {index.d}, {len(paths)} paths, info.json "
                               f"says {info.get('count')} of dim {info.get('dim')}")
        self = cls(index, paths, info)
        self._apply(info.get("search_params", {}))
        return self
