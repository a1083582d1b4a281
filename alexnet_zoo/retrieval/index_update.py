"""Removing rows from a saved index's FAISS structure without retraining it, for every kind.

Ids are row numbers (``paths[id]``), so a removal renumbers the rows after each removed one, and
the index is then what a build over the remaining rows (with the same trained quantiser, PQ and
PCA) would hold:

- exact (``Flat``): FAISS's ``remove_ids`` compacts the stored vectors;
- IVF (+ PQ / SQ, after an optional PCA): ``remove_ids`` drops the entries from their lists, and the
  ids the lists hold are renumbered in place (the trained centroids and codes stay as they were);
- HNSW: FAISS cannot remove from the graph, so the graph is rebuilt from the vectors it stores
  (exact copies: ``HNSW32,Flat``) without the removed ones; the same settings as a build, so the
  graph is the one a build of the remaining vectors in the same order makes.

The ids map (``IndexIDMap2``) is reset to 0..n-1 afterwards. numpy and faiss only.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

import faiss
import numpy as np

from alexnet_zoo.errors import IndexMismatch, RetrievalError

from alexnet_zoo.retrieval.index_pca import Projection, assemble, stored_index
from alexnet_zoo.retrieval.index_policy import new_index
from alexnet_zoo.retrieval.vector_checks import Metric, faiss_metric

__all__ = ["check_source", "remove_rows", "rows_of", "unseen_rows"]


def remove_rows(index: faiss.IndexIDMap2, rows: np.ndarray, *, factory: str, kind: str, metric: Metric,
                projection: Projection | None) -> faiss.IndexIDMap2:
    """``index`` without ``rows`` (sorted, distinct ids), ids renumbered 0..n-1: the same object for
    exact and IVF kinds, a rebuilt one for HNSW (see the module's docstring)."""
    count = int(index.ntotal)
    keep = np.ones(count, bool)
    keep[rows] = False
    if kind == "hnsw":
        return _rebuilt_graph(index, keep, factory=factory, metric=metric, projection=projection)
    ivf = faiss.try_extract_index_ivf(stored_index(index, projection is not None))
    mapped = ivf is not None and not ivf.direct_map.no()  # VectorIndex.keep_lookups: faiss cannot remove under it
    if mapped:
        ivf.make_direct_map(False)
    index.remove_ids(faiss.IDSelectorBatch(np.asarray(rows, dtype=np.int64)))
    if ivf is not None:
        _renumber_lists(faiss.downcast_index(ivf), np.cumsum(keep) - 1)
    if mapped:
        ivf.make_direct_map(True)  # rebuilt from the renumbered lists
    _reset_ids(index)
    return index


def unseen_rows(paths: Sequence[str], indexed: Sequence[str]) -> list[int]:
    """The rows of ``paths`` to add: those whose path is neither indexed nor on an earlier row."""
    known, rows = set(indexed), []
    for row, path in enumerate(paths):
        if path not in known:
            known.add(path)
            rows.append(row)
    return rows


def rows_of(indexed: Sequence[str], removed: Sequence[str]) -> np.ndarray:
    """The rows holding the ``removed`` paths (sorted); a path not indexed, or all of them, is refused."""
    wanted = set(removed)
    missing = sorted(wanted - set(indexed))
    if missing:
        raise RetrievalError(f"{len(missing)} of the {len(wanted)} paths to remove are not in the index (first: "
                             f"{', '.join(repr(m) for m in missing[:3])}); nothing was removed")
    rows = np.array([i for i, p in enumerate(indexed) if p in wanted], dtype=np.int64)
    if len(rows) and len(rows) == len(indexed):
        raise RetrievalError(f"removing these {len(wanted)} paths would leave the index empty; delete the folder "
                             "instead, or build a new index")
    return rows


def check_source(meta: dict[str, Any], info: dict[str, Any], own: Collection[str]) -> None:
    """Refuse new vectors whose identity ``meta`` (model, weights, layer, preprocessing ...) is not
    the one ``info`` records (its fields but the ``own`` ones the index writes itself)."""
    theirs = json.loads(json.dumps({k: v for k, v in meta.items() if k not in own}))
    ours = {k: v for k, v in info.items() if k not in own}
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k) or (k in theirs) != (k in ours))
    if differ:
        shown = "; ".join(f"{k}={theirs.get(k, '(none)')!r} vs {ours.get(k, '(none)')!r}" for k in differ[:4])
        raise IndexMismatch(f"the new vectors come from other features than the index's: {shown} (new vs index); "
                            "extract them with the settings the index was built from")


def _renumber_lists(ivf: faiss.IndexIVF, new_ids: np.ndarray) -> None:
    """The ids the inverted lists hold, mapped through ``new_ids`` (old position -> new one)."""
    lists = ivf.invlists
    for number in range(ivf.nlist):
        size = lists.list_size(number)
        if not size:
            continue
        ids = new_ids[faiss.rev_swig_ptr(lists.get_ids(number), size)].astype(np.int64)
        codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size).copy()
        lists.update_entries(number, 0, size, faiss.swig_ptr(ids), faiss.swig_ptr(codes))


def _reset_ids(index: faiss.IndexIDMap2) -> None:
    """Ids 0..n-1 for the n rows the index holds, as every saved index has."""
    faiss.copy_array_to_vector(np.arange(index.ntotal, dtype=np.int64), index.id_map)
    index.construct_rev_map()


def _rebuilt_graph(index: faiss.IndexIDMap2, keep: np.ndarray, *, factory: str, metric: Metric,
                   projection: Projection | None) -> faiss.IndexIDMap2:
    """A new HNSW index over the stored vectors that ``keep`` selects, behind the same PCA."""
    graph = stored_index(index, projection is not None)
    vectors = graph.reconstruct_n(0, graph.ntotal)[keep]
    fresh = new_index(graph.d, factory, faiss_metric(metric))
    if projection is not None:  # the stored vectors are already projected: added under the PCA, not through it
        fresh.add(vectors)
        return assemble(fresh, projection, metric)
    rebuilt = faiss.IndexIDMap2(fresh)
    rebuilt.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    return rebuilt
