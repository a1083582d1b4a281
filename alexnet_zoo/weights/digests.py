"""The sha256 of files on disk, hashed once: hashing 240 MB takes seconds, so the digest of a checked
file is remembered under ``cache_dir("verified")``, keyed by its real path and checked against its size,
times, inode and device: a second call does not rehash, and a file changed or replaced is hashed again.
A record is only a memo: one that cannot be written costs a rehash next time, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from alexnet_zoo.paths import atomic_write, cache_dir

__all__ = ["discard", "remember_sha256", "sha256_file", "sha256_remembered"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_remembered(path: Path) -> str:
    """The file's sha256, from the record of an earlier hash if the file's stat still matches it."""
    stat = os.stat(path)
    record = _record_path(path)
    try:
        known = json.loads(record.read_text())
        digest = known["sha256"] if known["stat"] == _stat_key(stat) else None
    except (OSError, ValueError, KeyError, TypeError):
        digest = None
    if digest is None:
        digest = sha256_file(path)
        remember_sha256(path, digest, stat)
    return digest


def remember_sha256(path: Path, digest: str, stat: os.stat_result | None = None) -> None:
    """Remember the sha256 of ``path`` as it is now (written atomically: readers never see half a record).
    Only a memo: a record that cannot be written (full disk, read-only cache) costs a rehash next time."""
    record = _record_path(path)
    text = json.dumps({"path": os.path.realpath(path), "sha256": digest, "stat": _stat_key(stat or os.stat(path))})
    try:
        atomic_write(record, lambda tmp: tmp.write_text(text))
    except OSError as error:
        logger.warning("could not remember the sha256 of %s in %s: %s", path, record.parent, error)


def _record_path(path: Path) -> Path:
    key = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:32]
    return cache_dir("verified") / f"{key}.json"


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def discard(path: Path) -> None:
    """Delete a file that failed verification, and for a Hub download the blob its snapshot link points to."""
    for victim in {os.path.realpath(path), str(path), str(_record_path(path))}:
        try:
            Path(victim).unlink(missing_ok=True)
        except OSError as error:
            logger.warning("could not delete %s, which failed verification: %s", victim, error)
