"""Reading an index's stored vectors back by id: one pass over the lists for many ids, faiss's
direct map for a few.

An IVF index finds a vector by id only by scanning every inverted list (2 ms at a million
vectors), which a server answering neighbours-of-an-id pays on every request; faiss's direct map
(8 bytes a vector) makes it a lookup of microseconds. A bulk pass (dedupe, export, the PCA's
stored rows) needs no map: ``reconstruct_n`` walks the lists once. faiss and numpy only.
"""

from __future__ import annotations

import faiss
import numpy as np

__all__ = ["LOOKUP_ROWS", "keep_lookups", "stored_rows"]

LOOKUP_ROWS = 256  # up to this many ids one by one through a direct map; more: one pass over the lists


def keep_lookups(stored: faiss.Index) -> None:
    """Give an IVF ``stored`` index a direct map (Flat and HNSW look ids up directly already)."""
    ivf = faiss.try_extract_index_ivf(stored)
    if ivf is not None and ivf.direct_map.no():
        ivf.make_direct_map()


def stored_rows(stored: faiss.Index, lo: int, hi: int) -> np.ndarray:
    """Vectors ``lo..hi-1`` of ``stored``, whose positions are the ids (exact for Flat and HNSW,
    decoded approximations for PQ, a PCAR of an IVF-PQ factory undone)."""
    if hi <= lo:
        return np.zeros((0, stored.d), np.float32)
    ivf = faiss.try_extract_index_ivf(stored)
    if ivf is not None and not ivf.direct_map.no() and hi - lo <= LOOKUP_ROWS:
        return np.stack([stored.reconstruct(i) for i in range(lo, hi)])
    return stored.reconstruct_n(lo, hi - lo)
