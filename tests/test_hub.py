"""End-to-end tests of alexnet_zoo.hub with the real huggingface_hub client against tests/hub_server.py."""

import hashlib
import multiprocessing
import os
import random
import socket
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
from huggingface_hub import try_to_load_from_cache
from hub_server import Fault

from alexnet_zoo import hub
from alexnet_zoo.errors import ChecksumMismatch, DownloadFailed, NotCached
from alexnet_zoo.hub import FileSource, fetch, sha256_file

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
    expected = [("HEAD", "hub"), ("GET", "cdn")] if lfs else [("HEAD", "hub"), ("GET", "hub")]
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
    monkeypatch.setattr(hub, "sha256_file", lambda path: pytest.fail(f"rehashed {path}"))
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
    # One HEAD and one GET in all: the second process waited for the first and found its verified copy.
    assert [r.method for r in hub_server.requests] == ["HEAD", "GET"]


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
