"""The extraction job: features of many images, written as numbered shards that a long job can stop
and resume.

The inputs are a folder, a list file, a glob pattern or a list of paths (:func:`list_images`).
Each shard is written atomically and the manifest is rewritten after it, so a rerun skips the
finished shards and no row is missing or repeated; an input that is no readable picture is listed
with its reason, never the end of the job. Under ``torchrun`` each rank takes a contiguous slice
of the sorted file list and writes its own shards and manifest; rank 0 merges them. A finished
folder grows: a rerun on a source that gained or lost pictures extracts only the new ones
(:mod:`alexnet_zoo.retrieval.growth` says what is new and folds the run in). The folder
format itself (manifest, shard files, reading them back) is :mod:`alexnet_zoo.retrieval.shards`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from alexnet_zoo.data.batching import LoaderMode, iterate_batches
from alexnet_zoo.data.images import IMAGE_SUFFIXES, read_image
from alexnet_zoo.data.transforms import ImagePreprocess
from alexnet_zoo.errors import CorruptFeatures, ExtractionMismatch, failure_message
from alexnet_zoo.paths import write_json
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.retrieval.growth import changes, fold_increment, part_manifest_name
from alexnet_zoo.retrieval.path_lists import read_path_list
from alexnet_zoo.retrieval.shards import (
    FAILURES,
    FORMAT,
    GROWN_VERSION,
    MANIFEST,
    VERSION,
    Shard,
    merge_ranks,
    read_manifest,
    write_failures,
    write_npy,
    write_paths,
)

__all__ = ["LIST_EXTENSIONS", "dist_rank", "extract_to_shards", "list_images", "read_list"]

LIST_EXTENSIONS = (".txt", ".lst", ".list")


def read_list(path: Path) -> list[str]:
    """The names in a user's list file. ``.jsonl``: one JSON string a line (what this package
    writes; any name). ``.txt`` / ``.lst`` / ``.list``: NUL-separated when the file holds a NUL
    (``find -print0``; any name), else one name a line, split on "\\n" only (a final "\\r" of CRLF
    files is dropped; the other line terminators stay part of the name), empty lines and lines
    starting with "#" skipped, spaces kept. Bytes that are not UTF-8 become surrogateescape
    characters, as Python names such files."""
    if path.suffix.lower() == ".jsonl":
        with open(path, "rb") as f:
            return read_path_list(f, path, error=CorruptFeatures)
    data = path.read_bytes()
    if b"\0" in data:
        return [n.decode("utf-8", "surrogateescape") for n in data.split(b"\0") if n]
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")  # a BOM from Windows editors
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return [line for line in lines if line and not line.startswith("#")]


def list_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The images of a folder (recursive, sorted), a list file (see :func:`read_list`; relative
    paths are taken from the file's folder), a glob pattern, or a list of paths. A folder's entries
    with an image suffix are all listed, also those that are no picture file (a broken symlink, a
    folder named ``x.jpg``): extraction then reports them with the other failures."""
    if not isinstance(source, (str, os.PathLike)):
        return [os.fspath(p) for p in source]
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if path.is_file() and path.suffix.lower() in (*LIST_EXTENSIONS, ".jsonl"):
        return [os.path.join(path.parent, p) if not os.path.isabs(p) else p for p in read_list(path)]
    if path.is_file():
        return [text]
    if any(c in text for c in "*?["):
        return sorted(glob.glob(text, recursive=True))
    raise FileNotFoundError(f"{text}: expected a folder of images, a .txt / .jsonl list of paths, an image or a "
                            "glob pattern")


def dist_rank() -> tuple[int, int]:
    """(rank, world_size) from an initialised torch.distributed group, else torchrun's RANK /
    WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    try:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as err:
        raise ValueError(f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}: expected "
                         "integers (torchrun sets them)") from err


def _not_a_picture(path: str) -> str | None:
    """Why ``path`` cannot be a picture file without opening it (a FIFO named x.jpg would block a
    reader forever), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return f"{path}: broken symbolic link (to {os.readlink(path)})"
        return f"{path}: no such file"
    except OSError as err:
        return f"{path}: cannot stat ({err})"
    if stat.S_ISDIR(mode):
        return f"{path}: a folder, not an image file"
    if not stat.S_ISREG(mode):
        return f"{path}: not a regular file (a device, socket or pipe)"
    return None


class _Files(Dataset):
    """Decoded, preprocessed images by position; an unreadable file yields its error instead.

    Not :class:`alexnet_zoo.data.datasets.ImageDataset`: that one yields labelled, resized square
    uint8 images for evaluation's crops, and opens whatever it is given, while extraction needs the
    network's input itself and must not open a FIFO or device an unlabelled path list may name."""

    def __init__(self, paths: Sequence[str], preprocess: ImagePreprocess) -> None:
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        why = _not_a_picture(self.paths[i])
        if why is not None:
            return i, None, why
        try:
            return i, self.preprocess(read_image(self.paths[i])), None
        except Exception as err:  # noqa: BLE001 - listed in failures.txt; one odd file must not end the job
            return i, None, failure_message(self.paths[i], err)


def _collate(items: list) -> list:
    return items


def _prefix(rank: int, world_size: int) -> str:
    return "" if world_size == 1 else f"rank-{rank:05d}-"


def _digest(paths: Sequence[str]) -> str:
    """One digest for a file list; JSON keeps it unambiguous (a name holding "\\n" is not two names)
    and encodable (undecodable bytes are escaped surrogates)."""
    return hashlib.sha256(json.dumps(list(paths)).encode("ascii")).hexdigest()


def _check_count(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _writable(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` when this version can continue or grow it (format 2 or 3), else an error."""
    if manifest.get("version", 1) not in (VERSION, GROWN_VERSION):
        raise ExtractionMismatch(f"{out}: holds an extraction of an older alexnet_zoo (format version "
                                 f"{manifest.get('version', 1)}); use another --out folder or remove it")
    return manifest


def _resume(out: Path, manifest_name: str, settings: dict[str, Any], *, restart: bool = False) -> dict[str, Any]:
    """The manifest to continue: the one already in ``out`` when it was written with the same
    ``settings`` (else an :class:`ExtractionMismatch`, or with ``restart`` a new one: an unfinished
    incremental run for an older list of new pictures), else a new, empty one."""
    manifest: dict[str, Any] = {"format": FORMAT, "version": VERSION, **settings, "count": 0, "shards": [],
                                "failures": [], "complete": False}
    if (out / manifest_name).is_file():
        old = _writable(out, read_manifest(out, manifest_name))
        differing = [k for k in settings if old.get(k) != settings[k]]
        if differing and not restart:
            raise ExtractionMismatch(f"{out}: holds an extraction with other {', '.join(differing)} "
                                     f"({', '.join(f'{k}={old.get(k)!r}' for k in differing)}); "
                                     "use another --out folder or remove it")
        manifest = manifest if differing else old
    return manifest


def _grown_base(out: Path) -> dict[str, Any] | None:
    """``out``'s manifest.json when it holds a finished extraction (one to grow), else None."""
    if not (out / MANIFEST).is_file():
        return None
    base = _writable(out, read_manifest(out))
    return base if base["complete"] and "increment" not in base else None


def _check_same_settings(out: Path, base: dict[str, Any], info: dict[str, Any]) -> None:
    differing = [k for k in info if base.get(k) != info[k]]
    if differing:
        raise ExtractionMismatch(f"{out}: holds features of other {', '.join(differing)} "
                                 f"({', '.join(f'{k}={base.get(k)!r}' for k in differing)}); adding pictures "
                                 "needs the same model, weights, layer, pooling, preprocessing, dtype and precision: "
                                 "pass those, or use another --out folder")


def _extract_rows(extractor: FeatureExtractor, dataset: _Files, start: int, stop: int, bar: tqdm, *,
                  workers: int, loader: LoaderMode) -> tuple[np.ndarray, list[str], list[dict[str, str]]]:
    """(vectors, their paths, failures) of inputs ``start..stop-1``: one shard's worth."""
    paths = dataset.paths
    batches = [list(range(i, min(i + extractor.batch_size, stop))) for i in range(start, stop, extractor.batch_size)]
    vectors, rows, failures = [], [], []
    for batch in iterate_batches(dataset, batches, _collate, workers=workers, mode=loader, device=extractor.device):
        good = [(i, x) for i, x, _ in batch if x is not None]
        failures += [{"path": paths[i], "error": err} for i, x, err in batch if x is None]
        if good:
            vectors.append(extractor.embed_batch(torch.stack([x for _, x in good])))
            rows += [paths[i] for i, _ in good]
        bar.update(len(batch))
    array = np.concatenate(vectors) if vectors else np.zeros((0, extractor.dim), extractor.dtype)
    return array, rows, failures


@dataclass(frozen=True)
class _Run:
    """One extraction run: ``number`` 0 is a folder's first, 1.. its incremental ones."""

    number: int
    rank: int
    world_size: int
    shard_size: int
    workers: int
    loader: LoaderMode
    max_shards: int | None
    progress: bool

    def names(self) -> tuple[str, str, str | None]:
        """(shard name prefix, manifest name, failures file name or None: written at the fold)."""
        ranked = self.world_size > 1
        if self.number:
            return (f"inc-{self.number:05d}-{_prefix(self.rank, self.world_size)}",
                    part_manifest_name(self.number, self.rank, self.world_size), None)
        prefix = _prefix(self.rank, self.world_size)
        return (prefix, f"manifest-{prefix[:-1]}.json" if ranked else MANIFEST,
                f"failures-{prefix[:-1]}.txt" if ranked else FAILURES)


def _extract_run(extractor: FeatureExtractor, paths: list[str], out: Path, run: _Run, desc: str) -> dict[str, Any]:
    """Extract this rank's slice of ``paths`` in shards, continuing its manifest; returns it."""
    starts = np.linspace(0, len(paths), run.world_size + 1).astype(int)  # contiguous slices, in rank order
    lo, hi = int(starts[run.rank]), int(starts[run.rank + 1])
    prefix, manifest_name, failures_name = run.names()
    settings = {**extractor.info(), "inputs": len(paths), "inputs_sha256": _digest(paths),
                "shard_size": run.shard_size, "rank": run.rank, "world_size": run.world_size, "slice": [lo, hi]}
    manifest = _resume(out, manifest_name, {**settings, **({"increment": run.number} if run.number else {})},
                       restart=run.number > 0)
    done = manifest["shards"][-1]["stop"] if manifest["shards"] else lo
    dataset = _Files(paths, extractor.preprocess)
    bar = tqdm(total=hi - lo, initial=done - lo, unit="img", disable=not run.progress or run.rank != 0, desc=desc)
    new = 0
    while done < hi and (run.max_shards is None or new < run.max_shards):
        stop = min(done + run.shard_size, hi)
        array, rows, failures = _extract_rows(extractor, dataset, done, stop, bar, workers=run.workers,
                                              loader=run.loader)
        name = f"{prefix}shard-{len(manifest['shards']):05d}"
        write_npy(out / f"{name}.npy", array)
        write_paths(out / f"{name}.paths.jsonl", rows)
        manifest["shards"].append(Shard(name, done, stop, len(rows)).__dict__)
        manifest["count"] += len(rows)
        manifest["failures"] += failures
        done, new = stop, new + 1
        manifest["complete"] = done >= hi
        write_json(out / manifest_name, manifest)
        if failures_name:
            write_failures(out / failures_name, manifest["failures"])
    bar.close()
    if lo == hi and not (out / manifest_name).is_file():  # an empty slice still says it is done
        manifest["complete"] = True
        write_json(out / manifest_name, manifest)
    return manifest


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def extract_to_shards(extractor: FeatureExtractor, source: str | os.PathLike | Sequence[str | os.PathLike],
                      out: str | os.PathLike, *, shard_size: int = 10_000, workers: int = 0,
                      rank: int | None = None, world_size: int | None = None, max_shards: int | None = None,
                      progress: bool = True, merge: bool = True, loader: LoaderMode = "auto") -> dict[str, Any]:
    """Extract every image of ``source`` into shards under ``out``; returns the folder's manifest
    (this rank's while the run is unfinished, or under torchrun on ranks other than 0).

    Rerunning continues after the last finished shard (the settings and file list must match).
    Once the folder is complete, a rerun on a source that gained pictures extracts only those, as
    an incremental run in shards of its own, and records the rows of pictures gone from the source
    as removed (:mod:`alexnet_zoo.retrieval.growth`); the model, weights, layer, pooling,
    preprocessing, dtype and precision must be the folder's. ``max_shards`` stops after that many
    new shards (a time limit, or a test of resuming). Under torchrun, ranks meet at a barrier and
    rank 0 merges the manifests (``merge=False`` skips it). ``workers`` decode as
    :func:`alexnet_zoo.data.batching.iterate_batches`'s ``loader`` mode says. Inputs that are no
    readable picture are listed in the manifest's failures and failures.txt."""
    _check_count(shard_size, "shard_size", 1)
    _check_count(workers, "workers", 0)
    if max_shards is not None:
        _check_count(max_shards, "max_shards", 1)
    if rank is None or world_size is None:
        rank, world_size = dist_rank()
    _check_count(world_size, "world_size", 1)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank!r} is not in 0..{world_size - 1}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = list_images(source)
    base = _grown_base(out)
    if base is None:
        run = _Run(0, rank, world_size, shard_size, workers, loader, max_shards, progress)
        manifest = _extract_run(extractor, paths, out, run, f"extract {out.name}")
        if world_size > 1 and merge and _distributed():
            torch.distributed.barrier()
            if rank == 0 and all(_rank_complete(out, r) for r in range(world_size)):
                merge_ranks(out)
            torch.distributed.barrier()
        return manifest
    _check_same_settings(out, base, extractor.info())
    change = changes(out, base, paths)
    if not change.any(base):
        return base
    number = len(base.get("increments", [])) + 1
    run = _Run(number, rank, world_size, shard_size, workers, loader, max_shards, progress)
    part = _extract_run(extractor, change.new, out, run,
                        f"extract {out.name}: {len(change.new)} new, {len(change.removed)} removed")
    if world_size > 1 and _distributed():
        torch.distributed.barrier()
        grown = fold_increment(out, base, number, change, world_size) if rank == 0 else None
        torch.distributed.barrier()
    else:
        grown = fold_increment(out, base, number, change, world_size) if part["complete"] else None
    return grown or part


def _rank_complete(out: Path, rank: int) -> bool:
    name = f"manifest-rank-{rank:05d}.json"
    return (out / name).is_file() and read_manifest(out, name)["complete"]
