"""A FAISS index over image vectors, kept as a folder: ``index.faiss`` + ``paths.txt`` + ``info.json``.

Exact search is the default for small collections and the oracle for the rest: an approximate
index (IVF + PQ, or HNSW) is chosen from the collection size and a memory budget, tuned (nprobe /
efSearch) until its 1-recall@10 against exact search on held-out queries reaches a target, and
that measured recall is stored in info.json beside the factory string, metric and the model /
weights / layer the vectors came from, so a folder built from other vectors is refused on load.
Where faiss sees a GPU (a faiss-gpu build with ``StandardGpuResources``), exact and IVF indexes are
trained, filled and searched on it and copied back to the CPU for saving; ``device="cpu"`` opts out.
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
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

__all__ = ["CorruptIndex", "IndexMismatch", "InvalidVectors", "RetrievalError", "SearchHit", "VectorIndex",
           "choose_factory", "exact_knn", "gpu_count", "gpu_supported", "parse_size", "recall_at", "resolve_device"]

Kind = Literal["auto", "exact", "ivfpq", "hnsw"]
Metric = Literal["cosine", "l2"]
Device = Literal["auto", "cpu", "gpu"]
GPU_MAX_K = 2048  # faiss-gpu's k-selection limit (k and nprobe); larger searches run on the CPU copy
DEDUPE_BLOCK = 16_384  # vectors decoded and searched at a time by duplicates(): bounded memory at any N
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
            nlist = faiss.extract_index_ivf(inner).nlist if "IVF" in factory else 1
            size = min(n, train_size, max(50 * nlist, 20_000))  # k-means needs ~40 points a centroid, no more
            sample = x[np.sort(rng.choice(n, size, replace=False))]
            (work if work is not None else inner).train(sample)
        index = faiss.IndexIDMap2(work if work is not None else inner)
        index.add_with_ids(x, np.arange(n, dtype=np.int64))
        gpu_index = None
        if work is not None:  # keep the GPU one for searching, the CPU copy for saving and decoding
            gpu_index, index = index, _from_gpu(index)
        skip = ("format", "count", "shards", "failures", "inputs", "inputs_sha256", "rank", "slice", "complete")
        info = {"format": FORMAT, **{k: v for k, v in (meta or {}).items() if k not in skip},
                "factory": factory, "dim": dim, "metric": metric, "count": n}
        info["kind"] = "exact" if factory == "Flat" else ("hnsw" if factory.startswith("HNSW") else "ivfpq")
        self = cls(index, list(paths), info, device=device)
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
        """(scores, ids), each (Q, min(k, count)), best first; missing hits are id -1."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        q = _prepare(_check(queries, self.dim, "queries"), self.info["metric"])
        return self._searcher(k).search(q, min(k, self.count))

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
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be a cosine in (0, 1], got {threshold}")
        if k < 1 or block < 1:
            raise ValueError(f"k and block must be at least 1, got k={k}, block={block}")
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
    def load(cls, folder: str | os.PathLike, *, mmap: bool = False, device: Device | str | None = "auto",
             **expected: Any) -> VectorIndex:
        """Read an index folder. ``expected`` (model=, weights=, layer=, pool=, dim=) must match
        info.json; a missing, unreadable or inconsistent file raises :class:`CorruptIndex`.
        ``device``: where searches run (:func:`resolve_device`; the GPU copy is made on first use)."""
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
        self = cls(index, paths, info, device=device)
        self._apply(info.get("search_params", {}))
        return self
