"""Which FAISS index a collection gets: exact search below :data:`EXACT_LIMIT` vectors; while the
raw vectors fit the memory budget, HNSW up to :data:`HNSW_LIMIT` and IVF over the raw vectors
beyond (an HNSW graph of 10M vectors takes longer to build than the 15 minutes an IVF one does);
else IVF + PQ sized to the budget; and what each kind needs.

The policy is a FAISS factory string (``"Flat"``, ``"HNSW32,Flat"``, ``"PCAR128,IVF1000,PQ32"``)
chosen from the collection's size and dimension alone, so it can be read, tested and stored in
info.json. faiss and stdlib only.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Literal

import faiss

from alexnet_zoo.errors import InvalidVectors

__all__ = ["EXACT_LIMIT", "KINDS", "Kind", "choose_factory", "kind_of", "new_index", "parse_size", "training_needs",
           "training_size"]

Kind = Literal["auto", "exact", "ivf", "ivfpq", "hnsw"]
KINDS = ("exact", "ivf", "ivfpq", "hnsw")
EXACT_LIMIT = 50_000  # below this many vectors exact search is fast enough (a few ms a query)
HNSW_LIMIT = 2_000_000  # HNSW32 builds ~100 s a million vectors on 2 cores; IVF past this
# From this many lists, a vector's list is found through an HNSW graph over the centroids: at 10M
# vectors in 12,649 lists that cut the fill from ~8 to ~2.5 minutes on 2 cores (a GPU scans them all)
HNSW_QUANTIZER_LISTS = 8192
TRAIN_BYTES = 1 << 30  # the default training sample's float32 rows stay within 1 GiB (k-means copies it)
POINTS_PER_CODE = 39  # faiss's k-means warns below this many training points a centroid


def parse_size(text: str | int) -> int:
    """"4GB", "512MiB", "1e9" or an int -> bytes (at least 1, at most 2**60: a budget, not a typo)."""
    expected = "expected a positive number of bytes with an optional unit, e.g. 4GB or 512MiB"
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"memory size {text!r}: {expected}")  # noqa: TRY004 - callers catch ValueError for any bad size
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


def choose_factory(n: int, dim: int, kind: Kind = "auto", memory: int | None = None, *, gpu: bool = False) -> str:
    """The FAISS factory string for ``n`` vectors of ``dim`` under a memory budget in bytes, to be
    built on a GPU (``gpu``: the coarse quantizer stays flat there) or the CPU."""
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
            kind = "hnsw" if n <= HNSW_LIMIT else "ivf"
    if kind == "exact":
        return "Flat"
    if kind == "hnsw":
        return "HNSW32,Flat"
    if kind not in ("ivf", "ivfpq"):
        raise ValueError(f"unknown index kind {kind!r}; choose auto, {', '.join(KINDS)}")
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points a list
    ivf = f"IVF{nlist}_HNSW32" if nlist >= HNSW_QUANTIZER_LISTS and not gpu else f"IVF{nlist}"
    if kind == "ivf":  # raw vectors in the lists: exact scores of the probed ones
        return f"{ivf},Flat"
    budget = 256 if memory is None else max(8, min(256, memory // max(n, 1) - 16))  # 16: id + list overhead
    # for wide features (fc7: 4096) reduce with PCA to 4m dims first so each PQ sub-vector keeps a few;
    # PCA to 4m dims needs 4m training vectors, so a small collection gets a smaller m
    m = max((m for m in (8, 16, 32, 48, 64, 96, 128, 192, 256)
             if m <= budget and dim % m == 0 and 2 * m <= dim and (dim <= 4 * m or 4 * m <= n)), default=None)
    if m is None:
        return f"{ivf},SQ8"
    if dim > 4 * m:
        return f"PCAR{4 * m},{ivf},PQ{m}"
    return f"{ivf},PQ{m}"


def kind_of(factory: str) -> str:
    """The kind of index a factory string builds: "exact", "hnsw", "ivf" (raw vectors in the lists)
    or "ivfpq" (codes: PQ or SQ)."""
    if factory == "Flat" or factory.startswith("HNSW"):
        return "exact" if factory == "Flat" else "hnsw"
    return "ivf" if factory.endswith(",Flat") else "ivfpq"


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


def training_size(n: int, factory: str, kind: str, train_size: int | None, dim: int) -> int:
    """How many of ``n`` vectors of ``dim`` train ``factory``: enough for its k-means (~40 points a
    centroid: 50 a list, at least 20,000), at most ``train_size`` (None: at most the rows of ``dim``
    floats that fit TRAIN_BYTES); fewer than it needs (:func:`training_needs`) is an
    :class:`InvalidVectors` that names the kinds which need no training."""
    need = training_needs(factory)
    nlist = int(m.group(1)) if (m := re.search(r"IVF(\d+)", factory)) else 1
    cap = train_size if train_size is not None else max(20_000, TRAIN_BYTES // (4 * dim))
    size = min(n, cap, max(50 * nlist, 20_000))  # k-means needs ~40 points a centroid, no more
    if size < need:
        have = f"{n} vectors" if size == n else f"a training sample of {size} (train_size) of {n} vectors"
        raise InvalidVectors(f"a {kind} index ({factory}) needs at least {need} training vectors, got {have}; "
                             "use kind='exact' (--kind exact; auto chooses it below "
                             f"{EXACT_LIMIT:,} vectors) or 'hnsw'")
    if (match := re.search(r"PQ(\d+)(?:x(\d+))?", factory)) and size < POINTS_PER_CODE * 2 ** int(match.group(2) or 8):
        codes = 2 ** int(match.group(2) or 8)  # one warning here instead of faiss's one per codebook (new_index)
        warnings.warn(f"{factory}: its {match.group(1)} PQ codebooks of {codes} codes train on {size:,} vectors, fewer "
                      f"than the {POINTS_PER_CODE * codes:,} faiss's k-means asks for; the recall measured after "
                      "the build says what that costs", UserWarning, stacklevel=3)
    return size


def new_index(dim: int, factory: str, metric: int) -> faiss.Index:
    """An empty index of ``factory`` (``metric``: a FAISS metric constant) with the build settings
    used here: no polysemous training and a quick PQ k-means for IVF + PQ, efConstruction 80 for HNSW."""
    inner = faiss.index_factory(dim, factory, metric)
    if "IVF" in factory:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(inner))  # IndexIVFPQ, not its IndexIVF base
        if "_HNSW" in factory:  # k-means assigns through a flat index (through the graph: 4x slower)
            flat = faiss.IndexFlat(ivf.d, metric)
            ivf.clustering_index, inner.referenced_objects = flat, [flat]  # faiss does not own it
        if isinstance(ivf, faiss.IndexIVFPQ):
            ivf.do_polysemous_training = False  # 2-3x the training time, unused here
            # faiss's k-means is slow in the few dims of a PQ sub-vector (minutes for PQ32 on 64k
            # points); 256 codes in 2-8 dims settle with 64 points a code and 10 iterations
            ivf.pq.cp.max_points_per_centroid, ivf.pq.cp.niter = 64, 10
            ivf.pq.cp.min_points_per_centroid = 1  # training_size warns once, not once a codebook
    if factory.startswith("HNSW"):
        faiss.downcast_index(inner).hnsw.efConstruction = 80
    return inner
