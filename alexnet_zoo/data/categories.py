"""The 1,000 ILSVRC-2012 categories, bundled with the package (no download to name a class)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

from alexnet_zoo.errors import LabelFileError

__all__ = ["MAX_CLASSES", "WNID", "Category", "imagenet_categories", "parse_synset_words"]


@dataclass(frozen=True)
class Category:
    index: int
    wnid: str  # WordNet id, e.g. n01440764
    name: str  # first synonym, e.g. "tench"
    synonyms: tuple[str, ...]


MAX_CLASSES = 1 << 20  # ImageNet-21k has 21,841; a label or num_classes beyond this is a damaged file
WNID = re.compile(r"n[0-9]{8}")  # a WordNet id; ASCII digits (\d also matches other scripts' digits)


@functools.cache
def imagenet_categories() -> tuple[Category, ...]:
    """Index-ordered categories (sorted WNIDs: the Caffe / torchvision / Keras order)."""
    text = resources.files("alexnet_zoo.data").joinpath("synset_words.txt").read_text(encoding="utf-8")
    out = parse_synset_words(text, "the bundled synset_words.txt")
    if len(out) != 1000 or [c.wnid for c in out] != sorted(c.wnid for c in out):
        raise RuntimeError("the bundled synset_words.txt is damaged: expected 1000 sorted WNIDs")
    return out


def parse_synset_words(text: str, source: str = "synset list") -> tuple[Category, ...]:
    """Caffe's ``synset_words.txt`` format: one ``WNID name[, synonym...]`` line per class, in class
    order (blank lines ignored). A malformed line, a repeated WNID or an empty name raises
    :class:`LabelFileError` naming ``source`` and the line, instead of shifting every later class."""
    out: list[Category] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.split("\n"), 1):  # \n only: a name may hold other line breaks
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        wnid, _, words = line.strip().partition(" ")
        synonyms = tuple(w.strip() for w in words.split(","))
        if not WNID.fullmatch(wnid) or not synonyms[0]:
            shown = repr(line) if len(line) <= 80 else f"{line[:77]!r}..."
            raise LabelFileError(f"{source}:{lineno}: expected 'n######## name[, synonym...]', got {shown}")
        if wnid in seen:
            raise LabelFileError(f"{source}:{lineno}: {wnid} appears twice (first on line {seen[wnid]})")
        seen[wnid] = lineno
        out.append(Category(len(out), wnid, synonyms[0], synonyms))
    return tuple(out)
