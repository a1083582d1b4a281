"""The one reader of ``path,group`` CSV files: a dedupe label file and a benchmark's groups file.

Both are CSV (quoted fields may hold commas and newlines), UTF-8 (a BOM is skipped), one picture a
row with the name of its group; empty rows are skipped, a picture is listed once. They differ in
two checks, chosen by the caller: the header (``header="required"``: line 1 is exactly
``path,group``; ``"optional"``: a first line ``path,group``, ``filename,group_id``, ``image,label``
and the like is skipped) and the paths (``root=None``: kept verbatim, as an index stores them;
``root`` a folder: stripped, relative to it, inside it and naming an image file there). Every fault
is the caller's ``error`` (a :class:`~alexnet_zoo.errors.LabelFileError`) naming the file, the line
and what was expected. Torch-free: stdlib and alexnet_zoo.errors / paths only.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alexnet_zoo.errors import LabelFileError
from alexnet_zoo.paths import read_bounded

__all__ = ["GROUP_HEADERS", "PATH_HEADERS", "GroupRow", "read_group_csv"]

PATH_HEADERS, GROUP_HEADERS = {"path", "filename", "file", "image"}, {"group", "group_id", "label"}


@dataclass(frozen=True)
class GroupRow:
    """One picture of the file: the ``line`` it starts on, its ``path`` and its ``group``."""

    line: int
    path: str
    group: str


def _text(path: Path, limit: int, error: type[LabelFileError]) -> str:
    data = read_bounded(path, limit, error, "a path,group CSV")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {err.start}); expected a UTF-8 path,group CSV") from None
    if "\x00" in text:
        raise error(f"{path}:{text[:text.index(chr(0))].count(chr(10)) + 1}: a NUL byte; not a text file")
    return text


def _shown(cells: list[str]) -> str:
    text = ",".join(cells)
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


def _is_header(cells: list[str], header: str) -> bool:
    if header == "required":
        return [c.strip() for c in cells] == ["path", "group"]
    return len(cells) >= 2 and cells[0].strip().lower() in PATH_HEADERS and cells[1].strip().lower() in GROUP_HEADERS


def _check_inside(path: Path, line: int, name: str, root: Path, suffixes: Collection[str],
                  error: type[LabelFileError]) -> None:
    image = Path(name)
    if image.is_absolute() or ".." in image.parts:
        raise error(f"{path}:{line}: {name!r}: expected a path inside {root}, relative to it")
    if not (root / image).is_file() or (suffixes and image.suffix.lower() not in suffixes):
        raise error(f"{path}:{line}: {name!r}: expected an image file in {root}")


def read_group_csv(path: str | os.PathLike, *, limit: int, error: type[LabelFileError] = LabelFileError,
                   header: Literal["required", "optional"] = "required", root: str | os.PathLike | None = None,
                   suffixes: Collection[str] = ()) -> list[GroupRow]:
    """The rows of a ``path,group`` CSV of at most ``limit`` bytes, in the file's order (see the
    module's docstring for ``header`` and ``root``; ``suffixes``: with ``root``, those an image
    file's name must end in)."""
    path = Path(path)
    reader = csv.reader(io.StringIO(_text(path, limit, error), newline=""), strict=True)
    rows: list[GroupRow] = []
    seen: dict[str, int] = {}
    try:
        for cells in reader:
            line = reader.line_num - sum(c.count("\n") for c in cells)  # the line the row starts on
            if line == 1 and _is_header(cells, header):
                continue
            if line == 1 and header == "required":
                raise error(f"{path}:1: expected the header 'path,group', got {_shown(cells)}")
            if not any(c.strip() for c in cells):
                continue
            name = cells[0].strip() if root is not None else cells[0]
            if len(cells) != 2 or not name or not cells[1].strip():
                raise error(f"{path}:{line}: expected 'path,group' (two fields, neither empty), got "
                            f"{len(cells)} field(s): {_shown(cells)}")
            if root is not None:
                _check_inside(path, line, name, Path(root), suffixes, error)
            key = os.path.normpath(name) if root is not None else name
            if key in seen:
                raise error(f"{path}:{line}: {name[:80]!r} is listed twice (first on line {seen[key]}); a picture "
                            "belongs to one group")
            seen[key] = line
            rows.append(GroupRow(line, name, cells[1].strip()))
    except csv.Error as err:
        raise error(f"{path}:{reader.line_num}: not valid CSV ({err}); expected 'path,group' lines") from None
    if not rows:
        raise error(f"{path}: no labelled pictures in it; expected 'path,group' rows")
    return rows
