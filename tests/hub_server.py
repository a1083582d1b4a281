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

What ``create_repo`` + ``create_commit`` / ``upload_folder`` need (huggingface_hub 2.4), and what this server answers:

* ``POST /api/repos/create`` (JSON ``name``, ``organization``, ``type``, ``visibility``): ``200 {"url": ...}``,
  or ``409`` with the same ``url`` when the repo exists (``exist_ok=True`` reads it). A new repo has ``main`` with
  one commit holding ``.gitattributes``, as on the Hub. ``POST /api/{type}s/{repo}/branch/{branch}``: a new
  branch (``409`` if it exists).
* ``POST /api/validate-yaml`` (JSON ``content``): the README's front matter must be a YAML mapping, else ``400``
  with ``errors``; the client sends it before anything else when a commit adds ``README.md``.
* ``POST /api/{type}s/{repo}/preupload/{revision}`` (JSON ``files``: path, size, base64 ``sample`` of the first
  512 bytes): each file's ``uploadMode`` (``lfs`` for weight suffixes, binary samples or >= 10 MiB, else
  ``regular``) and the ``oid`` it already has on that revision (the client skips unchanged files, and if nothing is
  left asks ``GET /api/{type}s/{repo}/revision/{revision}`` for the head commit).
* LFS files: ``POST /{repo}.git/info/lfs/objects/batch`` (git-lfs batch API, ``basic`` transfer) answers an
  ``upload`` action (``PUT`` of the raw bytes to the CDN port, checked against oid and size) and a ``verify`` action
  (``POST /{repo}.git/info/lfs/objects/verify``); an object the server already holds gets no actions.
* ``POST /api/{type}s/{repo}/commit/{revision}`` (ndjson: a ``header`` line with ``summary``/``description``, then
  ``file`` lines with base64 ``content`` for regular files, ``lfsFile`` lines naming an uploaded ``oid``,
  ``deletedFile`` lines): a new commit on that branch, answered ``{"commitOid", "commitUrl"}``. Its files are then
  served by ``resolve`` like any other; each commit is recorded in ``commits``.
* Xet: with ``hf_xet`` installed the 2.4 client uploads through Xet storage whatever the server says, and does not
  fall back; this server does not speak Xet, so tests set ``huggingface_hub.constants.HF_HUB_DISABLE_XET`` (the
  ``HF_HUB_DISABLE_XET=1`` variable, read at import), which makes the client use the LFS batch API above.
* Writes need ``Authorization: Bearer <write_token>`` when ``write_token`` is set (``401`` otherwise).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

__all__ = ["Commit", "ConnectionAttempts", "Fault", "HubServer", "Request", "ServedFile", "closed_port"]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
_REPO_PREFIXES = {"datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_API_REPO = re.compile(r"/api/(?P<type>model|dataset|space|kernel)s/(?P<repo>[^/]+(?:/[^/]+)?)"
                       r"/(?P<op>preupload|commit|revision|branch)/(?P<rev>.+)")
_LFS_API = re.compile(r"/(?:(?P<prefix>datasets|spaces|kernels)/)?(?P<repo>.+)\.git/info/lfs/objects"
                      r"/(?P<op>batch|verify)")
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".ckpt", ".h5", ".msgpack", ".npy", ".npz", ".zip",
                 ".gz", ".tar", ".caffemodel")
_GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in _LFS_SUFFIXES).encode()


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


@dataclass(frozen=True)
class Commit:
    """A commit made through the upload API: where, its message, and the files it added or changed."""

    repo_id: str
    revision: str
    oid: str
    summary: str
    description: str
    files: dict[str, ServedFile]  # path -> file, for the additions of this commit
    deleted: tuple[str, ...] = ()


@dataclass
class _Repo:
    refs: dict[str, str] = field(default_factory=dict)  # revision (branch, tag or commit) -> commit
    files: dict[tuple[str, str], ServedFile] = field(default_factory=dict)  # (commit, filename) -> file
    private: bool | None = None  # as create_repo asked (None: not created through the API)


class HubServer:
    """Hub + CDN on 127.0.0.1 (ports chosen by the OS); ``start()``/``stop()`` or use as a context manager."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.commits: list[Commit] = []  # made through the upload API, in order
        self.write_token: str | None = None  # when set, writes need "Authorization: Bearer <write_token>"
        self._lfs: dict[str, bytes] = {}  # sha256 -> bytes uploaded through the LFS batch API
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

    def repo_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, ServedFile]:
        """The files of ``repo_id`` at ``revision`` (a branch or commit), as ``resolve`` serves them."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            commit = repo.refs[revision]
            return {name: f for (c, name), f in repo.files.items() if c == commit}

    def is_private(self, repo_id: str, *, repo_type: str = "model") -> bool | None:
        return self._repos[(repo_type, repo_id)].private

    def writes(self) -> list[Request]:
        """The requests that write (POST, PUT): an empty list means nothing was sent to be stored."""
        return [r for r in list(self.requests) if r.method in ("POST", "PUT")]

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

    def _create_repo(self, repo_type: str, repo_id: str, private: bool | None) -> bool:
        """A new repo whose ``main`` holds ``.gitattributes`` (as on the Hub); False if it exists."""
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                return False
            self._repos[(repo_type, repo_id)] = _Repo(private=private)
        self.add_file(repo_id, ".gitattributes", _GITATTRIBUTES, repo_type=repo_type, lfs=False,
                      commit=hashlib.sha1(f"initial {repo_type}/{repo_id}".encode()).hexdigest())
        return True

    def _new_commit(self, repo_type: str, repo_id: str, revision: str, header: dict,
                    added: dict[str, ServedFile], deleted: list[str]) -> Commit:
        """Apply a commit on top of ``revision``'s head and move the branch to it."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            parent = repo.refs[revision]
            oid = hashlib.sha1(f"{parent}\n{header}\n{sorted(added)}\n{time.time_ns()}".encode()).hexdigest()
            files = {name: f for (c, name), f in repo.files.items() if c == parent and name not in deleted}
            files.update(added)
            for name, served in files.items():
                served.commit = served.commit or oid
                repo.files[(oid, name)] = served
                if served.lfs and not any(f is served for f in self._blobs.values()):
                    self._blobs[f"/cdn/{len(self._blobs)}/{name.rsplit('/', 1)[-1]}"] = served
            repo.refs[revision] = repo.refs[oid] = oid
            commit = Commit(repo_id, revision, oid, header.get("summary", ""), header.get("description", ""),
                            dict(added), tuple(deleted))
            self.commits.append(commit)
            return commit

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

    # ---- uploads: create_repo, create_branch, validate-yaml, preupload, LFS batch/verify/PUT, commit ----

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_body()
        self.hub.requests.append(Request("POST", path, self.role))
        if self.role != "hub":
            return self._error(405, None, "POST is answered on the Hub port only")
        if not self._authorized():
            return self._error(401, None, "Invalid credentials in Authorization header")
        try:
            if path == "/api/repos/create":
                return self._create_repo(json.loads(body))
            if path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body))
            lfs = _LFS_API.fullmatch(path)
            if lfs:
                repo_type = _REPO_PREFIXES.get(lfs["prefix"] or "", "model")
                return self._lfs_batch(repo_type, lfs["repo"], json.loads(body), lfs["op"])
            match = _API_REPO.fullmatch(path)
            if match is None:
                return self._error(404, None, f"no such endpoint {path}")
            repo_type, repo_id, op, revision = match["type"], match["repo"], match["op"], unquote(match["rev"])
            if (repo_type, repo_id) not in self.hub._repos:
                return self._error(404, "RepoNotFound", "Repository not found")
            if op == "branch":
                return self._create_branch(repo_type, repo_id, revision, json.loads(body or b"{}"))
            if revision not in self.hub._repos[(repo_type, repo_id)].refs:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            if op == "preupload":
                return self._preupload(repo_type, repo_id, revision, json.loads(body))
            if op == "commit":
                return self._commit(repo_type, repo_id, revision, body)
            return self._error(405, None, f"POST {path}")
        except (ValueError, KeyError, TypeError) as err:  # malformed JSON / ndjson from the client
            return self._error(400, "BadRequest", f"malformed request: {err!r}")

    def do_PUT(self) -> None:
        """The LFS ``basic`` upload: the raw bytes of one object, to the URL the batch answer gave."""
        path = urlsplit(self.path).path
        body = self._read_body()
        self.hub.requests.append(Request("PUT", path, self.role))
        oid, _, size = path.removeprefix("/lfs-upload/").partition("/")
        if self.role != "cdn" or not path.startswith("/lfs-upload/"):
            return self._error(404, None, f"no such upload URL {path}")
        if hashlib.sha256(body).hexdigest() != oid or str(len(body)) != size:
            return self._error(400, None, f"upload does not match oid {oid} and size {size}")
        with self.hub._lock:
            self.hub._lfs[oid] = body
        self._json(200, {})

    def _read_body(self) -> bytes:
        """The request body, sent with Content-Length or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        token = self.hub.write_token
        return token is None or self.headers.get("Authorization") == f"Bearer {token}"

    def _json(self, status: int, data: object) -> None:
        body = json.dumps(data).encode()
        self._send(status, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)

    def _create_repo(self, payload: dict) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        visibility = payload.get("visibility")
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}"
        if not self.hub._create_repo(repo_type, repo_id, None if visibility is None else visibility == "private"):
            # the Hub's 409 carries the url too, and exist_ok=True reads it
            message = f"You already created this {repo_type} repo"
            body = json.dumps({"error": message, "url": url}).encode()
            return self._send(409, {"Content-Type": "application/json", "Content-Length": str(len(body)),
                                    "X-Error-Message": message}, body)
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _create_branch(self, repo_type: str, repo_id: str, branch: str, payload: dict) -> None:
        repo = self.hub._repos[(repo_type, repo_id)]
        start = payload.get("startingPoint") or "main"
        if branch in repo.refs:
            return self._error(409, None, f"Reference already exists: refs/heads/{branch}")
        if start not in repo.refs:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {start}")
        with self.hub._lock:
            repo.refs[branch] = repo.refs[start]
        self._json(200, {})

    def _validate_yaml(self, payload: dict) -> None:
        import yaml  # a dependency of huggingface_hub

        content = payload["content"]
        errors = []
        if content.startswith("---\n"):
            front, sep, _ = content[4:].partition("\n---")
            try:
                meta = yaml.safe_load(front) if sep else None
                if not isinstance(meta, dict):
                    errors.append({"message": "the front matter is not a closed YAML mapping"})
            except yaml.YAMLError as err:
                errors.append({"message": f"invalid YAML: {err}"})
        self._json(400 if errors else 200, {"errors": errors, "warnings": []})

    def _preupload(self, repo_type: str, repo_id: str, revision: str, payload: dict) -> None:
        repo = self.hub._repos[(repo_type, repo_id)]
        commit = repo.refs[revision]
        answers = []
        for item in payload["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["path"].endswith(_LFS_SUFFIXES) or item["size"] >= 10 << 20 or b"\0" in sample
            existing = repo.files.get((commit, item["path"]))
            oid = None if existing is None else existing.sha256 if existing.lfs else _git_sha1(existing.data)
            answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        self._json(200, {"files": answers, "commitOid": commit})

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict, op: str) -> None:
        if (repo_type, repo_id) not in self.hub._repos:
            return self._error(404, "RepoNotFound", "Repository not found")
        if op == "verify":
            stored = self.hub._lfs.get(payload["oid"])
            if stored is None or len(stored) != payload["size"]:
                return self._error(404, None, f"LFS object {payload['oid']} was not uploaded")
            return self._json(200, {})
        if payload.get("operation") != "upload":
            return self._error(400, None, "only the upload operation is served here")
        objects = []
        for obj in payload["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub._lfs:
                prefix = "" if repo_type == "model" else f"{repo_type}s/"
                answer["actions"] = {
                    "upload": {"href": f"{self.hub.cdn_url}/lfs-upload/{obj['oid']}/{obj['size']}", "header": {}},
                    "verify": {"href": f"{self.hub.url}/{prefix}{repo_id}.git/info/lfs/objects/verify", "header": {}}}
            objects.append(answer)
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        self._send(200, {"Content-Type": "application/vnd.git-lfs+json", "Content-Length": str(len(body))}, body)

    def _commit(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        header: dict = {}
        added: dict[str, ServedFile] = {}
        deleted: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                added[value["path"]] = ServedFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                data = self.hub._lfs.get(value["oid"])
                if data is None:
                    return self._error(422, None, f"LFS object {value['oid']} ({value['path']}) was not uploaded")
                added[value["path"]] = ServedFile(data, lfs=True)
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                return self._error(400, None, f"unknown commit operation {key!r}")
        parent = header.get("parentCommit")
        if parent and parent != self.hub._repos[(repo_type, repo_id)].refs[revision]:
            return self._error(412, None, "A commit has happened since. Please refresh and try again.")
        commit = self.hub._new_commit(repo_type, repo_id, revision, header, added, deleted)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._json(200, {"success": True, "commitOid": commit.oid,
                         "commitUrl": f"{self.hub.url}/{prefix}{repo_id}/commit/{commit.oid}", "hookOutput": ""})

    def _api_get(self, path: str) -> None:
        """``GET /api/{type}s/{repo}/revision/{revision}``: the head commit and file list (repo_info)."""
        match = _API_REPO.fullmatch(path)
        if match is None or match["op"] != "revision":
            return self._error(404, None, f"no such endpoint {path}")
        repo = self.hub._repos.get((match["type"], match["repo"]))
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        commit = repo.refs.get(unquote(match["rev"]))
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(match['rev'])}")
        names = sorted(name for (c, name) in repo.files if c == commit)
        self._json(200, {"id": match["repo"], "sha": commit, "private": bool(repo.private),
                         "siblings": [{"rfilename": name} for name in names]})

    def _handle(self, head: bool) -> None:
        path = urlsplit(self.path).path
        self.hub.requests.append(Request(self.command, path, self.role, self.headers.get("Range")))
        if self.role == "hub" and "/resolve/" in path:
            return self._resolve(path, head)
        if self.role == "hub" and path.startswith("/api/") and not head:
            return self._api_get(path)
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


class ConnectionAttempts:
    """Counts this process's name lookups and TCP connects while active (``with ConnectionAttempts() as log``),
    from the interpreter's audit events (``socket.getaddrinfo``, ``socket.connect``): the real calls go ahead
    untouched, so a test sees how often the client really tried a host, not how long it took."""

    _active: list["ConnectionAttempts"] = []
    _hooked = False

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def __enter__(self) -> "ConnectionAttempts":
        if not ConnectionAttempts._hooked:  # an audit hook cannot be removed: one for the whole process
            sys.addaudithook(ConnectionAttempts._hook)
            ConnectionAttempts._hooked = True
        ConnectionAttempts._active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        ConnectionAttempts._active.remove(self)

    @staticmethod
    def _hook(event: str, args: tuple) -> None:
        if event == "socket.getaddrinfo":
            for log in ConnectionAttempts._active:
                log.events.append(("lookup", args[0]))
        elif event == "socket.connect":
            for log in ConnectionAttempts._active:
                log.events.append(("connect", args[1]))

    def lookups(self, host: str) -> int:
        """Name lookups of ``host`` (each connection attempt to a name starts with one)."""
        return sum(1 for kind, what in self.events if kind == "lookup" and what in (host, host.encode()))

    def connects(self, host: str, port: int) -> int:
        """TCP connects to ``host:port``."""
        return sum(1 for kind, what in self.events if kind == "connect" and isinstance(what, tuple)
                   and tuple(what[:2]) == (host, port))


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released): connecting there is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lfs_pointer(served: ServedFile) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{served.sha256}\nsize {len(served.data)}\n".encode()


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
