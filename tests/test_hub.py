"""End-to-end tests of alexnet_zoo.weights.download with the real huggingface_hub client against tests/hub_server.py."""

import hashlib
import multiprocessing
import os
import random
import socket
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
from hub_server import ConnectionAttempts, Fault, closed_port
from huggingface_hub import try_to_load_from_cache

from alexnet_zoo.errors import ChecksumMismatch, DownloadFailed, InvalidReference, NotCached, Unreachable
from alexnet_zoo.weights import digests
from alexnet_zoo.weights.digests import sha256_file
from alexnet_zoo.weights.download import fetch, fetch_repo_files
from alexnet_zoo.weights.sources import FileSource, parse_hub_ref

REPO, FILE = "alexnet-zoo/alexnet", "alexnet.safetensors"


def _weights(size: int = 2_000_000, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _source(data: bytes, repo: str = REPO, revision: str = "v1", **kwargs) -> FileSource:
    return FileSource(repo, FILE, revision, hashlib.sha256(data).hexdigest(), len(data), **kwargs)


def _corrupted(data: bytes) -> bytes:
    """What hub_server sends for Fault("corrupt")."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


def _hub_cache_entries(repo: str = REPO) -> list[Path]:
    """Blobs and snapshot links the Hub cache holds for ``repo``: anything a later call could pick up."""
    folder = Path(os.environ["HF_HUB_CACHE"], "models--" + repo.replace("/", "--"))
    return [p for sub in ("blobs", "snapshots") for p in (folder / sub).rglob("*") if p.is_file() or p.is_symlink()]


def _mirror_files() -> list[Path]:
    return [p for p in Path(os.environ["ALEXNET_ZOO_CACHE"], "mirrors").rglob("*") if p.is_file()]


@pytest.mark.parametrize("lfs", [True, False], ids=["lfs-302-to-cdn", "small-file-200"])
def test_download_is_verified_and_lands_in_the_hub_cache(hub_server, lfs):
    data = _weights()
    served = hub_server.add_file(REPO, FILE, data, revision="v1", lfs=lfs)
    path = fetch([_source(data)])
    assert path.read_bytes() == data and sha256_file(path) == served.sha256
    assert path.parent == Path(os.environ["HF_HUB_CACHE"], "models--alexnet-zoo--alexnet", "snapshots", served.commit)
    # one HEAD without retries (a host that cannot be reached fails there at once), then the client's HEAD and GET
    expected = [("HEAD", "hub")] * 2 + ([("GET", "cdn")] if lfs else [("GET", "hub")])
    assert [(r.method, r.host) for r in hub_server.requests] == expected


def test_commit_pinned_revision(hub_server):
    data = _weights()
    served = hub_server.add_file(REPO, FILE, data, revision="v1")
    assert fetch([_source(data, revision=served.commit)]).read_bytes() == data


def test_second_fetch_makes_no_request_and_does_not_rehash(hub_server, monkeypatch):
    data = _weights()
    hub_server.add_file(REPO, FILE, data, revision="v1")
    first = fetch([_source(data)])
    hub_server.requests.clear()
    monkeypatch.setattr(digests, "sha256_file", lambda path: pytest.fail(f"rehashed {path}"))
    assert fetch([_source(data)]) == first  # a tag, yet no HEAD: the cached copy matches the pinned sha256
    assert hub_server.requests == []


def test_a_file_changed_on_disk_is_hashed_again_and_replaced(hub_server):
    data = _weights()
    hub_server.add_file(REPO, FILE, data, revision="v1")
    blob = Path(os.path.realpath(fetch([_source(data)])))
    blob.write_bytes(_corrupted(data))  # same size: only the hash tells
    stat = blob.stat()
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as an edit a second later would
    hub_server.requests.clear()
    assert fetch([_source(data)]).read_bytes() == data
    assert len(hub_server.gets()) == 1  # the changed copy was deleted and downloaded again


def test_offline_mode_uses_the_cache(hub_server, monkeypatch):
    data = _weights()
    hub_server.add_file(REPO, FILE, data, revision="v1")
    path = fetch([_source(data)])
    hub_server.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # after huggingface_hub was imported: fetch reads it at call time
    assert fetch([_source(data)]) == path
    assert hub_server.requests == []


def test_offline_mode_without_cache_raises_not_cached(hub_server, monkeypatch):
    data = _weights()
    hub_server.add_file(REPO, FILE, data, revision="v1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotCached) as info:
        fetch([_source(data)])
    assert REPO in str(info.value) and FILE in str(info.value) and "v1" in str(info.value)
    assert hub_server.requests == []


@pytest.mark.parametrize("case,reason", [
    ("missing-repo", "HTTP 404 (repository not found)"),
    ("missing-revision", "HTTP 404 (revision not found)"),
    ("missing-file", "HTTP 404 (file not found in this revision)"),
    ("404", "HTTP 404 (file not found in this revision)"),
    ("500", "HTTP 500 (Internal Server Error)"),
    ("drop", "connection dropped"),
    ("truncate", "truncated"),
])
def test_failures_name_repo_file_and_reason_and_leave_nothing_cached(hub_server, case, reason):
    data = _weights()
    if case == "missing-revision":
        hub_server.add_file(REPO, FILE, data, revision="v2")
    elif case == "missing-file":
        hub_server.add_file(REPO, "other.bin", data, revision="v1")
    elif case != "missing-repo":
        served = hub_server.add_file(REPO, FILE, data, revision="v1", fault=Fault(case))
    with pytest.raises(DownloadFailed) as info:
        fetch([_source(data)])
    message = str(info.value)
    assert f"{REPO}@v1:{FILE}" in message and reason in message, message
    assert _hub_cache_entries() == []
    if case in ("404", "500", "drop", "truncate"):  # once the server recovers, the next call succeeds
        served.fault = None
        assert fetch([_source(data)]).read_bytes() == data


def test_unreachable_endpoint(hub_server):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = _weights(1000)
    with pytest.raises(DownloadFailed, match=r"connection failed"):
        fetch([_source(data, endpoint=f"http://127.0.0.1:{port}")])


def test_dropped_connection_is_resumed_with_a_range_request(hub_server, monkeypatch):
    # The client only resumes from whole chunks it has written (10 MB by default): use small ones.
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    data = _weights()
    hub_server.add_file(REPO, FILE, data, revision="v1", fault=Fault("drop", times=1, at=1_000_000))
    assert fetch([_source(data)]).read_bytes() == data
    first, resumed = hub_server.gets()
    assert first.range is None and resumed.range.startswith("bytes=")
    assert 0 < int(resumed.range[len("bytes="):-1]) <= 1_000_000


@pytest.mark.parametrize("pin", ["server-corrupts", "spec-pins-other-bytes"])
def test_wrong_bytes_of_the_right_size_raise_checksum_mismatch_and_are_not_kept(hub_server, pin):
    data = _weights()
    served = hub_server.add_file(REPO, FILE, data, revision="v1",
                                 fault=Fault("corrupt") if pin == "server-corrupts" else None)
    wanted, got = (data, _corrupted(data)) if pin == "server-corrupts" else (_corrupted(data), data)
    with pytest.raises(ChecksumMismatch) as info:
        fetch([_source(wanted)])
    message = str(info.value)
    assert f"{REPO}@v1:{FILE}" in message
    assert f"expected sha256 {hashlib.sha256(wanted).hexdigest()}, got {hashlib.sha256(got).hexdigest()}" in message
    assert _hub_cache_entries() == []
    assert try_to_load_from_cache(REPO, FILE, cache_dir=os.environ["HF_HUB_CACHE"], revision="v1") is None
    served.fault, served.data = None, wanted  # fixed upstream: the next call downloads again and succeeds
    hub_server.requests.clear()
    assert fetch([_source(wanted)]).read_bytes() == wanted
    assert len(hub_server.gets()) == 1


def test_size_mismatch_is_a_checksum_mismatch(hub_server):
    data = _weights()
    hub_server.add_file(REPO, FILE, data[:-10], revision="v1")  # the server's HEAD and GET agree on the short size
    with pytest.raises(ChecksumMismatch, match=f"expected {len(data)} bytes, got {len(data) - 10}"):
        fetch([_source(data)])
    assert _hub_cache_entries() == []


def _mirror(hub_server, kind: str, data: bytes, fault: Fault | None = None) -> FileSource:
    if kind == "hub":
        hub_server.add_file("mirror-org/alexnet", FILE, data, revision="v1", fault=fault)
        return _source(data, repo="mirror-org/alexnet")
    url, _ = hub_server.add_url("alexnet.safetensors", data, fault=fault)
    return _source(data, url=url)


@pytest.mark.parametrize("kind", ["hub", "url"])
def test_falls_back_to_a_mirror_when_the_first_source_404s(hub_server, kind):
    data = _weights()
    sources = [_source(data), _mirror(hub_server, kind, data)]  # REPO does not exist on the server
    path = fetch(sources)
    assert path.read_bytes() == data
    hub_server.requests.clear()
    assert fetch(sources) == path and hub_server.requests == []  # the mirror's copy is found without a request


@pytest.mark.parametrize("bad,good", [("hub", "hub"), ("hub", "url"), ("url", "hub")])
def test_corrupt_source_is_skipped_and_not_kept(hub_server, bad, good):
    data = _weights()
    if bad == "hub":
        hub_server.add_file(REPO, FILE, data, revision="v1", fault=Fault("corrupt"))
        first = _source(data)
    else:
        first = _source(data, url=hub_server.add_url("corrupt.safetensors", data, fault=Fault("corrupt"))[0])
    second = _mirror(hub_server, good, data) if good == "url" else _source(data, repo="mirror-org/alexnet")
    if good == "hub":
        hub_server.add_file("mirror-org/alexnet", FILE, data, revision="v1")
    path = fetch([first, second])
    assert path.read_bytes() == data
    if bad == "hub":
        assert _hub_cache_entries(REPO) == []
    else:
        assert _mirror_files() == []


def test_plain_url_mirror_with_wrong_bytes_keeps_nothing(hub_server):
    data = _weights()
    url, _ = hub_server.add_url("alexnet.safetensors", data, fault=Fault("corrupt"))
    with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
        fetch([_source(data, url=url)])
    assert _mirror_files() == []


def test_every_failure_is_listed(hub_server):
    data = _weights()
    hub_server.add_file("org/flaky", FILE, data, revision="v1", fault=Fault("500"))
    url, _ = hub_server.add_url("alexnet.safetensors", data, fault=Fault("corrupt"))
    sources = [_source(data), _source(data, repo="org/flaky"), _source(data, url=url)]
    with pytest.raises(DownloadFailed) as info:  # not all were checksum mismatches
        fetch(sources)
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 3
    assert REPO in lines[0] and "HTTP 404 (repository not found)" in lines[0]
    assert "org/flaky" in lines[1] and "HTTP 500" in lines[1]
    assert url in lines[2] and "checksum mismatch" in lines[2]


def test_environment_is_read_at_call_time(hub_server, monkeypatch, tmp_path):
    """huggingface_hub froze HF_ENDPOINT and HF_HUB_CACHE at import; fetch follows the environment as it is now."""
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "import_time_cache"))
    data = _weights()
    hub_server.add_file(REPO, FILE, data, revision="v1")
    path = fetch([_source(data)])
    assert Path(os.environ["HF_HUB_CACHE"]) in path.parents and path.read_bytes() == data
    assert not (tmp_path / "import_time_cache").exists()


def _fetch_in_process(source: FileSource, barrier, results) -> None:
    barrier.wait()
    path = fetch([source])
    results.put((str(path), sha256_file(path)))


def test_two_processes_download_the_file_once(hub_server):
    data = _weights(4_000_000)
    served = hub_server.add_file(REPO, FILE, data, revision="v1", delay=1.0)  # a slow body: the calls overlap
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    workers = [spawn.Process(target=_fetch_in_process, args=(_source(data), barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0
    assert outcomes[0] == outcomes[1] and outcomes[0][1] == served.sha256
    # One download in all (a probe HEAD, the client's HEAD, one GET): the second process waited for the first and
    # found its verified copy.
    assert [r.method for r in hub_server.requests] == ["HEAD", "HEAD", "GET"]


def test_file_source_checks_its_pin():
    source = FileSource(REPO, FILE, "v1", "AB" * 32, 10)
    assert source.describe() == f"{REPO}@v1:{FILE}" and source.sha256 == "ab" * 32
    with pytest.raises(ValueError, match="64 hex digits"):
        FileSource(REPO, FILE, "v1", "abc", 10)
    with pytest.raises(ValueError, match="pin different files"):
        fetch([source, FileSource("org/other", FILE, "v1", "cd" * 32, 10)])


def test_prefix_pin_without_size(hub_server):
    """torchvision publishes only the first 8 hex digits of a file's sha256 (in its name), and no size."""
    data = _weights()
    url, _ = hub_server.add_url("alexnet-owt.pth", data)
    pinned = FileSource("pytorch/vision", "alexnet-owt.pth", "v0.29.1", hashlib.sha256(data).hexdigest()[:8], None,
                        url=url)
    assert pinned.pin() == f"sha256 {pinned.sha256}... (prefix), size unknown"
    assert fetch([pinned]).read_bytes() == data
    wrong = FileSource("pytorch/vision", "alexnet-owt.pth", "v0.29.1",
                       hashlib.sha256(_corrupted(data)).hexdigest()[:8], None, url=url)
    with pytest.raises(ChecksumMismatch) as info:
        fetch([wrong])
    assert f"expected sha256 {wrong.sha256}, got {hashlib.sha256(data).hexdigest()}" in str(info.value)


# --- hf-hub: repos, which no spec pins: the Hub's own checksum is the pin -------------------------------------

HF_REPO = "someone/alexnet-flowers"
SMALL = b'{"architecture": "alexnet"}\n'


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _serve_repo(hub_server, data: bytes, **kwargs):
    served = hub_server.add_file(HF_REPO, "model.safetensors", data, **kwargs)
    hub_server.add_file(HF_REPO, "config.json", SMALL, lfs=False, revision=kwargs.get("revision", "main"))
    return served


def test_repo_files_are_checked_against_the_hubs_checksums(hub_server):
    data = _weights()
    _serve_repo(hub_server, data)
    files = fetch_repo_files(HF_REPO, ["model.safetensors", "config.json"])
    assert files["model.safetensors"].read_bytes() == data and files["config.json"].read_bytes() == SMALL
    # the client stored each under the checksum the Hub gave: the sha256 (LFS) and the git blob sha1 (small file)
    assert Path(os.path.realpath(files["model.safetensors"])).name == hashlib.sha256(data).hexdigest()
    assert Path(os.path.realpath(files["config.json"])).name == _git_sha1(SMALL)


def test_same_size_tampered_bytes_from_the_hub_are_refused(hub_server):
    data = _weights()
    served = _serve_repo(hub_server, data, fault=Fault("corrupt"))  # HEAD says the true sha256, the body lies
    with pytest.raises(ChecksumMismatch) as info:
        fetch_repo_files(HF_REPO, ["model.safetensors", "config.json"])
    message = str(info.value)
    assert f"hf-hub:{HF_REPO}@main" in message and "'model.safetensors'" in message
    assert f"expected sha256 {served.sha256}, got {hashlib.sha256(_corrupted(data)).hexdigest()}" in message
    assert _hub_cache_entries(HF_REPO) == [] or all(p.name != "model.safetensors" for p in _hub_cache_entries(HF_REPO))
    assert len(hub_server.gets("model.safetensors")) == 2  # a second download, also refused
    served.fault = None
    assert fetch_repo_files(HF_REPO, ["model.safetensors"])["model.safetensors"].read_bytes() == data


def test_a_tampered_cached_copy_is_downloaded_again_online_and_refused_offline(hub_server, monkeypatch):
    data = _weights()
    _serve_repo(hub_server, data)
    blob = Path(os.path.realpath(fetch_repo_files(HF_REPO, ["model.safetensors"])["model.safetensors"]))
    blob.write_bytes(_corrupted(data))  # same size, same name: only the hash tells
    hub_server.requests.clear()
    assert fetch_repo_files(HF_REPO, ["model.safetensors"])["model.safetensors"].read_bytes() == data
    assert len(hub_server.gets("model.safetensors")) == 1
    blob.write_bytes(_corrupted(data))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_server.requests.clear()
    with pytest.raises(ChecksumMismatch, match=rf"cached file 'model.safetensors' .*expected sha256 "
                                               rf"{hashlib.sha256(data).hexdigest()}, got "
                                               rf"{hashlib.sha256(_corrupted(data)).hexdigest()}"):
        fetch_repo_files(HF_REPO, ["model.safetensors"])
    assert hub_server.requests == [] and not blob.exists()


def test_offline_repo_files_come_from_the_cache_checked(hub_server, monkeypatch):
    data = _weights()
    _serve_repo(hub_server, data, revision="v1")
    online = fetch_repo_files(HF_REPO, ["model.safetensors", "config.json"], "v1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_server.requests.clear()
    assert fetch_repo_files(HF_REPO, ["model.safetensors", "config.json"], "v1") == online
    assert hub_server.requests == []
    with pytest.raises(NotCached, match="'model.safetensors' is not in the cache"):
        fetch_repo_files(HF_REPO, ["model.safetensors"], "v2")


# --- repo ids and revisions are validated before any request --------------------------------------------------

BAD_REPO_IDS = ["../alexnet", "org/..", "org/../x", "..%2f..", "org/%2e%2e", "/abs/path", "org/", "/repo", "org",
                "org/repo/extra", "org//repo", "org\\repo", "org/re po", "org/re\npo", "org/re\x00po", "-org/repo",
                "org/repo-", "org--x/repo", "org/r.", "o" * 50 + "/" + "r" * 50, "orgé/repo", ""]
BAD_REVISIONS = ["../../../escape", "..", "a/../b", "main/..", "%2e%2e", "%2e%2e/%2e%2e", "/etc", "main/", "a//b",
                 "main\\..", "ma\nin", "ma\tin", "ma\x00in", "ma in", "main.lock", ".hidden", "a/.b", "v1.",
                 "@{1}", "main~1", "x" * 129, ""]


@pytest.mark.parametrize("repo_id", BAD_REPO_IDS)
def test_bad_repo_ids_are_refused_before_any_request(hub_server, repo_id):
    with pytest.raises(InvalidReference, match="repo id"):
        fetch_repo_files(repo_id, ["model.safetensors"])
    with pytest.raises(InvalidReference):
        parse_hub_ref(f"hf-hub:{repo_id}@main")
    with pytest.raises(ValueError):  # a spec's source is checked when it is written down
        FileSource(repo_id, FILE, "v1", "ab" * 32, 10)
    assert hub_server.requests == []


@pytest.mark.parametrize("revision", BAD_REVISIONS)
def test_bad_revisions_are_refused_before_any_request_and_nothing_is_written(hub_server, revision, tmp_path):
    hub_server.add_file(HF_REPO, "model.safetensors", _weights(1000))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InvalidReference, match="revision"):
        fetch_repo_files(HF_REPO, ["model.safetensors"], revision)
    with pytest.raises(InvalidReference, match="revision"):
        parse_hub_ref(f"hf-hub:{HF_REPO}@{revision}")
    assert hub_server.requests == [] and sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("filename", ["../x", "/etc/passwd", "a/../b", "a//b", "a\\b", "a\nb", ".", ""])
def test_bad_file_names_are_refused(filename):
    with pytest.raises(InvalidReference, match="file name"):
        FileSource(REPO, filename, "v1", "ab" * 32, 10)


@pytest.mark.parametrize("ref,expected", [
    ("hf-hub:org/repo", ("org/repo", None)), ("org/repo@v1.0", ("org/repo", "v1.0")),
    ("hf-hub:org/my_model.v2@refs/pr/3", ("org/my_model.v2", "refs/pr/3")),
    ("hf-hub:org/repo@" + "0123456789abcdef" * 2 + "01234567", ("org/repo", "0123456789abcdef" * 2 + "01234567")),
])
def test_valid_hub_references_parse(ref, expected):
    assert parse_hub_ref(ref) == expected


# --- a host that cannot be reached fails at once ----------------------------------------------------------------

@pytest.mark.parametrize("host", ["dns", "refused"])
def test_an_unreachable_host_is_tried_once_and_the_error_says_what_to_do(hub_server, host):
    port = closed_port()
    endpoint = "http://alexnet-zoo-offline.invalid" if host == "dns" else f"http://127.0.0.1:{port}"
    data = _weights(1000)
    with ConnectionAttempts() as log:
        with pytest.raises(Unreachable) as info:
            fetch([_source(data, endpoint=endpoint)], arch="alexnet")
    tries = log.lookups("alexnet-zoo-offline.invalid") if host == "dns" else log.connects("127.0.0.1", port)
    assert tries == 1  # the client's ladder would make 6 (and sleep 1+2+4+8+8 s between them)
    message = str(info.value)
    assert f"{REPO}@v1:{FILE}" in message and hashlib.sha256(data).hexdigest() in message
    assert "weights convert alexnet.safetensors --arch alexnet --out DIR" in message and "HF_ENDPOINT" in message
    with ConnectionAttempts() as log:
        with pytest.raises(Unreachable, match="cannot be reached"):
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("HF_ENDPOINT", endpoint)
                fetch_repo_files(HF_REPO, ["model.safetensors"])
    assert (log.lookups("alexnet-zoo-offline.invalid") if host == "dns" else log.connects("127.0.0.1", port)) == 1


def test_a_copy_put_in_the_mirror_folder_by_hand_is_used_once_it_matches(hub_server):
    data = _weights()
    source = _source(data, endpoint="http://alexnet-zoo-offline.invalid")
    with pytest.raises(Unreachable) as info:
        fetch([source])
    target = Path(str(info.value).split("copy it to ")[1].split(" (checked")[0])  # the path the message gives
    target.parent.mkdir(parents=True)
    target.write_bytes(_corrupted(data))  # a wrong copy is refused (and deleted), not loaded
    with pytest.raises(Unreachable):
        fetch([source])
    assert not target.exists()
    target.write_bytes(data)
    assert fetch([source]) == target and hub_server.requests == []


def test_a_5xx_still_gets_the_clients_retries(hub_server):
    data = _weights()
    served = hub_server.add_file(REPO, FILE, data, revision="v1", fault=Fault("500", times=2))
    assert fetch([_source(data)]).read_bytes() == data  # probe: 500; the client's HEAD: 500, retried: served
    assert served.fault.times == 0
