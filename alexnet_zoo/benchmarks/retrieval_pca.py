"""PCA and PCA whitening as a protocol option of the retrieval benchmark (``--pca D [--whiten]
[--pca-train DIR_OR_FEATURES_OR_NPY]``), as Babenko et al. 2014 apply them: learned on a *separate*
image set, applied to database and queries alike, then L2-normalised again for cosine.

The projection is the index's own (:func:`~alexnet_zoo.retrieval.index_pca.learn_projection` and
:func:`~alexnet_zoo.retrieval.index_pca.project`): one PCA in the library, so a benchmark figure
measures the transform ``index build --pca`` stores. The training vectors are a folder of pictures
(extracted here with the benchmark's own extractor: same model, weights, layer, preprocessing), a
features folder of ``alexnet-zoo extract`` (its manifest must agree, as for ``index build
--pca-train``) or a ``.npy``. Without one the PCA is learned on the evaluated database, which the
report marks as optimistic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_zoo.cli.index_update import pca_train_vectors
from alexnet_zoo.errors import InvalidVectors, RetrievalError
from alexnet_zoo.retrieval.benchmark_eval import embed_paths
from alexnet_zoo.retrieval.benchmark_sets import BenchmarkSet
from alexnet_zoo.retrieval.extraction import list_images
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.retrieval.index_pca import PCA_SAMPLE, Projection, learn_projection, project
from alexnet_zoo.retrieval.shards import MANIFEST
from alexnet_zoo.retrieval.vector_checks import Metric, check_vectors, prepare

__all__ = ["OPTIMISTIC", "apply_pca", "check_pca_dim", "learn_benchmark_pca", "pca_line", "pca_report", "training_set"]

OPTIMISTIC = "trained on the evaluated set: optimistic"  # the report's note when no --pca-train is given


def check_pca_dim(dim: int, d_in: int, layer: str) -> None:
    """Refuse ``--pca D`` beyond the layer's dimension before any picture is read (the same refusal
    :func:`learn_projection` makes, but before a database's worth of extraction)."""
    if dim > d_in:
        raise InvalidVectors(f"--pca {dim}: the {layer} vectors have only {d_in} dimensions; choose --pca {d_in} "
                             "or fewer")


def _is_features_folder(path: Path) -> bool:
    return (path / MANIFEST).is_file() or any(path.glob("manifest-rank-*.json"))


def training_set(source: Path, extractor: FeatureExtractor, bset: BenchmarkSet,
                 progress: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """The vectors ``--pca-train`` names and what the report says of them. A picture folder is
    extracted with ``extractor`` (at most :data:`PCA_SAMPLE` pictures, a seeded sample, since the
    PCA takes no more rows); pictures that are also in the evaluated set are counted (``overlap``)."""
    if source.is_dir() and not _is_features_folder(source):
        paths = list_images(source)
        if not paths:
            raise RetrievalError(f"{source}: no pictures for --pca-train; expected a folder of pictures, a features "
                                 f"folder (with {MANIFEST}, from `alexnet-zoo extract`) or a .npy of (N, dim) vectors")
        listed = len(paths)
        if listed > PCA_SAMPLE:
            keep = np.sort(np.random.default_rng(0).choice(listed, PCA_SAMPLE, replace=False))
            paths = [paths[i] for i in keep]
        evaluated = {os.path.realpath(p) for p in bset.images}
        overlap = sum(os.path.realpath(p) in evaluated for p in paths)
        vectors = embed_paths(extractor, paths, "pca-train", progress)
        return vectors, dict(kind="pictures", source=str(source), listed=listed, overlap=overlap)
    vectors = pca_train_vectors(source, extractor.info())
    return vectors, dict(kind="features" if source.is_dir() else "npy", source=str(source),
                                listed=len(vectors), overlap=None)


def learn_benchmark_pca(train: np.ndarray, dim: int, *, whiten: bool, metric: Metric, what: str,
                        d_in: int) -> Projection:
    """The projection learned on ``train`` as the benchmark compares vectors: unit rows for cosine
    (the evaluated vectors are unit too), the rows as they are for Euclidean distance. Of more than
    :data:`PCA_SAMPLE` rows (a memory-mapped .npy) only the rows learn_projection would sample are read."""
    if len(train) > PCA_SAMPLE:
        train = train[np.sort(np.random.default_rng(0).choice(len(train), PCA_SAMPLE, replace=False))]
    sample = prepare(check_vectors(train, None, what), metric)
    if sample.shape[1] != d_in:
        raise InvalidVectors(f"{what}: vectors of dim {sample.shape[1]}, the evaluated ones have {d_in}")
    return learn_projection(sample, dim, whiten=whiten, what=what)


def apply_pca(database: np.ndarray, queries: np.ndarray, projection: Projection,
              metric: Metric) -> tuple[np.ndarray, np.ndarray]:
    """Database and query vectors in the PCA's space (unit length again for cosine)."""
    return project(prepare(database, metric), projection, metric), project(prepare(queries, metric), projection, metric)


def pca_report(dim: int, d_in: int, whiten: bool, rows: int, training: dict[str, Any] | None) -> dict[str, Any]:
    """The report's ``pca``: the settings and the training set, with the optimistic note where the
    projection was learned on the evaluated database."""
    out: dict[str, Any] = {"dim": dim, "dim_in": d_in, "whiten": whiten, "trained_on": min(rows, PCA_SAMPLE),
                           "train": "separate" if training is not None else "evaluated"}
    if training is None:
        out.update(kind="database", source=None, listed=rows, overlap=None, note=OPTIMISTIC)
    else:
        out.update(training)
        out["note"] = (f"{training['overlap']} of the training pictures are in the evaluated set: optimistic"
                       if training.get("overlap") else None)
    return out


def pca_line(info: dict[str, Any]) -> str:
    """One line for people: what was learned on what."""
    what = "PCA whitening" if info["whiten"] else "PCA"
    where = ("the evaluated database" if info["train"] == "evaluated"
             else f"{info['kind']} {info['source']}")
    text = f"{what} {info['dim_in']} -> {info['dim']} dims learned on {info['trained_on']:,} vectors of {where}"
    return text + (f" ({info['note']})" if info["note"] else "")
