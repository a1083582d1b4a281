"""The features folder format: numbered shards of vectors, their paths, and the manifest over them.

A features folder holds ``shard-00000.npy`` (vectors) + ``shard-00000.paths.jsonl`` (row-aligned
paths, one JSON string a line, so any file name round-trips), ``manifest.json`` (model, weights,
layer, preprocessing, dtype, dim, count, the finished shards and the unreadable inputs, exactly) and
``failures.txt`` (the same failures for people: path and reason, one a line, line terminators and
undecodable bytes escaped). A folder grows: an incremental extraction of a source that gained
pictures writes ``inc-00001-shard-00000.*`` (positions in that run's list of new pictures), which
:mod:`alexnet_zoo.retrieval.growth` appends to the manifest with an entry in ``increments`` per
run, and the rows of pictures gone from the source in ``removed`` (format version 3; version 2
folders are read and grown as they are). :func:`read_features` gives the live rows unless asked
for all. Manifests and shard files are parsed as untrusted input
(:func:`parse_manifest`, :func:`read_features`): damage is a :class:`CorruptFeatures` naming the
file, and a shard's ``.npy`` header is checked against the manifest before any array is
allocated. A torchrun job writes ``rank-00001-shard-00000.*`` with a manifest per rank;
:func:`merge_ranks` joins them in rank order, so :func:`read_features` gives the rows of a
one-process run. Which manifest fields are the vectors' provenance (what an index records and
checks) is this format's to say: :func:`provenance`. Writing the shards is
:mod:`alexnet_zoo.retrieval.extraction`'s job.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_zoo.errors import CorruptFeatures, ExtractionMismatch
from alexnet_zoo.eval.precision import PRECISIONS
from alexnet_zoo.paths import atomic_write, read_bounded, write_json
from alexnet_zoo.retrieval.path_lists import read_legacy_path_list, read_path_list, write_path_list
from alexnet_zoo.retrieval.vector_checks import MAX_DIM

__all__ = ["FAILURES", "FORMAT", "GROWN_VERSION", "MANIFEST", "MANIFEST_LIMIT", "PROVENANCE", "VERSION", "Shard",
           "check_npy", "join_ranks", "live_count", "merge_ranks", "parse_manifest",
           "printable", "provenance", "read_features", "read_manifest", "read_paths", "write_failures", "write_npy",
           "write_paths"]

MANIFEST = "manifest.json"
FAILURES = "failures.txt"
FORMAT = "alexnet_zoo.features"  # written into manifest.json: a file format name, not the module path
VERSION = 2  # 2: paths as JSON lines (.paths.jsonl), failures as {"path", "error"}; 1 (no "version"): .paths.txt
GROWN_VERSION = 3  # 3: version 2 plus "increments" and "removed": a folder an incremental extraction grew
MANIFEST_LIMIT = 256 * 2 ** 20  # bytes; a manifest is ~100 bytes a shard and a failure
# the manifest fields that say where the vectors came from: what an index built from them records
PROVENANCE = ("model", "weights", "weights_spec", "layer", "pool", "normalized", "dtype", "precision", "preprocessing")
_SHARD_NAME = re.compile(r"(?:inc-(\d{5})-)?(rank-\d{5}-)?shard-\d{5}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# every character str.splitlines() splits on, and the tab failures.txt separates with
_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029\t")
_RANK_ONLY = ("rank", "slice", "count", "shards", "failures", "complete")
_INCREMENT = {"inputs", "inputs_sha256", "world_size", "removed"}  # one entry of a grown manifest's "increments"


@dataclass(frozen=True)
class Shard:
    """One finished shard: its file stem, the input positions it covers, and its row count."""

    name: str
    start: int
    stop: int
    count: int


def printable(text: str) -> str:
    """``text`` on one line for people (failures.txt, the CLI's output): line terminators and tabs
    escaped as ``\\n`` / ``\\x1c`` / ``\\u2028``, undecodable bytes of a file name as ``\\xff``. Exact
    paths are in the JSON files (manifest, ``--json``), this is for reading."""
    if not any(c in _BREAKS or "\udc80" <= c <= "\udcff" for c in text):
        return text
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff"
                   else c.encode("unicode_escape").decode("ascii") if c in _BREAKS else c for c in text)


def provenance(manifest: dict[str, Any]) -> dict[str, Any]:
    """The fields of a manifest (or of :meth:`FeatureExtractor.info`) that an index built from its
    vectors records and later checks: :data:`PROVENANCE`, in the manifest's order."""
    return {k: v for k, v in manifest.items() if k in PROVENANCE}


# ---- writing --------------------------------------------------------------------------------------

def write_npy(target: Path, array: np.ndarray) -> None:
    """A shard's vectors, written atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
    atomic_write(target, write)


def write_paths(target: Path, paths: Sequence[str]) -> None:
    """A shard's paths, one JSON string a line, written atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write_path_list(f, paths)
    atomic_write(target, write)


def write_failures(target: Path, failures: Sequence[dict[str, str]]) -> None:
    """failures.txt: the manifest's failures for people, path and reason a line (see :func:`printable`)."""
    text = "".join(f"{printable(f['path'])}\t{printable(f['error'])}\n" for f in failures)
    atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# ---- the manifest ---------------------------------------------------------------------------------

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
    if version not in (1, VERSION, GROWN_VERSION) or isinstance(version, bool):
        raise bad("version", f"1, {VERSION} or {GROWN_VERSION} (a newer alexnet_zoo wrote it?)", version)
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
    _check_growth(m, version, bad)
    _check_shards(m, bad)
    failures = m.get("failures")
    entry = (lambda f: isinstance(f, str)) if version == 1 else (
        lambda f: isinstance(f, dict) and set(f) == {"path", "error"} and all(isinstance(v, str) for v in f.values()))
    if not isinstance(failures, list) or not all(entry(f) for f in failures):
        raise bad("failures", "a list of text" if version == 1 else "a list of {path, error} strings",
                  failures)
    return m


def _check_growth(m: dict[str, Any], version: int, bad: Any) -> None:
    """``increment`` (the run number of a manifest of an incremental run not yet folded in),
    ``increments`` (a grown manifest's runs) and ``removed`` (its rows of pictures gone from the
    source: ``{row, path}``, rows ascending) are version 3's; each checked."""
    if "increment" in m and not _is_int(m["increment"], 1, 99_999):
        raise bad("increment", "an integer in 1..99999", m["increment"])
    if version < GROWN_VERSION:
        extra = [k for k in ("increments", "removed") if k in m]
        if extra:
            raise bad(extra[0], f"absent below version {GROWN_VERSION}", m[extra[0]])
        return
    runs = m.get("increments")
    if not isinstance(runs, list) or len(runs) > 99_999 or not all(
            isinstance(r, dict) and set(r) == _INCREMENT and isinstance(r["inputs_sha256"], str)
            and _SHA256.fullmatch(r["inputs_sha256"]) and _is_int(r["inputs"]) and _is_int(r["world_size"], 1)
            and _is_int(r["removed"]) for r in runs):
        raise bad("increments", "a list of {inputs, inputs_sha256, world_size, removed}", runs)
    removed = m.get("removed")
    if not isinstance(removed, list) or not all(isinstance(r, dict) and set(r) == {"row", "path"} and _is_int(r["row"])
                                                and isinstance(r["path"], str) for r in removed):
        raise bad("removed", "a list of {row, path}", removed)
    rows = [r["row"] for r in removed]
    if any(a >= b for a, b in itertools.pairwise(rows)) or (rows and rows[-1] >= m["count"]):
        raise bad("removed", f"rows ascending, each once, below count ({m['count']})", removed[:4])
    if sum(r["removed"] for r in runs) != len(removed):
        raise bad("increments", f"removed counts that sum to the {len(removed)} removed rows", runs)


def _groups(m: dict[str, Any]) -> dict[int, tuple[int, int, bool]]:
    """The runs a manifest's shards belong to: run number -> (start, stop, whether the shards of
    several ranks follow one another there, so positions restart)."""
    lo, hi = m["slice"] if "slice" in m else (0, m["inputs"])
    if "increment" in m:
        return {m["increment"]: (lo, hi, False)}
    groups = {0: (lo, hi, "slice" not in m and m["world_size"] > 1)}
    for number, run in enumerate(m.get("increments", []), 1):
        groups[number] = (0, run["inputs"], run["world_size"] > 1)
    return groups


def _check_shards(m: dict[str, Any], bad: Any) -> None:
    """The slice, completeness and shards of a manifest: shards that tile their run's slice in order
    (a merged manifest: each rank's in order; a grown one: the first run's, then each increment's),
    uniquely named, whose counts sum to its count."""
    if "slice" in m and not (isinstance(m["slice"], list) and len(m["slice"]) == 2
                             and all(_is_int(v) for v in m["slice"]) and 0 <= m["slice"][0] <= m["slice"][1] <= m["inputs"]):
        raise bad("slice", f"[start, stop] within 0..{m['inputs']}", m["slice"])
    if not isinstance(m.get("complete"), bool):
        raise bad("complete", "true or false", m.get("complete"))
    shards = m.get("shards")
    if not isinstance(shards, list):
        raise bad("shards", "a list", shards)
    groups = _groups(m)
    names: set[str] = set()
    total, group, (position, hi, merged) = 0, min(groups), groups[min(groups)]
    for i, shard in enumerate(shards):
        match = _SHARD_NAME.fullmatch(shard["name"]) if isinstance(shard, dict) and isinstance(
            shard.get("name"), str) else None
        number = int(match.group(1) or 0) if match else -1
        if number != group and number in groups and number > group:  # the next run's shards begin
            group, (position, hi, merged) = number, groups[number]
        ok = (match is not None and number == group and set(shard) == {"name", "start", "stop", "count"}
              and all(_is_int(shard[k]) for k in ("start", "stop", "count"))
              and shard["start"] <= shard["stop"] <= hi and shard["count"] <= shard["stop"] - shard["start"]
              and (merged or shard["start"] == position) and shard["name"] not in names)
        if not ok:
            raise bad(f"shards[{i}]", f"{{name: [inc-NNNNN-][rank-NNNNN-]shard-NNNNN (unique, runs in order), "
                      f"start: {position} (where the last ended), stop <= {hi}, count <= stop - start}}", shard)
        names.add(shard["name"])
        total += shard["count"]
        position = shard["stop"]
    if total != m["count"]:
        raise bad("count", f"the sum of the shards' counts ({total})", m["count"])


def live_count(manifest: dict[str, Any]) -> int:
    """The rows :func:`read_features` gives by default: those stored less those removed."""
    return manifest["count"] - len(manifest.get("removed", []))


def read_manifest(folder: str | os.PathLike, name: str = MANIFEST) -> dict[str, Any]:
    """The manifest of a features folder (checked by :func:`parse_manifest`), or a clear error
    naming the folder."""
    path = Path(folder) / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {name}; expected a features folder written by `alexnet-zoo extract`"
                                " (under torchrun, merge the ranks first)")
    return parse_manifest(read_bounded(path, MANIFEST_LIMIT, CorruptFeatures, "a features manifest"), path)


def join_ranks(folder: Path, manifests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One manifest of the per-rank manifests of one run (ranks 0..N-1, all complete, the same
    settings, slices that tile the inputs): shards, counts and failures in rank order."""
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
            or any(a[1] != b[0] for a, b in itertools.pairwise(slices)):
        raise ExtractionMismatch(f"{folder}: the ranks' manifests disagree (settings, or slices that do not tile "
                                 "the inputs); rerun the extraction into an empty folder")
    merged = {k: v for k, v in manifests[0].items() if k not in ("rank", "slice")}
    merged.update(count=sum(m["count"] for m in manifests), shards=[s for m in manifests for s in m["shards"]],
                  failures=[f for m in manifests for f in m["failures"]], complete=True, world_size=world)
    return merged


def merge_ranks(folder: str | os.PathLike) -> dict[str, Any]:
    """Join the per-rank manifests of a torchrun extraction into ``manifest.json`` and
    ``failures.txt`` (shards in rank order, so rows come in the one-process order)."""
    folder = Path(folder)
    parts = sorted(folder.glob("manifest-rank-*.json"))
    if not parts:
        raise FileNotFoundError(f"{folder}: no manifest-rank-*.json to merge")
    merged = join_ranks(folder, [read_manifest(folder, p.name) for p in parts])
    if merged.get("version", 1) >= VERSION:
        write_failures(folder / FAILURES, merged["failures"])
    write_json(folder / MANIFEST, merged)
    return merged


# ---- reading the shards ---------------------------------------------------------------------------

def check_npy(path: Path, count: int, dim: int, dtype: str) -> None:
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
            return read_legacy_path_list(f, path, count, error=CorruptFeatures)  # version 1: one path a line
    except FileNotFoundError as err:
        raise CorruptFeatures(f"{path}: missing (the manifest lists this shard)") from err


def _shard_files(folder: Path, manifest: dict[str, Any], shard: dict[str, Any]) -> tuple[Path, list[str]]:
    """A shard's .npy (header checked) and its paths (as many as the manifest says)."""
    npy = folder / f"{shard['name']}.npy"
    check_npy(npy, shard["count"], manifest["dim"], manifest["dtype"])
    version = manifest.get("version", 1)
    rows = _read_shard_paths(folder / f"{shard['name']}.paths.{'jsonl' if version >= 2 else 'txt'}",
                             shard["count"], version)
    if len(rows) != shard["count"]:
        raise CorruptFeatures(f"{folder}/{shard['name']}: {shard['count']} vectors, {len(rows)} paths, "
                              f"manifest says {shard['count']}")
    return npy, rows


def _check_removed(folder: Path, manifest: dict[str, Any], paths: Sequence[str]) -> None:
    for r in manifest.get("removed", []):
        if paths[r["row"]] != r["path"]:
            raise CorruptFeatures(f"{folder / MANIFEST}: removed row {r['row']} is {paths[r['row']][:80]!r} in the "
                                  f"shards, not {r['path'][:80]!r}")


def read_paths(folder: str | os.PathLike, manifest: dict[str, Any]) -> list[str]:
    """The paths of every stored row of ``manifest``'s shards (the removed ones too), without
    loading a vector: what an incremental extraction compares with the source."""
    folder = Path(folder)
    paths = [p for shard in manifest["shards"] for p in _shard_files(folder, manifest, shard)[1]]
    _check_removed(folder, manifest, paths)
    return paths


def read_features(folder: str | os.PathLike, *, mmap: bool = False,
                  removed: bool = False) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """The live rows of a features folder: (vectors (N, dim), paths, manifest), shards in order.
    Rows of pictures an incremental extraction found gone from the source are left out unless
    ``removed=True`` (then every stored row comes back; ``manifest["removed"]`` lists those rows
    and their paths). ``mmap`` maps the shards (a copy is made when they are joined or filtered).
    A torchrun folder whose ranks were not merged yet is merged first."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file() and any(folder.glob("manifest-rank-*.json")):
        merge_ranks(folder)
    manifest = read_manifest(folder)
    vectors, paths = [], []
    for shard in manifest["shards"]:
        npy, rows = _shard_files(folder, manifest, shard)
        vectors.append(np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False))
        paths += rows
    _check_removed(folder, manifest, paths)
    stacked = (vectors[0] if len(vectors) == 1 else np.concatenate(vectors)) if vectors else \
        np.zeros((0, manifest["dim"]), manifest["dtype"])
    dead = [r["row"] for r in manifest.get("removed", [])]
    if dead and not removed:
        keep = np.ones(len(paths), bool)
        keep[dead] = False
        stacked, paths = stacked[keep], [p for p, k in zip(paths, keep) if k]
    return stacked, paths, manifest
