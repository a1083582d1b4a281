"""A FAISS index over image vectors, kept as a folder: ``info.json`` naming ``index.<id>.faiss`` + ``paths.<id>.jsonl``.

Exact search is the default for small collections and the oracle for the rest: an approximate
index (IVF + PQ, or HNSW) is chosen from the collection size and a memory budget, tuned (nprobe /
efSearch) until its 1-recall@10 against exact search on held-out queries reaches a target, and
that measured recall is stored in info.json beside the factory string, metric and the model /
weights / layer the vectors came from, so a folder built from other vectors is refused on load.
Where faiss sees a GPU (a faiss-gpu build with ``StandardGpuResources``), exact and IVF indexes are
trained, filled and searched on it and copied back to the CPU for saving; ``device="cpu"`` opts out.
This module works on numpy arrays only and does not import torch.

A folder is saved so that a crash at any moment leaves the old index or the new one loadable at
its path: the data files of a save get a fresh id, and ``info.json`` (replaced atomically, last)
names the pair that belongs together; files no ``info.json`` names are removed by the next save
or load. Paths are stored one JSON string a line (ASCII, so any name round-trips: line
terminators, and undecodable bytes kept by ``surrogateescape``). ``info.json`` is parsed as
untrusted input (:func:`parse_info`): a typed :class:`CorruptIndex` naming the file, never another
exception.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from alexnet_zoo.errors import CorruptIndex, IndexMismatch, InvalidVectors, RetrievalError, ZeroQuery

__all__ = ["CorruptIndex", "IndexMismatch", "InvalidVectors", "RetrievalError", "SearchHit", "VectorIndex",
           "ZeroQuery", "choose_factory", "exact_knn", "gpu_count", "gpu_supported", "parse_info", "parse_size",
           "read_path_list", "recall_at", "resolve_device", "training_needs", "write_path_list", "zero_rows"]

Kind = Literal["auto", "exact", "ivfpq", "hnsw"]
Metric = Literal["cosine", "l2"]
Device = Literal["auto", "cpu", "gpu"]
GPU_MAX_K = 2048  # faiss-gpu's k-selection limit (k and nprobe); larger searches run on the CPU copy
DEDUPE_BLOCK = 16_384  # vectors decoded and searched at a time by duplicates(): bounded memory at any N
INFO_FILE = "info.json"
INDEX_FILE, PATHS_FILE = "index.faiss", "paths.txt"  # the fixed names of folders saved before the ids (read only)
_DATA_FILE = re.compile(r"(index|paths)\.([0-9a-f]{16})\.(faiss|jsonl)")
_STAGED = re.compile(r"\.info\.json\.[^/]*\.tmp")  # an info.json being written (see _write_atomic)
FORMAT = "alexnet_zoo.retrieval.index"
INFO_LIMIT = 16 * 2 ** 20  # bytes: an info.json is a few kB; a bigger one is not ours (and not read into memory)
PATH_LINE_LIMIT = 64 * 1024  # bytes of one stored path line (PATH_MAX 4096 bytes, escaped: <= 6 chars a byte)
MAX_DIM = 2 ** 24  # conv1 unpooled is 290,400; beyond this a "dim" is a corrupt header, not a layer
MAX_SEARCH_PARAM = 2 ** 16  # nprobe / efSearch: beyond this a search costs more than exact search
KINDS = ("exact", "ivfpq", "hnsw")
METRICS = ("cosine", "l2")
EXACT_LIMIT = 50_000  # below this many vectors exact search is fast enough (a few ms a query)
TARGET_RECALL = 0.95
_IDENTITY = ("model", "weights", "layer", "pool", "dim")
# what build() keeps of its ``meta`` (a features manifest): the vectors' provenance, each checked on load
_META = ("model", "weights", "weights_spec", "layer", "pool", "normalized", "dtype", "precision", "preprocessing")


@dataclass(frozen=True)
class SearchHit:
    """One neighbour: its stable id, path and score (cosine similarity, or L2 distance)."""

    id: int
    path: str
    score: float


def parse_size(text: str | int) -> int:
    """"4GB", "512MiB", "1e9" or an int -> bytes (at least 1, at most 2**60: a budget, not a typo)."""
    expected = "expected a positive number of bytes with an optional unit, e.g. 4GB or 512MiB"
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"memory size {text!r}: {expected}")
    if isinstance(text, int):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?(?:e[+-]?\d{1,3})?|\.\d+)\s*([kmgt]?)(i?b?)\s*", text.lower())
        if not match:
            raise ValueError(f"memory size {text!r}: {expected}")
        number, unit, _ = match.groups()
        value = float(number) * 1024 ** ("kmgt".find(unit) + 1) if unit else float(number)
    if not 1 <= value <= 2 ** 60:
        raise ValueError(f"memory size {text!r}: {expected} (1 byte to 1 EiB)")
    return int(value)


def gpu_count() -> int:
    """GPUs faiss can use: 0 on faiss-cpu builds (no ``StandardGpuResources``) or without a CUDA device."""
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except RuntimeError:  # a faiss-gpu build on a machine whose CUDA driver is missing or broken
        return 0


def resolve_device(device: str | None = "auto", *, gpus: int | None = None) -> Literal["cpu", "gpu"]:
    """Where the index works: "auto" (or None) is the GPU when faiss sees one, else the CPU; "gpu" /
    "cuda[:N]" insists on a GPU and raises :class:`RetrievalError` without one; "cpu" opts out.
    ``gpus`` overrides the detected count (for tests and callers that already know)."""
    gpus = gpu_count() if gpus is None else gpus
    name = "auto" if device is None else str(device).lower()
    if name == "cpu":
        return "cpu"
    if name == "auto":
        return "gpu" if gpus > 0 else "cpu"
    if name in ("gpu", "cuda") or name.startswith(("gpu:", "cuda:")):
        if gpus == 0:
            raise RetrievalError(f"device={device!r} asked for a GPU, but faiss sees none (a faiss-cpu build, or no "
                                 "CUDA device); install faiss-gpu or use device='cpu'")
        return "gpu"
    raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")


def gpu_supported(factory: str) -> bool:
    """Whether faiss-gpu can hold an index of this factory string: flat and IVF (PQ / SQ / flat
    lists, after an optional PCA) can; HNSW graphs cannot (they stay on the CPU)."""
    return "HNSW" not in factory


_GPU_RESOURCES: Any = None


def _gpu_resources() -> Any:
    """One ``StandardGpuResources`` per process (it holds a scratch allocation of the GPU's memory)."""
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    return _GPU_RESOURCES


def _to_gpu(index: faiss.Index, factory: str) -> faiss.Index | None:
    """A GPU copy of a CPU index (device 0), or None with a warning when faiss-gpu refuses it (some
    PQ sizes need float16 lookup tables to fit the GPU's shared memory: tried second)."""
    error: Exception | None = None
    for half in (False, True):
        options = faiss.GpuClonerOptions()
        options.useFloat16LookupTables = half
        try:
            return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index, options)
        except RuntimeError as err:
            error = err
    warnings.warn(f"faiss-gpu cannot hold {factory} ({str(error).splitlines()[0]}); using the CPU", stacklevel=3)
    return None


def _from_gpu(index: faiss.Index) -> faiss.Index:
    """The CPU copy of a GPU index (what is saved and decoded)."""
    return faiss.index_gpu_to_cpu(index)


def _gpu_parameters() -> Any:
    return faiss.GpuParameterSpace()


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


def zero_rows(x: np.ndarray) -> np.ndarray:
    """The rows of (N, dim) vectors that are all zero: no direction, so no cosine ranking."""
    x = np.asarray(x)
    return np.flatnonzero(~(x != 0).any(axis=1)) if x.ndim == 2 and x.shape[1] else np.arange(len(x))


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
    for name, value, low in (("n", n, 0), ("dim", dim, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
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
    # for wide features (fc7: 4096) reduce with PCA to 4m dims first so each PQ sub-vector keeps a few;
    # PCA to 4m dims needs 4m training vectors, so a small collection gets a smaller m
    m = max((m for m in (8, 16, 32, 48, 64, 96, 128, 192, 256)
             if m <= budget and dim % m == 0 and 2 * m <= dim and (dim <= 4 * m or 4 * m <= n)), default=None)
    if m is None:
        return f"IVF{nlist},SQ8"
    if dim > 4 * m:
        return f"PCAR{4 * m},IVF{nlist},PQ{m}"
    return f"IVF{nlist},PQ{m}"


def training_needs(factory: str) -> int:
    """The fewest training vectors faiss accepts for ``factory``: 2**nbits per PQ codebook (256 for
    the 8-bit codes used here), the output size of a PCA, one a list for the IVF k-means."""
    needs = [1]
    if match := re.search(r"PQ\d+(?:x(\d+))?", factory):
        needs.append(2 ** int(match.group(1) or 8))
    if match := re.search(r"PCAR?(\d+)", factory):
        needs.append(int(match.group(1)))
    if match := re.search(r"IVF(\d+)", factory):
        needs.append(int(match.group(1)))
    return max(needs)


def _check_paths(paths: Sequence[str], what: str) -> list[str]:
    """Paths are text (``str``; undecodable bytes as surrogateescape): anything else could not be
    stored and would fail at save time, far from the mistake."""
    paths = list(paths)
    bad = [i for i, p in enumerate(paths) if not isinstance(p, str)]
    if bad:
        raise InvalidVectors(f"{what}: paths must be str, got {type(paths[bad[0]]).__name__} at rows {bad[:10]}")
    return paths


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


class VectorIndex:
    """A FAISS index with row-aligned paths, stable ids (``paths[id]``) and its info.

    ``index`` is always the CPU index (the one saved); on a GPU device a copy of it made on first
    use serves searches (``device`` = "auto" | "cpu" | "gpu", see :func:`resolve_device`)."""

    def __init__(self, index: faiss.Index, paths: list[str], info: dict[str, Any], *,
                 device: Device | str | None = "auto") -> None:
        self.index, self.paths, self.info = index, paths, info
        self.device = resolve_device(device)
        self._gpu: faiss.Index | None = None
        self._gpu_failed = False

    def _searcher(self, k: int = 1) -> faiss.Index:
        """The index searches go to: the GPU copy where there is one and ``k`` fits its limit."""
        factory = self.info.get("factory", "")
        if self.device != "gpu" or not gpu_supported(factory) or k > GPU_MAX_K or self._gpu_failed:
            return self.index
        if self._gpu is None:
            self._gpu = _to_gpu(self.index, factory)
            self._gpu_failed = self._gpu is None
            if self._gpu is not None:
                self._apply(self.info.get("search_params", {}))
        return self._gpu if self._gpu is not None else self.index

    # ---- building ----------------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, paths: list[str], *, kind: Kind = "auto", metric: Metric = "cosine",
              memory: int | str | None = None, meta: dict[str, Any] | None = None, queries: int = 500,
              train_size: int = 100_000, seed: int = 0, target_recall: float = TARGET_RECALL,
              device: Device | str | None = "auto") -> VectorIndex:
        """Index ``vectors`` (row i = ``paths[i]``, id i). ``meta``: model / weights / layer /
        preprocessing of the vectors. Approximate kinds are trained on a sample and tuned on
        ``queries`` held-out rows against exact search. On a GPU device (:func:`resolve_device`)
        exact and IVF kinds are trained and filled there, then copied back to the CPU."""
        device = resolve_device(device)
        if metric not in METRICS:
            raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
        if kind not in ("auto", *KINDS):
            raise ValueError(f"unknown index kind {kind!r}; choose auto, exact, ivfpq or hnsw")
        queries, train_size = _positive_int(queries, "queries"), _positive_int(train_size, "train_size")
        if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) \
                or not 0 < target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
        x = _check(vectors, None, "vectors")
        paths = _check_paths(paths, "vectors")
        if len(paths) != len(x):
            raise InvalidVectors(f"{len(x)} vectors but {len(paths)} paths")
        if len(x) == 0:
            raise InvalidVectors("no vectors to index")
        n, dim = x.shape
        if dim > MAX_DIM:
            raise InvalidVectors(f"vectors of dim {dim}: at most {MAX_DIM} is supported")
        x = _prepare(x, metric)
        factory = choose_factory(n, dim, kind, parse_size(memory) if memory is not None else None)
        need = training_needs(factory)
        nlist = int(m.group(1)) if (m := re.search(r"IVF(\d+)", factory)) else 1
        size = min(n, train_size, max(50 * nlist, 20_000))  # k-means needs ~40 points a centroid, no more
        if size < need:
            have = f"{n} vectors" if size == n else f"a training sample of {size} (train_size) of {n} vectors"
            raise InvalidVectors(f"a {kind} index ({factory}) needs at least {need} training vectors, got {have}; "
                                 "use kind='exact' (--kind exact; auto chooses it below "
                                 f"{EXACT_LIMIT:,} vectors) or 'hnsw'")
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        start = time.perf_counter()
        inner = faiss.index_factory(dim, factory, faiss_metric)
        rng = np.random.default_rng(seed)
        if "IVF" in factory:
            ivf = faiss.downcast_index(faiss.extract_index_ivf(inner))  # IndexIVFPQ, not its IndexIVF base
            if isinstance(ivf, faiss.IndexIVFPQ):
                ivf.do_polysemous_training = False  # 2-3x the training time, unused here
                # faiss's k-means is slow in the few dims of a PQ sub-vector (minutes for PQ32 on 64k
                # points); 256 codes in 2-8 dims settle with 64 points a code and 10 iterations
                ivf.pq.cp.max_points_per_centroid, ivf.pq.cp.niter = 64, 10
        if factory.startswith("HNSW"):
            faiss.downcast_index(inner).hnsw.efConstruction = 80
        work = _to_gpu(inner, factory) if device == "gpu" and gpu_supported(factory) else None
        if not inner.is_trained:
            sample = x[np.sort(rng.choice(n, size, replace=False))]
            (work if work is not None else inner).train(sample)
        index = faiss.IndexIDMap2(work if work is not None else inner)
        index.add_with_ids(x, np.arange(n, dtype=np.int64))
        gpu_index = None
        if work is not None:  # keep the GPU one for searching, the CPU copy for saving and decoding
            gpu_index, index = index, _from_gpu(index)
        info = {"format": FORMAT, **{k: v for k, v in (meta or {}).items() if k in _META},
                "factory": factory, "dim": dim, "metric": metric, "count": n}
        info["kind"] = "exact" if factory == "Flat" else ("hnsw" if factory.startswith("HNSW") else "ivfpq")
        self = cls(index, paths, info, device=device)
        self._gpu = gpu_index
        self.info["search_params"] = self._tune(x, rng, queries, target_recall) if factory != "Flat" else {}
        self.info["recall_at_10"] = self._measure(x, rng, queries) if factory != "Flat" else 1.0
        self.info["recall_queries"] = min(queries, n)
        self.info["build_seconds"] = round(time.perf_counter() - start, 3)
        self.info["bytes_per_vector"] = round(self._bytes() / n, 1)
        return self

    def _bytes(self) -> int:
        return int(faiss.serialize_index(self.index).nbytes)

    def _apply(self, params: dict[str, int]) -> None:
        """Set nprobe / efSearch on the CPU index and on its GPU copy, through the IDMap / PCA layers."""
        for name, value in params.items():
            faiss.ParameterSpace().set_index_parameter(self.index, name, value)
            if self._gpu is not None:
                _gpu_parameters().set_index_parameter(self._gpu, name, min(value, GPU_MAX_K))

    def _heldout_recall(self, x: np.ndarray, ids: np.ndarray) -> float:
        """1-recall@10 of rows ``ids`` used as queries, their own row excluded from both sides."""
        metric = self.info["metric"]
        if len(x) < 2:
            return 1.0  # no other vector to find
        _, truth = faiss.knn(x[ids], x, min(2, len(x)), metric=faiss.METRIC_INNER_PRODUCT
                                        if metric == "cosine" else faiss.METRIC_L2)
        first = np.where(truth[:, 0] == ids, truth[:, -1], truth[:, 0])
        _, found = self._searcher(11).search(x[ids], min(11, len(x)))
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
        # the recall of a fresh sample scatters around the tuning one by ~sqrt(r(1-r)/q): ask for two
        # standard deviations more, so the stored (and the user's) recall also reaches ``target``
        need = min(1.0, target + 2 * math.sqrt(target * (1 - target) / max(len(ids), 1)))
        for params in grid:
            self._apply(params)
            if self._heldout_recall(x, ids) >= need:
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
        paths = _check_paths(paths, "added vectors")
        if len(paths) != len(x):
            raise InvalidVectors(f"{len(x)} vectors but {len(paths)} paths")
        ids = np.arange(len(self.paths), len(self.paths) + len(x), dtype=np.int64)
        self.index.add_with_ids(x, ids)
        if self._gpu is not None:
            self._gpu.add_with_ids(x, ids)
        self.paths += list(paths)
        self.info["count"] = self.count
        return ids

    def search_arrays(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, min(k, count)), best first; missing hits are id -1. A zero query
        of a cosine index raises :class:`ZeroQuery` (it has no direction: any hits would be arbitrary)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        q = _check(queries, self.dim, "queries")
        if self.info["metric"] == "cosine":
            zero = zero_rows(q)
            if zero.size:
                raise ZeroQuery(f"queries: rows {zero[:10].tolist()} are zero vectors ({zero.size} of {len(q)}); a "
                                "zero vector has no cosine with anything, so its hits would be arbitrary (the "
                                "layer's activations are all zero for that picture: try another layer)",
                                zero.tolist())
        return self._searcher(int(k)).search(_prepare(q, self.info["metric"]), min(int(k), self.count))

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[SearchHit]]:
        """The k nearest (k capped at the index size) of each query, best first, -1 hits dropped."""
        scores, ids = self.search_arrays(queries, k)
        return [[SearchHit(int(i), self.paths[int(i)], float(s)) for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(scores, ids)]

    def _decode(self, lo: int, hi: int) -> np.ndarray:
        """Stored vectors of ids ``lo..hi-1`` in one call (exact for Flat and HNSW, decoded
        approximations for PQ). Ids are row numbers, so the inner index's positions are the ids
        and its ``reconstruct_n`` applies (IVF: one pass over the lists, no direct map; PCA undone)."""
        if hi <= lo:
            return np.zeros((0, self.dim), np.float32)
        return faiss.downcast_index(self.index.index).reconstruct_n(lo, hi - lo)

    def vectors(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The stored vectors of ids ``start..stop-1`` (all by default), see :meth:`_decode`."""
        stop = self.count if stop is None else min(stop, self.count)
        return self._decode(start, stop)

    def duplicates(self, threshold: float = 0.95, k: int = 10, *, block: int = DEDUPE_BLOCK
                   ) -> list[tuple[int, int, float]]:
        """Pairs (i, j, cosine) with i < j and cosine >= ``threshold``, most similar first.

        The stored vectors are decoded ``block`` at a time and searched against the index, so memory
        stays bounded and a million vectors take minutes. Exact and IVF indexes use a range search
        (every pair above the threshold that the probed lists hold); HNSW the ``k`` nearest of each
        vector. For PQ the scores are cosines of the decoded vectors (not unit length: PQ shrinks
        them), the same both ways round; zero vectors have no cosine and pair with nothing."""
        if self.info["metric"] != "cosine":
            raise RetrievalError(f"near-duplicates need a cosine index; this one is {self.info['metric']}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
                or not 0 < threshold <= 1:
            raise ValueError(f"threshold must be a cosine in (0, 1], got {threshold!r} (at 0 or below nearly every "
                             "pair qualifies: N**2 pairs)")
        k, block = _positive_int(k, "k"), _positive_int(block, "block")
        starts = range(0, self.count, block)
        norms: np.ndarray | None = None  # None: exact and HNSW hold the unit vectors themselves
        if self.info["kind"] == "ivfpq":  # one decoding pass for the norms the scores are divided by
            norms = np.concatenate([np.linalg.norm(self._decode(lo, min(lo + block, self.count)), axis=1)
                                    for lo in starts]) if self.count else np.zeros(0, np.float32)
        smallest = 1.0 if norms is None else float(norms[norms > 1e-6].min(initial=1.0))
        firsts, seconds, scores = [], [], []
        for lo in starts:
            x = self._decode(lo, min(lo + block, self.count))
            rows = np.arange(lo, lo + len(x), dtype=np.int64)
            if self.info["kind"] != "hnsw":
                # a pair qualifies when ip >= threshold * |x_i| * |x_j|; faiss keeps ip > radius, so
                # the radius is that bound at the smallest norms, stepped just below, then filtered
                n_block = np.linalg.norm(x, axis=1) if norms is None else norms[lo:lo + len(x)]
                live = n_block[n_block > 1e-6]
                if not live.size:
                    continue
                radius = np.nextafter(np.float32(threshold * live.min() * smallest), np.float32(-2))
                lims, s, ids = self.index.range_search(x, float(radius))
                rows = np.repeat(rows, np.diff(lims).astype(np.int64))
            else:
                s, ids = self._searcher(k + 1).search(x, min(k + 1, self.count))
                rows, s, ids = np.repeat(rows, ids.shape[1]), s.ravel(), ids.ravel()
            keep = (ids >= 0) & (ids != rows)
            rows, s, ids = rows[keep], s[keep].astype(np.float64), ids[keep]
            if norms is not None:
                s = s / np.maximum(norms[rows] * norms[ids], 1e-12) * (norms[rows] > 1e-6) * (norms[ids] > 1e-6)
            keep = s >= threshold
            firsts.append(np.minimum(rows[keep], ids[keep]))
            seconds.append(np.maximum(rows[keep], ids[keep]))
            scores.append(s[keep])
        if not firsts:
            return []
        a, b, s = np.concatenate(firsts), np.concatenate(seconds), np.concatenate(scores)
        order = np.lexsort((-s, b, a))  # by pair, the better score of the two directions first
        a, b, s = a[order], b[order], s[order]
        first = np.ones(len(a), bool)
        first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        a, b, s = a[first], b[first], s[first]
        order = np.lexsort((b, a, -s))
        return [(int(i), int(j), float(v)) for i, j, v in zip(a[order], b[order], s[order])]

    # ---- folders -----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the folder so that a crash at any moment leaves the old index or the new one
        loadable there: the data files get a fresh id, are flushed to disk, and only then is
        ``info.json`` atomically replaced by one naming them; the files of the old save (and any
        leftovers of an interrupted one) are removed after that. A folder that holds anything but an
        index is refused, not overwritten. New folders follow the umask."""
        folder = Path(folder)
        if not folder.exists():
            _recover(folder)  # a crash of an older version between its two renames
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                raise RetrievalError(f"{folder}: exists and is not a folder; expected an index folder or a new "
                                     "path") from None
        with _locked(folder, exclusive=True):
            _claim(folder)
            token = secrets.token_hex(8)
            files = {"index": f"index.{token}.faiss", "paths": f"paths.{token}.jsonl"}
            _step("save:start")
            _write_synced(folder / files["index"], lambda path: faiss.write_index(self.index, str(path)))
            _step("save:index-written")
            _write_synced(folder / files["paths"], lambda path: _write_paths_file(path, self.paths))
            _step("save:paths-written")
            info = {**self.info, "count": self.count, "files": files}
            _write_synced(folder / INFO_FILE, lambda path: path.write_text(json.dumps(info, indent=2) + "\n"),
                          atomic=True)
            _step("save:committed")
            _sweep(folder, _files_of(info))
            _step("save:swept")
        _sweep_siblings(folder)
        self.info = info
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, mmap: bool = False, device: Device | str | None = "auto",
             **expected: Any) -> VectorIndex:
        """Read an index folder. ``expected`` (model=, weights=, layer=, pool=, dim=) must match
        info.json; a missing, unreadable or inconsistent file raises :class:`CorruptIndex` naming it.
        ``device``: where searches run (:func:`resolve_device`; the GPU copy is made on first use).
        Leftovers of an interrupted save are removed when the folder is writable."""
        for key in expected:
            if key not in _IDENTITY:
                raise TypeError(f"load() got an unexpected check {key!r}; choose from {', '.join(_IDENTITY)}")
        folder = Path(folder)
        if not folder.exists():
            _recover(folder)
        info_path = folder / INFO_FILE
        if not info_path.is_file():
            raise CorruptIndex(f"{folder}: missing {INFO_FILE}; expected an index folder from `alexnet-zoo index build`")
        with _locked(folder, exclusive=False):
            info = parse_info(_read_capped(info_path, INFO_LIMIT), info_path)
            for key, want in expected.items():
                if want is not None and info.get(key) != want:
                    raise IndexMismatch(f"{folder}: built from {key}={info.get(key)!r}, expected {key}={want!r}")
            files = info.get("files", {"index": INDEX_FILE, "paths": PATHS_FILE})
            index_path, paths_path = folder / files["index"], folder / files["paths"]
            missing = [p.name for p in (index_path, paths_path) if not p.is_file()]
            if missing:
                raise CorruptIndex(f"{folder}: missing {', '.join(missing)} (named by {INFO_FILE}); expected an index "
                                   "folder from `alexnet-zoo index build`")
            try:
                index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP if mmap else 0)
            except (RuntimeError, MemoryError) as err:
                raise CorruptIndex(f"{index_path}: not a readable FAISS index "
                                   f"({(str(err).splitlines() or [type(err).__name__])[0]})") from err
            _check_index(index, info, index_path)
            with open(paths_path, "rb") as f:
                paths = (read_path_list(f, paths_path, limit=info["count"]) if "files" in info
                         else _read_legacy_paths(f, paths_path, info["count"]))
        if len(paths) != info["count"]:
            raise CorruptIndex(f"{paths_path}: {len(paths)} paths, {INFO_FILE} says {info['count']}")
        self = cls(index, paths, info, device=device)
        self._apply(info["search_params"])
        with contextlib.suppress(OSError):  # a read-only folder keeps its leftovers; they do no harm
            with _locked(folder, exclusive=True, wait=False) as got:
                if got:
                    _sweep(folder, _files_of(parse_info(_read_capped(info_path, INFO_LIMIT), info_path)))
            _sweep_siblings(folder)
        return self


# ---- the folder format ----------------------------------------------------------------------------

def _step(name: str) -> None:
    """A no-op marking each step of :meth:`VectorIndex.save`; the crash tests replace it with one
    that ends the process there (``os._exit``), so every moment of a save is tried."""


def write_path_list(f: Any, paths: Sequence[str]) -> None:
    """Paths to a binary file, one JSON string a line. ``ensure_ascii`` escapes every line
    terminator and any surrogate (an undecodable byte of a file name), so each name is exactly one
    line and comes back equal, whatever it holds."""
    for start in range(0, len(paths), 65536):
        f.write("".join(json.dumps(p) + "\n" for p in paths[start:start + 65536]).encode("ascii"))


def read_path_list(f: Any, source: str | os.PathLike, *, limit: int | None = None,
                   error: type[Exception] = CorruptIndex) -> list[str]:
    """The paths of a file written by :func:`write_path_list` (read a line at a time, each at most
    :data:`PATH_LINE_LIMIT` bytes, never more than ``limit`` lines: a damaged file costs no more
    memory than a good one). Anything else raises ``error`` naming ``source``."""
    paths: list[str] = []
    number = 0
    while line := f.readline(PATH_LINE_LIMIT + 1):
        number += 1
        if not line.endswith(b"\n"):
            what = "longer than 64 KiB" if len(line) > PATH_LINE_LIMIT else "not ended by a newline (truncated?)"
            raise error(f"{source}: line {number} is {what}; expected one JSON string a line")
        if limit is not None and number > limit:
            raise error(f"{source}: more than the {limit} paths expected")
        try:
            path = json.loads(line)
        except (ValueError, RecursionError) as err:
            raise error(f"{source}: line {number} is not a JSON string ({err})") from err
        if not isinstance(path, str):
            raise error(f"{source}: line {number} holds a {type(path).__name__}; expected a JSON string")
        paths.append(path)
    return paths


def _read_legacy_paths(f: Any, source: Path, count: int) -> list[str]:
    """``paths.txt`` of a folder saved before the ids: one path a line ("\n" only, so the other line
    terminators stay part of a name), UTF-8 with undecodable bytes kept as surrogates."""
    paths = []
    while line := f.readline(PATH_LINE_LIMIT + 1):
        if not line.endswith(b"\n") or len(paths) >= count:
            raise CorruptIndex(f"{source}: expected {count} lines, each a path ended by a newline")
        paths.append(line[:-1].decode("utf-8", "surrogateescape"))
    return paths


def _read_capped(path: Path, limit: int) -> bytes:
    """A file's bytes, refusing one larger than ``limit`` before reading it."""
    try:
        with open(path, "rb") as f:  # read(n) allocates n bytes first: ask for the file's size, not the limit
            data = f.read(min(os.fstat(f.fileno()).st_size, limit) + 1)
    except OSError as err:
        raise CorruptIndex(f"{path}: cannot read ({err})") from err
    if len(data) > limit:
        raise CorruptIndex(f"{path}: larger than {limit // 2 ** 20} MiB; not an alexnet_zoo {path.name}")
    return data


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and low <= value <= high


def parse_info(data: bytes, source: str | os.PathLike = INFO_FILE) -> dict[str, Any]:
    """The fields of an index's info.json, each checked (it comes with a folder anyone could have
    made): a :class:`CorruptIndex` naming ``source`` and the field for anything unexpected."""
    def bad(field: str, expected: str, value: Any) -> CorruptIndex:
        shown = repr(value)
        return CorruptIndex(f"{source}: {field} must be {expected}, got {shown[:80]}{'...' if len(shown) > 80 else ''}")

    try:
        info = json.loads(data)
    except (ValueError, RecursionError) as err:  # RecursionError: "[[[[..." nested beyond the parser's stack
        raise CorruptIndex(f"{source}: not JSON ({str(err)[:200]})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CorruptIndex(f"{source}: not an alexnet_zoo index info.json (expected an object with "
                           f"\"format\": \"{FORMAT}\")")
    if not _is_int(info.get("dim"), 1, MAX_DIM):
        raise bad("dim", f"an integer in 1..{MAX_DIM}", info.get("dim"))
    if not _is_int(info.get("count"), 0, 2 ** 48):
        raise bad("count", "an integer >= 0", info.get("count"))
    if info.get("metric") not in METRICS:
        raise bad("metric", "'cosine' or 'l2'", info.get("metric"))
    factory = info.get("factory")
    if not isinstance(factory, str) or len(factory) > 200:
        raise bad("factory", "a FAISS factory string", factory)
    kind = info.get("kind", "exact" if factory == "Flat" else ("hnsw" if factory.startswith("HNSW") else "ivfpq"))
    structure = {"exact": factory == "Flat", "hnsw": factory.startswith("HNSW"), "ivfpq": "IVF" in factory}
    if kind not in KINDS:
        raise bad("kind", "'exact', 'ivfpq' or 'hnsw'", kind)
    if not structure[kind]:
        raise bad("factory", f"a factory string of the {kind} kind", factory)
    params = info.get("search_params", {})
    allowed = {"exact": (), "ivfpq": ("nprobe",), "hnsw": ("efSearch",)}[kind]
    if not isinstance(params, dict) or any(k not in allowed or not _is_int(v, 1, MAX_SEARCH_PARAM)
                                           for k, v in params.items()):
        raise bad("search_params", f"an object of {' / '.join(allowed) or 'no'} parameters, integers in "
                  f"1..{MAX_SEARCH_PARAM}, for a {kind} index", params)
    files = info.get("files")
    if "files" in info:  # absent: a folder of the old format, with the fixed names
        tokens = {k: _DATA_FILE.fullmatch(v) if isinstance(v, str) else None
                  for k, v in files.items()} if isinstance(files, dict) else {}
        ok = (set(tokens) == {"index", "paths"} and all(tokens.values())
              and tokens["index"].group(1, 3) == ("index", "faiss") and tokens["paths"].group(1, 3) == ("paths", "jsonl")
              and tokens["index"].group(2) == tokens["paths"].group(2))
        if not ok:
            raise bad("files", "{\"index\": \"index.<id>.faiss\", \"paths\": \"paths.<id>.jsonl\"} (one 16-hex id, "
                      "no folders)", files)
    for key in ("model", "weights", "layer", "weights_spec"):
        if key in info and not (isinstance(info[key], str) and len(info[key]) <= 4096) \
                and not (key == "weights_spec" and info[key] is None):
            raise bad(key, "a string", info[key])
    checks = {"pool": ((None, "avg", "max"), "null, 'avg' or 'max'"), "normalized": ((True, False), "true or false"),
              "dtype": (("float32", "float16"), "'float32' or 'float16'"),
              "precision": (("auto", "fp32", "bf16", "fp16"), "'auto', 'fp32', 'bf16' or 'fp16'")}
    for key, (values, expected) in checks.items():
        if key in info and not any(info[key] is v or (isinstance(v, str) and info[key] == v) for v in values):
            raise bad(key, expected, info[key])
    if "preprocessing" in info and not isinstance(info["preprocessing"], dict):
        raise bad("preprocessing", "an object", info["preprocessing"])
    for key, low, high in (("recall_at_10", 0, 1), ("build_seconds", 0, math.inf), ("bytes_per_vector", 0, math.inf)):
        if key in info and not _is_number(info[key], low, high):
            raise bad(key, f"a number in [{low}, {high}]", info[key])
    if "recall_queries" in info and not _is_int(info["recall_queries"], 0, 2 ** 48):
        raise bad("recall_queries", "an integer >= 0", info["recall_queries"])
    return {**info, "kind": kind, "search_params": dict(params)}


def _check_index(index: faiss.Index, info: dict[str, Any], source: Path) -> None:
    """The FAISS file agrees with info.json: vectors of ids 0..count-1, its dim, metric and kind."""
    expected_metric = faiss.METRIC_INNER_PRODUCT if info["metric"] == "cosine" else faiss.METRIC_L2
    if not isinstance(index, faiss.IndexIDMap2):
        raise CorruptIndex(f"{source}: a {type(index).__name__}; expected the IndexIDMap2 `index build` writes")
    inner = faiss.downcast_index(index.index)
    kind = ("exact" if isinstance(inner, faiss.IndexFlat) else "hnsw" if isinstance(inner, faiss.IndexHNSW)
            else "ivfpq" if faiss.try_extract_index_ivf(inner) is not None else "other")
    if index.ntotal != info["count"] or index.d != info["dim"] or index.metric_type != expected_metric \
            or kind != info["kind"]:
        raise CorruptIndex(f"{source}: {index.ntotal} vectors of dim {index.d}, {kind}, metric {index.metric_type}; "
                           f"{INFO_FILE} says {info['count']} of dim {info['dim']}, {info['kind']}, {info['metric']}")
    ids = faiss.vector_to_array(index.id_map)
    if not np.array_equal(ids, np.arange(len(ids), dtype=ids.dtype)):
        raise CorruptIndex(f"{source}: ids are not the row numbers 0..{len(ids) - 1}")


def _write_paths_file(path: Path, paths: Sequence[str]) -> None:
    with open(path, "wb") as f:
        write_path_list(f, paths)


def _write_synced(target: Path, write: Callable[[Path], None], *, atomic: bool = False) -> None:
    """``write(path)`` to ``target`` (to a temporary name renamed over it when ``atomic``), then
    flush it to disk, so info.json can never name data a power cut would lose. The umask decides
    the mode (a plain ``open``)."""
    path = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp") if atomic else target
    try:
        write(path)
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        if atomic:
            _step("save:info-staged")
            os.replace(path, target)
            _fsync_dir(target.parent)
    finally:
        if atomic and path.exists():
            path.unlink()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform / filesystem can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _locked(folder: Path, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """An advisory lock on the folder itself (no lock file to leave behind): saves exclude each
    other and readers, so a load never sees the files of a half-done save swept away. Yields
    whether it was taken; where the platform or filesystem has no flock, it goes unlocked."""
    try:
        import fcntl
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield True
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError:  # ENOLCK / EOPNOTSUPP (some network filesystems)
            pass
        yield True
    finally:
        os.close(fd)


def _files_of(info: dict[str, Any]) -> set[str]:
    """The data files an info.json names (the fixed names, for a folder of the old format)."""
    return set(info.get("files", {"index": INDEX_FILE, "paths": PATHS_FILE}).values())


def _ours(name: str) -> bool:
    return bool(_DATA_FILE.fullmatch(name) or _STAGED.fullmatch(name)) or name in (INFO_FILE, INDEX_FILE, PATHS_FILE)


def _claim(folder: Path) -> None:
    """Refuse to save into a folder of other things (``--out ~/photos`` must not mix an index into
    them); an index folder, or an empty one, is fine. Extra files beside an index are left alone."""
    names = os.listdir(folder)
    if names and INFO_FILE not in names and not all(_ours(n) for n in names):
        others = sorted(n for n in names if not _ours(n))
        raise RetrievalError(f"{folder}: holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''} and no "
                             f"{INFO_FILE}; it is not an index folder: choose another path or empty it")


def _sweep(folder: Path, keep: set[str]) -> None:
    """Remove the data files no info.json names (the previous save's, an interrupted one's),
    staged info.json copies, and the fixed-name files of the old format once replaced. ``keep``:
    the files info.json names (:func:`_files_of`)."""
    for name in os.listdir(folder):
        if name not in keep and name != INFO_FILE and _ours(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)


def _legacy_siblings(folder: Path) -> list[Path]:
    """Copies an older version's save left beside the folder when it died between its two renames
    (``.NAME.old-PID``: the old index; ``.NAME.XXXX.tmp``: the new one, maybe half written)."""
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.(old-\d+|[A-Za-z0-9_]+\.tmp)")
    try:
        names = os.listdir(folder.parent)
    except OSError:
        return []
    found = [folder.parent / n for n in names if pattern.fullmatch(n) and (folder.parent / n).is_dir()]
    return sorted(found, key=lambda p: (not p.name.endswith(".tmp"), p.name))  # the newer (.tmp) first


def _recover(folder: Path) -> None:
    """Put back the index an older version's interrupted save left beside a missing folder: the
    new copy when it is complete, else the old one."""
    for candidate in _legacy_siblings(folder):
        try:
            VectorIndex.load(candidate, device="cpu")
        except (RetrievalError, OSError):
            continue
        with contextlib.suppress(OSError):
            os.replace(candidate, folder)
            warnings.warn(f"{folder}: recovered the index an interrupted save left in {candidate.name}", stacklevel=3)
            return


def _sweep_siblings(folder: Path) -> None:
    """Remove an older version's leftover copies once the folder itself holds an index."""
    for candidate in _legacy_siblings(folder):
        if all(_ours(n) for n in os.listdir(candidate)):
            shutil.rmtree(candidate, ignore_errors=True)
