"""Verified downloads of weight files, so a model only ever loads the exact bytes its spec pins.

Weights come from the Hugging Face Hub (through ``huggingface_hub``, which owns the cache layout, resume and
retries) or from plain HTTPS mirrors. The client only checks sizes; here the sha256 decides: a file is returned
only once its size and sha256 match, a file that does not match is deleted from the cache so the next attempt
downloads it again, and each source is tried in turn. Hashing 240 MB takes seconds, so the hash of a checked
file is remembered under ``cache_dir("verified")``, keyed by its path, size, times and inode: a second call does
not rehash, and a file changed or replaced on disk is hashed again.

``fetch_repo_files`` serves ``hf-hub:org/repo@rev`` repos, which no spec pins: there the Hub's own ETag is the
pin (for an LFS file it *is* the sha256 of its bytes, for a small file the git blob sha1), taken from one HEAD
request before the download and, for a cached copy offline, from the blob name the client stored it under.

Every repo id, revision and file name is validated before any request (``validate_repo_id``,
``validate_revision``): the client builds cache paths from them, and ``..`` in a revision made it write outside
the cache. Each source gets one HEAD without retries first: a host whose name does not resolve or that refuses
the connection fails at once (``Unreachable``), with what to do instead, rather than after the client's ~30 s
ladder of retries; a server that answers with 5xx still gets the client's retries.

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME`` and ``HF_HUB_OFFLINE`` once, when it is
imported; ``fetch`` reads them when it is called and passes endpoint and cache folder explicitly.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import httpx2
from filelock import FileLock
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    FileMetadataError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session, hf_raise_for_status
from huggingface_hub.utils.tqdm import tqdm

from alexnet_zoo.errors import ChecksumMismatch, DownloadFailed, NotCached, Unreachable, WeightsError
from alexnet_zoo.paths import atomic_write, cache_dir
from alexnet_zoo.weights.digests import discard, remember_sha256, sha256_remembered
from alexnet_zoo.weights.sources import (
    FULL_SHA256,
    GIT_SHA1,
    FileSource,
    validate_filename,
    validate_repo_id,
    validate_revision,
)

__all__ = ["fetch", "fetch_repo_files"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TRUE = {"1", "ON", "YES", "TRUE"}  # as huggingface_hub.constants reads boolean variables
# What a failed download raises: HTTP status (HfHubHTTPError), transport (httpx2), truncation, disk (OSError).
_DOWNLOAD_ERRORS = (HfHubHTTPError, httpx2.TransportError, OSError)


def fetch(sources: Sequence[FileSource], *, arch: str | None = None) -> Path:
    """A local file whose size and sha256 match ``sources``, downloading it if no cached copy does.

    Cached copies from every source are checked first, without any network request (a copy placed by hand
    under ``cache_dir("mirrors", sha256)`` counts too); then the sources are downloaded in order until one
    yields the pinned bytes. A lock under ``cache_dir("locks")`` makes concurrent callers (threads or processes)
    download a file once. Raises ``NotCached`` in offline mode (``HF_HUB_OFFLINE=1``) when nothing is cached,
    ``Unreachable`` at once when no source's host can be reached, ``ChecksumMismatch`` when every source served
    other bytes, else ``DownloadFailed`` listing each source and why it failed. The first two say how to bring
    the file in by other means (``arch``: the architecture it holds, for the ``weights convert`` command).
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
                        f"run once online or unset HF_HUB_OFFLINE.\n{_bring_in(sources, arch)}")
    failures: list[tuple[FileSource, str, str]] = []  # (source, reason, kind: "wrong-bytes", "unreachable", "")
    with FileLock(str(cache_dir("locks") / f"{first.sha256}.lock")):
        if (path := _find_cached(sources)) is not None:  # another process downloaded it while we waited
            return path
        for source in sources:
            try:
                return _download(source)
            except _Rejected as error:
                failures.append((source, str(error), "wrong-bytes"))
            except _DOWNLOAD_ERRORS as error:
                failures.append((source, _reason(error), "unreachable" if _unreachable(error) else ""))
    raise _failure(first, failures, _bring_in(sources, arch))


def fetch_repo_files(repo_id: str, filenames: Sequence[str], revision: str | None = None, *,
                     repo_type: str = "model") -> dict[str, Path]:
    """The files of Hub repo ``repo_id`` at ``revision`` (default ``main``), each checked against the Hub's
    own checksum of it: the sha256 the Hub gives an LFS file (``X-Linked-Etag``), the git blob sha1 of a small
    one. Online, one HEAD per file (no retries) gives the checksum before the client downloads it; offline
    or when the host cannot be reached, a cached copy is checked against the checksum the client stored it
    under (its blob name). A copy with other bytes is deleted; a cached one is
    downloaded again once. Raises :class:`InvalidReference` (before any request), :class:`ChecksumMismatch`
    naming repo, file, expected and actual checksum, :class:`NotCached`, :class:`Unreachable` or
    :class:`DownloadFailed`."""
    validate_repo_id(repo_id)
    revision = validate_revision(revision) if revision is not None else "main"
    for name in filenames:
        validate_filename(name)
    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    where = f"hf-hub:{repo_id}@{revision}"
    if _offline():
        return {name: _cached_repo_file(repo_id, name, revision, repo_type, where, "HF_HUB_OFFLINE is set")
                for name in filenames}
    out: dict[str, Path] = {}
    for name in filenames:
        url = hf_hub_url(repo_id, name, repo_type=repo_type, revision=revision, endpoint=endpoint)
        try:
            meta = get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT, endpoint=endpoint,
                                        retry_on_errors=False)
        except _DOWNLOAD_ERRORS as error:
            if not _unreachable(error):
                raise DownloadFailed(f"{where}: could not fetch {name!r} from {endpoint}: {_reason(error)}") from error
            out[name] = _cached_repo_file(repo_id, name, revision, repo_type, where,
                                          f"{endpoint} cannot be reached ({_reason(error)})")
            continue
        if meta.commit_hash is None or meta.etag is None:
            raise DownloadFailed(f"{where}: {endpoint} answered for {name!r} without a commit or checksum "
                                 f"(X-Repo-Commit / ETag): not a Hugging Face Hub endpoint")
        out[name] = _download_repo_file(repo_id, name, revision, repo_type, endpoint, meta.etag, where)
    return out


def _download_repo_file(repo_id: str, name: str, revision: str, repo_type: str, endpoint: str, etag: str,
                        where: str) -> Path:
    """Download (or take from the cache) one repo file and check it against the Hub's ``etag``."""
    if not (FULL_SHA256.fullmatch(etag) or GIT_SHA1.fullmatch(etag)):
        raise ChecksumMismatch(f"{where}: file {name!r}: the Hub gave no sha256 or git sha1 for it (ETag "
                               f"{etag!r}), so its bytes cannot be checked")
    for attempt in (1, 2):
        try:
            path = Path(hf_hub_download(repo_id, name, revision=revision, repo_type=repo_type, endpoint=endpoint,
                                        cache_dir=_hf_cache_dir()))
        except _DOWNLOAD_ERRORS as error:
            raise DownloadFailed(f"{where}: could not download {name!r} from {endpoint}: {_reason(error)}") from error
        actual = _digest_of_kind(path, etag)
        if actual == etag:
            return path
        discard(path)
        if attempt == 1:
            logger.warning("%s: %s does not match the Hub's checksum %s (it has %s); downloading it again",
                           where, name, etag, actual)
    raise ChecksumMismatch(f"{where}: file {name!r} does not match the Hub's checksum: expected {_kind(etag)} "
                           f"{etag}, got {actual}; the copy was deleted")


def _cached_repo_file(repo_id: str, name: str, revision: str, repo_type: str, where: str, why: str) -> Path:
    """A cached repo file, checked against the checksum it was stored under, when the Hub cannot be asked."""
    found = try_to_load_from_cache(repo_id, name, cache_dir=_hf_cache_dir(), revision=revision, repo_type=repo_type)
    if not isinstance(found, str) or not os.path.isfile(found):
        error = NotCached if "HF_HUB_OFFLINE" in why else Unreachable
        raise error(f"{where}: file {name!r} is not in the cache ({_hf_cache_dir()}) and {why}; load it once "
                    f"online, set HF_ENDPOINT to a Hub mirror you can reach, or download the repo's "
                    f"model.safetensors + config.json elsewhere into a folder and load that folder")
    path = Path(found)
    etag = Path(os.path.realpath(path)).name  # the client names a blob after the ETag the Hub gave it
    if not (FULL_SHA256.fullmatch(etag) or GIT_SHA1.fullmatch(etag)):
        raise ChecksumMismatch(f"{where}: cached file {name!r} ({path}) has no checksum to be checked against "
                               f"and {why}")
    actual = _digest_of_kind(path, etag)
    if actual != etag:
        discard(path)
        raise ChecksumMismatch(f"{where}: cached file {name!r} does not match the Hub's checksum: expected "
                               f"{_kind(etag)} {etag}, got {actual}; the copy was deleted and {why}")
    return path


def _kind(etag: str) -> str:
    return "sha256" if len(etag) == 64 else "git blob sha1"


def _digest_of_kind(path: Path, etag: str) -> str:
    """The file's sha256 (remembered, as for specs) or, for a 40-digit ETag, its git blob sha1."""
    if len(etag) == 64:
        return sha256_remembered(path)
    data = Path(path).read_bytes()  # small (non-LFS) files only: the Hub sends LFS files' sha256
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Rejected(Exception):
    """A download completed but its size or sha256 is not the pinned one."""


def _find_cached(sources: Sequence[FileSource]) -> Path | None:
    """The first cached copy that matches; a cached copy that does not is deleted."""
    for source in sources:
        for path in _cached_paths(source):
            try:
                mismatch = _check(path, source)
            except FileNotFoundError:  # deleted meanwhile by a process that found it wrong
                continue
            if mismatch is None:
                return path
            logger.warning("cached %s (%s) does not match its pin (%s); deleting it", source.describe(), path,
                           mismatch)
            discard(path)
    return None


def _cached_paths(source: FileSource) -> list[Path]:
    """Where a copy may already be: the mirror folder (downloads from a URL, or a file put there by hand, which
    the pin checks like any other), and for a Hub source the Hub cache."""
    found = [path] if (path := _mirror_path(source, create=False)).is_file() else []
    if source.url is None:
        hub = try_to_load_from_cache(source.repo_id, source.filename, cache_dir=_hf_cache_dir(),
                                     revision=source.revision, repo_type=source.repo_type)
        if isinstance(hub, str) and os.path.isfile(hub):
            found.insert(0, Path(hub))
    return found


def _download(source: FileSource) -> Path:
    """Download one source; raise ``_Rejected`` (after deleting the file) if it holds other bytes.

    A Hub source is first asked for its metadata once, without retries: a host that cannot be reached fails
    here at once instead of going through the client's retries; anything else goes on to the client."""
    if source.url is not None:
        return _download_url(source)
    endpoint = _endpoint(source)
    url = hf_hub_url(source.repo_id, source.filename, repo_type=source.repo_type, revision=source.revision,
                     endpoint=endpoint)
    try:
        get_hf_file_metadata(url, timeout=constants.HF_HUB_ETAG_TIMEOUT, endpoint=endpoint, retry_on_errors=False)
    except _DOWNLOAD_ERRORS as error:
        if _unreachable(error) or (isinstance(error, HfHubHTTPError)
                                   and error.response.status_code < 500 and error.response.status_code != 429):
            raise
    path = Path(hf_hub_download(source.repo_id, source.filename, revision=source.revision,
                                repo_type=source.repo_type, endpoint=endpoint, cache_dir=_hf_cache_dir()))
    mismatch = _check(path, source)
    if mismatch is not None:
        discard(path)
        raise _Rejected(mismatch)
    return path


def _download_url(source: FileSource) -> Path:
    """Stream a plain URL into a temporary file, hashing as it goes; keep it only if it matches."""
    path = _mirror_path(source)
    digest = hashlib.sha256()

    def stream(tmp: Path) -> None:  # raising here leaves no file: atomic_write renames only on success
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

    atomic_write(path, stream)
    remember_sha256(path, digest.hexdigest())
    return path


def _check(path: Path, source: FileSource) -> str | None:
    """Why ``path`` is not the pinned file, or None; hashes only if no record matches the file's stat."""
    size = os.stat(path).st_size
    if source.size is not None and size != source.size:
        return _mismatch(source, size, None)
    return _mismatch(source, size, sha256_remembered(path))


def _mismatch(source: FileSource, size: int, digest: str | None) -> str | None:
    if source.size is not None and size != source.size:
        return f"size mismatch: expected {source.size} bytes, got {size}"
    if digest is None or not digest.startswith(source.sha256):
        return f"checksum mismatch: expected sha256 {source.sha256}, got {digest}"
    return None


def _mirror_path(source: FileSource, *, create: bool = True) -> Path:
    """``cache_dir("mirrors", sha256)/<file name>``: where URL downloads go and a hand-placed copy is found."""
    folder = cache_dir("mirrors", source.sha256) if create else cache_dir() / "mirrors" / source.sha256
    return folder / Path(source.filename).name


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
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return (f"no room to write the download ({first_line}): free space, or set HF_HUB_CACHE (Hub files) / "
                f"ALEXNET_ZOO_CACHE (mirror files) to a disk with room")
    return f"{type(error).__name__}: {first_line}"


def _unreachable(error: BaseException) -> bool:
    """True when the host could not be reached at all (name not resolved, connection refused or timed out):
    retrying a moment later cannot help, so nothing is retried."""
    if isinstance(error, LocalEntryNotFoundError) and error.__cause__ is not None:
        error = error.__cause__
    return isinstance(error, (httpx2.ConnectError, httpx2.ConnectTimeout))


def _download_urls(source: FileSource) -> str:
    """Where the file can be fetched by hand: the mirror URL, or the file on the Hub (huggingface.co unless the
    source names its own endpoint)."""
    if source.url is not None:
        return source.url
    return hf_hub_url(source.repo_id, source.filename, repo_type=source.repo_type, revision=source.revision,
                      endpoint=source.endpoint or "https://huggingface.co")


def _bring_in(sources: Sequence[FileSource], arch: str | None) -> str:
    """How to get the file onto this machine without the network, for the offline and unreachable errors."""
    first = sources[0]
    name = Path(first.filename).name
    urls = " or ".join(dict.fromkeys(_download_urls(s) for s in sources))
    convert = (f"`alexnet-zoo weights convert {name} --arch {arch} --out DIR`, then load DIR (`--pretrained DIR`)"
               if arch else f"`alexnet-zoo weights convert {name} --arch ARCH --out DIR`, then load DIR")
    return (f"To bring {name} in by other means: download it on a machine with network access ({urls}); it must "
            f"have {first.pin()}. Then either copy it to {_mirror_path(first, create=False)} (checked against that "
            f"sha256 on first use), or convert it: {convert}. Or set HF_ENDPOINT to a Hub mirror you can reach.")


def _failure(first: FileSource, failures: list[tuple[FileSource, str, str]], bring_in: str) -> WeightsError:
    lines = "\n".join(f"  - {s.describe()} from {s.url or _endpoint(s)}: {reason}" for s, reason, _ in failures)
    if all(kind == "wrong-bytes" for *_, kind in failures):
        return ChecksumMismatch(f"no source of {first.describe()} served the pinned file ({first.pin()}):\n{lines}")
    if all(kind == "unreachable" for *_, kind in failures):
        return Unreachable(f"could not reach any source of {first.describe()} ({first.pin()}); nothing was "
                           f"retried, since no host could be reached:\n{lines}\n{bring_in}")
    return DownloadFailed(f"could not download {first.describe()} ({first.pin()}) from any of its {len(failures)} "
                          f"source(s):\n{lines}")
