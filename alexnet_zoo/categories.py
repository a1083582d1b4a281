"""The 1,000 ILSVRC-2012 categories, bundled with the package (no download to name a class)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

__all__ = ["Category", "imagenet_categories"]


@dataclass(frozen=True)
class Category:
    index: int
    wnid: str  # WordNet id, e.g. n01440764
    name: str  # first synonym, e.g. "tench"
    synonyms: tuple[str, ...]


@functools.cache
def imagenet_categories() -> tuple[Category, ...]:
    """Index-ordered categories (sorted WNIDs: the Caffe / torchvision / Keras order)."""
    text = resources.files("alexnet_zoo.data").joinpath("synset_words.txt").read_text(encoding="utf-8")
    out = []
    for index, line in enumerate(text.splitlines()):
        wnid, _, words = line.partition(" ")
        synonyms = tuple(w.strip() for w in words.split(","))
        out.append(Category(index, wnid, synonyms[0], synonyms))
    if len(out) != 1000 or [c.wnid for c in out] != sorted(c.wnid for c in out):
        raise RuntimeError("the bundled synset_words.txt is damaged: expected 1000 sorted WNIDs")
    return tuple(out)
