"""The index folder on disk: ``info.json`` naming ``index.<id>.faiss`` + ``paths.<id>.jsonl``.

A folder is saved so that a crash at any moment leaves the old index or the new one loadable at
its path: the data files of a save get a fresh id, and ``info.json`` (replaced atomically, last)
names the pair that belongs together; files no ``info.json`` names are removed by the next save
or load. Paths are stored by :mod:`alexnet_zoo.retrieval.path_lists`. ``info.json`` is parsed as
untrusted input (:func:`parse_info`): a typed :class:`CorruptIndex` naming the file, never another
exception. Folders of earlier versions (fixed names ``index.faiss`` + ``paths.txt``, or an
interrupted save's copies beside the folder) are still read. faiss, numpy and stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from alexnet_zoo.errors import CorruptIndex, IndexMismatch, RetrievalError
from alexnet_zoo.eval.precision_names import PRECISIONS
from alexnet_zoo.paths import read_bounded
from alexnet_zoo.retrieval.index_pca import check_chain
from alexnet_zoo.retrieval.index_policy import KINDS, kind_of
from alexnet_zoo.retrieval.path_lists import read_legacy_path_list, read_path_list, write_path_list
from alexnet_zoo.retrieval.vector_checks import MAX_DIM, METRICS

__all__ = ["FORMAT", "INDEX_FILE", "INFO_FILE", "INFO_LIMIT", "MAX_SEARCH_PARAM", "PATHS_FILE", "check_index",
           "parse_info", "read_folder", "recover", "tidy", "write_folder"]

INFO_FILE = "info.json"
INDEX_FILE, PATHS_FILE = "index.faiss", "paths.txt"  # the fixed names of folders saved before the ids (read only)
_DATA_FILE = re.compile(r"(index|paths)\.([0-9a-f]{16})\.(faiss|jsonl)")
_STAGED = re.compile(r"\.info\.json\.[^/]*\.tmp")  # an info.json being written (see _write_synced)
FORMAT = "alexnet_zoo.index"  # written into info.json: a file format name, not the module path
INFO_LIMIT = 16 * 2 ** 20  # bytes: an info.json is a few kB; a bigger one is not ours (and not read into memory)
MAX_SEARCH_PARAM = 2 ** 16  # nprobe / efSearch: beyond this a search costs more than exact search
Step = Callable[[str], None]  # marks each step of a save (the crash tests end the process at one)


# ---- info.json ------------------------------------------------------------------------------------

def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and low <= value <= high


def parse_info(data: bytes, source: str | os.PathLike = INFO_FILE) -> dict[str, Any]:
    """The fields of an index's info.json, each checked (it comes with a folder anyone could have
    made): a :class:`CorruptIndex` naming ``source`` and the field for anything unexpected."""
    def bad(field: str, expected: str, value: Any) -> CorruptIndex:
        shown = repr(value)
        return CorruptIndex(f"{source}: {field} must be {expected}, got {shown[:80]}{'...' if len(shown) > 80 else ''}")

    try:
        info = json.loads(data)
    except (ValueError, RecursionError) as err:  # RecursionError: "[[[[..." nested beyond the parser's stack
        raise CorruptIndex(f"{source}: not JSON ({str(err)[:200]})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CorruptIndex(f"{source}: not an alexnet_zoo index info.json (expected an object with "
                           f"\"format\": \"{FORMAT}\")")
    if not _is_int(info.get("dim"), 1, MAX_DIM):
        raise bad("dim", f"an integer in 1..{MAX_DIM}", info.get("dim"))
    if not _is_int(info.get("count"), 0, 2 ** 48):
        raise bad("count", "an integer >= 0", info.get("count"))
    if info.get("metric") not in METRICS:
        raise bad("metric", "'cosine' or 'l2'", info.get("metric"))
    factory = info.get("factory")
    if not isinstance(factory, str) or len(factory) > 200:
        raise bad("factory", "a FAISS factory string", factory)
    kind = info.get("kind", kind_of(factory))
    structure = {"exact": factory == "Flat", "hnsw": factory.startswith("HNSW"),
                 **{k: "IVF" in factory and kind_of(factory) == k for k in ("ivf", "ivfpq")}}
    if kind not in KINDS:
        raise bad("kind", " or ".join(f"'{k}'" for k in KINDS), kind)
    if not structure[kind]:
        raise bad("factory", f"a factory string of the {kind} kind", factory)
    params = info.get("search_params", {})
    allowed = {"exact": (), "ivf": ("nprobe",), "ivfpq": ("nprobe",), "hnsw": ("efSearch",)}[kind]
    if not isinstance(params, dict) or any(k not in allowed or not _is_int(v, 1, MAX_SEARCH_PARAM)
                                           for k, v in params.items()):
        raise bad("search_params", f"an object of {' / '.join(allowed) or 'no'} parameters, integers in "
                  f"1..{MAX_SEARCH_PARAM}, for a {kind} index", params)
    if "files" in info and not _files_ok(info["files"]):  # absent: a folder of the old format, with the fixed names
        raise bad("files", "{\"index\": \"index.<id>.faiss\", \"paths\": \"paths.<id>.jsonl\"} (one 16-hex id, "
                  "no folders)", info["files"])
    _check_provenance(info, bad)
    _check_updates(info, bad)
    return {**info, "kind": kind, "search_params": dict(params)}


def _check_updates(info: dict[str, Any], bad: Callable[[str, str, Any], CorruptIndex]) -> None:
    """``pca`` (the projection in front of the index) and ``changes_since_recall``, where present."""
    pca = info.get("pca")
    if "pca" in info and not (isinstance(pca, dict) and _is_int(pca.get("dim"), 1, info["dim"])
                              and pca.get("whiten") in (True, False) and isinstance(pca.get("whiten"), bool)
                              and _is_int(pca.get("trained_on"), pca["dim"], 2 ** 48)
                              and pca.get("train") in ("indexed", "separate")
                              and _is_number(pca.get("recall_at_10_original", 1), 0, 1)):
        raise bad("pca", f"an object with dim (1..{info['dim']}), whiten (true / false), trained_on (>= dim), "
                  "train ('indexed' / 'separate') and recall_at_10_original (0..1)", pca)
    since = info.get("changes_since_recall")
    if "changes_since_recall" in info and not (isinstance(since, dict) and set(since) == {"added", "removed"}
                                               and all(_is_int(v, 0, 2 ** 48) for v in since.values())):
        raise bad("changes_since_recall", "an object of added and removed counts (integers >= 0)", since)


def _files_ok(files: Any) -> bool:
    """``files`` names one save's pair: ``index.<id>.faiss`` and ``paths.<id>.jsonl``, the same id."""
    tokens = {k: _DATA_FILE.fullmatch(v) if isinstance(v, str) else None
              for k, v in files.items()} if isinstance(files, dict) else {}
    return (set(tokens) == {"index", "paths"} and all(tokens.values())
            and tokens["index"].group(1, 3) == ("index", "faiss") and tokens["paths"].group(1, 3) == ("paths", "jsonl")
            and tokens["index"].group(2) == tokens["paths"].group(2))


def _check_provenance(info: dict[str, Any], bad: Callable[[str, str, Any], CorruptIndex]) -> None:
    """The identity fields the vectors came with and the build's measurements, where present."""
    for key in ("model", "weights", "layer", "weights_spec"):
        if key in info and not (isinstance(info[key], str) and len(info[key]) <= 4096) \
                and not (key == "weights_spec" and info[key] is None):
            raise bad(key, "a string", info[key])
    checks = {"pool": ((None, "avg", "max"), "null, 'avg' or 'max'"), "normalized": ((True, False), "true or false"),
              "dtype": (("float32", "float16"), "'float32' or 'float16'"),
              "precision": (PRECISIONS, " or ".join(map(repr, PRECISIONS)))}
    for key, (values, expected) in checks.items():
        if key in info and not any(info[key] is v or (isinstance(v, str) and info[key] == v) for v in values):
            raise bad(key, expected, info[key])
    if "preprocessing" in info and not isinstance(info["preprocessing"], dict):
        raise bad("preprocessing", "an object", info["preprocessing"])
    for key, low, high in (("recall_at_10", 0, 1), ("build_seconds", 0, math.inf), ("bytes_per_vector", 0, math.inf)):
        if key in info and not _is_number(info[key], low, high):
            raise bad(key, f"a number in [{low}, {high}]", info[key])
    if "recall_queries" in info and not _is_int(info["recall_queries"], 0, 2 ** 48):
        raise bad("recall_queries", "an integer >= 0", info["recall_queries"])


def _read_info(path: Path) -> dict[str, Any]:
    """info.json read (refusing one larger than :data:`INFO_LIMIT` before reading it) and parsed."""
    return parse_info(read_bounded(path, INFO_LIMIT, CorruptIndex, f"an alexnet_zoo {path.name}"), path)


def check_index(index: faiss.Index, info: dict[str, Any], source: Path) -> None:
    """The FAISS file agrees with info.json: vectors of ids 0..count-1, its dim, metric and kind."""
    expected_metric = faiss.METRIC_INNER_PRODUCT if info["metric"] == "cosine" else faiss.METRIC_L2
    if not isinstance(index, faiss.IndexIDMap2):
        raise CorruptIndex(f"{source}: a {type(index).__name__}; expected the IndexIDMap2 `index build` writes")
    inner = faiss.downcast_index(index.index)
    if "pca" in info:
        inner = check_chain(inner, info["pca"], info["dim"], info["metric"], source)
    elif isinstance(inner, faiss.IndexPreTransform) and not isinstance(
            faiss.downcast_VectorTransform(inner.chain.at(0)), faiss.PCAMatrix):  # an IVF-PQ factory's PCAR is one
        raise CorruptIndex(f"{source}: a transform in front of the index that {INFO_FILE} names no \"pca\" for")
    ivf = faiss.try_extract_index_ivf(inner)
    kind = ("exact" if isinstance(inner, faiss.IndexFlat) else "hnsw" if isinstance(inner, faiss.IndexHNSW)
            else "other" if ivf is None else "ivf" if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFlat)
            else "ivfpq")
    if index.ntotal != info["count"] or index.d != info["dim"] or index.metric_type != expected_metric \
            or kind != info["kind"]:
        raise CorruptIndex(f"{source}: {index.ntotal} vectors of dim {index.d}, {kind}, metric {index.metric_type}; "
                           f"{INFO_FILE} says {info['count']} of dim {info['dim']}, {info['kind']}, {info['metric']}")
    ids = faiss.vector_to_array(index.id_map)
    if not np.array_equal(ids, np.arange(len(ids), dtype=ids.dtype)):
        raise CorruptIndex(f"{source}: ids are not the row numbers 0..{len(ids) - 1}")


# ---- saving and loading ---------------------------------------------------------------------------

def write_folder(folder: Path, write_index: Callable[[Path], None], paths: Sequence[str], info: dict[str, Any],
                 *, step: Step) -> dict[str, Any]:
    """Save an index into ``folder`` (see the module's docstring): ``write_index(path)`` writes the
    FAISS file; returns the info.json written (``info`` and the data files it names). A folder that
    holds anything but an index is refused, not overwritten. New folders follow the umask."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        if not folder.is_dir():
            raise RetrievalError(f"{folder}: exists and is not a folder; expected an index folder or a new "
                                 "path") from None
    with _locked(folder, exclusive=True):
        _claim(folder)
        token = secrets.token_hex(8)
        files = {"index": f"index.{token}.faiss", "paths": f"paths.{token}.jsonl"}
        step("save:start")
        _write_synced(folder / files["index"], write_index, step=step)
        step("save:index-written")
        _write_synced(folder / files["paths"], lambda path: _write_paths_file(path, paths), step=step)
        step("save:paths-written")
        info = {**info, "files": files}
        _write_synced(folder / INFO_FILE, lambda path: path.write_text(json.dumps(info, indent=2) + "\n"),
                      atomic=True, step=step)
        step("save:committed")
        _sweep(folder, _files_of(info))
        step("save:swept")
    _sweep_siblings(folder)
    return info


def read_folder(folder: Path, *, mmap: bool = False, expected: Mapping[str, Any] | None = None
                ) -> tuple[faiss.Index, list[str], dict[str, Any]]:
    """(FAISS index, paths, info) of an index folder, each file checked against info.json; the
    ``expected`` fields (None: any) must match info.json, else an :class:`IndexMismatch`."""
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise CorruptIndex(f"{folder}: missing {INFO_FILE}; expected an index folder from `alexnet-zoo index build`")
    with _locked(folder, exclusive=False):
        info = _read_info(info_path)
        for key, want in (expected or {}).items():
            if want is not None and info.get(key) != want:
                raise IndexMismatch(f"{folder}: built from {key}={info.get(key)!r}, expected {key}={want!r}")
        files = info.get("files", {"index": INDEX_FILE, "paths": PATHS_FILE})
        index_path, paths_path = folder / files["index"], folder / files["paths"]
        missing = [p.name for p in (index_path, paths_path) if not p.is_file()]
        if missing:
            raise CorruptIndex(f"{folder}: missing {', '.join(missing)} (named by {INFO_FILE}); expected an index "
                               "folder from `alexnet-zoo index build`")
        try:
            index = faiss.read_index(str(index_path), faiss.IO_FLAG_MMAP if mmap else 0)
        except (RuntimeError, MemoryError) as err:
            raise CorruptIndex(f"{index_path}: not a readable FAISS index "
                               f"({(str(err).splitlines() or [type(err).__name__])[0]})") from err
        check_index(index, info, index_path)
        with open(paths_path, "rb") as f:
            paths = (read_path_list(f, paths_path, limit=info["count"]) if "files" in info
                     else read_legacy_path_list(f, paths_path, info["count"]))
    if len(paths) != info["count"]:
        raise CorruptIndex(f"{paths_path}: {len(paths)} paths, {INFO_FILE} says {info['count']}")
    return index, paths, info


def tidy(folder: Path) -> None:
    """Remove the leftovers of an interrupted save, when the folder is writable and no save holds it
    (a read-only folder keeps its leftovers; they do no harm)."""
    with contextlib.suppress(OSError):
        with _locked(folder, exclusive=True, wait=False) as got:
            if got:
                _sweep(folder, _files_of(_read_info(folder / INFO_FILE)))
        _sweep_siblings(folder)


def _write_paths_file(path: Path, paths: Sequence[str]) -> None:
    with open(path, "wb") as f:
        write_path_list(f, paths)


def _write_synced(target: Path, write: Callable[[Path], None], *, step: Step, atomic: bool = False) -> None:
    """``write(path)`` to ``target`` (to a temporary name renamed over it when ``atomic``), then
    flush it to disk, so info.json can never name data a power cut would lose. The umask decides
    the mode (a plain ``open``)."""
    path = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp") if atomic else target
    try:
        write(path)
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
        if atomic:
            step("save:info-staged")
            os.replace(path, target)
            _fsync_dir(target.parent)
    finally:
        if atomic and path.exists():
            path.unlink()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform / filesystem can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _locked(folder: Path, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """An advisory lock on the folder itself (no lock file to leave behind): saves exclude each
    other and readers, so a load never sees the files of a half-done save swept away. Yields
    whether it was taken; where the platform or filesystem has no flock, it goes unlocked."""
    try:
        import fcntl  # POSIX only: imported where it is used, so the module loads everywhere
        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield True
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        except OSError:  # ENOLCK / EOPNOTSUPP (some network filesystems)
            pass
        yield True
    finally:
        os.close(fd)


# ---- what is ours, and the leftovers of interrupted saves --------------------------------------

def _files_of(info: dict[str, Any]) -> set[str]:
    """The data files an info.json names (the fixed names, for a folder of the old format)."""
    return set(info.get("files", {"index": INDEX_FILE, "paths": PATHS_FILE}).values())


def _ours(name: str) -> bool:
    return bool(_DATA_FILE.fullmatch(name) or _STAGED.fullmatch(name)) or name in (INFO_FILE, INDEX_FILE, PATHS_FILE)


def _claim(folder: Path) -> None:
    """Refuse to save into a folder of other things (``--out ~/photos`` must not mix an index into
    them); an index folder, or an empty one, is fine. Extra files beside an index are left alone."""
    names = os.listdir(folder)
    if names and INFO_FILE not in names and not all(_ours(n) for n in names):
        others = sorted(n for n in names if not _ours(n))
        raise RetrievalError(f"{folder}: holds {', '.join(others[:5])}{' ...' if len(others) > 5 else ''} and no "
                             f"{INFO_FILE}; it is not an index folder: choose another path or empty it")


def _sweep(folder: Path, keep: set[str]) -> None:
    """Remove the data files no info.json names (the previous save's, an interrupted one's),
    staged info.json copies, and the fixed-name files of the old format once replaced. ``keep``:
    the files info.json names (:func:`_files_of`)."""
    for name in os.listdir(folder):
        if name not in keep and name != INFO_FILE and _ours(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)


def _legacy_siblings(folder: Path) -> list[Path]:
    """Copies an older version's save left beside the folder when it died between its two renames
    (``.NAME.old-PID``: the old index; ``.NAME.XXXX.tmp``: the new one, maybe half written)."""
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.(old-\d+|[A-Za-z0-9_]+\.tmp)")
    try:
        names = os.listdir(folder.parent)
    except OSError:
        return []
    found = [folder.parent / n for n in names if pattern.fullmatch(n) and (folder.parent / n).is_dir()]
    return sorted(found, key=lambda p: (not p.name.endswith(".tmp"), p.name))  # the newer (.tmp) first


def recover(folder: Path, load: Callable[[Path], Any]) -> None:
    """Put back the index an older version's interrupted save left beside a missing folder: the
    new copy when it is complete (``load`` reads it without error), else the old one. Called by
    the index's save and load, so the warning names their caller."""
    for candidate in _legacy_siblings(folder):
        try:
            load(candidate)
        except (RetrievalError, OSError):
            continue
        with contextlib.suppress(OSError):
            os.replace(candidate, folder)
            warnings.warn(f"{folder}: recovered the index an interrupted save left in {candidate.name}", stacklevel=3)
            return


def _sweep_siblings(folder: Path) -> None:
    """Remove an older version's leftover copies once the folder itself holds an index."""
    for candidate in _legacy_siblings(folder):
        if all(_ours(n) for n in os.listdir(candidate)):
            shutil.rmtree(candidate, ignore_errors=True)
