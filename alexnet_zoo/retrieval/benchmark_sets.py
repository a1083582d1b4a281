"""The retrieval benchmarks as their authors lay them out, read into one shape: the database images,
and the queries with their positives and junk (indices into the database).

* INRIA Holidays: ``NNNNxx.jpg``; the 4-digit ``NNNN`` is the group, ``xx == 00`` its query, the other
  pictures its positives; the query is in the database but skipped in its own ranking (junk).
* UKBench: ``ukbenchNNNNN.jpg``; groups of four consecutive numbers; every image is a query and its
  group of four, itself included, is what the N-S score counts.
* Oxford5k / Paris6k: the images, and a ``gt_files`` folder of ``<name>_query.txt`` (one line
  ``oxc1_<image> x1 y1 x2 y2``: the query is that box of that image), ``<name>_good.txt`` and
  ``_ok.txt`` (the positives) and ``_junk.txt`` (ignored in AP).
* ``groups``: a CSV ``path,group`` of a user's own labelled set; every image of a group of two or more
  is a query, the rest of its group its positives, itself skipped; singletons are distractors.

* INRIA Copydays: ``original/`` (157 pictures ``NNNN00.jpg``) and the attacked copies, the queries:
  ``jpegqual/<quality>/`` and ``crops/<percent cropped>/`` (each copy named as its original), and
  ``strong/`` (229 copies ``NNNNxx.jpg``: the 4-digit block names the original). The database is the
  originals, plus distractors: a folder of pictures, or a count of those in ``distractors/``.

Every file is treated as hostile: anything not as the format
says is a :class:`~alexnet_zoo.errors.GroundTruthError` naming the file, the line and what was
expected. Images are listed in sorted order, which is also the order ties rank in.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from alexnet_zoo.data.images import IMAGE_SUFFIXES
from alexnet_zoo.errors import GroundTruthError
from alexnet_zoo.paths import read_bounded
from alexnet_zoo.retrieval.group_csv import read_group_csv

__all__ = ["COPYDAYS_ATTACKS", "DATASETS", "BenchmarkSet", "Query", "read_benchmark", "read_copydays", "read_groups",
           "read_holidays", "read_oxford", "read_ukbench"]

DATASETS = ("holidays", "ukbench", "oxford5k", "paris6k", "copydays", "groups")
MAX_TEXT_BYTES = 64 * 2 ** 20  # the largest ground-truth file or groups CSV read (Oxford's are a few KiB)
GT_FOLDERS = ("gt_files", "gt")
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Query:
    """One query: its picture (``box``: the region of it that is the query, Oxford / Paris), the
    database indices that count as found (``positives``) and those skipped (``junk``); ``index`` is
    its own database row where the query is a database image as it is (its vector is reused);
    ``family`` the attack it is a copy under, where the dataset has attacks (Copydays)."""

    name: str
    image: Path
    positives: frozenset[int]
    junk: frozenset[int] = frozenset()
    box: Box | None = None
    index: int | None = None
    family: str = ""  # Copydays: the attack, "jpeg/<quality>", "crops/<percent>" or "strong"


@dataclass(frozen=True)
class BenchmarkSet:
    """A benchmark read from disk: ``primary`` is the figure its papers report ("map" or "ns")."""

    dataset: str
    root: Path
    images: tuple[Path, ...]
    queries: tuple[Query, ...]
    primary: str
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.dataset}: {len(self.images):,} images, {len(self.queries):,} queries in {self.root}"


def _folder(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise GroundTruthError(f"{root}: not a folder; expected the dataset's folder of images")
    return root


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted((p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                  key=lambda p: p.relative_to(folder).as_posix())


def _lines(path: Path) -> list[str]:
    """The lines of a small text file, refused unless it is UTF-8 and within :data:`MAX_TEXT_BYTES`."""
    raw = read_bounded(path, MAX_TEXT_BYTES, GroundTruthError, "a ground-truth file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise GroundTruthError(f"{path}:{line}: not UTF-8 text (byte {err.start})") from err
    if "\x00" in text:
        raise GroundTruthError(f"{path}:{text[:text.index(chr(0))].count(chr(10)) + 1}: a NUL byte; not a text file")
    return [line.removesuffix("\r") for line in text.split("\n")]


def _bad(path: Path, lineno: int, line: str, expected: str) -> GroundTruthError:
    shown = repr(line) if len(line) <= 80 else repr(line[:77]) + "..."
    return GroundTruthError(f"{path}:{lineno}: {shown}: expected {expected}")


# ---- INRIA Holidays and UKBench: the file name is the ground truth ----------------------------------

HOLIDAYS_NAME = re.compile(r"(\d{4})(\d{2})")
UKBENCH_NAME = re.compile(r"ukbench(\d{5})", re.IGNORECASE)


def _named_images(root: Path, sub: str, pattern: re.Pattern[str], what: str) -> tuple[Path, list[Path], list[str]]:
    """(folder, images, the first group of each name) for a folder whose names must all match."""
    folder = root / sub if not _images_in(root) and (root / sub).is_dir() else root
    images = _images_in(folder)
    if not images:
        raise GroundTruthError(f"{folder}: no images; expected {what}")
    keys = []
    for path in images:
        match = pattern.fullmatch(path.stem)
        if match is None:
            raise GroundTruthError(f"{path}: not a name of this dataset; expected {what}")
        keys.append(match.group(1))
    seen: dict[str, Path] = {}
    for path in images:
        if path.stem.lower() in seen:
            raise GroundTruthError(f"{path}: the same picture as {seen[path.stem.lower()].name}; expected one file each")
        seen[path.stem.lower()] = path
    return folder, images, keys


def read_holidays(root: str | os.PathLike) -> BenchmarkSet:
    """INRIA Holidays (``root`` or ``root/jpg``): one query per group, skipped in its own ranking."""
    folder, images, groups = _named_images(_folder(root), "jpg", HOLIDAYS_NAME,
                                           "INRIA Holidays' NNNNxx.jpg (a 4-digit group, 00 its query)")
    members: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    queries = []
    for group, rows in sorted(members.items()):
        q = next((i for i in rows if images[i].stem.endswith("00")), None)
        if q is None:
            raise GroundTruthError(f"{folder}: group {group} has no query {group}00.jpg; expected the first "
                                   "picture of each group to be its query")
        others = frozenset(rows) - {q}
        if not others:
            raise GroundTruthError(f"{images[q]}: group {group} holds its query only; expected at least one "
                                   "more picture of the scene")
        queries.append(Query(images[q].stem, images[q], others, frozenset({q}), index=q))
    return BenchmarkSet("holidays", folder, tuple(images), tuple(queries), "map")


def read_ukbench(root: str | os.PathLike) -> BenchmarkSet:
    """UKBench (``root`` or ``root/full``): every image a query, its group of four the positives."""
    folder, images, numbers = _named_images(_folder(root), "full", UKBENCH_NAME,
                                            "UKBench's ukbenchNNNNN.jpg (groups of four consecutive numbers)")
    members: dict[int, list[int]] = defaultdict(list)
    for i, number in enumerate(numbers):
        members[int(number) // 4].append(i)
    queries = tuple(Query(path.stem, path, frozenset(members[int(n) // 4]), index=i)
                    for i, (path, n) in enumerate(zip(images, numbers)))
    short = sorted(g for g, rows in members.items() if len(rows) < 4)
    notes = ((f"{len(short)} group(s) hold fewer than 4 images (first: group {short[0]}, "
              f"{len(members[short[0]])} images): their best N-S is below 4"),) if short else ()
    return BenchmarkSet("ukbench", folder, tuple(images), queries, "ns", notes)


# ---- Oxford5k and Paris6k: gt_files -----------------------------------------------------------------

def _query_line(path: Path) -> tuple[str, Box]:
    lines = [(n, line) for n, line in enumerate(_lines(path), 1) if line.strip()]
    if len(lines) != 1:
        raise GroundTruthError(f"{path}: {len(lines)} non-empty lines; expected one 'oxc1_<image> x1 y1 x2 y2'")
    lineno, line = lines[0]
    parts = line.split()
    expected = "'oxc1_<image> x1 y1 x2 y2' (a box of four numbers, x1 < x2, y1 < y2, none negative)"
    if len(parts) != 5:
        raise _bad(path, lineno, line, expected)
    try:
        x1, y1, x2, y2 = (float(v) for v in parts[1:])
    except ValueError:
        raise _bad(path, lineno, line, expected) from None
    if not all(map(_finite, (x1, y1, x2, y2))) or min(x1, y1) < 0 or x1 >= x2 or y1 >= y2:
        raise _bad(path, lineno, line, expected)
    return parts[0].removeprefix("oxc1_"), (x1, y1, x2, y2)


def _finite(v: float) -> bool:
    return v - v == 0.0


def _names(path: Path) -> list[str]:
    names = []
    for lineno, line in enumerate(_lines(path), 1):
        name = line.strip()
        if not name:
            continue
        if len(name.split()) != 1:
            raise _bad(path, lineno, line, "one image name a line")
        names.append(name)
    return names


def _gt_folder(root: Path) -> Path:
    for name in GT_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise GroundTruthError(f"{root}: no ground truth; expected a {' or '.join(GT_FOLDERS)} folder holding "
                           "<name>_query.txt, <name>_good.txt, <name>_ok.txt and <name>_junk.txt")


def _database(root: Path, gt: Path) -> tuple[Path, list[Path], dict[str, int]]:
    folder = root / "jpg" if (root / "jpg").is_dir() else root
    images = [p for p in _images_in(folder, recursive=True) if gt not in p.parents]
    if not images:
        raise GroundTruthError(f"{folder}: no images; expected the dataset's pictures (jpg/ or beside {gt.name}/)")
    index: dict[str, int] = {}
    for i, path in enumerate(images):
        if path.stem in index:
            raise GroundTruthError(f"{path}: a second image named {path.stem!r} (the first: "
                                   f"{images[index[path.stem]]}); ground truth names images by stem")
        index[path.stem] = i
    return folder, images, index


def read_oxford(root: str | os.PathLike, dataset: str = "oxford5k") -> BenchmarkSet:
    """Oxford5k or Paris6k (``dataset``): the queries of ``gt_files``. Names in the good / ok / junk
    lists that are not among the images are left out and counted (Paris users often delete its
    known-corrupt pictures); a query's own picture must be there, and one positive at least."""
    root = _folder(root)
    gt = _gt_folder(root)
    folder, images, index = _database(root, gt)
    query_files = sorted(gt.glob("*_query.txt"))
    if not query_files:
        raise GroundTruthError(f"{gt}: no <name>_query.txt files; expected the dataset's ground truth")
    queries, absent = [], 0
    for qf in query_files:
        name = qf.name.removesuffix("_query.txt")
        image, box = _query_line(qf)
        if image not in index:
            raise GroundTruthError(f"{qf}:1: its image {image!r} is not among the {len(images):,} images in {folder}")
        lists = {kind: _names(gt / f"{name}_{kind}.txt") for kind in ("good", "ok", "junk")}
        absent += sum(n not in index for names in lists.values() for n in names)
        positives = frozenset(index[n] for n in lists["good"] + lists["ok"] if n in index)
        junk = frozenset(index[n] for n in lists["junk"] if n in index)
        if not positives:
            raise GroundTruthError(f"{gt / (name + '_good.txt')}: no image of {name}_good.txt or _ok.txt is in "
                                   f"{folder}; expected at least one positive")
        if positives & junk:
            both = images[min(positives & junk)].stem
            raise GroundTruthError(f"{gt / (name + '_junk.txt')}: {both!r} is in good/ok too; expected disjoint lists")
        queries.append(Query(name, images[index[image]], positives, junk, box=box))
    notes = (f"{absent:,} ground-truth name(s) not among the images were left out",) if absent else ()
    return BenchmarkSet(dataset, folder, tuple(images), tuple(queries), "map", notes)


# ---- INRIA Copydays: attacked copies of 157 originals ----------------------------------------------

# family -> the folder names it has (the distribution's first; the second as a brief or a mirror names it)
COPYDAYS_ATTACKS = {"jpeg": ("jpegqual", "jpeg"), "crops": ("crops", "crop"), "strong": ("strong",)}
COPYDAYS_SIZES = {"original": 157, "strong": 229}  # pictures in the full distribution


def _copydays_levels(root: Path, family: str) -> list[tuple[str, Path]]:
    """(family label, folder) of each level of an attack: ``strong`` has none, the others a folder
    a level named by its number (JPEG quality, percent of the surface cropped)."""
    folder = next((root / n for n in COPYDAYS_ATTACKS[family] if (root / n).is_dir()), None)
    if folder is None:
        return []
    if family == "strong":
        return [("strong", folder)]
    levels = []
    for entry in sorted(folder.iterdir(), key=lambda p: (len(p.name), p.name)):
        if entry.is_dir() and entry.name.isdigit() and 1 <= int(entry.name) <= 100:
            levels.append((f"{family}/{int(entry.name)}", entry))
        elif entry.is_dir() or entry.suffix.lower() in IMAGE_SUFFIXES:
            raise GroundTruthError(f"{entry}: expected only level folders in {folder} (named by a number 1..100: "
                                   f"{'JPEG quality' if family == 'jpeg' else 'percent cropped'})")
    return levels


def _distractors(root: Path, distractors: str | os.PathLike | None) -> list[Path]:
    """Extra database pictures: all of a folder (recursive), or the first N of ``root/distractors``."""
    if distractors is None:
        return []
    text = os.fspath(distractors)
    folder, count = (root / "distractors", int(text)) if text.isdigit() else (Path(text), None)
    if not folder.is_dir():
        raise GroundTruthError(f"{folder}: not a folder; expected --distractors to be a folder of pictures or a count "
                               f"of those in {root / 'distractors'}")
    found = _images_in(folder, recursive=True)
    if count is not None and len(found) < count:
        raise GroundTruthError(f"{folder}: {len(found):,} pictures; expected at least the {count:,} asked for")
    return found[:count] if count is not None else found


def read_copydays(root: str | os.PathLike, distractors: str | os.PathLike | None = None) -> BenchmarkSet:
    """INRIA Copydays: every attacked copy a query, its original the one positive (``strong``: the
    originals of its block), the database the originals then the distractors."""
    root = _folder(root)
    if not (root / "original").is_dir():
        raise GroundTruthError(f"{root}: no original/ folder; expected Copydays' original/ beside jpegqual/, crops/ "
                               "and strong/")
    _, originals, blocks = _named_images(root / "original", "original", HOLIDAYS_NAME,
                                         "Copydays' NNNN00.jpg originals")
    by_name = {p.stem: i for i, p in enumerate(originals)}
    members: dict[str, set[int]] = defaultdict(set)
    for i, block in enumerate(blocks):
        members[block].add(i)
    queries = []
    for family in COPYDAYS_ATTACKS:
        for label, folder in _copydays_levels(root, family):
            for image in _images_in(folder):
                match = HOLIDAYS_NAME.fullmatch(image.stem)
                own = frozenset(members.get(match.group(1), ())) if match and family == "strong" else \
                    frozenset({by_name[image.stem]}) if image.stem in by_name else frozenset()
                if not own:
                    raise GroundTruthError(f"{image}: no original of this copy in {root / 'original'}; expected "
                                           + ("a block NNNN of an original NNNN00.jpg" if family == "strong"
                                              else "the name of an original"))
                queries.append(Query(f"{label}/{image.stem}", image, own, family=label))
    if not queries:
        raise GroundTruthError(f"{root}: no attacked copies; expected jpegqual/<quality>/, crops/<percent>/ or "
                               "strong/ beside original/")
    extra = _distractors(root, distractors)
    counts = {"original": len(originals), "strong": sum(q.family == "strong" for q in queries)}
    notes = tuple(f"{n:,} {k} picture(s); the full Copydays has {COPYDAYS_SIZES[k]}" for k, n in counts.items()
                  if n and n != COPYDAYS_SIZES[k])
    notes += (f"{len(extra):,} distractor(s) in the database",) if extra else ()
    return BenchmarkSet("copydays", root, tuple(originals + extra), tuple(queries), "map", notes)


# ---- a user's own groups ------------------------------------------------------------------------------

def read_groups(groups: str | os.PathLike, root: str | os.PathLike) -> BenchmarkSet:
    """A CSV ``path,group`` (a header line ``path,group`` or ``filename,group_id`` is skipped; paths
    relative to ``root``), in the file's order: the shared reader,
    :func:`alexnet_zoo.retrieval.group_csv.read_group_csv`, with those two checks."""
    groups, root = Path(groups), _folder(root)
    rows = [(r.line, root / r.path, r.group) for r in read_group_csv(
        groups, limit=MAX_TEXT_BYTES, error=GroundTruthError, header="optional", root=root, suffixes=IMAGE_SUFFIXES)]
    members: dict[str, list[int]] = defaultdict(list)
    for i, (_, _, group) in enumerate(rows):
        members[group].append(i)
    queries = tuple(Query(image.relative_to(root).as_posix(), image, frozenset(members[group]) - {i},
                          frozenset({i}), index=i)
                    for i, (_, image, group) in enumerate(rows) if len(members[group]) > 1)
    if not queries:
        raise GroundTruthError(f"{groups}: no group holds two images; expected groups of pictures of one thing")
    singles = sum(len(m) == 1 for m in members.values())
    notes = (f"{singles:,} image(s) alone in their group: distractors, not queries",) if singles else ()
    return BenchmarkSet("groups", root, tuple(image for _, image, _ in rows), queries, "map", notes)


def read_benchmark(dataset: str, data: str | os.PathLike, groups: str | os.PathLike | None = None,
                   distractors: str | os.PathLike | None = None) -> BenchmarkSet:
    """The reader for ``dataset`` (one of :data:`DATASETS`) on the folder ``data``."""
    if distractors is not None and dataset != "copydays":
        raise ValueError(f"--distractors is for --dataset copydays; {dataset} has its own database")
    if dataset == "copydays":
        if groups is not None:
            raise ValueError("--groups is for --dataset groups; copydays has its own ground truth")
        return read_copydays(data, distractors)
    if dataset == "groups":
        if groups is None:
            raise ValueError("--dataset groups needs --groups CSV (path,group lines)")
        return read_groups(groups, data)
    if groups is not None:
        raise ValueError(f"--groups is for --dataset groups; {dataset} has its own ground truth")
    if dataset == "holidays":
        return read_holidays(data)
    if dataset == "ukbench":
        return read_ukbench(data)
    if dataset in ("oxford5k", "paris6k"):
        return read_oxford(data, dataset)
    raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
