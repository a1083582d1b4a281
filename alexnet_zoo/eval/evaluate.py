"""Top-1 / top-5 evaluation under the three test protocols, batched for speed.

* ``center``: the centre crop (227 or 224) of the 256x256 image: how BVLC and torchvision report.
* ``ten``: the paper's test (section 4.1): the four corner crops and the centre crop of the
  256x256 image and their horizontal mirrors, in torchvision's ``TenCrop`` order; the softmax
  outputs of the ten are averaged.
* ``dense``: beyond the paper (OverFeat, VGG): the fully convolutional net over the whole
  square image at one or more sides and over its mirror; the class-score map is averaged over
  space, and the softmax outputs of all scales and mirrors are averaged.

Every crop is cut from whole batches of uint8 tensors (no per-image Python), normalised once per
image rather than once per crop, laid out channels-last as the network wants, and sent through one
forward pass per batch. Ties in the ranking go to the lower class index, so accuracy is exactly
what the predictions file shows.
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from alexnet_zoo.data.categories import imagenet_categories
from alexnet_zoo.devices import resolve_device
from alexnet_zoo.data.batching import LoaderMode, iterate_batches
from alexnet_zoo.eval.precision import autocast
from alexnet_zoo.data.transforms import ImagePreprocess, Preprocessing

if TYPE_CHECKING:  # the decoders load when a dataset is built, not when the CLI builds its parser
    from alexnet_zoo.data.datasets import ImageDataset

__all__ = ["Accuracy", "EvalResult", "MAX_SCALE", "PROTOCOLS", "average_softmax", "center_crop", "class_labels",
           "dataset_for", "dense_probs", "evaluate", "image_sizes", "model_throughput", "onto_model_classes", "predict",
           "rank", "score_maps", "ten_crops", "topk"]

PROTOCOLS = ("center", "ten", "dense")
MAX_SCALE = 2048  # dense sides: each image is held at side x side (x batch, x scales) in memory
_WNID = re.compile(r"n\d{8}")


# ---- crops ---------------------------------------------------------------------------------------

def _centre_offset(n: int, size: int) -> int:
    return int(round((n - size) / 2.0))  # torchvision's CenterCrop: 256 - 227 = 29 -> 14


def center_crop(x: Tensor, size: int) -> Tensor:
    """The centre ``size`` x ``size`` patch of images (..., H, W) (a view), placed as
    torchvision's ``CenterCrop`` places it."""
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the images ({h}x{w})")
    top, left = _centre_offset(h, size), _centre_offset(w, size)
    return x[..., top:top + size, left:left + size]


def _five_boxes(h: int, w: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of torchvision's five_crop: top-left, top-right, bottom-left, bottom-right, centre."""
    return [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size),
            (_centre_offset(h, size), _centre_offset(w, size))]


def ten_crops(x: Tensor, size: int) -> Tensor:
    """Images (N, C, H, W) -> (N * 10, C, size, size), image by image in torchvision's
    ``TenCrop`` order: the five crops (corners, centre) of the image, then the five crops of its
    horizontal mirror. Values are exact copies; the result is channels-last, one copy in all."""
    if x.dim() != 4:
        raise ValueError(f"ten_crops expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the images ({h}x{w})")
    boxes = _five_boxes(h, w, size)
    views = [img.permute(0, 2, 3, 1)[:, t:t + size, l:l + size] for img in (x, x.flip(-1)) for t, l in boxes]
    return torch.stack(views, dim=1).flatten(0, 1).permute(0, 3, 1, 2)  # (N*10, h, w, C) memory, NCHW view


def average_softmax(logits: Tensor, views: int) -> Tensor:
    """Logits of ``views`` consecutive views per image (N * views, C) -> the mean of their
    softmax outputs (N, C), as the paper averages its ten patches."""
    probs = torch.softmax(logits.float(), dim=-1)
    return probs.view(-1, views, probs.shape[-1]).mean(dim=1)


def score_maps(model: nn.Module) -> nn.Module:
    """The fully convolutional form of ``model``: images (N, 3, H, W) -> class scores (N, C, h, w)."""
    return model.to_dense()


def dense_probs(dense: nn.Module, x: Tensor, flip: bool = True) -> Tensor:
    """Normalised images (N, 3, H, W) -> class probabilities (N, C): the softmax of the class
    score map averaged over space, averaged with that of the mirrored images (VGG's dense test).
    Image and mirror go through one forward pass."""
    n = x.shape[0]
    scores = dense(torch.cat([x, x.flip(-1)]) if flip else x).float().mean(dim=(-2, -1))
    return torch.softmax(scores, dim=-1).view(2 if flip else 1, n, -1).mean(dim=0)


def image_sizes(protocol: str, preprocessing: Preprocessing, scales: Sequence[int] | None = None) -> tuple[int, ...]:
    """The square sides a protocol needs images at: the preprocessing's resize (256) for
    ``center`` and ``ten``; ``scales`` (default: the resize) for ``dense``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if scales and protocol != "dense":
        raise ValueError(f"scales are for the dense protocol; {protocol!r} cuts its crops from the "
                         f"{preprocessing.resize}x{preprocessing.resize} image")
    bad = [s for s in scales or () if not preprocessing.crop <= s <= MAX_SCALE]
    if bad:
        raise ValueError(f"dense scale {bad[0]}: expected a side from the weights' crop ({preprocessing.crop}) "
                         f"to {MAX_SCALE} pixels")
    return tuple(scales) if scales else (preprocessing.resize,)


def predict(model: nn.Module, images: Sequence[Tensor], protocol: str, preprocess: ImagePreprocess, *,
            dense: nn.Module | None = None, flip: bool = True) -> Tensor:
    """Class probabilities (N, C) of a batch: ``images`` holds uint8 (N, 3, s, s) square images,
    one tensor per side of :func:`image_sizes`. Call under ``torch.inference_mode()`` (the CPU
    fast path needs it)."""
    crop = preprocess.preprocessing.crop
    if protocol == "center":
        return torch.softmax(model(preprocess.normalize(center_crop(images[0], crop))).float(), dim=-1)
    if protocol == "ten":
        return average_softmax(model(ten_crops(preprocess.normalize(images[0]), crop)), 10)
    if protocol == "dense":
        dense = dense if dense is not None else score_maps(model)
        probs = [dense_probs(dense, preprocess.normalize(x), flip) for x in images]
        return probs[0] if len(probs) == 1 else torch.stack(probs).mean(dim=0)
    raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")


# ---- ranking and accuracy ------------------------------------------------------------------------

def rank(probs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest values per row and their class indices, best first; ties go to the lower
    class index (a stable sort), so results are reproducible."""
    k = min(k, probs.shape[-1])
    order = torch.argsort(probs, dim=-1, descending=True, stable=True)[..., :k]
    return probs.gather(-1, order), order


def topk(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Softmax probabilities and class indices of the k best classes per row (see :func:`rank`)."""
    return rank(torch.softmax(logits.float(), dim=-1), k)


class Accuracy:
    """Running top-1 / top-k counts, overall and per class (counted where the tensors live)."""

    def __init__(self, num_classes: int, k: int = 5, device: torch.device | str | None = None) -> None:
        self.num_classes, self.k = num_classes, k
        self.total = torch.zeros(num_classes, dtype=torch.long, device=device)
        self.correct1 = torch.zeros_like(self.total)
        self.correctk = torch.zeros_like(self.total)

    def update(self, probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Count a batch of probabilities (N, C) against labels (N,); returns :func:`rank`'s top k."""
        if probs.shape[-1] != self.num_classes:
            raise ValueError(f"the model gives {probs.shape[-1]} classes, expected {self.num_classes}")
        labels = labels.to(probs.device)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)][0].item()
            raise ValueError(f"label {bad} is outside the model's {self.num_classes} classes")
        top_p, top_i = rank(probs, self.k)
        hits = top_i == labels[:, None]
        self.total.index_add_(0, labels, torch.ones_like(labels))
        self.correct1.index_add_(0, labels, hits[:, 0].long())
        self.correctk.index_add_(0, labels, hits.any(dim=1).long())
        return top_p, top_i

    @property
    def images(self) -> int:
        return int(self.total.sum())

    def _fraction(self, counts: Tensor) -> float:
        return int(counts.sum()) / self.images if self.images else math.nan

    @property
    def top1(self) -> float:
        return self._fraction(self.correct1)

    @property
    def top5(self) -> float:
        """Top-k accuracy (k = 5 unless set otherwise)."""
        return self._fraction(self.correctk)

    def per_class(self, labels: Sequence[dict[str, str]] | None = None) -> list[dict[str, Any]]:
        """One row per class that had images: index, its ``labels`` entry (default: WNID and name
        for ImageNet's 1,000; see :func:`class_labels`), counts, accuracies."""
        if labels is None and self.num_classes == 1000:
            labels = [{"wnid": c.wnid, "name": c.name} for c in imagenet_categories()]
        rows = []
        for i, (n, c1, ck) in enumerate(zip(self.total.tolist(), self.correct1.tolist(), self.correctk.tolist())):
            if n:
                row: dict[str, Any] = {"index": i}
                if labels is not None and len(labels) == self.num_classes:
                    row.update(labels[i])
                rows.append(row | {"images": n, "top1": c1 / n, "top5": ck / n})
        return rows


# ---- the evaluation loop -------------------------------------------------------------------------

@dataclass
class EvalResult:
    """What an evaluation measured. Accuracies are fractions of the readable images; the
    unreadable ones are listed in ``failed`` and left out of the denominator."""

    protocol: str
    sizes: tuple[int, ...]  # sides of the square images (dense: the scales)
    images: int
    top1: float
    top5: float
    seconds: float
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error)
    per_class: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # row-aligned with labels / top_indices / top_probs
    labels: Tensor | None = None
    top_indices: Tensor | None = None  # (images, 5)
    top_probs: Tensor | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (accuracies are None when no image could be read)."""
        top1, top5 = (None, None) if math.isnan(self.top1) else (self.top1, self.top5)
        return {"protocol": self.protocol, "sizes": list(self.sizes), "top1": top1, "top5": top5,
                "top1_error": None if top1 is None else 1 - top1, "top5_error": None if top5 is None else 1 - top5,
                "images": self.images,
                "failed": len(self.failed), "failed_files": [{"path": p, "error": e} for p, e in self.failed],
                "seconds": self.seconds, "images_per_second": self.images_per_second, "per_class": self.per_class}

    def write_predictions(self, path: str | os.PathLike) -> None:
        """CSV ``path,label,pred1..pred5,prob1..prob5`` (class indices, best first), one row per readable image."""
        if self.top_indices is None or self.top_probs is None or self.labels is None:
            raise ValueError("this result kept no predictions (evaluate(..., keep_predictions=False))")
        k = self.top_indices.shape[1]
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", *(f"pred{i + 1}" for i in range(k)), *(f"prob{i + 1}" for i in range(k))])
            for p, label, idx, prob in zip(self.paths, self.labels.tolist(), self.top_indices.tolist(),
                                           self.top_probs.tolist()):
                writer.writerow([p, label, *idx, *(f"{v:.6g}" for v in prob)])


def class_labels(model: nn.Module) -> list[dict[str, str]] | None:
    """Per class index, what to call it: the class ids trained weights record (``config.json``'s
    ``classes``, e.g. the WNIDs of the training folders), WNIDs with their names from the bundled
    synset list; ImageNet's 1,000 for a 1000-class model that records none; None when unknown."""
    num_classes = model.config.num_classes
    recorded = (getattr(model, "pretrained_cfg", None) or {}).get("classes")
    if isinstance(recorded, list) and len(recorded) == num_classes and all(isinstance(c, str) for c in recorded):
        names = {c.wnid: c.name for c in imagenet_categories()}
        return [{"wnid": c, "name": names[c]} if _WNID.fullmatch(c) and c in names else {"name": c}
                for c in recorded]
    if num_classes == 1000:
        return [{"wnid": c.wnid, "name": c.name} for c in imagenet_categories()]
    return None


def onto_model_classes(samples: Sequence[tuple[str, int]], model: nn.Module) -> tuple[list[tuple[str, int]], int]:
    """ImageNet-indexed samples (what every dataset layout gives) -> the model's own class indices,
    where its weights record WNID classes other than ImageNet's 1,000 in order (a model trained on
    200 WNID folders): each label goes through its WNID. Samples of classes the model does not know
    are left out; their number is returned with the rest."""
    labels = class_labels(model)
    imagenet = [c.wnid for c in imagenet_categories()]
    if labels is None or not all("wnid" in label for label in labels) or [l["wnid"] for l in labels] == imagenet:
        return list(samples), 0  # ImageNet's order, or class ids of another kind: indices as given
    position = {label["wnid"]: i for i, label in enumerate(labels)}
    kept = [(path, position[imagenet[label]]) for path, label in samples
            if 0 <= label < len(imagenet) and imagenet[label] in position]
    return kept, len(samples) - len(kept)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _prepare(model: nn.Module, protocol: str, device: torch.device,
             preprocessing: Preprocessing | None) -> tuple[nn.Module, ImagePreprocess, nn.Module | None]:
    preprocessing = preprocessing or getattr(model, "preprocessing", None)
    if preprocessing is None:
        raise ValueError("the model carries no preprocessing: build it with alexnet(...) / create_model(...) "
                         "or pass preprocessing=")
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    dense = score_maps(model) if protocol == "dense" else None
    return model, ImagePreprocess(preprocessing).to(device), dense


def dataset_for(samples: Sequence[tuple[str, int]], model: nn.Module, protocol: str,
                scales: Sequence[int] | None = None, preprocessing: Preprocessing | None = None) -> ImageDataset:
    """The :class:`ImageDataset` of ``samples`` that ``protocol`` needs for ``model``'s preprocessing."""
    from alexnet_zoo.data.datasets import ImageDataset

    preprocessing = preprocessing or model.preprocessing
    return ImageDataset(samples, preprocessing, image_sizes(protocol, preprocessing, scales))


def evaluate(model: nn.Module, dataset: ImageDataset, protocol: str = "center", *, batch_size: int = 32,
             workers: int = 0, device: torch.device | str | None = None, precision: str = "auto", flip: bool = True,
             preprocessing: Preprocessing | None = None, keep_predictions: bool = True, worker_niceness: int = 10,
             loader: LoaderMode = "auto", progress: bool = True) -> EvalResult:
    """Top-1 / top-5 accuracy of ``model`` on ``dataset`` under ``protocol`` (see :func:`dataset_for`).

    ``workers`` DataLoader processes decode while the model computes (on CUDA with pinned memory
    and channels-last, under float16 autocast unless ``precision`` says otherwise); ``flip`` (dense
    only) adds the mirrored image. The model is moved to ``device`` and put in eval mode.

    ``loader`` (:mod:`alexnet_zoo.data.batching`): ``processes`` decode beside the model, ``threads``
    decode each batch between forward passes; ``auto`` takes threads when the model's CPU threads
    cover every core. Worker processes run ``worker_niceness`` (0-19) steps below the model in CPU
    priority, so they mostly take the time the model leaves."""
    from tqdm.auto import tqdm

    from alexnet_zoo.data.datasets import collate

    device = resolve_device(device)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    model, preprocess, dense = _prepare(model, protocol, device, preprocessing or dataset.preprocessing)
    if protocol != "dense" and dataset.sizes != (preprocess.preprocessing.resize,):
        raise ValueError(f"the {protocol!r} protocol needs the {preprocess.preprocessing.resize}x"
                         f"{preprocess.preprocessing.resize} images, the dataset gives sides {dataset.sizes}")
    order = [range(i, min(i + batch_size, len(dataset))) for i in range(0, len(dataset), batch_size)]
    batches = iterate_batches(dataset, order, collate, workers=workers, mode=loader, device=device,
                              worker_niceness=worker_niceness)
    accuracy: Accuracy | None = None
    failed: list[tuple[str, str]] = []
    kept: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    bar = tqdm(total=len(dataset), unit="img", desc=f"{protocol} {'/'.join(map(str, dataset.sizes))}",
               disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    with torch.inference_mode(), autocast(device, precision), bar:
        for batch in batches:
            failed += [(dataset.samples[i][0], error) for i, error in batch.failed]
            if len(batch):
                images = [x.to(device, non_blocking=True) for x in batch.images]
                probs = predict(model, images, protocol, preprocess, dense=dense, flip=flip)
                accuracy = accuracy or Accuracy(probs.shape[-1], device=device)
                top_p, top_i = accuracy.update(probs, batch.labels.to(device, non_blocking=True))
                if keep_predictions:
                    kept.append((batch.indices, batch.labels, top_i, top_p))
            bar.update(len(batch) + len(batch.failed))
            if failed:
                bar.set_postfix(unreadable=len(failed), refresh=False)
    _synchronize(device)
    seconds = time.perf_counter() - start
    accuracy = accuracy or Accuracy(1)
    result = EvalResult(protocol, dataset.sizes, accuracy.images, accuracy.top1, accuracy.top5, seconds, failed,
                        accuracy.per_class(class_labels(model) if hasattr(model, "config") else None))
    if keep_predictions:
        k = kept[0][2].shape[1] if kept else 5
        result.paths = [dataset.samples[i][0] for part in kept for i in part[0].tolist()]
        result.labels = torch.cat([part[1] for part in kept]) if kept else torch.empty(0, dtype=torch.long)
        result.top_indices = torch.cat([part[2].cpu() for part in kept]) if kept else torch.empty(0, k, dtype=torch.long)
        result.top_probs = torch.cat([part[3].float().cpu() for part in kept]) if kept else torch.empty(0, k)
    return result


def model_throughput(model: nn.Module, protocol: str = "center", *, sizes: Sequence[int] | None = None,
                     batch_size: int = 32, batches: int = 5, device: torch.device | str | None = None,
                     precision: str = "auto", flip: bool = True, preprocessing: Preprocessing | None = None,
                     warmup: int = 1) -> float:
    """Images per second of the protocol's work alone (crops, normalisation, forward, softmax,
    ranking: everything :func:`evaluate` does per batch) on random uint8 images already in memory:
    the ceiling the full pipeline, decoding included, is measured against."""
    device = resolve_device(device)
    model, preprocess, dense = _prepare(model, protocol, device, preprocessing)
    sizes = image_sizes(protocol, preprocess.preprocessing, sizes if protocol == "dense" else None)
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (batch_size, 3, s, s), dtype=torch.uint8, generator=generator) for s in sizes]
    labels = torch.zeros(batch_size, dtype=torch.long)
    if device.type == "cuda":  # as the DataLoader delivers them
        images, labels = [x.pin_memory() for x in images], labels.pin_memory()

    def one_batch(accuracy: Accuracy | None) -> Accuracy:
        x = [img.to(device, non_blocking=True) for img in images]
        probs = predict(model, x, protocol, preprocess, dense=dense, flip=flip)
        accuracy = accuracy or Accuracy(probs.shape[-1], device=device)
        accuracy.update(probs, labels.to(device))
        return accuracy

    with torch.inference_mode(), autocast(device, precision):
        accuracy = None
        for _ in range(warmup):
            accuracy = one_batch(accuracy)
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            accuracy = one_batch(accuracy)
        _synchronize(device)
    return batches * batch_size / (time.perf_counter() - start)

