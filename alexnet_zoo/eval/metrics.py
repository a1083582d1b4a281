"""Ranking and accuracy: the top k classes of each row, running top-1 / top-k counts overall and
per class, and :class:`EvalResult`, what an evaluation measured (its JSON summary and its
predictions file).

Ties in the ranking go to the lower class index, so accuracy is exactly what the predictions
file shows.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from alexnet_zoo.data.categories import imagenet_categories

__all__ = ["Accuracy", "EvalResult", "rank", "topk"]


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
        for ImageNet's 1,000; see :func:`alexnet_zoo.eval.loop.class_labels`), counts, accuracies."""
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
