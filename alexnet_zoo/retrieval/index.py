"""A FAISS index over image vectors, with row-aligned paths and stable ids, kept as a folder.

Exact search is the default for small collections and the oracle for the rest: an approximate index
(IVF, IVF + PQ, HNSW) is chosen from the collection size and a memory budget (:mod:`.index_policy`),
tuned (nprobe / efSearch) until its 1-recall@10 against exact search on held-out queries reaches a
target (:mod:`.index_tuning`), and that measured recall is stored in info.json beside the factory
string, the metric and the identity the caller gave the vectors (model, weights, layer, ...),
so a folder built from other vectors is refused on load. Where faiss sees a GPU, exact and IVF
indexes are trained, filled and searched on it and copied back to the CPU for saving
(:mod:`~alexnet_zoo.retrieval.index_gpu`; ``device="cpu"`` opts out). The folder format and its
crash safety are :mod:`~alexnet_zoo.retrieval.index_folder`'s, near-duplicates
:mod:`~alexnet_zoo.retrieval.index_dedupe`'s, PCA (whitening) in front of the index
:mod:`~alexnet_zoo.retrieval.index_pca`'s, removing rows :mod:`~alexnet_zoo.retrieval.index_update`'s.
This module, like them, works on numpy arrays only and does not import torch.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from alexnet_zoo.errors import IndexMismatch, InvalidVectors, RetrievalError
from alexnet_zoo.retrieval.index_dedupe import DEDUPE_BLOCK, duplicate_groups, duplicate_pairs, probing
from alexnet_zoo.retrieval.index_folder import FORMAT, read_folder, recover, tidy, write_folder
from alexnet_zoo.retrieval.index_gpu import (
    GPU_MAX_K,
    Device,
    filled,
    gpu_count,
    gpu_parameters,
    gpu_supported,
    resolve_device,
    to_gpu,
)
from alexnet_zoo.retrieval.index_lookup import keep_lookups, stored_rows
from alexnet_zoo.retrieval.index_pca import Projection, learn_pca, project, projection_of, stored_index, wrap
from alexnet_zoo.retrieval.index_policy import KINDS, Kind, choose_factory, kind_of, parse_size, training_size
from alexnet_zoo.retrieval.index_tuning import TARGET_RECALL, heldout_recall, sample_rows, search_grid, tune_on_rows
from alexnet_zoo.retrieval.index_update import check_source, remove_rows, rows_of, unseen_rows
from alexnet_zoo.retrieval.vector_checks import (
    MAX_DIM,
    METRICS,
    Metric,
    check_paths,
    check_vectors,
    positive_int,
    prepare,
    refuse_zero,
)

__all__ = ["META_LIMIT", "SearchHit", "VectorIndex"]

# the checks load() takes (model=, weights=, ...), each against the identity info.json recorded
_IDENTITY = ("model", "weights", "layer", "pool", "dim")
# info.json's own fields: what the index measures and names; a caller's identity cannot replace them
_OWN = ("format", "factory", "dim", "metric", "count", "kind", "search_params", "recall_at_10", "recall_queries",
        "build_seconds", "bytes_per_vector", "files", "pca", "changes_since_recall")
# the identity a caller hands build(): provenance is a few kB (shards.provenance of a manifest); a whole
# manifest with a long failure list would make an info.json the loader then refuses (INFO_LIMIT)
META_LIMIT = 1 << 20


@dataclass(frozen=True)
class SearchHit:
    """One neighbour: its stable id, path and score (cosine similarity, or L2 distance)."""

    id: int
    path: str
    score: float


def _step(name: str) -> None:
    """A no-op marking each step of :meth:`VectorIndex.save`; the crash tests replace it with one
    that ends the process there (``os._exit``), so every moment of a save is tried."""


class VectorIndex:
    """A FAISS index with row-aligned paths, stable ids (``paths[id]``) and its info.

    ``index`` is always the CPU index (the one saved); on a GPU device a copy of it made on first
    use serves searches (``device`` = "auto" | "cpu" | "gpu", see :func:`resolve_device`)."""

    def __init__(self, index: faiss.Index, paths: list[str], info: dict[str, Any], *,
                 device: Device | str | None = "auto") -> None:
        self.index, self.paths, self.info = index, paths, info
        self.device = resolve_device(device, gpus=gpu_count())
        self._gpu: faiss.Index | None = None
        self._gpu_failed = False

    def _searcher(self, k: int = 1) -> faiss.Index:
        """The index searches go to: the GPU copy where there is one and ``k`` fits its limit."""
        factory = self.info.get("factory", "")
        if self.device != "gpu" or not gpu_supported(factory) or k > GPU_MAX_K or self._gpu_failed:
            return self.index
        if self._gpu is None:  # with a PCA: a copy of the index behind it, wrapped again (see index_pca.wrap)
            copy = to_gpu(self._stored() if "pca" in self.info else self.index, factory)
            self._gpu = wrap(copy, self._projection(), self.info["metric"]) if copy and "pca" in self.info else copy
            self._gpu_failed = self._gpu is None
            if self._gpu is not None:
                self._apply(self.info.get("search_params", {}))
        return self._gpu if self._gpu is not None else self.index

    def _knn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the k nearest (k capped at the index size) of prepared queries."""
        return self._searcher(k).search(queries, min(k, self.count))

    # ---- building ----------------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, paths: list[str], *, kind: Kind = "auto", metric: Metric = "cosine",
              memory: int | str | None = None, meta: dict[str, Any] | None = None, queries: int = 500,
              train_size: int | None = None, seed: int = 0, target_recall: float = TARGET_RECALL,
              device: Device | str | None = "auto", pca: int | None = None, whiten: bool = False,
              pca_train: np.ndarray | None = None) -> VectorIndex:
        """Index ``vectors`` (row i = ``paths[i]``, id i). ``meta``: the vectors' identity (model /
        weights / layer / preprocessing ...), stored in info.json as given, except the fields the
        index writes itself. Approximate kinds are trained on a sample (at most ``train_size`` rows;
        default: what the k-means needs, within 1 GiB) and tuned on ``queries`` held-out rows against
        exact search. On a GPU device (:func:`resolve_device`) exact and IVF kinds are trained and
        filled there, then copied back. ``pca``: project to that many dimensions first (``whiten``:
        PCA whitening), learned on ``pca_train`` else ``vectors`` (:mod:`.index_pca`)."""
        device = resolve_device(device, gpus=gpu_count())
        if metric not in METRICS:
            raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
        if kind not in ("auto", *KINDS):
            raise ValueError(f"unknown index kind {kind!r}; choose auto, {', '.join(KINDS)}")
        queries = positive_int(queries, "queries")
        train_size = None if train_size is None else positive_int(train_size, "train_size")
        if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) \
                or not 0 < target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
        if pca is None and (whiten or pca_train is not None):
            raise ValueError("whiten and pca_train need pca=D, the dimensions to project to")
        _check_meta(meta)
        x = check_vectors(vectors, None, "vectors")
        paths = check_paths(paths, "vectors")
        if len(paths) != len(x):
            raise InvalidVectors(f"{len(x)} vectors but {len(paths)} paths")
        if len(x) == 0:
            raise InvalidVectors("no vectors to index")
        n, dim = x.shape
        if dim > MAX_DIM:
            raise InvalidVectors(f"vectors of dim {dim}: at most {MAX_DIM} is supported")
        x = prepare(x, metric)
        projection, pca_info = (None, None) if pca is None else learn_pca(x, metric, pca, whiten, pca_train, seed)
        searched = x if projection is None else project(x, projection, metric)  # the vectors as the index sees them
        factory = choose_factory(n, searched.shape[1], kind, parse_size(memory) if memory is not None else None,
                                 gpu=device == "gpu")
        size = training_size(n, factory, kind, train_size, searched.shape[1])
        start = time.perf_counter()
        rng = np.random.default_rng(seed)
        index, gpu_index = filled(searched, x, factory, metric, projection, device, rng, size)
        info = {"format": FORMAT, **{k: v for k, v in (meta or {}).items() if k not in _OWN},
                "factory": factory, "dim": dim, "metric": metric, "count": n, "kind": kind_of(factory)}
        self = cls(index, paths, info, device=device)
        self._gpu = gpu_index
        space = None if projection is None else searched
        self.info["search_params"] = self._tune(x, rng, queries, target_recall, space) if factory != "Flat" else {}
        self.info["recall_at_10"] = self._measure(x, rng, queries, space) if factory != "Flat" else 1.0
        if pca_info is not None:  # the whole pipeline, PCA included, against exact search of the original vectors
            self.info["pca"] = {**pca_info, "recall_at_10_original": self._measure(x, rng, queries)}
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
                gpu_parameters().set_index_parameter(self._gpu, name, min(value, GPU_MAX_K))

    def _tune(self, x: np.ndarray, rng: np.random.Generator, queries: int, target: float,
              space: np.ndarray | None) -> dict[str, int]:
        """The cheapest nprobe / efSearch whose recall on a tuning sample reaches ``target``, against
        exact search in the space the index searches (``space``: the vectors after its PCA)."""
        ids = sample_rows(len(x), rng, queries)
        nlist = 0 if self.info["kind"] == "hnsw" else faiss.extract_index_ivf(self._stored()).nlist
        return tune_on_rows(search_grid(self.info["kind"], nlist), target, x, ids, self.info["metric"], self._knn,
                            apply=self._apply, space=space)

    def _measure(self, x: np.ndarray, rng: np.random.Generator, queries: int, space: np.ndarray | None = None
                 ) -> float:
        """Recall on a fresh sample (not the one the parameters were tuned on), against exact
        search over ``space`` (default: the original vectors ``x``)."""
        return round(heldout_recall(x, sample_rows(len(x), rng, queries), self.info["metric"], self._knn, space), 4)

    def _stored(self) -> faiss.Index:
        """The index that holds the vectors as searched (under the ids, and under the PCA if any)."""
        return stored_index(self.index, "pca" in self.info)

    def _projection(self) -> Projection | None:
        return projection_of(self.index) if "pca" in self.info else None

    # ---- adding and searching ----------------------------------------------------------------

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def add(self, vectors: np.ndarray, paths: list[str]) -> np.ndarray:
        """Append vectors (through the PCA, when the index has one); returns their ids (the next
        free ones: ids never change on adding). The stored recall is then marked stale (see
        :meth:`_changed`)."""
        x = prepare(check_vectors(vectors, self.dim, "added vectors"), self.info["metric"])
        paths = check_paths(paths, "added vectors")
        if len(paths) != len(x):
            raise InvalidVectors(f"{len(x)} vectors but {len(paths)} paths")
        ids = np.arange(len(self.paths), len(self.paths) + len(x), dtype=np.int64)
        self.index.add_with_ids(x, ids)
        if self._gpu is not None and "pca" in self.info:
            self._gpu.add(x)  # the copy behind the PCA has no id map: its positions are the ids
        elif self._gpu is not None:
            self._gpu.add_with_ids(x, ids)
        self.paths += list(paths)
        self.info["count"] = self.count
        self._changed(added=len(x))
        return ids

    def add_new(self, vectors: np.ndarray, paths: list[str], *, meta: dict[str, Any] | None = None
                ) -> tuple[np.ndarray, int]:
        """:meth:`add` the rows whose path the index does not hold yet (nor an earlier row of the
        same call); returns (their ids, how many were skipped). ``meta``: the new vectors'
        identity (``shards.provenance`` of their manifest), refused unless it is the index's."""
        x = check_vectors(vectors, None, "added vectors")
        paths = check_paths(paths, "added vectors")
        if x.shape[1] != self.dim:
            raise IndexMismatch(f"the new vectors have dim {x.shape[1]}, the index holds dim {self.dim}")
        if meta is not None:
            _check_meta(meta)
            check_source(meta, self.info, _OWN)
        if len(paths) != len(x):
            raise InvalidVectors(f"{len(x)} vectors but {len(paths)} paths")
        rows = unseen_rows(paths, self.paths)
        ids = self.add(x[rows], [paths[r] for r in rows]) if rows else np.zeros(0, np.int64)
        return ids, len(paths) - len(rows)

    def remove(self, paths: list[str]) -> int:
        """Remove every row of these paths; returns how many. Ids are row numbers, so the rows after
        a removed one are renumbered (the index is then the one a build over the remaining rows, in
        order, with the same training, would be: :mod:`~alexnet_zoo.retrieval.index_update`). A path
        the index lacks, or a removal that would leave it empty, is refused before any change."""
        rows = rows_of(self.paths, check_paths(paths, "removed paths"))
        if len(rows):
            self.index = remove_rows(self.index, rows, factory=self.info["factory"], kind=self.info["kind"],
                                     metric=self.info["metric"], projection=self._projection())
            self._apply(self.info.get("search_params", {}))
            self._gpu, self._gpu_failed = None, False  # a fresh GPU copy of the new rows on the next search
            gone = set(rows.tolist())
            self.paths = [p for i, p in enumerate(self.paths) if i not in gone]
            self.info["count"] = self.count
            self._changed(removed=len(rows))
        return len(rows)

    def _changed(self, added: int = 0, removed: int = 0) -> None:
        """Record rows added / removed since the recall was measured: recall_at_10 (and the PCA's
        recall against the original space) describe the rows of the build until it is rebuilt. An
        exact index without PCA finds the true neighbours whatever it holds, so it records nothing."""
        if (self.info["kind"] == "exact" and "pca" not in self.info) or not added + removed:
            return
        since = self.info.get("changes_since_recall", {"added": 0, "removed": 0})
        self.info["changes_since_recall"] = {"added": since["added"] + added, "removed": since["removed"] + removed}

    def search_arrays(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, min(k, count)), best first; missing hits are id -1. A zero query
        of a cosine index raises :class:`ZeroQuery` (it has no direction: any hits would be arbitrary).
        Queries are in the vectors' own space: the index applies its PCA, if any."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        q = refuse_zero(check_vectors(queries, self.dim, "queries"), self.info["metric"])
        return self._knn(prepare(q, self.info["metric"]), int(k))

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[SearchHit]]:
        """The k nearest (k capped at the index size) of each query, best first, -1 hits dropped."""
        return self._hits(*self.search_arrays(queries, k))

    def search_ids(self, ids: list[int], k: int = 10) -> list[list[SearchHit]]:
        """The k nearest of indexed vectors given by id (each is among its own hits), searched as
        they are stored: after the PCA, when the index has one (:meth:`vectors`)."""
        k = positive_int(k, "k")
        bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.count]
        if bad:
            raise ValueError(f"ids must be integers from 0 to {self.count - 1}, got {bad[:5]}")
        ids = [int(i) for i in ids]
        stored = np.concatenate([self.vectors(i, i + 1) for i in ids]) if ids else np.zeros((0, self.dim), np.float32)
        if "pca" not in self.info:
            return self.search(stored, k)
        q = prepare(refuse_zero(stored, self.info["metric"]), self.info["metric"])
        return self._hits(*self._stored().search(q, min(k, self.count)))

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[list[SearchHit]]:
        return [[SearchHit(int(i), self.paths[int(i)], float(s)) for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(scores, ids)]

    def keep_lookups(self) -> None:
        """Make a lookup of a few ids (:meth:`vectors`) cost microseconds, for a server answering
        neighbours-of-an-id (:mod:`~alexnet_zoo.retrieval.index_lookup`). Call it before searching
        from other threads."""
        keep_lookups(self._stored())

    def vectors(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The stored vectors of ids ``start..stop-1`` (all by default; exact for Flat and HNSW,
        decoded for PQ): of the index's PCA dimension when it has one (search them with
        :meth:`search_ids`)."""
        stop = self.count if stop is None else min(stop, self.count)
        return stored_rows(self._stored(), start, stop)

    def duplicates(self, threshold: float = 0.95, k: int = 10, *, block: int = DEDUPE_BLOCK,
                   nprobe: int | None = None) -> list[tuple[int, int, float]]:
        """Pairs (i, j, cosine) with i < j and cosine >= ``threshold``, most similar first.

        The stored vectors are decoded ``block`` at a time and searched against the index, so memory
        stays bounded and a million vectors take minutes (:mod:`~alexnet_zoo.retrieval.index_dedupe`):
        exact and IVF indexes by a range search, HNSW by the ``k`` nearest of each vector. With a PCA
        the cosines are those after it (whitened, if so built), searched under it. ``nprobe``: the
        lists an IVF range search probes (default the tuned k-NN one; near-copies need fewer), set
        for this call only (searches from other threads meanwhile see it too)."""
        if self.info["metric"] != "cosine":
            raise RetrievalError(f"near-duplicates need a cosine index; this one is {self.info['metric']}")
        if "pca" in self.info:
            stored = self._stored()
            range_search, knn = stored.range_search, lambda q, k: stored.search(q, min(k, self.count))
        else:
            range_search, knn = self.index.range_search, self._knn
        with probing(self._apply, self.info["kind"], self.info["search_params"], nprobe):
            return duplicate_pairs(self.count, self.info["kind"], threshold, decode=self.vectors,
                                   range_search=range_search, knn=knn, k=k, block=block)

    def groups(self, threshold: float = 0.95, k: int = 10, *, grouping: str = "connected",
               block: int = DEDUPE_BLOCK, nprobe: int | None = None) -> list[list[tuple[int, float]]]:
        """Near-duplicate groups of :meth:`duplicates`' pairs: lists of (id, best score), largest
        first; ``grouping`` "connected" (components) or "complete" (every member at ``threshold`` to
        every other), see :mod:`~alexnet_zoo.retrieval.index_dedupe`."""
        duplicate_groups([], grouping)  # a wrong grouping is refused before the search, not after it
        return duplicate_groups(self.duplicates(threshold, k, block=block, nprobe=nprobe), grouping)

    # ---- folders -----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the folder so that a crash at any moment leaves the old index or the new one
        loadable there: the data files get a fresh id, are flushed to disk, and only then is
        ``info.json`` atomically replaced by one naming them; the files of the old save (and any
        leftovers of an interrupted one) are removed after that. A folder that holds anything but an
        index is refused, not overwritten. New folders follow the umask."""
        folder = Path(folder)
        if not folder.exists():
            recover(folder, _loadable)  # a crash of an older version between its two renames
        self.info = write_folder(folder, lambda path: faiss.write_index(self.index, str(path)), self.paths,
                                 {**self.info, "count": self.count}, step=_step)
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
            recover(folder, _loadable)
        index, paths, info = read_folder(folder, mmap=mmap, expected=expected)
        self = cls(index, paths, info, device=device)
        self._apply(info["search_params"])
        tidy(folder)
        return self


def _loadable(folder: Path) -> None:
    """Raise unless ``folder`` holds a complete index (how :func:`recover` picks a copy to put back)."""
    VectorIndex.load(folder, device="cpu")


def _check_meta(meta: dict[str, Any] | None) -> None:
    """``meta`` as build() stores it: a JSON object of at most :data:`META_LIMIT` bytes."""
    try:
        size = len(json.dumps(meta or {}))
    except (TypeError, ValueError) as err:
        raise ValueError(f"meta must be JSON data (the vectors' provenance), got {err}") from None
    if size > META_LIMIT:
        raise ValueError(f"meta is {size:,} bytes as JSON; an index records its vectors' provenance (a few kB: "
                         f"alexnet_zoo.retrieval.shards.provenance(manifest)), at most {META_LIMIT:,} bytes")
