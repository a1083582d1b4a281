"""Where alexnet_zoo keeps what it builds or downloads, and how it writes files: one cache root,
and writes that are never seen half-done (a crash leaves the old file or the new, never a mix)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "cache_dir", "cache_root", "read_bounded", "read_capped", "write_json"]


def _read_umask() -> int:
    mask = os.umask(0)  # the portable way to read it: set and put back, once, at import (one thread)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def cache_root() -> Path:
    """The cache root: ``$ALEXNET_ZOO_CACHE``, else ``$XDG_CACHE_HOME/alexnet_zoo``, else
    ``~/.cache/alexnet_zoo`` (not created: messages name it without touching the disk)."""
    root = os.environ.get("ALEXNET_ZOO_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "alexnet_zoo")
    return Path(root)


def cache_dir(*parts: str) -> Path:
    """The cache root joined with ``parts``; the folder is created."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``target``, then rename it over ``target``.
    The file gets the permissions a plain ``open(target, "w")`` would give (``mkstemp`` makes it
    owner-only, which would hide shared caches, shards and indexes from a team's other users)."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_capped(path: str | os.PathLike, limit: int) -> bytes:
    """The file's bytes, at most ``limit + 1`` of them: a caller refuses ``len(data) > limit`` as too
    large, whatever size the file claims. OSError passes through for the caller to name.
    ``read(n)`` allocates n bytes up front, so the file's own size is asked for, not the limit."""
    with open(path, "rb") as f:
        return f.read(min(os.fstat(f.fileno()).st_size, limit) + 1)


def read_bounded(path: Path, limit: int, error: type[Exception], what: str) -> bytes:
    """The bytes of a file that must stay small (an index's info.json, a features manifest), else
    ``error`` naming the file: unreadable, or larger than ``limit`` and so not ``what``."""
    try:
        data = read_capped(path, limit)
    except OSError as err:
        raise error(f"{path}: cannot read ({err})") from err
    if len(data) > limit:
        raise error(f"{path}: larger than {limit // 2 ** 20} MiB; not {what}")
    return data


def write_json(target: str | os.PathLike, data: Any) -> None:
    """``data`` as indented JSON at ``target``, written atomically (reports, manifests, configs)."""
    atomic_write(Path(target), lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))
