"""Verified downloads of weight files, so a model only ever loads the exact bytes its spec pins.

Weights come from the Hugging Face Hub (through ``huggingface_hub``, which owns the cache layout, resume and
retries) or from plain HTTPS mirrors. The client only checks sizes; here the sha256 decides: a file is returned
only once its size and sha256 match, a file that does not match is deleted from the cache so the next attempt
downloads it again, and each source is tried in turn. Hashing 240 MB takes seconds, so the hash of a checked
file is remembered under ``cache_dir("verified")``, keyed by its path, size, times and inode: a second call does
not rehash, and a file changed or replaced on disk is hashed again.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME`` and ``HF_HUB_OFFLINE`` once, when it is
imported; ``fetch`` reads them when it is called and passes endpoint and cache folder explicitly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2
from filelock import FileLock
from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (FileMetadataError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                    RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)
from huggingface_hub.utils import get_session, hf_raise_for_status
from huggingface_hub.utils.tqdm import tqdm

from alexnet_zoo.errors import ChecksumMismatch, DownloadFailed, NotCached, WeightsError
from alexnet_zoo.paths import cache_dir

__all__ = ["FileSource", "fetch", "sha256_file"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{8,64}")
_TRUE = {"1", "ON", "YES", "TRUE"}  # as huggingface_hub.constants reads boolean variables
# What a failed download raises: HTTP status (HfHubHTTPError), transport (httpx2), truncation, disk (OSError).
_DOWNLOAD_ERRORS = (HfHubHTTPError, httpx2.TransportError, OSError)


@dataclass(frozen=True)
class FileSource:
    """One place a weight file can be downloaded from, and the bytes it must hold."""

    repo_id: str
    filename: str
    revision: str  # a commit or tag; a moving branch still works, since the sha256 is what pins the bytes
    # Hex sha256 of the whole file: the only thing that decides whether a download is accepted. All 64 digits;
    # a prefix (>= 8 digits) only where upstream publishes no more (torchvision names files by their first 8).
    sha256: str
    size: int | None  # bytes; None only where upstream does not say (then the hash alone decides)
    repo_type: str = "model"
    endpoint: str | None = None  # another Hub-protocol endpoint; None: $HF_ENDPOINT, else huggingface.co
    url: str | None = None  # a plain HTTPS mirror (e.g. a GitHub LFS media URL), fetched instead of the Hub

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", self.sha256.lower())
        if not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"{self.describe()}: sha256 must be 64 hex digits (or a prefix of at least 8), "
                             f"got {self.sha256!r}")
        if self.size is not None and self.size < 0:
            raise ValueError(f"{self.describe()}: size must be >= 0 bytes, got {self.size}")

    def describe(self) -> str:
        """``repo@revision:filename``, for messages."""
        return f"{self.repo_id}@{self.revision}:{self.filename}"

    def pin(self) -> str:
        """What the file must be, for messages: ``sha256 <hex>, <n> bytes``."""
        digest = self.sha256 if len(self.sha256) == 64 else f"{self.sha256}... (prefix)"
        return f"sha256 {digest}, " + ("size unknown" if self.size is None else f"{self.size} bytes")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(sources: Sequence[FileSource]) -> Path:
    """A local file whose size and sha256 match ``sources``, downloading it if no cached copy does.

    Cached copies from every source are checked first, without any network request; then the sources are
    downloaded in order until one yields the pinned bytes. A lock under ``cache_dir("locks")`` makes concurrent
    callers (threads or processes) download a file once. Raises ``NotCached`` in offline mode
    (``HF_HUB_OFFLINE=1``) when nothing is cached, ``ChecksumMismatch`` when every source served other bytes,
    else ``DownloadFailed`` listing each source and why it failed.
    """
    if not sources:
        raise ValueError("fetch() needs at least one FileSource")
    first = sources[0]
    for other in sources[1:]:
        if (other.sha256, other.size) != (first.sha256, first.size):
            raise ValueError(f"sources pin different files: {first.describe()} is {first.pin()}, "
                             f"{other.describe()} is {other.pin()}")
    if (path := _find_cached(sources)) is not None:
        return path
    if _offline():
        raise NotCached(f"{first.describe()} (repo {first.repo_id!r}, file {first.filename!r}, revision "
                        f"{first.revision!r}) is not in the cache ({_hf_cache_dir()}) and HF_HUB_OFFLINE is set; "
                        f"run once online or unset HF_HUB_OFFLINE")
    failures: list[tuple[FileSource, str, bool]] = []  # (source, reason, served wrong bytes)
    with FileLock(str(cache_dir("locks") / f"{first.sha256}.lock")):
        if (path := _find_cached(sources)) is not None:  # another process downloaded it while we waited
            return path
        for source in sources:
            try:
                return _download(source)
            except _Rejected as error:
                failures.append((source, str(error), True))
            except _DOWNLOAD_ERRORS as error:
                failures.append((source, _reason(error), False))
    raise _failure(first, failures)


class _Rejected(Exception):
    """A download completed but its size or sha256 is not the pinned one."""


def _find_cached(sources: Sequence[FileSource]) -> Path | None:
    """The first cached copy that matches; a cached copy that does not is deleted."""
    for source in sources:
        path = _cached_path(source)
        if path is None:
            continue
        try:
            mismatch = _check(path, source)
        except FileNotFoundError:  # deleted meanwhile by a process that found it wrong
            continue
        if mismatch is None:
            return path
        logger.warning("cached %s does not match its pin (%s); deleting it", source.describe(), mismatch)
        _discard(path)
    return None


def _cached_path(source: FileSource) -> Path | None:
    if source.url is not None:
        path = _mirror_path(source)
        return path if path.is_file() else None
    found = try_to_load_from_cache(source.repo_id, source.filename, cache_dir=_hf_cache_dir(),
                                   revision=source.revision, repo_type=source.repo_type)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _download(source: FileSource) -> Path:
    """Download one source; raise ``_Rejected`` (after deleting the file) if it holds other bytes."""
    if source.url is not None:
        return _download_url(source)
    path = Path(hf_hub_download(source.repo_id, source.filename, revision=source.revision,
                                repo_type=source.repo_type, endpoint=_endpoint(source), cache_dir=_hf_cache_dir()))
    mismatch = _check(path, source)
    if mismatch is not None:
        _discard(path)
        raise _Rejected(mismatch)
    return path


def _download_url(source: FileSource) -> Path:
    """Stream a plain URL into a temporary file, hashing as it goes; keep it only if it matches."""
    path = _mirror_path(source)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.incomplete")
    digest = hashlib.sha256()
    try:
        with get_session().stream("GET", source.url, follow_redirects=True,
                                  timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
            hf_raise_for_status(response)
            with tmp.open("wb") as f, tqdm(total=source.size, unit="B", unit_scale=True, desc=path.name) as bar:
                for chunk in response.iter_bytes(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        mismatch = _mismatch(source, tmp.stat().st_size, digest.hexdigest())
        if mismatch is not None:
            raise _Rejected(mismatch)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _record(path, digest.hexdigest())
    return path


def _check(path: Path, source: FileSource) -> str | None:
    """Why ``path`` is not the pinned file, or None; hashes only if no record matches the file's stat."""
    stat = os.stat(path)
    if source.size is not None and stat.st_size != source.size:
        return _mismatch(source, stat.st_size, None)
    record = _record_path(path)
    try:
        known = json.loads(record.read_text())
        digest = known["sha256"] if known["stat"] == _stat_key(stat) else None
    except (OSError, ValueError, KeyError, TypeError):
        digest = None
    if digest is None:
        digest = sha256_file(path)
        _record(path, digest, stat)
    return _mismatch(source, stat.st_size, digest)


def _mismatch(source: FileSource, size: int, digest: str | None) -> str | None:
    if source.size is not None and size != source.size:
        return f"size mismatch: expected {source.size} bytes, got {size}"
    if digest is None or not digest.startswith(source.sha256):
        return f"checksum mismatch: expected sha256 {source.sha256}, got {digest}"
    return None


def _record(path: Path, digest: str, stat: os.stat_result | None = None) -> None:
    """Remember the sha256 of ``path`` as it is now (written atomically: readers never see half a record)."""
    record = _record_path(path)
    tmp = record.with_name(f"{record.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps({"path": os.path.realpath(path), "sha256": digest,
                               "stat": _stat_key(stat or os.stat(path))}))
    os.replace(tmp, record)


def _record_path(path: Path) -> Path:
    key = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:32]
    return cache_dir("verified") / f"{key}.json"


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


def _discard(path: Path) -> None:
    """Delete a file that failed verification, and for a Hub download the blob its snapshot link points to."""
    for victim in {os.path.realpath(path), str(path), str(_record_path(path))}:
        try:
            Path(victim).unlink(missing_ok=True)
        except OSError as error:
            logger.warning("could not delete %s, which failed verification: %s", victim, error)


def _mirror_path(source: FileSource) -> Path:
    return cache_dir("mirrors", source.sha256) / Path(source.filename).name


def _hf_cache_dir() -> str:
    """The Hub cache folder from the environment as it is now, with huggingface_hub's precedence."""
    env = os.environ
    folder = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not folder and env.get("HF_HOME"):
        folder = os.path.join(env["HF_HOME"], "hub")
    return os.path.expandvars(os.path.expanduser(folder)) if folder else constants.HF_HUB_CACHE


def _endpoint(source: FileSource) -> str:
    return (source.endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now; when unset, what huggingface_hub read at import."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return constants.is_offline_mode() if value is None else value.upper() in _TRUE


def _reason(error: BaseException) -> str:
    """A one-line account of a failed download."""
    if isinstance(error, LocalEntryNotFoundError) and error.__cause__ is not None:
        error = error.__cause__  # the client wraps the failed HEAD request
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code
        what = {RepositoryNotFoundError: "repository not found", RevisionNotFoundError: "revision not found",
                RemoteEntryNotFoundError: "file not found in this revision"}
        detail = next((v for k, v in what.items() if isinstance(error, k)), error.response.reason_phrase)
        return f"HTTP {status} ({detail})"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, OfflineModeIsEnabled):
        return f"huggingface_hub is in offline mode (HF_HUB_OFFLINE was set when it was imported): {first_line}"
    if isinstance(error, FileMetadataError):
        return f"not a Hugging Face Hub endpoint: {first_line}"
    if isinstance(error, (httpx2.RemoteProtocolError, httpx2.ReadError)):
        return f"connection dropped: {first_line}"
    if isinstance(error, httpx2.ConnectError):
        return f"connection failed: {first_line}"
    if isinstance(error, httpx2.TimeoutException):
        return f"timed out: {first_line}"
    if "Consistency check failed" in first_line:
        return f"truncated: {first_line}"
    return f"{type(error).__name__}: {first_line}"


def _failure(first: FileSource, failures: list[tuple[FileSource, str, bool]]) -> WeightsError:
    lines = "\n".join(f"  - {s.describe()} from {s.url or _endpoint(s)}: {reason}" for s, reason, _ in failures)
    if all(wrong_bytes for *_, wrong_bytes in failures):
        return ChecksumMismatch(f"no source of {first.describe()} served the pinned file ({first.pin()}):\n{lines}")
    return DownloadFailed(f"could not download {first.describe()} ({first.pin()}) from any of its {len(failures)} "
                          f"source(s):\n{lines}")
