"""The ``index add`` and ``index remove`` commands of ``alexnet-zoo`` (a saved index updated without a
rebuild), and the ``--pca-train`` input of ``index build``.

Argument parsing and printing only: the update is :class:`~alexnet_zoo.retrieval.index.VectorIndex`'s
(``add_new``, ``remove``, then its crash-safe ``save``), the features folder
:mod:`alexnet_zoo.retrieval.shards`' and the list files :mod:`alexnet_zoo.retrieval.extraction`'s.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_zoo.errors import IndexMismatch, RetrievalError
from alexnet_zoo.retrieval.extraction import read_list
from alexnet_zoo.retrieval.index import VectorIndex
from alexnet_zoo.retrieval.shards import MANIFEST, printable, provenance, read_features

__all__ = ["PCA_SOURCE", "add_update_commands", "as_stored", "gone_paths", "pca_train_vectors", "recall_line"]

# the fields a --pca-train folder must share with the indexed features: the same network, weights,
# layer and preprocessing (storage dtype and arithmetic precision may differ)
PCA_SOURCE = ("model", "weights", "layer", "pool", "normalized", "preprocessing")


def pca_train_vectors(path: Path, manifest: dict[str, Any]) -> np.ndarray:
    """The vectors of ``--pca-train``: a features folder of the same network, weights, layer and
    preprocessing as the indexed ``manifest``, or a ``.npy`` of (N, dim) floats (its header is read
    before any data: a memory map, never a pickle)."""
    if path.is_dir():
        vectors, _, theirs = read_features(path, mmap=True)
        differ = [k for k in PCA_SOURCE if theirs.get(k) != manifest.get(k)]
        if differ:
            raise IndexMismatch(f"{path}: --pca-train features of {differ[0]}={theirs.get(differ[0])!r}, the indexed "
                                f"ones {differ[0]}={manifest.get(differ[0])!r}; learn the PCA on features of the "
                                "same model, weights, layer and preprocessing")
        return vectors
    if path.suffix.lower() != ".npy":
        raise RetrievalError(f"{path}: expected a features folder (with {MANIFEST}, from `alexnet-zoo extract`) or "
                             "a .npy file of (N, dim) vectors for --pca-train")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as err:
        raise RetrievalError(f"{path}: not a readable .npy file ({err})") from None
    if array.ndim != 2 or array.dtype.kind != "f":
        raise RetrievalError(f"{path}: holds a {array.dtype} array of shape {array.shape}; expected (N, dim) floats")
    return array


def recall_line(info: dict[str, Any]) -> str:
    """What the stored recall is worth after updates, for people (info.json holds the numbers)."""
    since = info.get("changes_since_recall")
    text = f"1-recall@10 {info['recall_at_10']:.3f}"
    if "pca" in info:
        text += f" ({info['pca']['recall_at_10_original']:.3f} against the original space)"
    if since:
        text += (f", measured at build: {since['added']} added and {since['removed']} removed since (rebuild to "
                 "measure it again)")
    return text


def _add(args: argparse.Namespace) -> int:
    index = VectorIndex.load(args.index, device="cpu")
    vectors, paths, manifest = read_features(args.features)
    try:
        ids, skipped = index.add_new(vectors, paths, meta=provenance(manifest))
    except IndexMismatch as err:
        raise IndexMismatch(f"{args.features}: {err}") from None
    gone = gone_paths(manifest, paths, index.paths)
    removed = index.remove(gone) if gone else 0
    index.save(args.index)
    print(f"{printable(str(args.features))} -> {printable(str(args.index))}: added {len(ids)} vectors, skipped "
          f"{skipped} already indexed, removed {removed} gone from the source; {index.count} vectors, "
          f"{recall_line(index.info)}")
    return 0


def gone_paths(manifest: dict[str, Any], live: list[str], indexed: list[str]) -> list[str]:
    """The indexed paths that a grown features folder records as gone from its source (and that are
    not live in it again): ``index add`` drops them, so extract + index add keep an index in step
    with a folder of pictures."""
    alive, held = set(live), set(indexed)
    return sorted(({r["path"] for r in manifest.get("removed", [])} - alive) & held)


def _remove(args: argparse.Namespace) -> int:
    index = VectorIndex.load(args.index, device="cpu")
    paths = list(args.paths or []) + (read_list(args.paths_file) if args.paths_file else [])
    if not paths:
        raise RetrievalError(f"{args.paths_file}: names no paths; expected one path a line (or .jsonl)")
    removed = index.remove(as_stored(paths, index.paths))
    index.save(args.index)
    print(f"{printable(str(args.index))}: removed {removed} vectors; {index.count} left, {recall_line(index.info)}")
    return 0


def as_stored(paths: list[str], indexed: list[str]) -> list[str]:
    """Each path as the index stores it: itself when stored, else the one stored path that names the
    same file once both are made absolute and normalised (``./a.jpg``, ``photos//a.jpg``, an absolute
    form of a relative one); a path with no such match, or several, stays as typed and is refused."""
    stored = set(indexed)
    if all(p in stored for p in paths):
        return paths
    by_name: dict[str, list[str]] = {}
    for p in indexed:
        by_name.setdefault(os.path.normpath(os.path.abspath(p)), []).append(p)
    out = []
    for p in paths:
        same = [] if p in stored else by_name.get(os.path.normpath(os.path.abspath(p)), [])
        out.append(same[0] if len(same) == 1 else p)
    return out


def add_update_commands(isub: Any) -> None:
    """Register ``index add`` and ``index remove`` on the ``index`` command's subparsers."""
    add = isub.add_parser("add", help="add a features folder's new pictures to a saved index and drop the ones its source lost "
                               "(no rebuild)",
                          description="Paths the index already holds are skipped (and counted); features of another "
                                      "model, weights, layer, dim or preprocessing are refused. The index's PCA, if "
                                      "any, is applied to the new vectors; pictures the folder records as gone from its "
                                      "source (a rerun of `extract` on a changed folder) are removed from the index; "
                                      "the stored recall is marked stale.")
    add.add_argument("index", type=Path)
    add.add_argument("features", type=Path, help="a features folder from `alexnet-zoo extract`")
    add.set_defaults(run=_add)
    remove = isub.add_parser("remove", help="remove pictures from a saved index (no rebuild)",
                             description="Paths as the index stores them (its paths.*.jsonl, `index query --json`), "
                                         "or another spelling of the same file (./a.jpg, an absolute form); a path "
                                         "it lacks is refused and nothing is removed. Ids are row numbers: the rows "
                                         "after a removed one are renumbered.")
    remove.add_argument("index", type=Path)
    which = remove.add_mutually_exclusive_group(required=True)
    which.add_argument("--paths", nargs="+", metavar="P", help="the paths to remove")
    which.add_argument("--paths-file", type=Path, metavar="FILE",
                       help=".txt with one path a line (NUL-separated when it holds a NUL) or .jsonl of JSON strings")
    remove.set_defaults(run=_remove)
