"""The FAISS index folder: exact and approximate kinds against the exact oracle, ids, save/load,
near-duplicates in blocks against brute force, the CPU / GPU choice (GPU path with a CPU stand-in),
typed errors, and the extract / index CLI end to end on real CC0 pictures (random weights), an
interrupted `extract` resumed included."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from PIL import Image
from test_features import REAL, generated, variants

import alexnet_zoo.index as index_module
from alexnet_zoo import alexnet
from alexnet_zoo.cli import main
from alexnet_zoo.extraction import read_manifest
from alexnet_zoo.features import FeatureExtractor
from alexnet_zoo.index import (
    GPU_MAX_K,
    CorruptIndex,
    IndexMismatch,
    InvalidVectors,
    RetrievalError,
    VectorIndex,
    choose_factory,
    exact_knn,
    gpu_count,
    gpu_supported,
    parse_size,
    resolve_device,
)


def mixture(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Clustered vectors with a low intrinsic dimension (not uniform noise)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(8, dim))
    centres = rng.normal(size=(40, 8)) * 3
    latent = centres[rng.integers(0, 40, n)] + rng.normal(size=(n, 8))
    return (latent @ basis + 0.1 * rng.normal(size=(n, dim))).astype(np.float32)


def test_index_module_does_not_import_torch():
    tree = ast.parse(Path("alexnet_zoo/index.py").read_text() if Path("alexnet_zoo/index.py").exists()
                     else (Path(__file__).parent.parent / "alexnet_zoo/index.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name and name.split(".")[0] in ("torch", "alexnet_zoo") for name in names)


def test_exact_search_ids_k_capped_and_incremental_add():
    x = mixture(300)
    paths = [f"img{i}.jpg" for i in range(300)]
    index = VectorIndex.build(x[:200], paths[:200], kind="exact")
    assert index.info["factory"] == "Flat" and index.info["recall_at_10"] == 1.0
    _, truth = exact_knn(x[:200], x[200:210], 5)
    assert [[h.id for h in hits] for hits in index.search(x[200:210], 5)] == truth.tolist()
    assert index.search(x[:1], 1)[0][0].path == "img0.jpg"
    ids = index.add(x[200:], paths[200:])
    assert ids.tolist() == list(range(200, 300)) and index.count == 300
    assert index.search(x[250], 1)[0][0].path == "img250.jpg"
    small = VectorIndex.build(x[:3], paths[:3], kind="exact")
    assert len(small.search(x[:2], 10)[0]) == 3  # k capped at the index size, no -1 hits
    l2 = VectorIndex.build(x[:200], paths[:200], kind="exact", metric="l2")
    hits = l2.search(x[5], 3)[0]
    assert hits[0].id == 5 and hits[0].score == pytest.approx(0, abs=1e-3) and hits[1].score <= hits[2].score


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_approximate_kinds_reach_recall_and_record_it(kind, tmp_path):
    x = mixture(6000, dim=32)
    index = VectorIndex.build(x, [str(i) for i in range(len(x))], kind=kind, queries=200)
    info = index.info
    assert info["kind"] == kind and info["recall_at_10"] >= 0.9 and info["search_params"]
    index.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    assert loaded.info == json.loads((tmp_path / "ix" / "info.json").read_text())
    np.testing.assert_array_equal(index.search_arrays(x[:20], 10)[1], loaded.search_arrays(x[:20], 10)[1])


def test_choose_factory_by_size_and_memory():
    assert choose_factory(1000, 4096) == "Flat"
    assert choose_factory(1_000_000, 4096, memory=parse_size("4GB")).startswith("PCAR")
    assert choose_factory(1_000_000, 64, memory=parse_size("4GB")) == "HNSW32,Flat"
    assert choose_factory(10_000_000, 64, memory=parse_size("1GB")).endswith("PQ32")
    assert parse_size("512MiB") == 512 * 2 ** 20


def with_duplicates(n: int = 3000, dim: int = 32, seed: int = 1) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Clustered vectors whose closest natural pairs stay below cosine 0.99, with 20 planted
    near-copies (cosine > 0.999, other lengths) and one vector copied twice: 23 pairs above 0.995."""
    rng = np.random.default_rng(seed)
    basis, centres = rng.normal(size=(12, dim)), rng.normal(size=(40, 12)) * 2
    x = (centres[rng.integers(0, 40, n)] + rng.normal(size=(n, 12))) @ basis + 0.5 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = [int(r) for r in rng.choice(n, 43, replace=False)]
    copies = list(zip(rows[:20], rows[20:40])) + [(rows[40], rows[41]), (rows[40], rows[42])]
    for src, dst in copies:
        x[dst] = x[src] * rng.uniform(0.5, 2) + 0.01 / np.sqrt(dim) * rng.normal(size=dim)
    planted = {(min(a, b), max(a, b)) for a, b in copies + [(rows[41], rows[42])]}
    return x.astype(np.float32), planted


def brute_force_pairs(x: np.ndarray, threshold: float) -> dict[tuple[int, int], float]:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    g = u @ u.T
    i, j = np.nonzero(np.triu(g >= threshold, 1))
    return {(int(a), int(b)): float(g[a, b]) for a, b in zip(i, j)}


@pytest.mark.parametrize("kind", ["exact", "ivfpq", "hnsw"])
def test_duplicates_in_blocks_equal_brute_force(kind):
    x, planted = with_duplicates()
    truth = brute_force_pairs(x, 0.995)
    assert set(truth) == planted and len(truth) >= 20  # the data has the gap the test relies on
    index = VectorIndex.build(x, [str(i) for i in range(len(x))], kind=kind, queries=200)
    pairs = index.duplicates(0.995, block=700)  # five blocks, the last one short
    assert all(i < j for i, j, _ in pairs) and [s for *_, s in pairs] == sorted((s for *_, s in pairs), reverse=True)
    assert index.duplicates(0.995) == pairs  # one block or many: the same answer
    if kind == "ivfpq":
        # PQ moves cosines by ~0.005, so the reference is brute force over the decoded vectors, with
        # every list probed; the tuned nprobe finds a subset, which still holds the planted copies
        tuned = {(i, j) for i, j, _ in pairs}
        index._apply({"nprobe": faiss.extract_index_ivf(faiss.downcast_index(index.index.index)).nlist})
        pairs = index.duplicates(0.995, block=700)
        truth = brute_force_pairs(index.vectors().astype(np.float64), 0.995)
        assert tuned <= set(truth) and len(tuned & planted) >= 20
    assert {(i, j) for i, j, _ in pairs} == set(truth)
    for i, j, s in pairs:
        assert s == pytest.approx(truth[(i, j)], abs=1e-5)
    np.testing.assert_allclose(index.vectors(10, 20), index.vectors()[10:20])
    if kind != "ivfpq":
        np.testing.assert_allclose(index.vectors(), x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)


def test_device_choice_on_a_machine_without_gpu():
    assert resolve_device("auto", gpus=0) == resolve_device(None, gpus=0) == "cpu"
    assert resolve_device("auto", gpus=2) == resolve_device("cuda:1", gpus=1) == "gpu"
    assert resolve_device("cpu", gpus=4) == "cpu"
    with pytest.raises(RetrievalError, match="faiss sees none"):
        resolve_device("gpu", gpus=0)
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'gpu'"):
        resolve_device("tpu", gpus=1)
    assert gpu_supported("Flat") and gpu_supported("PCAR128,IVF1000,PQ32") and not gpu_supported("HNSW32,Flat")
    if gpu_count() > 0:
        pytest.skip("this machine has a GPU faiss can use; the CPU-only checks below do not apply")
    x = mixture(500)
    index = VectorIndex.build(x, [str(i) for i in range(500)], kind="exact")
    assert index.device == "cpu" and index._searcher(10) is index.index and index._gpu is None
    with pytest.raises(RetrievalError, match="faiss sees none"):
        VectorIndex.build(x, [str(i) for i in range(500)], device="gpu")


def test_gpu_code_path_with_a_cpu_stand_in(monkeypatch, tmp_path):
    """faiss-gpu cannot run here: a CPU clone stands in for the GPU copy, so the orchestration
    (train and fill on the device, copy back, tuned parameters on both, search on the copy, save
    the CPU one) is exercised; the faiss-gpu calls themselves are one line each."""
    moved = []
    monkeypatch.setattr(index_module, "gpu_count", lambda: 1)
    monkeypatch.setattr(index_module, "_to_gpu", lambda index, factory: moved.append(factory) or faiss.clone_index(index))
    monkeypatch.setattr(index_module, "_from_gpu", faiss.clone_index)
    monkeypatch.setattr(index_module, "_gpu_parameters", faiss.ParameterSpace)
    x = mixture(6000)
    paths = [str(i) for i in range(len(x))]
    cpu = VectorIndex.build(x, paths, kind="ivfpq", queries=200, device="cpu")
    gpu = VectorIndex.build(x, paths, kind="ivfpq", queries=200)  # auto: the (stand-in) GPU
    assert gpu.device == "gpu" and moved == [gpu.info["factory"]] and gpu._gpu is not None
    assert gpu._searcher(10) is gpu._gpu and gpu._searcher(GPU_MAX_K + 1) is gpu.index
    nprobe = gpu.info["search_params"]["nprobe"]
    assert faiss.extract_index_ivf(faiss.downcast_index(gpu._gpu.index)).nprobe == nprobe
    assert gpu.info["search_params"] == cpu.info["search_params"]
    np.testing.assert_array_equal(gpu.search_arrays(x[:50], 10)[1], cpu.search_arrays(x[:50], 10)[1])
    gpu.add(x[:5], list("abcde"))
    assert gpu._gpu.ntotal == gpu.index.ntotal == 6005 and {h.path for h in gpu.search(x[3], 2)[0]} == {"3", "d"}
    gpu.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix", device="gpu")
    assert loaded._gpu is None and loaded._searcher(10) is loaded._gpu and len(moved) == 2  # copied on first use
    np.testing.assert_array_equal(loaded.search_arrays(x[:50], 10)[1], gpu.search_arrays(x[:50], 10)[1])
    hnsw = VectorIndex.build(x[:3000], paths[:3000], kind="hnsw", queries=100)
    assert hnsw.device == "gpu" and hnsw._searcher(10) is hnsw.index and len(moved) == 2  # HNSW stays on the CPU


def test_duplicates_and_typed_errors(tmp_path):
    x = mixture(100)
    x[7] = x[3] * 1.01  # same direction: cosine 1
    index = VectorIndex.build(x, [f"p{i}" for i in range(100)], kind="exact")
    pairs = index.duplicates(0.999)
    assert (3, 7) in [(i, j) for i, j, _ in pairs]
    with pytest.raises(InvalidVectors, match="NaN"):
        VectorIndex.build(np.full((4, 32), np.nan, np.float32), list("abcd"))
    with pytest.raises(InvalidVectors, match="NaN"):
        index.search(np.full(32, np.nan, np.float32))
    with pytest.raises(InvalidVectors, match=r"\(N, 32\)"):
        index.search(np.zeros((1, 31), np.float32))
    with pytest.raises(ValueError, match="k must be"):
        index.search(x[:1], 0)
    index.info.update(model="alexnet", layer="fc7", weights="w1")
    index.save(tmp_path / "ix")
    with pytest.raises(IndexMismatch, match=r"ix: built from layer='fc7', expected layer='conv5'"):
        VectorIndex.load(tmp_path / "ix", layer="conv5")
    with pytest.raises(IndexMismatch, match="weights"):
        VectorIndex.load(tmp_path / "ix", weights="other")
    with pytest.raises(IndexMismatch, match="dim"):
        VectorIndex.load(tmp_path / "ix", dim=4096)
    VectorIndex.load(tmp_path / "ix", model="alexnet", layer="fc7", dim=32)
    (tmp_path / "ix" / "index.faiss").write_bytes(b"garbage" * 10)
    with pytest.raises(CorruptIndex, match="index.faiss: not a readable FAISS index"):
        VectorIndex.load(tmp_path / "ix")
    with pytest.raises(CorruptIndex, match="missing index.faiss"):
        VectorIndex.load(tmp_path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from alexnet_zoo.pretrained import save_pretrained

    torch.manual_seed(0)
    return save_pretrained(alexnet(), tmp_path_factory.mktemp("w") / "random-seed0")


def test_copies_of_indexed_images_come_back_first(weights, tmp_path):
    # random weights: fc7 vectors of all images are nearly parallel, so pool5 (the flattened conv
    # map) is used; with trained weights fc7 works as in the paper
    extractor = FeatureExtractor(alexnet(pretrained=weights), "pool5", device="cpu")
    images = REAL + generated(tmp_path / "g", n=5)
    index = VectorIndex.build(extractor(images), [str(p) for p in images])
    index.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    for path in images:
        copies = list(variants(path, tmp_path / "v").values())
        q = extractor(copies)
        assert [hits[0].path for hits in index.search(q, 3)] == [str(path)] * 3
        a, b = index.search_arrays(q, 5), loaded.search_arrays(q, 5)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])


def test_cli_extract_build_query_dedupe(weights, tmp_path, capsys):
    images = tmp_path / "imgs"
    images.mkdir()
    for p in REAL:
        (images / p.name).write_bytes(p.read_bytes())
    generated(images, n=2)
    (images / "coffee-copy.png").write_bytes((images / "coffee.png").read_bytes())
    assert main(["extract", str(images), "--out", str(tmp_path / "feat"), "--pretrained", str(weights),
                 "--layer", "pool5", "--workers", "0", "--quiet", "--shard-size", "4"]) == 0
    assert main(["index", "build", str(tmp_path / "feat"), "--out", str(tmp_path / "ix")]) == 0
    info = json.loads((tmp_path / "ix" / "info.json").read_text())
    assert info["count"] == 6 and info["layer"] == "pool5" and info["weights"] == str(weights)
    assert info["preprocessing"]["crop"] == 227 and info["recall_at_10"] == 1.0
    info_paths = (tmp_path / "ix" / "paths.txt").read_text().splitlines()
    gpu_build = main(["index", "build", str(tmp_path / "feat"), "--out", str(tmp_path / "ix-gpu"), "--device", "gpu"])
    assert gpu_build == (0 if gpu_count() > 0 else 2)  # no GPU: a clear error, not a silent CPU build
    capsys.readouterr()
    query = variants(REAL[2], tmp_path / "q")["cropped"]
    assert main(["index", "query", str(tmp_path / "ix"), str(query), str(REAL[1]), "-k", "20", "--json",
                 "--grid", str(tmp_path / "grid.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["query"] for o in out] == [str(query), str(REAL[1])]
    assert len(out[0]["results"]) == 6 and set(out[0]["results"][0]) == {"path", "id", "score"}
    assert all(set(o) == {"query", "results"} and isinstance(o["query"], str) for o in out)
    assert all(isinstance(r["path"], str) and isinstance(r["id"], int) and isinstance(r["score"], float)
               and r["path"] == info_paths[r["id"]] for o in out for r in o["results"])
    assert Path(out[0]["results"][0]["path"]).name == REAL[2].name
    scores = [r["score"] for r in out[1]["results"]]
    assert scores == sorted(scores, reverse=True)
    grid = Image.open(tmp_path / "grid.png")
    assert grid.size[0] > 7 * 128 and grid.size[1] > 2 * 128
    assert main(["index", "dedupe", str(tmp_path / "ix"), "--threshold", "0.9999", "--json",
                 "--grid", str(tmp_path / "dups.png")]) == 0
    pairs = json.loads(capsys.readouterr().out)
    assert [sorted(Path(p[k]).name for k in ("a", "b")) for p in pairs] == [["coffee-copy.png", "coffee.png"]]
    assert (tmp_path / "dups.png").is_file()
    # a query with other weights is refused
    other = tmp_path / "other"
    from alexnet_zoo.pretrained import save_pretrained
    save_pretrained(alexnet(), other)
    assert main(["index", "query", str(tmp_path / "ix"), str(query), "--pretrained", str(other)]) == 2
    assert "weights" in capsys.readouterr().err


def test_cli_extract_interrupted_then_rerun_resumes(weights, tmp_path, monkeypatch):
    """Ctrl-C in the middle of a shard, then the same command again: the shards, paths and
    manifest equal those of a run that was never stopped."""
    images = tmp_path / "imgs"
    images.mkdir()
    for p in REAL:
        (images / p.name).write_bytes(p.read_bytes())
    generated(images, n=4)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    command = ["extract", str(images), "--pretrained", str(weights), "--layer", "conv5", "--workers", "0",
               "--quiet", "--shard-size", "3", "--batch-size", "2"]
    assert main(command + ["--out", str(tmp_path / "full")]) == 0

    calls = {"n": 0}
    embed = FeatureExtractor.embed_batch

    def interrupted(self: FeatureExtractor, batch: torch.Tensor) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 5:  # 1: the blank image sizing the vectors; 2-3: shard 0; 4-5: shard 1
            raise KeyboardInterrupt
        return embed(self, batch)

    monkeypatch.setattr(FeatureExtractor, "embed_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(command + ["--out", str(tmp_path / "part")])
    stopped = read_manifest(tmp_path / "part")
    assert len(stopped["shards"]) == 1 and not stopped["complete"]
    monkeypatch.setattr(FeatureExtractor, "embed_batch", embed)
    assert main(command + ["--out", str(tmp_path / "part")]) == 0

    full, part = read_manifest(tmp_path / "full"), read_manifest(tmp_path / "part")
    assert part == full and part["complete"] and part["count"] == 7 and len(part["failures"]) == 1
    names = sorted(p.name for p in (tmp_path / "full").iterdir())
    assert sorted(p.name for p in (tmp_path / "part").iterdir()) == names  # no temporary files left
    for name in names:
        a, b = tmp_path / "full" / name, tmp_path / "part" / name
        if name.endswith(".npy"):
            np.testing.assert_array_equal(np.load(a), np.load(b))
        else:
            assert a.read_bytes() == b.read_bytes()
