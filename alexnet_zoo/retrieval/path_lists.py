"""Lists of file paths on disk, as the index folder and the features shards store them.

One JSON string a line, ASCII, so any name round-trips: line terminators, and undecodable bytes
kept by ``surrogateescape``. Reading is bounded (a line at a time, each at most
:data:`PATH_LINE_LIMIT` bytes, never more lines than expected), so a damaged or foreign file costs
no more memory than a good one, and every problem is the caller's typed error naming the file.
The plain one-path-a-line files of earlier versions are read too. stdlib only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from alexnet_zoo.errors import CorruptIndex

__all__ = ["PATH_LINE_LIMIT", "read_legacy_path_list", "read_path_list", "write_path_list"]

PATH_LINE_LIMIT = 64 * 1024  # bytes of one stored path line (PATH_MAX 4096 bytes, escaped: <= 6 chars a byte)


def write_path_list(f: Any, paths: Sequence[str]) -> None:
    """Paths to a binary file, one JSON string a line. ``ensure_ascii`` escapes every line
    terminator and any surrogate (an undecodable byte of a file name), so each name is exactly one
    line and comes back equal, whatever it holds."""
    for start in range(0, len(paths), 65536):
        f.write("".join(json.dumps(p) + "\n" for p in paths[start:start + 65536]).encode("ascii"))


def read_path_list(f: Any, source: str | os.PathLike, *, limit: int | None = None,
                   error: type[Exception] = CorruptIndex) -> list[str]:
    """The paths of a file written by :func:`write_path_list` (read a line at a time, each at most
    :data:`PATH_LINE_LIMIT` bytes, never more than ``limit`` lines: a damaged file costs no more
    memory than a good one). Anything else raises ``error`` naming ``source``."""
    paths: list[str] = []
    number = 0
    while line := f.readline(PATH_LINE_LIMIT + 1):
        number += 1
        if not line.endswith(b"\n"):
            what = "longer than 64 KiB" if len(line) > PATH_LINE_LIMIT else "not ended by a newline (truncated?)"
            raise error(f"{source}: line {number} is {what}; expected one JSON string a line")
        if limit is not None and number > limit:
            raise error(f"{source}: more than the {limit} paths expected")
        try:
            path = json.loads(line)
        except (ValueError, RecursionError) as err:
            raise error(f"{source}: line {number} is not a JSON string ({err})") from err
        if not isinstance(path, str):
            raise error(f"{source}: line {number} holds a {type(path).__name__}; expected a JSON string")
        paths.append(path)
    return paths


def read_legacy_path_list(f: Any, source: str | os.PathLike, count: int, *,
                          error: type[Exception] = CorruptIndex) -> list[str]:
    """The ``count`` paths of a file of the versions before JSON lines (an index's ``paths.txt``, a
    version-1 shard's ``.paths.txt``): one path a line ("\\n" only, so the other line terminators
    stay part of a name), UTF-8 with undecodable bytes kept as surrogates. Anything else raises
    ``error`` naming ``source``."""
    paths = []
    while line := f.readline(PATH_LINE_LIMIT + 1):
        if not line.endswith(b"\n") or len(paths) >= count:
            raise error(f"{source}: expected {count} lines, each a path ended by a newline")
        paths.append(line[:-1].decode("utf-8", "surrogateescape"))
    return paths
