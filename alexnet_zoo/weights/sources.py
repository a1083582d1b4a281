"""Where a weight file lives upstream and which bytes it must hold, and the rules for the names that
point there: Hub repo ids, revisions, file names and ``hf-hub:org/repo@rev`` references.

Plain data and validation, no HTTP: the spec table (specs.py) is built from these, and every name is
checked here before the download client (download.py) turns it into URLs and cache folder names; ``..``
in a revision once made the client write outside its cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from alexnet_zoo.errors import InvalidReference

__all__ = ["FULL_SHA256", "GIT_SHA1", "FileSource", "parse_hub_ref", "validate_filename", "validate_repo_id", "validate_revision"]

_SHA256 = re.compile(r"[0-9a-f]{8,64}")
# a full sha256 and a git object id (a commit; the Hub's ETag of a small file): what pins bytes or a revision
FULL_SHA256, GIT_SHA1 = re.compile(r"[0-9a-f]{64}"), re.compile(r"[0-9a-f]{40}")
# The Hub's rules for repo names (huggingface_hub.utils.validate_repo_id), in ASCII only and with the namespace
# required: each part starts and ends with a letter, digit or _, no "--" or "..", at most 96 characters in all.
_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_REPO_ID_MAX = 96
# A branch or tag: git's ref-name rules narrowed to a plain ASCII set (no %, \\, @, ~, ^, :, space or control
# character); a commit: 40 hex digits. "refs/pr/1" (a Hub pull request) fits.
_REF_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+/-]*")
_REVISION_MAX = 128
_FILENAME_MAX = 512


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
        validate_repo_id(self.repo_id)
        validate_revision(self.revision)
        validate_filename(self.filename)
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


def validate_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a Hub repo id ``org/name``, else :class:`InvalidReference` (before any request:
    the client turns it into URLs and cache folder names)."""
    if not isinstance(repo_id, str) or not repo_id:
        raise InvalidReference(f"repo id {repo_id!r}: expected 'org/name'")
    parts = repo_id.split("/")
    why = None
    if len(repo_id) > _REPO_ID_MAX:
        why = f"longer than {_REPO_ID_MAX} characters"
    elif len(parts) != 2 or not all(parts):
        why = "expected exactly 'org/name', two non-empty parts"
    elif not all(_REPO_PART.fullmatch(part) for part in parts):
        why = ("each part must be ASCII letters, digits, '_', '-' or '.', starting and ending with a letter, digit "
               "or '_'")
    elif ".." in repo_id or "--" in repo_id:
        why = "'..' and '--' are not allowed"
    if why:
        raise InvalidReference(f"repo id {repo_id!r}: {why}")
    return repo_id


def validate_revision(revision: str) -> str:
    """``revision`` if it is a commit (40 hex digits) or a plain branch / tag name, else
    :class:`InvalidReference`: no ``..``, no leading or trailing ``/``, no ``//``, no part starting with ``.``,
    no backslash, ``%``, space or control character, at most 128 characters."""
    if not isinstance(revision, str) or not revision:
        raise InvalidReference(f"revision {revision!r}: expected a commit sha, a branch or a tag name")
    if GIT_SHA1.fullmatch(revision):
        return revision
    why = None
    if len(revision) > _REVISION_MAX:
        why = f"longer than {_REVISION_MAX} characters"
    elif not _REF_NAME.fullmatch(revision):
        why = "only ASCII letters, digits and _ . + / - are allowed, starting with a letter, digit or _"
    elif ".." in revision or "//" in revision or revision.endswith(("/", ".", ".lock")) or "/." in revision:
        why = "no '..', '//', part starting with '.', or trailing '/', '.' or '.lock'"
    if why:
        raise InvalidReference(f"revision {revision!r}: {why}")
    return revision


def validate_filename(filename: str) -> str:
    """``filename`` if it is a relative path inside a repo (``/``-separated, no empty, ``.`` or ``..`` part, no
    backslash or control character), else :class:`InvalidReference`."""
    if not isinstance(filename, str) or not filename or len(filename) > _FILENAME_MAX:
        raise InvalidReference(f"file name {filename!r}: expected a relative path of 1 to {_FILENAME_MAX} characters")
    if "\\" in filename or any(ord(c) < 32 or ord(c) == 127 for c in filename) or any(
            part in ("", ".", "..") for part in filename.split("/")):
        raise InvalidReference(f"file name {filename!r}: expected a relative path inside the repo (no leading '/', "
                               f"empty, '.' or '..' part, backslash or control character)")
    return filename


def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """``(repo_id, revision)`` of ``org/repo[@revision]`` (an ``hf-hub:`` prefix is dropped), both validated;
    revision None when none is given. Raises :class:`InvalidReference`."""
    if not isinstance(ref, str):
        raise InvalidReference(f"hf-hub reference {ref!r}: expected a string 'org/repo[@revision]'")
    body = ref.removeprefix("hf-hub:")
    repo_id, at, revision = body.partition("@")
    try:
        validate_repo_id(repo_id)
        if at:
            validate_revision(revision)
    except InvalidReference as err:
        raise InvalidReference(f"hf-hub:{body}: {err}") from None
    return repo_id, revision if at else None
