"""Property-based fuzzing (hypothesis, a bounded budget) of the parsers of files a features or
index folder brings with it: index ``info.json``, extraction manifests, shard ``.npy`` and path
files, and users' list files. Any bytes in: a typed error naming the file, or a valid result out;
never another exception, and never more memory than a few times the input (tracemalloc)."""

from __future__ import annotations

import io
import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alexnet_zoo.errors import CorruptFeatures, CorruptIndex, ExtractionMismatch, IndexMismatch
from alexnet_zoo.retrieval.extraction import read_list as _read_list
from alexnet_zoo.retrieval.index import VectorIndex
from alexnet_zoo.retrieval.index_folder import parse_info
from alexnet_zoo.retrieval.index_policy import KINDS
from alexnet_zoo.retrieval.path_lists import read_path_list, write_path_list
from alexnet_zoo.retrieval.shards import check_npy as _check_npy
from alexnet_zoo.retrieval.shards import live_count, parse_manifest, read_features
from alexnet_zoo.retrieval.vector_checks import METRICS

FUZZ = settings(max_examples=150, deadline=None, database=None,  # no example files left in the checkout
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MEMORY_LIMIT = 32 * 2 ** 20  # bytes a single parse may allocate; inputs here are at most a few kB

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


class bounded_memory:
    """Fails the example when the parse allocated more than :data:`MEMORY_LIMIT` (peak)."""

    def __enter__(self) -> None:
        tracemalloc.start()

    def __exit__(self, *exc: object) -> None:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"a parse took {peak / 2 ** 20:.0f} MiB"


def _mutate(base: dict, data: st.DataObject) -> dict:
    """``base`` with a few fields replaced by any JSON values, deleted, or nested values altered."""
    out = json.loads(json.dumps(base))
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(out) + ["extra"]))
        action = data.draw(st.sampled_from(["replace", "delete", "inner"]))
        if action == "delete":
            out.pop(key, None)
        elif action == "inner" and isinstance(out.get(key), (dict, list)) and out[key]:
            inner = out[key]
            slot = data.draw(st.sampled_from(sorted(inner) if isinstance(inner, dict) else range(len(inner))))
            if isinstance(inner[slot], dict) and inner[slot]:
                inner[slot][data.draw(st.sampled_from(sorted(inner[slot])))] = data.draw(json_values)
            else:
                inner[slot] = data.draw(json_values)
        else:
            out[key] = data.draw(json_values)
    return out


# ---- index info.json ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def index_folder(tmp_path_factory) -> tuple[Path, dict]:
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    folder = tmp_path_factory.mktemp("fuzz") / "ix"
    index = VectorIndex.build(x, [f"p{i}" for i in range(300)], kind="hnsw", queries=50)
    index.info.update(model="alexnet", weights="alexnet.bvlc_in1k", layer="fc7", pool=None, normalized=True,
                      dtype="float16", precision="fp32", preprocessing={"crop": 227})
    index.save(folder)
    return folder, json.loads((folder / "info.json").read_text())


def _valid_info(info: dict) -> None:
    assert info["metric"] in METRICS and info["kind"] in KINDS
    assert isinstance(info["dim"], int) and info["dim"] >= 1 and isinstance(info["count"], int)
    assert all(isinstance(v, int) and v >= 1 for v in info["search_params"].values())


@FUZZ
@given(st.binary(max_size=2048))
def test_info_json_any_bytes(data):
    with bounded_memory():
        try:
            _valid_info(parse_info(data, "fuzz/info.json"))
        except CorruptIndex as err:
            assert "fuzz/info.json" in str(err)


@FUZZ
@given(st.data())
def test_info_json_mutated_fields_load_or_fail_typed(index_folder, data):
    """A real folder whose info.json has fields replaced: it loads and searches, or a typed error."""
    folder, good = index_folder
    info = _mutate(good, data)
    (folder / "info.json").write_text(json.dumps(info))
    try:
        loaded = VectorIndex.load(folder, device="cpu")
    except (CorruptIndex, IndexMismatch) as err:
        assert str(folder) in str(err)
    else:
        _valid_info(loaded.info)
        hits = loaded.search(np.ones((1, 16), np.float32), 3)[0]
        assert len(hits) == 3 and all(h.path == f"p{h.id}" for h in hits)
    finally:
        (folder / "info.json").write_text(json.dumps(good))


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["\udcff", "\udc80", "\n", "\u2028"]),
               max_size=30) | st.just(""))
def test_info_json_nesting_and_text_fields(text):
    deep = b"[" * 100_000 + b"]" * 100_000  # beyond the JSON parser's recursion limit
    with pytest.raises(CorruptIndex, match="not JSON"):
        parse_info(deep, "deep/info.json")
    info = {"format": "alexnet_zoo.index", "dim": 4, "count": 0, "metric": "cosine", "factory": "Flat",
            "weights": text, "layer": text}
    assert parse_info(json.dumps(info).encode(), "t/info.json")["weights"] == text


# ---- path lists ---------------------------------------------------------------------------------

names = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(list("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
                                                                         + ["\udcff", "\udc80", "\x00"]),
                max_size=40)


@FUZZ
@given(st.lists(names, max_size=20))
def test_path_lists_round_trip_any_name(paths):
    buffer = io.BytesIO()
    write_path_list(buffer, paths)
    assert buffer.getvalue().isascii() and buffer.getvalue().count(b"\n") == len(paths)
    assert read_path_list(io.BytesIO(buffer.getvalue()), "p.jsonl") == paths


@FUZZ
@given(st.binary(max_size=2048), st.none() | st.integers(0, 10))
def test_path_lists_any_bytes(data, limit):
    with bounded_memory():
        try:
            paths = read_path_list(io.BytesIO(data), "fuzz/paths.jsonl", limit=limit)
        except CorruptIndex as err:
            assert "fuzz/paths.jsonl" in str(err)
        else:
            assert all(isinstance(p, str) for p in paths) and (limit is None or len(paths) <= limit)


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from(["list.txt", "list.lst", "list.jsonl"]))
def test_user_list_files_any_bytes(tmp_path_factory, data, name):
    path = tmp_path_factory.mktemp("lists") / name
    path.write_bytes(data)
    with bounded_memory():
        try:
            names = _read_list(path)
        except CorruptFeatures as err:
            assert name.endswith(".jsonl") and str(path) in str(err)
        else:
            assert all(isinstance(n, str) and n for n in names)
            if name.endswith(".txt") and b"\0" not in data:  # one name a line, newlines never inside one
                assert all("\n" not in n for n in names)


# ---- extraction manifests and shards ------------------------------------------------------------

def _features_folder(folder: Path) -> dict:
    """A two-shard features folder made without a model: what `extract` writes, by hand."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shards = []
    for s, rows in enumerate([["a.jpg", "b\n.jpg"], ["c\u2028.jpg"]]):
        np.save(folder / f"shard-{s:05d}.npy", rng.normal(size=(len(rows), 8)).astype(np.float16))
        with open(folder / f"shard-{s:05d}.paths.jsonl", "wb") as f:
            write_path_list(f, rows)
        shards.append({"name": f"shard-{s:05d}", "start": 2 * s, "stop": 2 * s + 2, "count": len(rows)})
    manifest = {"format": "alexnet_zoo.features", "version": 2, "model": "alexnet", "weights": "/w",
                "weights_spec": None, "layer": "conv5", "pool": "avg", "normalized": True, "dtype": "float16",
                "precision": "fp32", "dim": 8, "preprocessing": {"crop": 227}, "inputs": 4,
                "inputs_sha256": "0" * 64, "shard_size": 2, "rank": 0, "world_size": 1, "slice": [0, 4],
                "count": 3, "shards": shards, "failures": [{"path": "d.jpg", "error": "d.jpg: not an image"}],
                "complete": True}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _grown_folder(folder: Path) -> dict:
    """:func:`_features_folder` grown by an incremental run: one shard more, and a row removed."""
    manifest = _features_folder(folder)
    np.save(folder / "inc-00001-shard-00000.npy", np.ones((2, 8), np.float16))
    with open(folder / "inc-00001-shard-00000.paths.jsonl", "wb") as f:
        write_path_list(f, ["e.jpg", "f.jpg"])
    manifest.update(version=3, count=5, increments=[{"inputs": 2, "inputs_sha256": "1" * 64, "world_size": 1,
                                                     "removed": 1}],
                    removed=[{"row": 1, "path": "b\n.jpg"}])
    manifest["shards"].append({"name": "inc-00001-shard-00000", "start": 0, "stop": 2, "count": 2})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@FUZZ
@given(st.binary(max_size=2048))
def test_manifest_any_bytes(data):
    with bounded_memory():
        try:
            manifest = parse_manifest(data, "fuzz/manifest.json")
        except CorruptFeatures as err:
            assert "fuzz/manifest.json" in str(err)
        else:
            assert sum(s["count"] for s in manifest["shards"]) == manifest["count"]


@FUZZ
@given(st.data(), st.booleans())
def test_manifest_mutated_fields_read_or_fail_typed(tmp_path_factory, data, grown):
    """A first extraction's manifest, or a grown one (increments, removed rows), with fields changed."""
    folder = tmp_path_factory.mktemp("feat")
    manifest = _mutate((_grown_folder if grown else _features_folder)(folder), data)
    if grown and data.draw(st.booleans()):  # the fields only a grown manifest has, changed inside
        for key in ("increments", "removed"):
            if isinstance(manifest.get(key), list) and manifest[key] and isinstance(manifest[key][0], dict):
                manifest[key][0] = _mutate(manifest[key][0], data)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with bounded_memory():
        try:
            vectors, paths, read = read_features(folder)
            every = read_features(folder, removed=True)[1]
        except ExtractionMismatch as err:
            assert str(folder) in str(err)
        else:
            assert vectors.shape == (live_count(read), read["dim"]) and len(paths) == live_count(read)
            assert len(every) == read["count"] and all(isinstance(p, str) for p in paths)
            assert [every[r["row"]] for r in read.get("removed", [])] == [r["path"] for r in read.get("removed", [])]


@FUZZ
@given(st.data())
def test_shard_npy_any_bytes_or_any_header(tmp_path_factory, data):
    """Random bytes, or a valid magic with a random header dict: refused before numpy allocates."""
    folder = tmp_path_factory.mktemp("npy")
    path = folder / "shard-00000.npy"
    if data.draw(st.booleans()):
        payload = data.draw(st.binary(max_size=1024))
    else:
        header = io.BytesIO()
        shape = tuple(data.draw(st.lists(st.integers(0, 2 ** 40), max_size=3)))
        descr = data.draw(st.sampled_from(["<f2", "<f4", "<f8", "|O", "<i8", "V16", "<U4"]))
        try:
            np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": data.draw(st.booleans()),
                                                          "shape": shape})
        except ValueError:  # numpy refuses to write some headers at all
            header = io.BytesIO(b"\x93NUMPY\x01\x00")
        payload = header.getvalue() + data.draw(st.binary(max_size=256))
    path.write_bytes(payload)
    count, dim = data.draw(st.integers(0, 8)), data.draw(st.integers(1, 8))
    with bounded_memory():
        try:
            _check_npy(path, count, dim, "float16")
        except CorruptFeatures as err:
            assert str(path) in str(err)
        else:
            array = np.load(path, allow_pickle=False)
            assert array.shape == (count, dim) and array.dtype == np.float16


def test_a_valid_features_folder_reads_back(tmp_path):
    """The hand-made folders the fuzz tests mutate are themselves valid (else they would test nothing)."""
    _features_folder(tmp_path / "f")
    vectors, paths, manifest = read_features(tmp_path / "f")
    assert vectors.shape == (3, 8) and paths == ["a.jpg", "b\n.jpg", "c\u2028.jpg"] and manifest["complete"]
    _grown_folder(tmp_path / "g")
    vectors, paths, manifest = read_features(tmp_path / "g")
    assert vectors.shape == (4, 8) and paths == ["a.jpg", "c\u2028.jpg", "e.jpg", "f.jpg"] and live_count(manifest) == 4
    assert read_features(tmp_path / "g", removed=True)[1][1] == "b\n.jpg"
    assert os.path.exists(tmp_path / "f" / "shard-00001.paths.jsonl")
