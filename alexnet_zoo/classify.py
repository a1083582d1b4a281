"""Top-k classification of image files: decode robustly, preprocess as the weights require, run
in batches, and report unreadable files per file instead of stopping."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from alexnet_zoo.categories import imagenet_categories
from alexnet_zoo.errors import UnreadableImage
from alexnet_zoo.images import load_image
from alexnet_zoo.model import AlexNet
from alexnet_zoo.transforms import ImagePreprocess

__all__ = ["Prediction", "classify_files", "topk"]


@dataclass(frozen=True)
class Prediction:
    path: str
    classes: list[dict] = field(default_factory=list)  # [{"index", "wnid", "name", "probability"}], best first
    error: str | None = None  # set when the file could not be read


def topk(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Softmax probabilities and class indices of the k best classes per row, best first
    (ties broken by the lower class index, so results are reproducible)."""
    probs = torch.softmax(logits.float(), dim=-1)
    k = min(k, probs.shape[-1])
    order = torch.argsort(probs, dim=-1, descending=True, stable=True)[..., :k]
    return probs.gather(-1, order), order


def classify_files(model: AlexNet, paths: Iterable[str | os.PathLike], preprocess: ImagePreprocess, *,
                   top: int = 5, batch_size: int = 16) -> Iterator[Prediction]:
    """Predictions for ``paths`` in order; unreadable files come back with ``error`` set."""
    model.eval()
    categories = imagenet_categories() if model.config.num_classes == 1000 else None
    batch: list[tuple[str, Tensor]] = []
    for path in paths:
        try:
            batch.append((str(path), preprocess(load_image(path))))
        except UnreadableImage as err:
            yield from _run(model, batch, top, categories)
            batch = []
            yield Prediction(str(path), error=str(err))
            continue
        if len(batch) == batch_size:
            yield from _run(model, batch, top, categories)
            batch = []
    yield from _run(model, batch, top, categories)


def _run(model: AlexNet, batch: Sequence[tuple[str, Tensor]], top: int, categories) -> Iterator[Prediction]:
    if not batch:
        return
    with torch.inference_mode():
        probs, idx = topk(model(torch.stack([x for _, x in batch])), top)
    for (path, _), p_row, i_row in zip(batch, probs.tolist(), idx.tolist()):
        classes = []
        for p, i in zip(p_row, i_row):
            entry = {"index": i, "probability": p}
            if categories is not None:
                entry.update(wnid=categories[i].wnid, name=categories[i].name)
            classes.append(entry)
        yield Prediction(path, classes)
