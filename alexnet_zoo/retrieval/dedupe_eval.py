"""Near-duplicate pairs scored against labelled groups, so a threshold is picked from evidence.

A label file is CSV with the header ``path,group``: each picture's path as the index stores it and
the name of its duplicate group. Pictures of the index the file does not name are groups of their
own (duplicates of nothing); a path the index lacks is an error, as it means the paths were written
differently. The true pairs are every two pictures of one group; the predicted pairs at a threshold
t are those the index finds with a cosine >= t. Pair precision = true found / found (None when
nothing is found), recall = true found / true pairs, F1 their harmonic mean; the cumulative counts
down the sorted scores give these at every threshold at once, and the lowest threshold whose
precision reaches a target (the most recall for that precision) exactly. imagededup's reference
metrics are for rankings of single queries; for groups the pair counts are the ones that decide.
Torch-free: numpy, stdlib, alexnet_zoo.errors and the CSV reader only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alexnet_zoo.errors import LabelFileError
from alexnet_zoo.retrieval.group_csv import read_group_csv

__all__ = ["LABELS_LIMIT", "PairCurve", "label_ids", "pair_curve", "read_groups_csv"]

LABELS_LIMIT = 512 * 2 ** 20  # a label file of ten million short lines fits; a larger one is not a label file


def read_groups_csv(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """``{path: (group, line)}`` from a ``path,group`` CSV with its header, paths verbatim
    (:func:`alexnet_zoo.retrieval.group_csv.read_group_csv`); every fault is a
    :class:`LabelFileError` naming the file, the line and what was expected."""
    return {row.path: (row.group, row.line) for row in read_group_csv(path, limit=LABELS_LIMIT, header="required")}


def label_ids(labels: dict[str, tuple[str, int]], paths: Sequence[str], file: str | os.PathLike) -> np.ndarray:
    """The group number of each of the index's ``paths`` (an unlabelled picture gets one of its
    own); a labelled path the index lacks is refused, naming the line of ``file``."""
    position = {p: i for i, p in enumerate(paths)}
    missing = [(line, p) for p, (_, line) in labels.items() if p not in position]
    if missing:
        line, first = min(missing)
        raise LabelFileError(f"{file}:{line}: {first[:120]!r} is not in the index ({len(missing):,} of "
                             f"{len(labels):,} labelled paths are not); paths must be written as the index "
                             "stores them (see its paths file)")
    names: dict[str, int] = {}
    ids = np.arange(len(paths), dtype=np.int64) + len(labels)  # unlabelled: numbers no group has
    for p, (group, _) in labels.items():
        ids[position[p]] = names.setdefault(group, len(names))
    return ids


@dataclass(frozen=True)
class PairCurve:
    """Cumulative counts of found pairs down the distinct scores, best first: at ``scores[i]`` the
    index finds ``found[i]`` pairs, ``true[i]`` of them in one group; ``positives`` true pairs exist."""

    scores: np.ndarray
    found: np.ndarray
    true: np.ndarray
    positives: int

    def at(self, threshold: float) -> dict[str, Any]:
        """Counts and pair precision / recall / F1 of the pairs scoring ``threshold`` or above."""
        n = int(np.searchsorted(-self.scores, -threshold, side="right"))  # scores >= threshold
        found, true = (int(self.found[n - 1]), int(self.true[n - 1])) if n else (0, 0)
        precision = true / found if found else None
        recall = true / self.positives if self.positives else None
        f1 = None if precision is None or recall is None else \
            (2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        return {"threshold": float(threshold), "found": found, "true_found": true, "false_found": found - true,
                "missed": self.positives - true, "precision": precision, "recall": recall, "f1": f1}

    def table(self, thresholds: Iterable[float]) -> list[dict[str, Any]]:
        return [self.at(t) for t in thresholds]

    def lowest_threshold(self, precision: float) -> float | None:
        """The lowest score at which the found pairs' precision is ``precision`` or more (the most
        recall at that precision); None when no threshold reaches it."""
        if not 0 < precision <= 1:
            raise ValueError(f"target precision must be in (0, 1], got {precision!r}")
        ok = np.flatnonzero(self.true >= precision * self.found - 1e-9 * self.found)
        return float(self.scores[ok[-1]]) if ok.size else None

    def points(self) -> list[tuple[float, float, float]]:
        """(threshold, recall, precision) at every distinct score: the precision-recall curve."""
        if not self.positives:
            return []
        return [(float(s), int(t) / self.positives, int(t) / int(f)) for s, f, t in zip(self.scores, self.found, self.true)]


def pair_curve(pairs: Iterable[tuple[int, int, float]], groups: np.ndarray) -> PairCurve:
    """The :class:`PairCurve` of ``pairs`` (i, j, cosine) against ``groups`` (a group number per id)."""
    arr = np.array([(i, j, s) for i, j, s in pairs], dtype=np.float64).reshape(-1, 3)
    a, b, s = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2]
    if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= len(groups)):
        raise ValueError(f"pair ids must be in 0..{len(groups) - 1}")
    order = np.argsort(-s, kind="stable")
    s, same = s[order], (groups[a] == groups[b])[order]
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True)) if len(s) else np.zeros(0, np.int64)
    _, sizes = np.unique(groups, return_counts=True)
    return PairCurve(scores=s[last], found=last + 1, true=np.cumsum(same)[last].astype(np.int64),
                     positives=int((sizes * (sizes - 1) // 2).sum()))
