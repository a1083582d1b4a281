"""Features of many images, written as numbered shards that a long job can stop and resume.

A features folder holds ``shard-00000.npy`` (vectors) + ``shard-00000.paths.txt`` (row-aligned
paths), ``manifest.json`` (model, weights, layer, preprocessing, dtype, dim, count and the finished
shards) and ``failures.txt`` (unreadable images: path and reason, one a line). Each shard is
written atomically and the manifest is rewritten after it, so a rerun skips the finished shards and
no row is missing or repeated. Under ``torchrun`` each rank takes a contiguous slice of the sorted
file list and writes ``rank-00001-shard-00000.*`` with its own manifest; :func:`merge_ranks` joins
the ranks' manifests in rank order, so :func:`read_features` gives the rows of a one-process run.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from alexnet_zoo.errors import failure_message
from alexnet_zoo.features import FeatureExtractor
from alexnet_zoo.images import read_image
from alexnet_zoo.loading import LoaderMode, iterate_batches
from alexnet_zoo.transforms import ImagePreprocess
from alexnet_zoo.paths import atomic_write, write_json

__all__ = ["IMAGE_EXTENSIONS", "ExtractionMismatch", "Shard", "dist_rank", "extract_to_shards", "list_images",
           "merge_ranks", "read_features", "read_manifest"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".mpo")
MANIFEST = "manifest.json"
FAILURES = "failures.txt"
FORMAT = "alexnet_zoo.features"


class ExtractionMismatch(ValueError):
    """A features folder holds a job with other settings or inputs than the one asked for."""


@dataclass(frozen=True)
class Shard:
    """One finished shard: its file stem, the input positions it covers, and its row count."""

    name: str
    start: int
    stop: int
    count: int


def list_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The images of a folder (recursive, sorted), a text file listing one path a line (relative
    paths are taken from the file's folder), a glob pattern, or a list of paths."""
    if not isinstance(source, (str, os.PathLike)):
        return [os.fspath(p) for p in source]
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if path.is_file() and path.suffix.lower() in (".txt", ".lst", ".list"):
        lines = [line.strip() for line in path.read_text().splitlines()]
        return [str(p if Path(p).is_absolute() else path.parent / p) for p in lines if p and not p.startswith("#")]
    if path.is_file():
        return [text]
    if any(c in text for c in "*?["):
        return sorted(glob.glob(text, recursive=True))
    raise FileNotFoundError(f"{text}: expected a folder of images, a .txt list of paths, an image or a glob pattern")


def dist_rank() -> tuple[int, int]:
    """(rank, world_size) from an initialised torch.distributed group, else torchrun's RANK /
    WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class _Files(Dataset):
    """Decoded, preprocessed images by position; an unreadable file yields its error instead."""

    def __init__(self, paths: Sequence[str], preprocess: ImagePreprocess) -> None:
        self.paths, self.preprocess = paths, preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.preprocess(read_image(self.paths[i])), None
        except Exception as err:  # noqa: BLE001 - listed in failures.txt; one odd file must not end the job
            return i, None, failure_message(self.paths[i], err)


def _collate(items: list) -> list:
    return items


def _write_npy(target: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)
    atomic_write(target, write)


def _write_text(target: Path, text: str) -> None:
    atomic_write(target, lambda tmp: tmp.write_text(text))


def _prefix(rank: int, world_size: int) -> str:
    return "" if world_size == 1 else f"rank-{rank:05d}-"


def _digest(paths: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()


def read_manifest(folder: str | os.PathLike, name: str = MANIFEST) -> dict[str, Any]:
    """The manifest of a features folder, or a clear error naming the folder."""
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {name}; expected a features folder written by `alexnet-zoo extract`"
                                " (under torchrun, merge the ranks first)")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise ExtractionMismatch(f"{path}: not JSON ({err})") from err
    if manifest.get("format") != FORMAT:
        raise ExtractionMismatch(f"{path}: not an alexnet_zoo features manifest")
    return manifest


def extract_to_shards(extractor: FeatureExtractor, source: str | os.PathLike | Sequence[str | os.PathLike],
                      out: str | os.PathLike, *, shard_size: int = 10_000, workers: int = 0,
                      rank: int | None = None, world_size: int | None = None, max_shards: int | None = None,
                      progress: bool = True, merge: bool = True, loader: LoaderMode = "auto") -> dict[str, Any]:
    """Extract every image of ``source`` into shards under ``out``; returns this rank's manifest.

    Rerunning continues after the last finished shard (the settings and file list must match).
    ``max_shards`` stops after that many new shards (a time limit, or a test of resuming). Under
    torchrun, ranks meet at a barrier and rank 0 merges the manifests (``merge=False`` skips it).
    ``workers`` decode as :func:`alexnet_zoo.loading.iterate_batches`'s ``loader`` mode says."""
    if rank is None or world_size is None:
        rank, world_size = dist_rank()
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = list_images(source)
    starts = np.linspace(0, len(paths), world_size + 1).astype(int)  # contiguous slices, in rank order
    lo, hi = int(starts[rank]), int(starts[rank + 1])
    prefix = _prefix(rank, world_size)
    manifest_name = MANIFEST if world_size == 1 else f"manifest-{prefix[:-1]}.json"
    settings = {**extractor.info(), "inputs": len(paths), "inputs_sha256": _digest(paths), "shard_size": shard_size,
                "rank": rank, "world_size": world_size, "slice": [lo, hi]}
    manifest: dict[str, Any] = {"format": FORMAT, **settings, "count": 0, "shards": [], "failures": [],
                                "complete": False}
    if (out / manifest_name).is_file():
        old = read_manifest(out, manifest_name)
        differing = [k for k in settings if old.get(k) != settings[k]]
        if differing:
            raise ExtractionMismatch(f"{out}: holds an extraction with other {', '.join(differing)} "
                                     f"({', '.join(f'{k}={old.get(k)!r}' for k in differing)}); "
                                     "use another --out folder or remove it")
        manifest = old
    done = manifest["shards"][-1]["stop"] if manifest["shards"] else lo
    dataset = _Files(paths, extractor.preprocess)
    bar = tqdm(total=hi - lo, initial=done - lo, unit="img", disable=not progress or rank != 0,
               desc=f"extract {out.name}")
    new = 0
    while done < hi and (max_shards is None or new < max_shards):
        stop = min(done + shard_size, hi)
        batches = [list(range(i, min(i + extractor.batch_size, stop))) for i in range(done, stop, extractor.batch_size)]
        vectors, rows, failures = [], [], []
        for batch in iterate_batches(dataset, batches, _collate, workers=workers, mode=loader,
                                     device=extractor.device):
            good = [(i, x) for i, x, _ in batch if x is not None]
            failures += [f"{paths[i]}\t{err}" for i, x, err in batch if x is None]
            if good:
                vectors.append(extractor.embed_batch(torch.stack([x for _, x in good])))
                rows += [paths[i] for i, _ in good]
            bar.update(len(batch))
        name = f"{prefix}shard-{len(manifest['shards']):05d}"
        array = np.concatenate(vectors) if vectors else np.zeros((0, extractor.dim), extractor.dtype)
        _write_npy(out / f"{name}.npy", array)
        _write_text(out / f"{name}.paths.txt", "".join(p + "\n" for p in rows))
        manifest["shards"].append(Shard(name, done, stop, len(rows)).__dict__)
        manifest["count"] += len(rows)
        manifest["failures"] += failures
        done, new = stop, new + 1
        manifest["complete"] = done >= hi
        write_json(out / manifest_name, manifest)
        _write_text(out / (FAILURES if world_size == 1 else f"failures-{prefix[:-1]}.txt"),
                    "".join(f + "\n" for f in manifest["failures"]))
    bar.close()
    if lo == hi and not (out / manifest_name).is_file():  # an empty slice still says it is done
        manifest["complete"] = True
        write_json(out / manifest_name, manifest)
    if world_size > 1 and merge and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        if rank == 0 and all(_rank_complete(out, r, world_size) for r in range(world_size)):
            merge_ranks(out)
        torch.distributed.barrier()
    return manifest


def _rank_complete(out: Path, rank: int, world_size: int) -> bool:
    path = out / f"manifest-rank-{rank:05d}.json"
    return path.is_file() and json.loads(path.read_text()).get("complete", False)


def merge_ranks(folder: str | os.PathLike) -> dict[str, Any]:
    """Join the per-rank manifests of a torchrun extraction into ``manifest.json`` and
    ``failures.txt`` (shards in rank order, so rows come in the one-process order)."""
    folder = Path(folder)
    parts = sorted(folder.glob("manifest-rank-*.json"))
    if not parts:
        raise FileNotFoundError(f"{folder}: no manifest-rank-*.json to merge")
    manifests = [read_manifest(folder, p.name) for p in parts]
    world = manifests[0]["world_size"]
    if len(manifests) != world or [m["rank"] for m in manifests] != list(range(world)):
        raise ExtractionMismatch(f"{folder}: expected manifests of ranks 0..{world - 1}, found "
                                 f"{[m['rank'] for m in manifests]}")
    unfinished = [m["rank"] for m in manifests if not m["complete"]]
    if unfinished:
        raise ExtractionMismatch(f"{folder}: ranks {unfinished} have not finished; rerun the extraction")
    merged = {k: v for k, v in manifests[0].items() if k not in ("rank", "slice")}
    merged.update(count=sum(m["count"] for m in manifests), shards=[s for m in manifests for s in m["shards"]],
                  failures=[f for m in manifests for f in m["failures"]], complete=True, world_size=world)
    write_json(folder / MANIFEST, merged)
    _write_text(folder / FAILURES, "".join(f + "\n" for f in merged["failures"]))
    return merged


def read_features(folder: str | os.PathLike, *, mmap: bool = False) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """All rows of a features folder: (vectors (N, dim), paths, manifest), shards in order.
    A torchrun folder whose ranks were not merged yet is merged first."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file() and any(folder.glob("manifest-rank-*.json")):
        merge_ranks(folder)
    manifest = read_manifest(folder)
    vectors, paths = [], []
    for shard in manifest["shards"]:
        array = np.load(folder / f"{shard['name']}.npy", mmap_mode="r" if mmap else None)
        rows = (folder / f"{shard['name']}.paths.txt").read_text().splitlines()
        if len(rows) != array.shape[0] or array.shape[0] != shard["count"]:
            raise ExtractionMismatch(f"{folder}/{shard['name']}: {array.shape[0]} vectors, {len(rows)} paths, "
                                     f"manifest says {shard['count']}")
        vectors.append(array)
        paths += rows
    dim = manifest["dim"]
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, dim), manifest["dtype"])
    return stacked, paths, manifest
