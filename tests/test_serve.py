"""`alexnet-zoo serve`: every endpoint of the JSON API and every bad input, through FastAPI's test
client, on an index of real CC0 pictures and generated ones (random weights, pool5: see
test_index.py); after each refused request the service must still answer. The micro-batcher is
checked on its own (concurrent pictures gathered into one forward pass, a failing batch failing
only its requests), and the CLI's rule for binding beyond localhost."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from test_features import REAL, generated, variants

from alexnet_zoo import alexnet
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.retrieval.index import VectorIndex

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
from fastapi.testclient import TestClient

from alexnet_zoo.cli.main import main
from alexnet_zoo.serve.access import check_binding
from alexnet_zoo.serve.app import create_app
from alexnet_zoo.serve.batching import MicroBatcher
from alexnet_zoo.serve.service import MAX_K

LIMIT = 1 << 20  # the upload limit of the test service: astronaut.png (791 kB) fits


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(index folder, weights, paths) of REAL + 3 generated pictures + a byte copy of coffee.png."""
    from alexnet_zoo.weights.store import save_pretrained

    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    weights = save_pretrained(alexnet(), root / "weights")
    pictures = root / "pictures"
    images = [*REAL, *generated(pictures, n=3)]
    copy = pictures / "coffee-copy.png"
    copy.write_bytes(REAL[1].read_bytes())
    images.append(copy)
    extractor = FeatureExtractor(alexnet(pretrained=weights), "pool5", device="cpu", weights=str(weights))
    index = VectorIndex.build(extractor(images), [str(p) for p in images], meta=extractor.info())
    index.save(root / "ix")
    return root / "ix", weights, [str(p) for p in images], extractor


@pytest.fixture(scope="module")
def client(served):
    folder, weights, _, _ = served
    with TestClient(create_app(folder, pretrained=str(weights), device="cpu", max_upload=LIMIT,
                               progress=False)) as c:
        yield c


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring width x height pixels, with one tiny compressed row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def assert_error(response, status: int, code: str, *phrases: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message", "expected"}
    assert body["error"]["status"] == status and body["error"]["code"] == code, body
    assert body["error"]["expected"], body
    for phrase in phrases:
        assert phrase in body["error"]["message"], body


def assert_serving(client, paths) -> None:
    """The service still answers: health, and a real picture search that finds its copy first."""
    assert client.get("/api/health").json()["status"] == "ok"
    hits = client.post("/api/search?k=2", content=REAL[2].read_bytes(), headers={"content-type": "image/jpeg"})
    assert hits.status_code == 200 and hits.json()["results"][0]["path"] == paths[2]


def test_health_info_page_and_openapi(client, served):
    _, weights, paths, _ = served
    assert client.get("/api/health").json() == {"status": "ok", "count": len(paths), "pending": 0}
    info = client.get("/api/info").json()
    assert info["count"] == len(paths) and info["layer"] == "pool5" and info["model"] == "alexnet"
    assert info["weights"] == str(weights) and info["kind"] == "exact" and info["recall_at_10"] == 1.0
    assert info["max_k"] == MAX_K and info["max_upload_bytes"] == LIMIT and info["device"] == "cpu"
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for outside in ("http://", "https://", 'src="//', "@import"):  # works offline: nothing from elsewhere
        assert outside not in page.text
    assert '<input id="file" type="file"' in page.text and 'id="threshold" type="range"' in page.text
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/neighbours/{item}", "/api/duplicates", "/api/thumbnail/{item}", "/api/info",
            "/api/health"} <= set(schema["paths"])
    assert "ErrorBody" in schema["components"]["schemas"] and "SearchResponse" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_search_by_upload_multipart_and_raw_finds_the_copy_first(client, served, tmp_path):
    _, _, paths, extractor = served
    index = VectorIndex.load(served[0])
    for i, path in enumerate(REAL):
        for name, copy in variants(path, tmp_path / "v").items():
            data = copy.read_bytes()
            multipart = client.post("/api/search", params={"k": 3}, files={"file": (copy.name, data)})
            raw = client.post("/api/search?k=3", content=data, headers={"content-type": "application/octet-stream"})
            for response in (multipart, raw):
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["k"] == 3 and len(body["results"]) == 3 and body["query_id"] is None
                same = {paths[i], paths[-1]} if i == 1 else {paths[i]}  # coffee.png has a byte copy
                assert body["results"][0]["path"] in same, (name, body)
            offline = index.search(extractor([copy]), 3)[0]  # the same answer as a query without the service
            assert {h["id"] for h in multipart.json()["results"]} == {h.id for h in offline}
            np.testing.assert_allclose([h["score"] for h in raw.json()["results"]], [h.score for h in offline],
                                       atol=1e-4)
    everything = client.post(f"/api/search?k={MAX_K}", content=REAL[0].read_bytes(),
                             headers={"content-type": "image/png"}).json()
    assert len(everything["results"]) == len(paths)  # k is capped at the index size


def test_neighbours_duplicates_and_thumbnails(client, served):
    _, _, paths, _ = served
    copy = paths.index(paths[-1])
    near = client.get(f"/api/neighbours/{copy}", params={"k": 4}).json()
    assert near["query_id"] == copy and len(near["results"]) == 4
    assert copy not in [h["id"] for h in near["results"]]
    assert near["results"][0]["id"] == 1 and near["results"][0]["score"] > 0.9999  # the copy's original
    scores = [h["score"] for h in near["results"]]
    assert scores == sorted(scores, reverse=True)
    dups = client.get("/api/duplicates", params={"threshold": 0.9999}).json()
    assert dups["pairs"] == 1 and dups["threshold"] == 0.9999 and dups["grouping"] == "connected"
    assert [sorted(m["id"] for m in g["members"]) for g in dups["groups"]] == [[1, copy]]
    everything = client.get("/api/duplicates", params={"threshold": 0.01, "grouping": "connected"}).json()
    assert sum(len(g["members"]) for g in everything["groups"]) <= len(paths) and everything["pairs"] >= 1
    for item in (0, copy):
        thumb = client.get(f"/api/thumbnail/{item}", params={"size": 64})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        img = Image.open(io.BytesIO(thumb.content))
        assert img.format == "JPEG" and max(img.size) == 64
        original = Image.open(paths[item])
        assert abs(img.size[0] / img.size[1] - original.size[0] / original.size[1]) < 0.05


@pytest.mark.parametrize("request_args, status, code, phrase", [
    (("get", "/api/neighbours/1000000"), 404, "unknown_id", "no indexed picture has id 1000000"),
    (("get", "/api/neighbours/-1"), 404, "unknown_id", "id -1"),
    (("get", "/api/neighbours/abc"), 422, "invalid_parameter", "item"),
    (("get", "/api/neighbours/0?k=0"), 422, "invalid_parameter", "k:"),
    (("get", f"/api/neighbours/0?k={MAX_K + 1}"), 422, "invalid_parameter", "k:"),
    (("get", "/api/neighbours/0?k=ten"), 422, "invalid_parameter", "k:"),
    (("get", "/api/thumbnail/1000000"), 404, "unknown_id", "id 1000000"),
    (("get", "/api/thumbnail/0?size=100000"), 422, "invalid_parameter", "size"),
    (("get", "/api/thumbnail/..%2F..%2Fetc%2Fpasswd"), 404, "not_found", "passwd"),  # never a file
    (("get", "/api/thumbnail/etc-passwd"), 422, "invalid_parameter", "item"),
    (("get", "/api/duplicates?threshold=0"), 422, "invalid_parameter", "threshold"),
    (("get", "/api/duplicates?threshold=1.5"), 422, "invalid_parameter", "threshold"),
    (("get", "/api/duplicates?grouping=nearest"), 422, "bad_grouping", "nearest"),
    (("get", "/api/nothing-here"), 404, "not_found", "/api/nothing-here"),
    (("delete", "/api/info"), 405, "method_not_allowed", "DELETE"),
])
def test_bad_ids_and_numbers_are_4xx_json(client, served, request_args, status, code, phrase):
    method, url = request_args
    assert_error(getattr(client, method)(url), status, code, phrase)
    assert_serving(client, served[2])


def test_bad_uploads_are_4xx_json_and_the_service_keeps_serving(client, served, tmp_path, monkeypatch):
    paths = served[2]
    coffee = REAL[1].read_bytes()
    truncated_png = coffee[: len(coffee) // 2]
    truncated_jpeg = (REAL[0].parent.parent / "images" / "truncated_jpeg.jpg").read_bytes()
    cases = [
        ({"content": b"\0" * (LIMIT + 1), "headers": {"content-type": "image/png"}}, 413, "upload_too_large",
         f"{LIMIT:,} bytes"),
        ({"files": {"file": ("big.png", b"\0" * (LIMIT + 1))}}, 413, "upload_too_large", "big.png"),
        ({"content": b"hello, not a picture", "headers": {"content-type": "image/png"}}, 422, "unreadable_image",
         "the request body"),
        ({"files": {"file": ("notes.txt", b"just some text\n" * 50)}}, 422, "unreadable_image", "notes.txt"),
        ({"content": bomb_png(), "headers": {"content-type": "image/png"}}, 422, "unreadable_image",
         "over the limit"),
        ({"files": {"file": ("bomb.png", bomb_png())}}, 422, "unreadable_image", "decompression bomb"),
        ({"content": truncated_png, "headers": {"content-type": "image/png"}}, 422, "unreadable_image", "decode"),
        ({"files": {"file": ("cut.jpg", truncated_jpeg)}}, 422, "unreadable_image", "cut.jpg"),
        ({"content": coffee, "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type", "text/plain"),
        ({"json": {"picture": "coffee.png"}}, 415, "unsupported_media_type", "application/json"),
        ({"content": coffee}, 415, "unsupported_media_type", "(none)"),
        ({"files": {"picture": ("coffee.png", coffee)}}, 422, "missing_file", "'file'"),
        ({"content": b"", "headers": {"content-type": "image/png"}}, 422, "empty_upload", "empty"),
    ]
    for kwargs, status, code, phrase in cases:
        assert_error(client.post("/api/search", **kwargs), status, code, phrase)
        assert_serving(client, paths)
    # the one pixel limit of every decoding path applies to uploads too (read at each call)
    monkeypatch.setenv("ALEXNET_ZOO_MAX_PIXELS", "10000")
    assert_error(client.post("/api/search", files={"file": ("coffee.png", coffee)}), 422, "unreadable_image",
                 "10,000 pixels")
    monkeypatch.delenv("ALEXNET_ZOO_MAX_PIXELS")
    assert_serving(client, paths)
    # an indexed picture that went missing: its thumbnail is a 404 saying so, never another file
    service, gone = client.app.state.service, tmp_path / "gone.png"
    kept, service.index.paths[3] = service.index.paths[3], str(gone)
    try:
        assert_error(client.get("/api/thumbnail/3"), 404, "picture_unavailable", "no such file")
    finally:
        service.index.paths[3] = kept
    assert client.get("/api/thumbnail/3").status_code == 200


def test_concurrent_picture_queries_share_forward_passes(client, served):
    service = client.app.state.service
    before = service.batcher.pictures
    data = [copy.read_bytes() for copy in REAL] * 3

    def one(i: int):
        return client.post("/api/search?k=1", content=data[i], headers={"content-type": "image/png"})

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(data)) as pool:
        answers = list(pool.map(one, range(len(data))))
    assert [a.json()["results"][0]["path"] for a in answers] == [served[2][i % len(REAL)] for i in range(len(data))]
    assert service.batcher.pictures - before == len(data)


def test_the_batcher_gathers_waiting_pictures_into_one_pass_and_survives_a_failure():
    calls = []

    def embed(batch: torch.Tensor) -> np.ndarray:
        calls.append(len(batch))
        if (batch < 0).any():
            raise ValueError("a negative picture")
        return batch.flatten(1).sum(1, keepdim=True).numpy()

    async def scenario() -> None:
        batcher = MicroBatcher(embed, max_batch=5, max_wait=0.0)
        batcher.start()
        pictures = [torch.full((3, 2, 2), float(i)) for i in range(7)]
        vectors = await asyncio.gather(*(batcher(p) for p in pictures))
        assert [float(v[0]) for v in vectors] == [12.0 * i for i in range(7)]
        assert calls == [5, 2]  # all seven were waiting: two passes, not seven
        bad = await asyncio.gather(batcher(torch.full((3, 2, 2), -1.0)), batcher(torch.ones(3, 2, 2)),
                                   return_exceptions=True)
        assert all(isinstance(b, ValueError) for b in bad)  # its batch failed: each request hears why
        assert float((await batcher(torch.ones(3, 2, 2)))[0]) == 12.0  # and the next batch is served
        await batcher.stop()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(embed, max_batch=0)


def test_neighbours_in_an_ivf_index_are_its_own_search_run_in_single_threaded_search_pool(served, tmp_path):
    """An IVF index answers id queries by a direct-map lookup (not a pass over every list) and a
    search, both in the search pool, whose threads run faiss on one OpenMP thread each; the caller's
    thread keeps its own setting."""
    faiss = pytest.importorskip("faiss")
    _, weights, paths, _ = served
    extractor = FeatureExtractor(alexnet(pretrained=weights), "conv5", device="cpu", weights=str(weights))
    noise = np.random.default_rng(0).normal(size=(1500, extractor.dim))
    x = np.concatenate([extractor(paths), noise]).astype(np.float32)
    names = [paths[i % len(paths)] for i in range(len(x))]
    VectorIndex.build(x, names, kind="ivfpq", queries=50, meta=extractor.info(), device="cpu").save(tmp_path / "ivf")
    reference = VectorIndex.load(tmp_path / "ivf", device="cpu")
    ours = faiss.omp_get_max_threads()
    with TestClient(create_app(tmp_path / "ivf", pretrained=str(weights), device="cpu", progress=False)) as c:
        service = c.app.state.service
        assert not faiss.extract_index_ivf(service.index.index.index).direct_map.no()
        for item in (0, 3, 1000, len(x) - 1):
            hits = reference.search(reference.vectors(item, item + 1), 6)[0]
            response = c.get(f"/api/neighbours/{item}?k=5")
            assert [r["id"] for r in response.json()["results"]] == [h.id for h in hits if h.id != item][:5]
        assert c.portal.call(service._in_pool, faiss.omp_get_max_threads) == 1
        found = c.post("/api/search?k=3", content=REAL[2].read_bytes(), headers={"content-type": "image/jpeg"})
        assert found.status_code == 200 and len(found.json()["results"]) == 3  # PQ: near, not exact
    assert faiss.omp_get_max_threads() == ours


def test_a_token_is_asked_of_every_request(served):
    folder, weights, paths, _ = served
    with TestClient(create_app(folder, pretrained=str(weights), device="cpu", token="s3cret", progress=False)) as c:
        for url in ("/", "/api/health", "/api/info", "/api/neighbours/0", "/api/thumbnail/0", "/openapi.json"):
            assert_error(c.get(url), 401, "unauthorized", "token")
            assert_error(c.get(url, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert c.get("/api/info", headers={"Authorization": "Bearer s3cret"}).json()["count"] == len(paths)
        assert c.get("/api/thumbnail/0?token=s3cret").status_code == 200  # the page's <img> tags
        assert_error(c.post("/api/search", content=REAL[0].read_bytes(), headers={"content-type": "image/png"}),
                     401, "unauthorized")


def test_binding_beyond_localhost_needs_a_token_or_no_auth(served, capsys):
    check_binding("127.0.0.1", None, False)
    check_binding("0.0.0.0", "t", False)
    check_binding("0.0.0.0", None, True)
    with pytest.raises(ValueError, match="--token TOKEN .* or --no-auth"):
        check_binding("0.0.0.0", None, False)
    with pytest.raises(ValueError, match="empty"):
        check_binding("::", " ", False)
    assert main(["serve", str(served[0]), "--host", "0.0.0.0", "--port", "8123"]) == 2
    err = capsys.readouterr().err
    assert "alexnet-zoo serve: error:" in err and "--no-auth" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["serve", str(served[0]), "--token", "t", "--no-auth"])
    with pytest.raises(SystemExit):
        main(["serve", str(served[0]), "--port", "70000"])


def test_the_command_serves_until_stopped(served):
    """`alexnet-zoo serve` as a user runs it: its own process, a free port, answering over HTTP."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    folder, weights, paths, _ = served
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "alexnet_zoo.cli", "serve", str(folder), "--port", str(port),
                                "--pretrained", str(weights), "--device", "cpu"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.monotonic() + 300, None
        while health is None and time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).json()
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health == {"status": "ok", "count": len(paths), "pending": 0}, process.poll()
        found = httpx.post(f"http://127.0.0.1:{port}/api/search?k=1", content=REAL[0].read_bytes(),
                           headers={"content-type": "image/png"}, timeout=60).json()
        assert found["results"][0]["path"] == paths[0]
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert "alexnet-zoo serve: loading the index" in err and "ready:" in err  # the start-up progress lines


def test_an_index_with_pca_whitening_is_served_through_it(served, tmp_path):
    """Pictures and ids are searched through the index's PCA: an upload is projected like the
    indexed vectors, a neighbour by id is searched by its stored (projected) vector."""
    _, weights, paths, extractor = served
    index = VectorIndex.build(extractor(paths), paths, meta=extractor.info(), pca=5, whiten=True)
    index.save(tmp_path / "ix")
    with TestClient(create_app(tmp_path / "ix", pretrained=str(weights), device="cpu", progress=False)) as c:
        copy = len(paths) - 1
        near = c.get(f"/api/neighbours/{copy}", params={"k": 3}).json()
        assert near["results"][0]["id"] == 1 and near["results"][0]["score"] > 0.9999  # the copy's original
        assert copy not in [h["id"] for h in near["results"]] and len(near["results"]) == 3
        assert_serving(c, paths)
