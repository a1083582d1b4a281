"""Top-k classification of image files: decode robustly, preprocess as the weights require, run
in batches, and report unreadable files per file instead of stopping. Classes are named as the
weights name them (:func:`alexnet_zoo.eval.loop.class_labels`): a model trained on 200 WNID folders
prints those WNIDs and their words, not bare indices."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from alexnet_zoo.data.images import read_image
from alexnet_zoo.data.transforms import ImagePreprocess
from alexnet_zoo.devices import resolve_device
from alexnet_zoo.errors import UnreadableImage, failure_message
from alexnet_zoo.eval.loop import class_labels
from alexnet_zoo.eval.metrics import rank, topk
from alexnet_zoo.eval.precision import autocast, model_precision
from alexnet_zoo.eval.protocols import predict
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.quantized import QuantizedAlexNet

__all__ = ["Prediction", "classify_files", "topk"]


@dataclass(frozen=True)
class Prediction:
    path: str
    classes: list[dict] = field(default_factory=list)  # [{"index", "wnid"?, "name"?, "probability"}], best first
    error: str | None = None  # set when the file could not be read


def classify_files(model: AlexNet | QuantizedAlexNet, paths: Iterable[str | os.PathLike],
                   preprocess: ImagePreprocess, *,
                   top: int = 5, batch_size: int = 16, crops: int = 1,
                   device: str | torch.device | None = "cpu", precision: str = "auto") -> Iterator[Prediction]:
    """Predictions for ``paths`` in order; unreadable files come back with ``error`` set.
    ``crops=10``: the paper's ten-crop test, the same code as ``evaluate``'s ``ten`` protocol.
    ``device``: where the model runs (checked by :func:`resolve_device`; None: the best one);
    ``precision``: its arithmetic (:func:`~alexnet_zoo.eval.precision.model_precision`)."""
    if crops not in (1, 10):
        raise ValueError(f"crops must be 1 (centre crop) or 10 (the paper's ten crops), got {crops}")
    num_classes = model.config.num_classes
    if not 1 <= top <= num_classes:
        raise ValueError(f"top must be from 1 to the model's {num_classes} classes, got {top}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = resolve_device(device)
    precision = model_precision(model, precision, device)
    model = model.eval().to(device)
    categories = class_labels(model)
    prepare = preprocess if crops == 1 else preprocess.square
    on_device = ImagePreprocess(preprocess.preprocessing).to(device)  # ten crops are normalised there
    run = functools.partial(_run, model, preprocess=on_device, crops=crops, top=top,
                            categories=categories, device=device, precision=precision)
    batch: list[tuple[str, Tensor]] = []
    for path in paths:
        try:
            batch.append((str(path), prepare(read_image(path))))
        except UnreadableImage as err:
            yield from run(batch)
            batch = []
            yield Prediction(str(path), error=failure_message(str(path), err))
            continue
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    yield from run(batch)


def _run(model: AlexNet, batch: Sequence[tuple[str, Tensor]], *, preprocess: ImagePreprocess, crops: int, top: int,
         categories: Sequence[dict[str, str]] | None, device: torch.device,
         precision: str) -> Iterator[Prediction]:
    if not batch:
        return
    with torch.inference_mode(), autocast(device, precision):
        x = torch.stack([x for _, x in batch]).to(device)
        probs, idx = topk(model(x), top) if crops == 1 else rank(predict(model, [x], "ten", preprocess), top)
    for (path, _), p_row, i_row in zip(batch, probs.tolist(), idx.tolist()):
        classes = []
        for p, i in zip(p_row, i_row):
            entry = {"index": i, "probability": p}
            if categories is not None:
                entry.update(categories[i])
            classes.append(entry)
        yield Prediction(path, classes)
