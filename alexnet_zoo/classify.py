"""Top-k classification of image files: decode robustly, preprocess as the weights require, run
in batches, and report unreadable files per file instead of stopping."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from alexnet_zoo.categories import imagenet_categories
from alexnet_zoo.errors import UnreadableImage
from alexnet_zoo.evaluate import predict, rank, topk
from alexnet_zoo.images import read_image
from alexnet_zoo.model import AlexNet
from alexnet_zoo.transforms import ImagePreprocess

__all__ = ["Prediction", "classify_files", "topk"]


@dataclass(frozen=True)
class Prediction:
    path: str
    classes: list[dict] = field(default_factory=list)  # [{"index", "wnid", "name", "probability"}], best first
    error: str | None = None  # set when the file could not be read


def classify_files(model: AlexNet, paths: Iterable[str | os.PathLike], preprocess: ImagePreprocess, *,
                   top: int = 5, batch_size: int = 16, crops: int = 1) -> Iterator[Prediction]:
    """Predictions for ``paths`` in order; unreadable files come back with ``error`` set.
    ``crops=10``: the paper's ten-crop test, the same code as ``evaluate``'s ``ten`` protocol."""
    if crops not in (1, 10):
        raise ValueError(f"crops must be 1 (centre crop) or 10 (the paper's ten crops), got {crops}")
    model.eval()
    categories = imagenet_categories() if model.config.num_classes == 1000 else None
    prepare = preprocess if crops == 1 else preprocess.square
    run = functools.partial(_run, model, preprocess=preprocess, crops=crops, top=top, categories=categories)
    batch: list[tuple[str, Tensor]] = []
    for path in paths:
        try:
            batch.append((str(path), prepare(read_image(path))))
        except UnreadableImage as err:
            yield from run(batch)
            batch = []
            yield Prediction(str(path), error=str(err))
            continue
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    yield from run(batch)


def _run(model: AlexNet, batch: Sequence[tuple[str, Tensor]], *, preprocess: ImagePreprocess, crops: int, top: int,
         categories) -> Iterator[Prediction]:
    if not batch:
        return
    with torch.inference_mode():
        x = torch.stack([x for _, x in batch])
        probs, idx = topk(model(x), top) if crops == 1 else rank(predict(model, [x], "ten", preprocess), top)
    for (path, _), p_row, i_row in zip(batch, probs.tolist(), idx.tolist()):
        classes = []
        for p, i in zip(p_row, i_row):
            entry = {"index": i, "probability": p}
            if categories is not None:
                entry.update(wnid=categories[i].wnid, name=categories[i].name)
            classes.append(entry)
        yield Prediction(path, classes)
