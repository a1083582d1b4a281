"""A retrieval benchmark run: the vectors of a :class:`~alexnet_zoo.retrieval.benchmark_sets.BenchmarkSet`
(database images, and queries: a box of a picture for Oxford / Paris, optionally averaged with their
mirror image), an exact search over all of them, and each query's figures by
:mod:`alexnet_zoo.retrieval.metrics`.

Exact search in numpy, not an index: a benchmark measures the features, so nothing approximate may
stand between them and the figure. Unit vectors are compared by inner product (cosine); others by
Euclidean distance, the paper's Figure 4 measure. PCA / PCA whitening, when the benchmark asks for
it, is applied to the vectors before they reach :func:`evaluate_rankings`
(the recipe learns it with :mod:`alexnet_zoo.retrieval.index_pca`, the index's own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from alexnet_zoo.data.images import load_image
from alexnet_zoo.errors import GroundTruthError
from alexnet_zoo.retrieval.benchmark_sets import BenchmarkSet, Box, Query
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.retrieval.metrics import (
    UKBENCH_TOP,
    average_precision,
    mean_average_precision,
    ns_score,
    precision_at_k,
    rank,
    recall_at_k,
)

__all__ = ["QUERY_BLOCK", "QueryResult", "crop_box", "embed_benchmark", "embed_paths", "evaluate_rankings", "summarize"]

QUERY_BLOCK = 256  # queries scored and ranked at once: 256 x 10,200 UKBench scores are 10 MB


@dataclass(frozen=True)
class QueryResult:
    """One query's figures; ``ns`` is UKBench's count in the top four (None for other datasets),
    ``best`` the first result that is not junk (database index)."""

    name: str
    ap: float
    best: int
    ns: int | None = None
    recall: dict[int, float] = field(default_factory=dict)
    precision: dict[int, float] = field(default_factory=dict)


def crop_box(img: Image.Image, box: Box, name: str) -> Image.Image:
    """The query region of ``img``: the box rounded outwards to whole pixels and clipped to the
    picture; a box that leaves nothing of it is a :class:`GroundTruthError` naming ``name``."""
    x1, y1 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x2, y2 = min(img.width, math.ceil(box[2])), min(img.height, math.ceil(box[3]))
    if x2 <= x1 or y2 <= y1:
        raise GroundTruthError(f"{name}: the query box {box} lies outside the {img.width}x{img.height} picture")
    return img.crop((x1, y1, x2, y2))


def embed_paths(extractor: FeatureExtractor, paths: Sequence[Any], desc: str, progress: bool = True) -> np.ndarray:
    """The float32 vectors of pictures, a batch at a time (the database; a PCA's training pictures)."""
    step = extractor.batch_size
    parts = [np.zeros((0, extractor.dim), np.float32)]
    with tqdm(total=len(paths), unit="img", desc=desc, disable=not progress) as bar:
        for lo in range(0, len(paths), step):
            parts.append(np.asarray(extractor(list(paths[lo:lo + step])), dtype=np.float32))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def _query_vector(extractor: FeatureExtractor, query: Query, flip: bool) -> np.ndarray:
    img = load_image(query.image)
    if query.box is not None:
        img = crop_box(img, query.box, f"{query.name} ({query.image})")
    views = [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)] if flip else [img]
    vector = np.asarray(extractor(views), dtype=np.float32).mean(axis=0)
    if extractor.normalize:
        norm = float(np.linalg.norm(vector))
        vector = vector / norm if norm > 0 else vector
    return vector


def embed_benchmark(extractor: FeatureExtractor, bset: BenchmarkSet, *, query_flip: bool = False,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(database vectors, query vectors) as float32. A query that is a database image as it is
    reuses its row; boxes and ``query_flip`` (the mean of the picture's and its mirror's vectors,
    made unit length again when the extractor normalises) need their own pass."""
    database = embed_paths(extractor, bset.images, "database", progress)
    queries = np.empty((len(bset.queries), database.shape[1]), np.float32)
    own = [q.index is not None and q.box is None and not query_flip for q in bset.queries]
    for i, q in enumerate(bset.queries):
        if own[i]:
            queries[i] = database[q.index]
    todo = [i for i, reuse in enumerate(own) if not reuse]
    for i in tqdm(todo, unit="query", desc="queries", disable=not progress or not todo):
        queries[i] = _query_vector(extractor, bset.queries[i], query_flip)
    return database, queries


def _scores(database: np.ndarray, queries: np.ndarray, cosine: bool) -> np.ndarray:
    dots = queries @ database.T
    if cosine:
        return dots
    # higher is better: the negated squared Euclidean distance
    return 2 * dots - (queries * queries).sum(1, keepdims=True) - (database * database).sum(1)[None, :]


def _result(query: Query, ranking: np.ndarray, ks: Sequence[int], ukbench: bool) -> QueryResult:
    ap = average_precision(ranking, query.positives, query.junk)
    best = next(int(i) for i in ranking if int(i) not in query.junk)
    return QueryResult(query.name, ap, best, ns_score(ranking, query.positives, UKBENCH_TOP) if ukbench else None,
                       {k: recall_at_k(ranking, query.positives, k, query.junk) for k in ks},
                       {k: precision_at_k(ranking, query.positives, k, query.junk) for k in ks})


def evaluate_rankings(database: np.ndarray, queries: np.ndarray, bset: BenchmarkSet, ks: Sequence[int] = (1, 5, 10),
                      *, cosine: bool = True, progress: bool = True) -> list[QueryResult]:
    """Each query's figures on the exact ranking of the whole database (ties: :func:`metrics.rank`)."""
    if len(queries) != len(bset.queries) or len(database) != len(bset.images):
        raise ValueError(f"{len(database)} database / {len(queries)} query vectors for {bset.describe()}")
    results = []
    ukbench = bset.primary == "ns"
    for lo in tqdm(range(0, len(queries), QUERY_BLOCK), unit="block", desc="ranking", disable=not progress):
        rankings = rank(_scores(database, queries[lo:lo + QUERY_BLOCK], cosine))
        results += [_result(bset.queries[lo + j], r, ks, ukbench) for j, r in enumerate(rankings)]
    return results


def summarize(results: Sequence[QueryResult], ks: Sequence[int],
              queries: Sequence[Query] = ()) -> dict[str, Any]:
    """The benchmark's figures: mAP, mean recall@k and precision@k, and N-S where counted. Given
    the ``queries`` of a dataset with attacks (Copydays), also the mAP of each attack family
    ("jpeg", "crops", "strong": over all its levels) and of each level ("jpeg/10"), as its papers
    report them; "mAP" is then over every attacked copy."""
    out: dict[str, Any] = {"queries": len(results), "mAP": mean_average_precision([r.ap for r in results]),
                           "recall_at": {str(k): float(np.mean([r.recall[k] for r in results])) for k in ks},
                           "precision_at": {str(k): float(np.mean([r.precision[k] for r in results])) for k in ks}}
    if results and results[0].ns is not None:
        out["ns_score"] = float(np.mean([r.ns for r in results]))
    if any(q.family for q in queries):
        for key, label in (("families", lambda f: f.split("/")[0]), ("levels", lambda f: f)):
            aps: dict[str, list[float]] = {}
            for q, r in zip(queries, results):
                aps.setdefault(label(q.family), []).append(r.ap)
            out[key] = {name: {"queries": len(v), "mAP": mean_average_precision(v)} for name, v in aps.items()}
    return out
