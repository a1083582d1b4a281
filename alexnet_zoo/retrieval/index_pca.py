"""PCA and PCA whitening in front of an index (Babenko et al. 2014, "Neural codes for image retrieval").

The projection is learned once (on a separate set of vectors when one is given, as the paper
learns it on other images, else on the indexed vectors): centre, project on the top ``dim``
principal directions and, for whitening, divide each by the square root of its variance (the
eigenvalue power -0.5 of faiss ``PCAMatrix``). It is stored inside the FAISS file as the
``IndexPreTransform`` in front of the index (a ``LinearTransform`` A x + b, then an L2
normalisation for cosine), so the crash-safe save covers it and every added vector and every
query goes through it. On load the transform is checked against info.json's ``pca`` (kinds,
dims, finiteness): a file is untrusted input. numpy and faiss only.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from alexnet_zoo.errors import CorruptIndex, InvalidVectors
from alexnet_zoo.retrieval.vector_checks import Metric, check_vectors, positive_int, prepare

__all__ = ["PCA_SAMPLE", "Projection", "assemble", "check_chain", "learn_pca", "learn_projection", "project",
           "projection_of", "stored_index", "wrap"]

PCA_SAMPLE = 100_000  # training rows the covariance is taken over at most (a 4096-d covariance settles long before)
_CHUNK = 8192  # rows of the covariance accumulated at a time: memory stays bounded at any training size
_RANK_FLOOR = 1e-6  # whitening refuses a direction whose variance is below this share of the largest

Projection = tuple[np.ndarray, np.ndarray]  # (A (dim, d_in), b (dim,)), float32: y = A x + b


def learn_projection(train: np.ndarray, dim: int, *, whiten: bool, what: str, seed: int = 0,
                     sample: int = PCA_SAMPLE) -> Projection:
    """PCA (``whiten``: PCA whitening) of the prepared (N, d_in) ``train`` vectors to ``dim``
    dimensions. ``dim`` must be at most d_in and at most N; whitening also refuses directions
    with (nearly) no variance, since dividing by their tiny spread would make noise dominate."""
    dim = positive_int(dim, "pca")
    n, d_in = train.shape
    if dim > d_in:
        raise InvalidVectors(f"PCA to {dim} dimensions: the vectors have only {d_in}; choose --pca {d_in} or fewer")
    if dim > n:
        raise InvalidVectors(f"PCA to {dim} dimensions needs at least {dim} training vectors, got {n} ({what}); "
                             "choose a smaller --pca or train it on more vectors (--pca-train)")
    rows = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False)) if n > sample else np.arange(n)
    values, vectors, mean = _principal(train, rows)
    values, vectors = values[:dim], vectors[:, :dim]
    if whiten:
        top = max(float(values[0]), 0.0)
        flat = np.flatnonzero(values <= _RANK_FLOOR * top) if top > 0 else np.arange(dim)
        if flat.size:
            raise InvalidVectors(f"PCA whitening to {dim} dimensions: the {len(rows)} training vectors ({what}) vary "
                                 f"in only {int(flat[0])} directions (variance above {_RANK_FLOOR:g} of the largest); "
                                 f"choose --pca {max(int(flat[0]), 1)} or fewer, or more training vectors")
        vectors = vectors / np.sqrt(values)
    a = np.ascontiguousarray(vectors.T, dtype=np.float32)
    return a, (-(a.astype(np.float64) @ mean)).astype(np.float32)


def _principal(train: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(variances, directions as columns, mean) of ``train[rows]``, largest variance first: by the
    SVD of the centred rows when they are fewer than the dimensions (a 9216-d pool5 covariance
    would cost far more), else by the covariance, accumulated :data:`_CHUNK` rows at a time."""
    d_in = train.shape[1]
    mean = np.zeros(d_in)
    for lo in range(0, len(rows), _CHUNK):
        mean += train[rows[lo:lo + _CHUNK]].astype(np.float64).sum(axis=0)
    mean /= len(rows)
    scale = max(len(rows) - 1, 1)
    if len(rows) < d_in:
        _, s, vt = np.linalg.svd(train[rows].astype(np.float64) - mean, full_matrices=False)
        return s ** 2 / scale, vt.T, mean
    cov = np.zeros((d_in, d_in))
    for lo in range(0, len(rows), _CHUNK):
        centred = train[rows[lo:lo + _CHUNK]].astype(np.float64) - mean
        cov += centred.T @ centred
    values, vectors = np.linalg.eigh(cov / scale)  # ascending
    return values[::-1], vectors[:, ::-1], mean


def learn_pca(x: np.ndarray, metric: Metric, dim: int, whiten: bool, train: np.ndarray | None, seed: int = 0
              ) -> tuple[Projection, dict[str, Any]]:
    """The projection of ``VectorIndex.build(pca=dim, whiten=..., pca_train=train)`` for the
    prepared vectors ``x``, and what info.json records of it (its ``pca``)."""
    if not isinstance(whiten, bool):
        raise ValueError(f"whiten must be True or False, got {whiten!r}")
    if train is None:
        sample, what = x, "the indexed vectors"
    else:
        sample, what = prepare(check_vectors(train, None, "pca_train"), metric), "pca_train"
        if sample.shape[1] != x.shape[1]:
            raise InvalidVectors(f"pca_train: vectors of dim {sample.shape[1]}, the indexed ones have {x.shape[1]}")
    projection = learn_projection(sample, dim, whiten=whiten, what=what, seed=seed)
    return projection, {"dim": int(dim), "whiten": whiten, "trained_on": len(sample),
                        "train": "indexed" if train is None else "separate"}


def project(x: np.ndarray, projection: Projection, metric: Metric) -> np.ndarray:
    """Prepared (N, d_in) vectors in the index's space: A x + b, back to unit length for cosine
    (FAISS's own arithmetic, so the numbers are those of the vectors it adds and searches)."""
    y = _linear(projection).apply(np.ascontiguousarray(x, dtype=np.float32))
    if metric == "cosine":
        faiss.normalize_L2(y)
    return y


def _linear(projection: Projection) -> faiss.LinearTransform:
    a, b = projection
    transform = faiss.LinearTransform(a.shape[1], a.shape[0], True)
    faiss.copy_array_to_vector(np.ascontiguousarray(a, dtype=np.float32).ravel(), transform.A)
    faiss.copy_array_to_vector(np.ascontiguousarray(b, dtype=np.float32), transform.b)
    transform.is_trained = True
    return transform


def wrap(inner: faiss.Index, projection: Projection, metric: Metric) -> faiss.IndexPreTransform:
    """``inner`` (an index over the projected vectors) behind the projection: what the FAISS file
    holds, and what searches a GPU copy of ``inner`` (FAISS cannot clone an L2 normalisation, so a
    GPU copy is made of ``inner`` alone and wrapped again)."""
    chain = faiss.IndexPreTransform(inner)
    if metric == "cosine":
        chain.prepend_transform(faiss.NormalizationTransform(projection[0].shape[0], 2.0))
    chain.prepend_transform(_linear(projection))
    return chain


def assemble(inner: faiss.Index, projection: Projection, metric: Metric) -> faiss.IndexIDMap2:
    """The saved form of an ``inner`` index already holding projected vectors: ids 0..n-1 over
    :func:`wrap` (an IndexIDMap2 insists on an empty index, so the counts are handed over after)."""
    chain = wrap(inner, projection, metric)
    count, chain.ntotal = inner.ntotal, 0
    index = faiss.IndexIDMap2(chain)
    chain.ntotal = index.ntotal = count
    faiss.copy_array_to_vector(np.arange(count, dtype=np.int64), index.id_map)
    index.construct_rev_map()
    return index


def stored_index(index: faiss.IndexIDMap2, has_pca: bool) -> faiss.Index:
    """The index under the ids (and under the PCA, when there is one): it holds the vectors as
    searched, so its positions are the ids and its queries are in the projected space."""
    inner = faiss.downcast_index(index.index)
    return faiss.downcast_index(inner.index) if has_pca else inner


def projection_of(index: faiss.IndexIDMap2) -> Projection:
    """(A, b) of an index's PCA (one :func:`check_chain` passed)."""
    transform = faiss.downcast_VectorTransform(faiss.downcast_index(index.index).chain.at(0))
    a = faiss.vector_to_array(transform.A).reshape(transform.d_out, transform.d_in)
    return a, faiss.vector_to_array(transform.b)


def check_chain(inner: faiss.Index, pca: dict[str, Any], dim: int, metric: str, source: Any) -> faiss.Index:
    """The PCA a FAISS file holds agrees with info.json's ``pca`` (a LinearTransform dim -> pca dim
    with finite A and b, then an L2 normalisation for cosine); returns the index behind it."""
    def refuse(what: str) -> CorruptIndex:
        return CorruptIndex(f"{source}: {what}; info.json says PCA {dim} -> {pca['dim']} dims ({metric})")

    if not isinstance(inner, faiss.IndexPreTransform):
        raise refuse(f"a {type(inner).__name__} without the PCA in front")
    steps = [faiss.downcast_VectorTransform(inner.chain.at(i)) for i in range(inner.chain.size())]
    if len(steps) != (2 if metric == "cosine" else 1) or type(steps[0]) is not faiss.LinearTransform \
            or (metric == "cosine" and not isinstance(steps[1], faiss.NormalizationTransform)):
        raise refuse(f"a transform chain of {', '.join(type(s).__name__ for s in steps) or 'nothing'}")
    transform = steps[0]
    a, b = faiss.vector_to_array(transform.A), faiss.vector_to_array(transform.b)
    if transform.d_in != dim or transform.d_out != pca["dim"] or a.size != dim * pca["dim"] \
            or b.size != pca["dim"] or not transform.have_bias or not transform.is_trained:
        raise refuse(f"a PCA of {transform.d_in} -> {transform.d_out} dims ({a.size} + {b.size} numbers)")
    if any(s.d_in != pca["dim"] or s.d_out != pca["dim"] for s in steps[1:]) \
            or (metric == "cosine" and steps[1].norm != 2.0):
        raise refuse("a normalisation of another size or norm")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise refuse("a PCA matrix holding NaN or inf")
    behind = faiss.downcast_index(inner.index)
    if behind.d != pca["dim"]:
        raise refuse(f"an index of dim {behind.d} behind the PCA")
    return behind
