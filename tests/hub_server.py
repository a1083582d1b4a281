"""A local stand-in for the Hugging Face Hub, so download tests drive the real ``huggingface_hub`` client
(HEAD, redirects, ranges, retries) against real sockets without touching the internet.

What ``hf_hub_download`` (huggingface_hub 2.4) needs, and what this server answers:

* ``HEAD /{repo_id}/resolve/{revision}/{filename}`` (``datasets/``, ``spaces/`` prefix for other repo types;
  the revision is URL-quoted). An LFS file (weights) is answered ``302`` with ``Location`` on a CDN host,
  ``X-Repo-Commit``, ``X-Linked-Etag: "<sha256>"`` and ``X-Linked-Size``: the client does not follow a redirect
  to another origin, it reads the metadata from the 302 itself. A small (non-LFS) file is answered ``200``
  with ``ETag: "<git blob sha1>"``, ``Content-Length`` and ``X-Repo-Commit``.
* ``GET`` of the location the HEAD gave. After a dropped connection the client resumes with
  ``Range: bytes=N-`` and expects ``206`` with ``Content-Range``.
* Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``), which the client
  turns into its exception classes.

The CDN is a second listener on another port, a different origin like the real one. Plain mirror URLs (think
GitHub LFS media) are served at ``/media/{name}`` on the Hub port. Every request is logged in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

__all__ = ["Fault", "HubServer", "Request", "ServedFile"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_REPO_PREFIXES = {"datasets": "dataset", "spaces": "space", "kernels": "kernel"}


@dataclass
class Fault:
    """What goes wrong when a file is requested.

    ``kind``: ``"404"`` (EntryNotFound) or ``"500"`` on the resolve request; on the body GET: ``"drop"`` (headers
    announce the full length, then the connection closes once byte ``at`` of the file is sent: what a broken
    proxy or a reset does, so a resumed request from ``at`` on gets nothing either), ``"truncate"`` (the body
    ends at byte ``at`` and its ``Content-Length`` says so, while the HEAD still advertises the full size: a CDN
    serving a cut object), ``"corrupt"`` (right size, one byte flipped: only a checksum notices).
    ``times``: how many requests it spoils before the file is served correctly (None: all of them).
    ``at``: byte offset for drop/truncate (default: half the file).
    """

    kind: str
    times: int | None = None
    at: int | None = None


@dataclass
class ServedFile:
    """A file the server holds; change ``fault`` (or ``data``) at any time."""

    data: bytes
    commit: str = ""
    lfs: bool = True
    fault: Fault | None = None
    delay: float = 0.0  # seconds spent sending the body, to make concurrent downloads overlap

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    host: str  # "hub" or "cdn"
    range: str | None = None


@dataclass
class _Repo:
    refs: dict[str, str] = field(default_factory=dict)  # revision (branch, tag or commit) -> commit
    files: dict[tuple[str, str], ServedFile] = field(default_factory=dict)  # (commit, filename) -> file


class HubServer:
    """Hub + CDN on 127.0.0.1 (ports chosen by the OS); ``start()``/``stop()`` or use as a context manager."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, ServedFile] = {}  # CDN or media path -> file
        self._lock = threading.Lock()
        self._servers = {role: ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {
            "hub": self, "role": role})) for role in ("hub", "cdn")}
        for server in self._servers.values():
            server.daemon_threads = True

    @property
    def url(self) -> str:
        """The Hub endpoint (what ``HF_ENDPOINT`` is set to)."""
        return f"http://127.0.0.1:{self._servers['hub'].server_port}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers['cdn'].server_port}"

    def add_file(self, repo_id: str, filename: str, data: bytes, *, revision: str = "main", commit: str | None = None,
                 repo_type: str = "model", lfs: bool = True, fault: Fault | None = None,
                 delay: float = 0.0) -> ServedFile:
        """Serve ``data`` as ``repo_id@revision:filename``; the revision and its commit both resolve."""
        commit = commit or hashlib.sha1(f"{repo_type}/{repo_id}@{revision}".encode()).hexdigest()
        served = ServedFile(data, commit, lfs, fault, delay)
        with self._lock:
            repo = self._repos.setdefault((repo_type, repo_id), _Repo())
            repo.refs[revision] = repo.refs[commit] = commit
            repo.files[(commit, filename)] = served
            self._blobs[f"/cdn/{len(self._blobs)}/{filename.rsplit('/', 1)[-1]}"] = served
        return served

    def add_url(self, name: str, data: bytes, *, fault: Fault | None = None) -> tuple[str, ServedFile]:
        """Serve ``data`` at a plain mirror URL (no Hub headers); returns the URL and the file."""
        served = ServedFile(data, fault=fault)
        with self._lock:
            self._blobs[f"/media/{name}"] = served
        return f"{self.url}/media/{name}", served

    def gets(self, path_part: str = "") -> list[Request]:
        """The GET requests for file bodies (CDN, media, or a non-LFS resolve) whose path contains ``path_part``."""
        return [r for r in list(self.requests) if r.method == "GET" and path_part in r.path
                and (r.host == "cdn" or "/media/" in r.path or "/resolve/" in r.path)]

    def start(self) -> "HubServer":
        for server in self._servers.values():
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _cdn_location(self, served: ServedFile) -> str:
        path = next(p for p, f in self._blobs.items() if f is served and p.startswith("/cdn/"))
        return self.cdn_url + path

    def _take_fault(self, served: ServedFile, kinds: tuple[str, ...]) -> Fault | None:
        """The file's fault if it applies to this request (and count it against ``times``)."""
        with self._lock:
            fault = served.fault
            if fault is None or fault.kind not in kinds or fault.times == 0:
                return None
            if fault.times is not None:
                fault.times -= 1
            return fault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's pooled connections expect
    hub: HubServer
    role: str

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
        pass

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def do_GET(self) -> None:
        self._handle(head=False)

    def _handle(self, head: bool) -> None:
        path = urlsplit(self.path).path
        self.hub.requests.append(Request(self.command, path, self.role, self.headers.get("Range")))
        if self.role == "hub" and "/resolve/" in path:
            return self._resolve(path, head)
        served = self.hub._blobs.get(path)
        if served is None:
            return self._error(404, None, f"no such path {path}")
        if path.startswith("/media/"):
            fault = self.hub._take_fault(served, ("404", "500"))
            if fault is not None:
                return self._error(int(fault.kind), None, "injected fault")
        self._body(served, head, {})

    def _resolve(self, path: str, head: bool) -> None:
        repo_part, _, rest = path.lstrip("/").partition("/resolve/")
        prefix, _, name = repo_part.partition("/")
        repo_type, repo_id = (_REPO_PREFIXES[prefix], name) if prefix in _REPO_PREFIXES else ("model", repo_part)
        revision, _, filename = rest.partition("/")
        revision, filename = unquote(revision), unquote(filename)
        repo = self.hub._repos.get((repo_type, repo_id))
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        commit = repo.refs.get(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        served = repo.files.get((commit, filename))
        fault = None if served is None else self.hub._take_fault(served, ("404", "500"))
        if served is None or (fault is not None and fault.kind == "404"):
            return self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}", commit)
        if fault is not None:
            return self._error(500, None, "Internal Error")
        if not served.lfs:
            return self._body(served, head, {"X-Repo-Commit": commit})
        self._send(302, {"Location": self.hub._cdn_location(served), "X-Repo-Commit": commit,
                         "X-Linked-Etag": f'"{served.sha256}"', "X-Linked-Size": str(len(served.data)),
                         "ETag": f'"{_git_sha1(_lfs_pointer(served))}"', "Content-Length": "0"})

    def _body(self, served: ServedFile, head: bool, headers: dict[str, str]) -> None:
        data, total = served.data, len(served.data)
        fault = None if head else self.hub._take_fault(served, ("drop", "truncate", "corrupt"))
        if fault is not None and fault.kind == "corrupt":
            middle = total // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        status, start, end = 200, 0, total
        match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        if match:
            start, end = int(match[1]), int(match[2]) + 1 if match[2] else total
            if start >= total:
                return self._send(416, {"Content-Range": f"bytes */{total}", "Content-Length": "0"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        at = total // 2 if fault is None or fault.at is None else fault.at
        body = data[start:end]
        sent = body
        if fault is not None and fault.kind == "truncate":
            body = sent = body[:max(0, at - start)]
        elif fault is not None and fault.kind == "drop":
            sent = body[:max(0, at - start)]
        etag = served.sha256 if served.lfs else _git_sha1(served.data)
        self._send(status, {**headers, "Content-Length": str(len(body)), "Accept-Ranges": "bytes",
                            "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"})
        if head:
            return
        step = 1 << 16
        for offset in range(0, len(sent), step):
            try:
                self.wfile.write(sent[offset:offset + step])
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return
            if served.delay:
                time.sleep(served.delay * min(step, len(sent) - offset) / max(1, total))
        if len(sent) < len(body):  # drop: the peer sees EOF before Content-Length bytes
            self.wfile.flush()
            self.close_connection = True

    def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, headers, b"" if self.command == "HEAD" else body)

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)


def _lfs_pointer(served: ServedFile) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{served.sha256}\nsize {len(served.data)}\n".encode()


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
