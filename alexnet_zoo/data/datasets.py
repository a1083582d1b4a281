"""Labelled image folders as (path, label) lists, and a Dataset that decodes them for evaluation.

ImageNet validation sets come in several layouts: one folder per WNID (torchvision's ImageFolder),
a flat folder with Caffe's ``val.txt`` (``ILSVRC2012_val_00000001.JPEG 65``), a CSV of
``filename,class_index``, or WNID-prefixed filenames (``n01440764_10026.JPEG``). Each becomes the
same list of ``(path, class_index)`` in the Caffe / torchvision class order (sorted WNIDs), or an
error naming the folder or file and what was expected.

:class:`ImageDataset` decodes with :func:`~alexnet_zoo.data.images.read_image` and resizes as the
weights' :class:`~alexnet_zoo.data.transforms.Preprocessing` says, returning square uint8 images so
that batches stack and crops are cut later, on whole batches. A file that cannot be read comes
back as a marker carrying the error, never as an exception: one bad JPEG must not kill a
DataLoader worker, and with it a 50,000-image run.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from alexnet_zoo.data.categories import MAX_CLASSES, WNID, imagenet_categories
from alexnet_zoo.data.images import IMAGE_SUFFIXES, read_image
from alexnet_zoo.data.transforms import ImagePreprocess, Preprocessing
from alexnet_zoo.errors import LabelFileError, failure_message

__all__ = ["Batch", "ImageDataset", "Item", "LabelledImages", "collate", "find_labelled_images",
           "from_label_file", "from_wnid_folders", "from_wnid_prefixes"]

LABEL_FILES = ("val.txt", "labels.txt", "labels.csv", "val.csv")  # looked for in the data folder
_WNID_PREFIX = re.compile(f"({WNID.pattern})_")
_CLASS_INDEX = re.compile(r"[0-9]{1,7}")  # below 10**7 > MAX_CLASSES: int() of it is cheap and never fails
_CAFFE_LINE = re.compile(r".*\S\s+[0-9]{1,7}", re.DOTALL)


@dataclass(frozen=True)
class LabelledImages:
    """Where labelled images were found and how they are labelled."""

    root: Path
    layout: str  # "wnid_folders", "label_file", "csv" or "wnid_prefix"
    samples: tuple[tuple[str, int], ...]  # (path, class index), in a stable order
    label_file: Path | None = None
    missing: tuple[str, ...] = ()  # named by the label file but not in the folder

    def describe(self) -> str:
        source = f" ({self.label_file})" if self.label_file else ""
        return f"{len(self.samples):,} images in {self.root}, layout {self.layout}{source}"


def _wnid_index() -> dict[str, int]:
    return {c.wnid: c.index for c in imagenet_categories()}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def find_labelled_images(root: str | os.PathLike, labels: str | os.PathLike | None = None) -> LabelledImages:
    """The labelled images under ``root``: with ``labels`` (a Caffe ``val.txt`` or a CSV), that
    file names them; otherwise one folder per WNID, else a label file in ``root``
    (val.txt, labels.txt, labels.csv, val.csv), else WNID-prefixed filenames."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected a folder of ImageNet images)")
    if labels is not None:
        return from_label_file(root, labels)
    if any(WNID.fullmatch(d.name) for d in root.iterdir() if d.is_dir()):
        return from_wnid_folders(root)
    for name in LABEL_FILES:
        if (root / name).is_file():
            return from_label_file(root, root / name)
    if any(_WNID_PREFIX.match(f.name) for f in root.iterdir() if _is_image(f)):
        return from_wnid_prefixes(root)
    folders = sorted(d.name for d in root.iterdir() if d.is_dir())
    hint = f"; it holds the folders {', '.join(folders[:5])}: point --data at one of them" if folders else ""
    raise ValueError(f"{root}: no labelled images found. Expected one folder per WNID (n01440764/...), a label "
                     f"file ({', '.join(LABEL_FILES)}, or --labels FILE: Caffe 'NAME CLASS_INDEX' lines or a CSV "
                     f"filename,class_index), or WNID-prefixed files (n01440764_*.JPEG){hint}")


def from_wnid_folders(root: str | os.PathLike) -> LabelledImages:
    """``root/n01440764/*.JPEG`` ...: every image below a WNID folder, labelled by that WNID."""
    root = Path(root)
    index = _wnid_index()
    samples = []
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and WNID.fullmatch(d.name)):
        if folder.name not in index:
            raise ValueError(f"{folder}: {folder.name} is not one of the 1,000 ILSVRC-2012 WNIDs")
        label = index[folder.name]
        samples += [(str(f), label) for f in sorted(folder.rglob("*")) if _is_image(f)]
    if not samples:
        raise ValueError(f"{root}: its WNID folders hold no images (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
    return LabelledImages(root, "wnid_folders", tuple(samples))


def from_wnid_prefixes(root: str | os.PathLike) -> LabelledImages:
    """``root/n01440764_10026.JPEG`` ...: flat folder, each file labelled by its WNID prefix."""
    root = Path(root)
    index = _wnid_index()
    samples, unlabelled = [], []
    for f in sorted(f for f in root.iterdir() if _is_image(f)):
        match = _WNID_PREFIX.match(f.name)
        if not match:
            unlabelled.append(f.name)
            continue
        if match.group(1) not in index:
            raise ValueError(f"{f}: {match.group(1)} is not one of the 1,000 ILSVRC-2012 WNIDs")
        samples.append((str(f), index[match.group(1)]))
    if unlabelled:
        raise ValueError(f"{root}: {len(unlabelled)} image(s) without a WNID prefix ({', '.join(unlabelled[:3])}); "
                         f"expected names like n01440764_10026.JPEG, or give a label file with --labels")
    if not samples:
        raise ValueError(f"{root}: no WNID-prefixed images (n01440764_*.JPEG)")
    return LabelledImages(root, "wnid_prefix", tuple(samples))


def from_label_file(root: str | os.PathLike, labels: str | os.PathLike) -> LabelledImages:
    """Images of ``root`` named in ``labels``: Caffe's ``val.txt`` (``NAME CLASS_INDEX`` per line)
    or a CSV (``filename,class_index``, with or without a header; a ``wnid`` column also works).
    Names are relative to ``root``. Files the label file names but ``root`` lacks are returned in
    ``missing`` (a partial copy of the validation set is fine); if none is present, it is an error.
    A malformed file raises :class:`LabelFileError` naming the file and line."""
    root, labels = Path(root), Path(labels)
    if not labels.is_file():
        raise FileNotFoundError(f"{labels}: no such label file")
    text = _decode(labels, labels.read_bytes())
    first = next((line for line in _lines(text) if line.strip()), "")
    is_csv = labels.suffix.lower() == ".csv" or _looks_like_csv(first)
    rows = _parse_csv(labels, text) if is_csv else _parse_caffe(labels, text)
    if not rows:
        raise LabelFileError(f"{labels}: no labels in it")
    absolute = next(((i, name) for i, (name, _) in enumerate(rows) if os.path.isabs(name) or "\0" in name), None)
    if absolute is not None:
        raise LabelFileError(f"{labels}: file names must be relative to {root}, got {absolute[1]!r} (row "
                             f"{absolute[0] + 1})")
    present = {e.name for e in os.scandir(root)}  # one listing, not 50,000 stat calls
    samples, missing = [], []
    for name, label in rows:
        flat = "/" not in name and os.sep not in name
        if (name in present) if flat else _is_file(root / name):
            samples.append((str(root / name), label))
        else:
            missing.append(name)
    if not samples:
        raise LabelFileError(f"{labels}: none of the {len(rows):,} files it names is in {root} "
                             f"(first: {rows[0][0]!r})")
    return LabelledImages(root, "csv" if is_csv else "label_file", tuple(samples), labels, tuple(missing))


def _is_file(path: Path) -> bool:
    """Path.is_file, False also for names the OS refuses (too long: ENAMETOOLONG is raised)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _looks_like_csv(first: str) -> bool:
    """Whether a label file not named .csv is one, from its first line: a comma, unless the line
    reads as Caffe's ``NAME INDEX`` whose name holds the comma (``d,e.png 0``)."""
    if "," not in first:
        return False
    if not _CAFFE_LINE.fullmatch(first.strip()):
        return True
    try:
        cells = next(csv.reader([first]), [])
    except csv.Error:
        return True  # the CSV parser then names the line
    return len(cells) > 1 and _label_value(cells[1].strip(), _wnid_index()) is not None


def _decode(labels: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise LabelFileError(f"{labels}:{line}: not UTF-8 text (byte {err.start}); expected a UTF-8 label "
                             f"file") from err


def _lines(text: str) -> list[str]:
    """Lines split at \\n (and \\r\\n) only: ``str.splitlines`` also splits at characters a file
    name may hold (\\x0b, \\x1c, \\x85, U+2028, ...), which would cut one entry in two."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _short(line: str) -> str:
    text = repr(line)
    return text if len(text) <= 100 else f"{text[:97]}..."


def _parse_caffe(labels: Path, text: str) -> list[tuple[str, int]]:
    rows = []
    for lineno, line in enumerate(_lines(text), 1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) != 2 or not _CLASS_INDEX.fullmatch(parts[1]):
            raise LabelFileError(f"{labels}:{lineno}: expected 'FILENAME CLASS_INDEX' (Caffe val.txt; a class index "
                                 f"of at most 7 digits), got {_short(line)}")
        rows.append((parts[0], _class_index(labels, lineno, int(parts[1]))))
    return rows


def _class_index(labels: Path, lineno: int, value: int) -> int:
    if value >= MAX_CLASSES:
        raise LabelFileError(f"{labels}:{lineno}: class index {value} is not below {MAX_CLASSES:,}")
    return value


_FILE_COLUMNS = ("filename", "file", "path", "image", "name")
_LABEL_COLUMNS = ("class_index", "label", "class", "index", "target")


def _parse_csv(labels: Path, text: str) -> list[tuple[str, int]]:
    reader = csv.reader(io.StringIO(text, newline=""))  # quoted fields may hold newlines, as csv writes them
    table: list[list[str]] = []
    lines: list[int] = []  # the line each kept row starts on
    try:
        start = 1
        for row in reader:
            if any(cell.strip() for cell in row):
                table.append(row)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        raise LabelFileError(f"{labels}:{reader.line_num}: not a readable CSV row ({err})") from err
    header = [cell.strip().lower() for cell in table[0]] if table else []
    index = _wnid_index()
    file_col, label_col, wnid_col = 0, 1, None
    if header and _label_value(header[1] if len(header) > 1 else "", index) is None:
        file_col = next((header.index(c) for c in _FILE_COLUMNS if c in header), None)
        label_col = next((header.index(c) for c in _LABEL_COLUMNS if c in header), None)
        wnid_col = header.index("wnid") if "wnid" in header else None
        if file_col is None or (label_col is None and wnid_col is None):
            raise LabelFileError(f"{labels}:{lines[0]}: expected a header with a filename column "
                                 f"({', '.join(_FILE_COLUMNS)}) and a class column ({', '.join(_LABEL_COLUMNS)} or "
                                 f"wnid), got {_short(','.join(table[0]))}")
        table, lines = table[1:], lines[1:]
    rows = []
    for lineno, row in zip(lines, table):
        col = label_col if label_col is not None else wnid_col
        if len(row) <= max(file_col, col):
            raise LabelFileError(f"{labels}:{lineno}: expected filename,class_index, got {_short(','.join(row))}")
        label = _label_value(row[col].strip(), index)
        if label is None:
            raise LabelFileError(f"{labels}:{lineno}: {_short(row[col])} is neither a class index nor an ILSVRC-2012 "
                                 f"WNID (expected at most 7 digits, or n########)")
        rows.append((row[file_col].strip(), _class_index(labels, lineno, label)))
    return rows


def _label_value(cell: str, index: dict[str, int] | None) -> int | None:
    if _CLASS_INDEX.fullmatch(cell):
        return int(cell)
    if index is not None and cell in index:
        return index[cell]
    return None


# ---- decoding ------------------------------------------------------------------------------------

class Item(NamedTuple):
    """One dataset entry: its images (one per size) or, when unreadable, the error instead."""

    index: int
    label: int
    images: tuple[Tensor, ...] | None
    error: str | None


class ImageDataset(Dataset):
    """``(path, label)`` pairs -> :class:`Item` with uint8 (3, s, s) images, one per side ``s``
    in ``sizes`` (default: the preprocessing's resize). Unreadable files give an Item whose
    ``error`` names the file and the reason."""

    def __init__(self, samples: Sequence[tuple[str, int]], preprocessing: Preprocessing,
                 sizes: Sequence[int] | None = None) -> None:
        self.samples = [(str(p), int(label)) for p, label in samples]
        self.preprocessing = preprocessing
        self.sizes = tuple(sizes) if sizes else (preprocessing.resize,)
        self._preprocess = ImagePreprocess(preprocessing)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        path, label = self.samples[index]
        try:
            img = read_image(path)
            images = tuple(self._preprocess.square(img, s) for s in self.sizes)
        except Exception as err:  # noqa: BLE001 - counted and listed by the caller, never swallowed:
            # read_image turns decoding errors into UnreadableImage; anything else Pillow raises on
            # a malformed file must not kill the worker (and the run) either.
            return Item(index, label, None, failure_message(path, err))
        return Item(index, label, images, None)


@dataclass
class Batch:
    """Readable items stacked (``images[j]``: (B, 3, s, s) uint8 for the j-th size) and the
    unreadable ones as ``(dataset index, error)``."""

    indices: Tensor
    labels: Tensor
    images: list[Tensor]
    failed: list[tuple[int, str]]

    def __len__(self) -> int:
        return len(self.indices)

    def pin_memory(self) -> Batch:
        """Called by a DataLoader with ``pin_memory=True`` (CUDA): page-locked, copied asynchronously."""
        return Batch(self.indices.pin_memory(), self.labels.pin_memory(), [x.pin_memory() for x in self.images],
                     self.failed)


def collate(items: Sequence[Item]) -> Batch:
    """DataLoader ``collate_fn``: stack the readable items, set the unreadable ones aside (a
    batch of only unreadable files has no images and length 0)."""
    good = [it for it in items if it.images is not None]
    failed = [(it.index, it.error or "unreadable") for it in items if it.images is None]
    images = [torch.stack([it.images[j] for it in good]) for j in range(len(good[0].images))] if good else []
    return Batch(torch.tensor([it.index for it in good], dtype=torch.long),
                 torch.tensor([it.label for it in good], dtype=torch.long), images, failed)
