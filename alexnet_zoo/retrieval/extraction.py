"""Features of many images, written as numbered shards that a long job can stop and resume.

A features folder holds ``shard-00000.npy`` (vectors) + ``shard-00000.paths.jsonl`` (row-aligned
paths, one JSON string a line, so any file name round-trips), ``manifest.json`` (model, weights,
layer, preprocessing, dtype, dim, count, the finished shards and the unreadable inputs, exactly) and
``failures.txt`` (the same failures for people: path and reason, one a line, line terminators and
undecodable bytes escaped). Each shard is written atomically and the manifest is rewritten after
it, so a rerun skips the finished shards and no row is missing or repeated. Manifests and shard
files are parsed as untrusted input (:func:`parse_manifest`, :func:`read_features`): damage is a
:class:`CorruptFeatures` naming the file, and a shard's ``.npy`` header is checked against the
manifest before any array is allocated. Under ``torchrun`` each rank takes a contiguous slice of the sorted
file list and writes ``rank-00001-shard-00000.*`` with its own manifest; :func:`merge_ranks` joins
the ranks' manifests in rank order, so :func:`read_features` gives the rows of a one-process run.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from alexnet_zoo.errors import CorruptFeatures, ExtractionMismatch, failure_message
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.data.images import read_image
from alexnet_zoo.retrieval.index import MAX_DIM, read_path_list, write_path_list
from alexnet_zoo.data.batching import LoaderMode, iterate_batches
from alexnet_zoo.paths import atomic_write, read_capped, write_json
from alexnet_zoo.eval.precision import PRECISIONS
from alexnet_zoo.data.transforms import ImagePreprocess

__all__ = ["IMAGE_EXTENSIONS", "CorruptFeatures", "ExtractionMismatch", "Shard", "dist_rank", "extract_to_shards",
           "list_images", "merge_ranks", "parse_manifest", "printable", "read_features", "read_manifest"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".mpo")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
MANIFEST = "manifest.json"
FAILURES = "failures.txt"
FORMAT = "alexnet_zoo.retrieval.features"
VERSION = 2  # 2: paths as JSON lines (.paths.jsonl), failures as {"path", "error"}; 1 (no "version"): .paths.txt
MANIFEST_LIMIT = 256 * 2 ** 20  # bytes; a manifest is ~100 bytes a shard and a failure
_SHARD_NAME = re.compile(r"(rank-\d{5}-)?shard-\d{5}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# every character str.splitlines() splits on, and the tab failures.txt separates with
_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029\t")


@dataclass(frozen=True)
class Shard:
    """One finished shard: its file stem, the input positions it covers, and its row count."""

    name: str
    start: int
    stop: int
    count: int


def printable(text: str) -> str:
    """``text`` on one line for people (failures.txt, the CLI's output): line terminators and tabs
    escaped as ``\n`` / ``\x1c`` / ``\u2028``, undecodable bytes of a file name as ``\xff``. Exact
    paths are in the JSON files (manifest, ``--json``), this is for reading."""
    if not any(c in _BREAKS or "\udc80" <= c <= "\udcff" for c in text):
        return text
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff"
                   else c.encode("unicode_escape").decode("ascii") if c in _BREAKS else c for c in text)


def _read_list(path: Path) -> list[str]:
    """The names in a user's list file. ``.jsonl``: one JSON string a line (what this package
    writes; any name). ``.txt`` / ``.lst`` / ``.list``: NUL-separated when the file holds a NUL
    (``find -print0``; any name), else one name a line, split on "\n" only (a final "\r" of CRLF
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
    """The images of a folder (recursive, sorted), a list file (see :func:`_read_list`; relative
    paths are taken from the file's folder), a glob pattern, or a list of paths. A folder's entries
    with an image suffix are all listed, also those that are no picture file (a broken symlink, a
    folder named ``x.jpg``): extraction then reports them with the other failures."""
    if not isinstance(source, (str, os.PathLike)):
        return [os.fspath(p) for p in source]
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if path.is_file() and path.suffix.lower() in (*LIST_EXTENSIONS, ".jsonl"):
        return [os.path.join(path.parent, p) if not os.path.isabs(p) else p for p in _read_list(path)]
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
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
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
    """Decoded, preprocessed images by position; an unreadable file yields its error instead."""

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


def _write_npy(target: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    atomic_write(target, write)


def _write_paths(target: Path, paths: Sequence[str]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write_path_list(f, paths)
    atomic_write(target, write)


def _write_failures(target: Path, failures: Sequence[dict[str, str]]) -> None:
    text = "".join(f"{printable(f['path'])}\t{printable(f['error'])}\n" for f in failures)
    atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _prefix(rank: int, world_size: int) -> str:
    return "" if world_size == 1 else f"rank-{rank:05d}-"


def _digest(paths: Sequence[str]) -> str:
    """One digest for a file list; JSON keeps it unambiguous (a name holding "\n" is not two names)
    and encodable (undecodable bytes are escaped surrogates)."""
    return hashlib.sha256(json.dumps(list(paths)).encode("ascii")).hexdigest()


def _is_int(value: Any, low: int = 0, high: int = 2 ** 48) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def parse_manifest(data: bytes, source: str | os.PathLike = MANIFEST) -> dict[str, Any]:
    """A features manifest's fields, each checked (a folder can come from anywhere): a
    :class:`CorruptFeatures` naming ``source`` and the field for anything unexpected. Version 1
    manifests (no "version", failures as text) are read as written."""
    def bad(field: str, expected: str, value: Any) -> CorruptFeatures:
        shown = repr(value)
        return CorruptFeatures(f"{source}: {field} must be {expected}, got {shown[:80]}{'...' if len(shown) > 80 else ''}")

    try:
        m = json.loads(data)
    except (ValueError, RecursionError) as err:  # RecursionError: nesting beyond the parser's stack
        raise CorruptFeatures(f"{source}: not JSON ({str(err)[:200]})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CorruptFeatures(f"{source}: not an alexnet_zoo features manifest (expected an object with "
                              f"\"format\": \"{FORMAT}\")")
    version = m.get("version", 1)
    if version not in (1, VERSION) or isinstance(version, bool):
        raise bad("version", f"1 or {VERSION} (a newer alexnet_zoo wrote it?)", version)
    for key in ("model", "weights", "layer"):
        if not isinstance(m.get(key), str):
            raise bad(key, "a string", m.get(key))
    if m.get("weights_spec") is not None and not isinstance(m["weights_spec"], str):
        raise bad("weights_spec", "a string or null", m["weights_spec"])
    if m.get("pool") not in (None, "avg", "max"):
        raise bad("pool", "null, 'avg' or 'max'", m.get("pool"))
    if not isinstance(m.get("normalized", True), bool):
        raise bad("normalized", "true or false", m.get("normalized"))
    if m.get("dtype") not in ("float32", "float16"):
        raise bad("dtype", "'float32' or 'float16'", m.get("dtype"))
    if m.get("precision", "fp32") not in PRECISIONS:
        raise bad("precision", f"one of {', '.join(PRECISIONS)}", m.get("precision"))
    if not _is_int(m.get("dim"), 1, MAX_DIM):
        raise bad("dim", f"an integer in 1..{MAX_DIM}", m.get("dim"))
    if not isinstance(m.get("preprocessing", {}), dict):
        raise bad("preprocessing", "an object", m.get("preprocessing"))
    for key, low in (("inputs", 0), ("count", 0), ("shard_size", 1), ("world_size", 1)):
        if not _is_int(m.get(key), low):
            raise bad(key, f"an integer >= {low}", m.get(key))
    if not isinstance(m.get("inputs_sha256"), str) or not _SHA256.fullmatch(m["inputs_sha256"]):
        raise bad("inputs_sha256", "64 hex digits", m.get("inputs_sha256"))
    if "rank" in m and not _is_int(m["rank"], 0, m["world_size"] - 1):
        raise bad("rank", f"an integer in 0..{m['world_size'] - 1}", m["rank"])
    lo, hi = 0, m["inputs"]
    if "slice" in m:
        if not (isinstance(m["slice"], list) and len(m["slice"]) == 2 and all(_is_int(v) for v in m["slice"])
                and 0 <= m["slice"][0] <= m["slice"][1] <= m["inputs"]):
            raise bad("slice", f"[start, stop] within 0..{m['inputs']}", m["slice"])
        lo, hi = m["slice"]
    if not isinstance(m.get("complete"), bool):
        raise bad("complete", "true or false", m.get("complete"))
    shards = m.get("shards")
    if not isinstance(shards, list):
        raise bad("shards", "a list", shards)
    names, total, position = set(), 0, lo
    merged = "slice" not in m and m["world_size"] > 1  # ranks' shards one after another, each rank's in order
    for i, shard in enumerate(shards):
        ok = (isinstance(shard, dict) and set(shard) == {"name", "start", "stop", "count"}
              and isinstance(shard["name"], str) and _SHARD_NAME.fullmatch(shard["name"]) is not None
              and all(_is_int(shard[k]) for k in ("start", "stop", "count"))
              and shard["start"] <= shard["stop"] <= hi and shard["count"] <= shard["stop"] - shard["start"]
              and (merged or shard["start"] == position) and shard["name"] not in names)
        if not ok:
            raise bad(f"shards[{i}]", f"{{name: [rank-NNNNN-]shard-NNNNN (unique), start: {position} (where the "
                      f"last ended), stop <= {hi}, count <= stop - start}}", shard)
        names.add(shard["name"])
        total += shard["count"]
        position = shard["stop"]
    if total != m["count"]:
        raise bad("count", f"the sum of the shards' counts ({total})", m["count"])
    failures = m.get("failures")
    entry = (lambda f: isinstance(f, str)) if version == 1 else (
        lambda f: isinstance(f, dict) and set(f) == {"path", "error"} and all(isinstance(v, str) for v in f.values()))
    if not isinstance(failures, list) or not all(entry(f) for f in failures):
        raise bad("failures", "a list of text" if version == 1 else "a list of {path, error} strings",
                  failures)
    return m


def read_manifest(folder: str | os.PathLike, name: str = MANIFEST) -> dict[str, Any]:
    """The manifest of a features folder (checked by :func:`parse_manifest`), or a clear error
    naming the folder."""
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {name}; expected a features folder written by `alexnet-zoo extract`"
                                " (under torchrun, merge the ranks first)")
    try:
        data = read_capped(path, MANIFEST_LIMIT)
    except OSError as err:
        raise CorruptFeatures(f"{path}: cannot read ({err})") from err
    if len(data) > MANIFEST_LIMIT:
        raise CorruptFeatures(f"{path}: larger than {MANIFEST_LIMIT // 2 ** 20} MiB; not a features manifest")
    return parse_manifest(data, path)


def _check_count(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def extract_to_shards(extractor: FeatureExtractor, source: str | os.PathLike | Sequence[str | os.PathLike],
                      out: str | os.PathLike, *, shard_size: int = 10_000, workers: int = 0,
                      rank: int | None = None, world_size: int | None = None, max_shards: int | None = None,
                      progress: bool = True, merge: bool = True, loader: LoaderMode = "auto") -> dict[str, Any]:
    """Extract every image of ``source`` into shards under ``out``; returns this rank's manifest.

    Rerunning continues after the last finished shard (the settings and file list must match).
    ``max_shards`` stops after that many new shards (a time limit, or a test of resuming). Under
    torchrun, ranks meet at a barrier and rank 0 merges the manifests (``merge=False`` skips it).
    ``workers`` decode as :func:`alexnet_zoo.data.batching.iterate_batches`'s ``loader`` mode says.
    Inputs that are no readable picture are listed in the manifest's failures and failures.txt."""
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
    starts = np.linspace(0, len(paths), world_size + 1).astype(int)  # contiguous slices, in rank order
    lo, hi = int(starts[rank]), int(starts[rank + 1])
    prefix = _prefix(rank, world_size)
    manifest_name = MANIFEST if world_size == 1 else f"manifest-{prefix[:-1]}.json"
    settings = {**extractor.info(), "inputs": len(paths), "inputs_sha256": _digest(paths), "shard_size": shard_size,
                "rank": rank, "world_size": world_size, "slice": [lo, hi]}
    manifest: dict[str, Any] = {"format": FORMAT, "version": VERSION, **settings, "count": 0, "shards": [],
                                "failures": [], "complete": False}
    if (out / manifest_name).is_file():
        old = read_manifest(out, manifest_name)
        if old.get("version", 1) != VERSION:
            raise ExtractionMismatch(f"{out}: holds an extraction of an older alexnet_zoo (format version "
                                     f"{old.get('version', 1)}); use another --out folder or remove it")
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
            failures += [{"path": paths[i], "error": err} for i, x, err in batch if x is None]
            if good:
                vectors.append(extractor.embed_batch(torch.stack([x for _, x in good])))
                rows += [paths[i] for i, _ in good]
            bar.update(len(batch))
        name = f"{prefix}shard-{len(manifest['shards']):05d}"
        array = np.concatenate(vectors) if vectors else np.zeros((0, extractor.dim), extractor.dtype)
        _write_npy(out / f"{name}.npy", array)
        _write_paths(out / f"{name}.paths.jsonl", rows)
        manifest["shards"].append(Shard(name, done, stop, len(rows)).__dict__)
        manifest["count"] += len(rows)
        manifest["failures"] += failures
        done, new = stop, new + 1
        manifest["complete"] = done >= hi
        write_json(out / manifest_name, manifest)
        _write_failures(out / (FAILURES if world_size == 1 else f"failures-{prefix[:-1]}.txt"), manifest["failures"])
    bar.close()
    if lo == hi and not (out / manifest_name).is_file():  # an empty slice still says it is done
        manifest["complete"] = True
        write_json(out / manifest_name, manifest)
    if world_size > 1 and merge and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        if rank == 0 and all(_rank_complete(out, r) for r in range(world_size)):
            merge_ranks(out)
        torch.distributed.barrier()
    return manifest


def _rank_complete(out: Path, rank: int) -> bool:
    name = f"manifest-rank-{rank:05d}.json"
    return (out / name).is_file() and read_manifest(out, name)["complete"]


_RANK_ONLY = ("rank", "slice", "count", "shards", "failures", "complete")


def merge_ranks(folder: str | os.PathLike) -> dict[str, Any]:
    """Join the per-rank manifests of a torchrun extraction into ``manifest.json`` and
    ``failures.txt`` (shards in rank order, so rows come in the one-process order)."""
    folder = Path(folder)
    parts = sorted(folder.glob("manifest-rank-*.json"))
    if not parts:
        raise FileNotFoundError(f"{folder}: no manifest-rank-*.json to merge")
    manifests = [read_manifest(folder, p.name) for p in parts]
    world = manifests[0]["world_size"]
    if len(manifests) != world or [m.get("rank") for m in manifests] != list(range(world)):
        raise ExtractionMismatch(f"{folder}: expected manifests of ranks 0..{world - 1}, found "
                                 f"{[m.get('rank') for m in manifests]}")
    unfinished = [m["rank"] for m in manifests if not m["complete"]]
    if unfinished:
        raise ExtractionMismatch(f"{folder}: ranks {unfinished} have not finished; rerun the extraction")
    shared = [{k: v for k, v in m.items() if k not in _RANK_ONLY} for m in manifests]
    slices = [m["slice"] for m in manifests]
    if any(s != shared[0] for s in shared) or slices[0][0] != 0 or slices[-1][1] != manifests[0]["inputs"] \
            or any(a[1] != b[0] for a, b in zip(slices, slices[1:])):
        raise ExtractionMismatch(f"{folder}: the ranks' manifests disagree (settings, or slices that do not tile "
                                 "the inputs); rerun the extraction into an empty folder")
    merged = {k: v for k, v in manifests[0].items() if k not in ("rank", "slice")}
    merged.update(count=sum(m["count"] for m in manifests), shards=[s for m in manifests for s in m["shards"]],
                  failures=[f for m in manifests for f in m["failures"]], complete=True, world_size=world)
    write_json(folder / MANIFEST, merged)
    if merged.get("version", 1) == VERSION:
        _write_failures(folder / FAILURES, merged["failures"])
    return merged


def _check_npy(path: Path, count: int, dim: int, dtype: str) -> None:
    """The header of a shard's .npy says (count, dim) of ``dtype`` and the file holds that many
    bytes, checked before numpy allocates anything a damaged header could ask for."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, found = np.lib.format.read_array_header_1_0(f, max_header_size=10_000)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, found = np.lib.format.read_array_header_2_0(f, max_header_size=10_000)
            else:
                raise ValueError(f"unknown .npy version {version}")
            offset = f.tell()
    except FileNotFoundError as err:
        raise CorruptFeatures(f"{path}: missing (the manifest lists this shard)") from err
    except (ValueError, OSError, SyntaxError, TypeError) as err:
        raise CorruptFeatures(f"{path}: not a .npy file ({str(err)[:200]})") from err
    size = os.path.getsize(path)
    if shape != (count, dim) or fortran or found != np.dtype(dtype) or size != offset + count * dim * found.itemsize:
        raise CorruptFeatures(f"{path}: holds {found} {shape}{' (Fortran order)' if fortran else ''} in {size} bytes; "
                              f"the manifest says {dtype} ({count}, {dim})")


def _read_shard_paths(path: Path, count: int, version: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            if version >= 2:
                return read_path_list(f, path, limit=count, error=CorruptFeatures)
            rows = []
            while line := f.readline(64 * 1024 + 1):  # version 1: one path a line, "\n"-terminated
                if not line.endswith(b"\n") or len(rows) >= count:
                    raise CorruptFeatures(f"{path}: expected {count} lines, each a path ended by a newline")
                rows.append(line[:-1].decode("utf-8", "surrogateescape"))
            return rows
    except FileNotFoundError as err:
        raise CorruptFeatures(f"{path}: missing (the manifest lists this shard)") from err


def read_features(folder: str | os.PathLike, *, mmap: bool = False) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """All rows of a features folder: (vectors (N, dim), paths, manifest), shards in order.
    A torchrun folder whose ranks were not merged yet is merged first."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file() and any(folder.glob("manifest-rank-*.json")):
        merge_ranks(folder)
    manifest = read_manifest(folder)
    version, dim, dtype = manifest.get("version", 1), manifest["dim"], manifest["dtype"]
    vectors, paths = [], []
    for shard in manifest["shards"]:
        npy = folder / f"{shard['name']}.npy"
        _check_npy(npy, shard["count"], dim, dtype)
        array = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
        rows = _read_shard_paths(folder / f"{shard['name']}.paths.{'jsonl' if version >= 2 else 'txt'}",
                                 shard["count"], version)
        if len(rows) != shard["count"]:
            raise CorruptFeatures(f"{folder}/{shard['name']}: {array.shape[0]} vectors, {len(rows)} paths, "
                                  f"manifest says {shard['count']}")
        vectors.append(array)
        paths += rows
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, dim), dtype)
    return stacked, paths, manifest
