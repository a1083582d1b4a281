"""The FAISS index folder: exact and approximate kinds against the exact oracle, ids, save/load,
near-duplicates in blocks against brute force, the CPU / GPU choice (GPU path with a CPU stand-in),
typed errors, and the extract / index CLI end to end on real CC0 pictures (random weights), an
interrupted `extract` resumed included."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from PIL import Image
from test_features import REAL, generated, variants

import alexnet_zoo.retrieval.index as index_module
from alexnet_zoo import alexnet
from alexnet_zoo.cli.main import main
from alexnet_zoo.errors import CorruptIndex, IndexMismatch, InvalidVectors, RetrievalError, ZeroQuery
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.retrieval.index import VectorIndex
from alexnet_zoo.retrieval.index_gpu import GPU_MAX_K, gpu_count, gpu_supported, resolve_device
from alexnet_zoo.retrieval.index_policy import KINDS, choose_factory, kind_of, parse_size, training_size
from alexnet_zoo.retrieval.index_tuning import exact_knn
from alexnet_zoo.retrieval.shards import read_manifest


def mixture(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Clustered vectors with a low intrinsic dimension (not uniform noise)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(8, dim))
    centres = rng.normal(size=(40, 8)) * 3
    latent = centres[rng.integers(0, 40, n)] + rng.normal(size=(n, 8))
    return (latent @ basis + 0.1 * rng.normal(size=(n, dim))).astype(np.float32)


def test_index_module_does_not_import_torch():
    """The index loads without torch, also through what it imports (the error family, paths): a
    search service can serve an index without the 1 GB of torch."""
    code = ("import sys; import alexnet_zoo.retrieval.index, alexnet_zoo.retrieval.index_policy, "
            "alexnet_zoo.retrieval.index_tuning, alexnet_zoo.retrieval.index_gpu, alexnet_zoo.retrieval.index_dedupe, "
            "alexnet_zoo.retrieval.index_folder, alexnet_zoo.retrieval.path_lists, alexnet_zoo.retrieval.vector_checks; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'PIL')); "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


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


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_approximate_kinds_reach_recall_and_record_it(kind, tmp_path):
    x = mixture(6000, dim=32)
    index = VectorIndex.build(x, [str(i) for i in range(len(x))], kind=kind, queries=200)
    info = index.info
    assert info["kind"] == kind and info["recall_at_10"] >= 0.9 and info["search_params"]
    index.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    assert loaded.info == json.loads((tmp_path / "ix" / "info.json").read_text())
    np.testing.assert_array_equal(index.search_arrays(x[:20], 10)[1], loaded.search_arrays(x[:20], 10)[1])


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_ivf_through_an_hnsw_quantizer(kind, monkeypatch, tmp_path):
    """Past HNSW_QUANTIZER_LISTS lists (10M-vector collections) the centroids sit in an HNSW graph,
    trained by a flat k-means: lowered here so 6,000 vectors take that path end to end."""
    import alexnet_zoo.retrieval.index_policy as policy

    monkeypatch.setattr(policy, "HNSW_QUANTIZER_LISTS", 16)
    x = mixture(6000, dim=32)
    paths = [str(i) for i in range(len(x))]
    index = VectorIndex.build(x, paths, kind=kind, queries=200)
    assert "_HNSW32," in index.info["factory"] and index.info["kind"] == kind and index.info["recall_at_10"] >= 0.9
    ivf = faiss.extract_index_ivf(faiss.downcast_index(index.index.index))
    assert isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSWFlat) and ivf.quantizer.ntotal == ivf.nlist
    index.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(index.search_arrays(x[:50], 10)[1], loaded.search_arrays(x[:50], 10)[1])
    assert loaded.remove(paths[:100]) == 100 and loaded.count == 5900
    _, found = loaded.search_arrays(x[100:400], 1)
    assert np.mean(found[:, 0] == np.arange(300)) >= 0.9  # the kept ones under their new ids
    before = index.duplicates(0.99)  # the same lists and codes, less the removed rows, renumbered
    assert before and {(i, j) for i, j, _ in loaded.duplicates(0.99)} == {(i - 100, j - 100) for i, j, _ in before
                                                                           if i >= 100}


def test_choose_factory_by_size_and_memory():
    assert choose_factory(1000, 4096) == "Flat"
    assert choose_factory(1_000_000, 4096, memory=parse_size("4GB")).startswith("PCAR")
    assert choose_factory(1_000_000, 64, memory=parse_size("4GB")) == "HNSW32,Flat"
    assert choose_factory(10_000_000, 64, memory=parse_size("1GB")).endswith("PQ32")
    # past HNSW's build range, raw vectors that fit go into IVF lists as they are
    assert choose_factory(10_000_000, 64, memory=parse_size("4GB")) == "IVF12649_HNSW32,Flat"
    assert choose_factory(10_000_000, 64, gpu=True) == "IVF12649,Flat" and choose_factory(2_000_000, 64) == "HNSW32,Flat"
    assert [kind_of(choose_factory(10_000, 64, k)) for k in KINDS] == list(KINDS)
    assert kind_of("IVF100,SQ8") == kind_of("PCAR128,IVF1000,PQ32") == "ivfpq"
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


@pytest.mark.parametrize("kind", ["exact", "ivf", "ivfpq", "hnsw"])
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


def test_dedupe_probes_fewer_lists_on_request_and_restores_the_tuned_nprobe(tmp_path, capsys):
    x, planted = with_duplicates()
    truth = brute_force_pairs(x, 0.995)
    index = VectorIndex.build(x, [str(i) for i in range(len(x))], kind="ivf", queries=200)
    ivf = faiss.extract_index_ivf(faiss.downcast_index(index.index.index))
    tuned = index.info["search_params"]["nprobe"]
    one = index.duplicates(0.995, nprobe=1)
    assert ivf.nprobe == tuned  # put back after the call
    assert {(i, j) for i, j, _ in one} <= set(truth) and len({(i, j) for i, j, _ in one} & planted) >= 20
    every = index.duplicates(0.995, nprobe=ivf.nlist)
    assert {(i, j) for i, j, _ in every} == set(truth) and ivf.nprobe == tuned
    assert index.groups(0.995, nprobe=1) == index_module.duplicate_groups(one, "connected")
    for bad, message in ((0, "nprobe must be"), (True, "nprobe must be")):
        with pytest.raises(ValueError, match=message):
            index.duplicates(0.995, nprobe=bad)
    assert ivf.nprobe == tuned
    hnsw = VectorIndex.build(x[:500], [str(i) for i in range(500)], kind="hnsw", queries=50)
    with pytest.raises(ValueError, match="nprobe applies to IVF indexes"):
        hnsw.duplicates(0.995, nprobe=2)
    index.save(tmp_path / "ix")
    assert main(["index", "dedupe", str(tmp_path / "ix"), "--threshold", "0.995", "--nprobe", "1", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(one)
    hnsw.save(tmp_path / "hn")
    assert main(["index", "dedupe", str(tmp_path / "hn"), "--nprobe", "2"]) == 2
    assert "nprobe applies to IVF indexes" in capsys.readouterr().err


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


def test_two_faiss_builds_side_by_side_are_refused(monkeypatch):
    """pip installs faiss-gpu beside faiss-cpu without a word; the index refuses that mix and says how to keep one."""
    import alexnet_zoo.retrieval.index_gpu as gpu_module

    assert len(gpu_module.faiss_builds()) <= 1  # this environment itself is sound
    gpu_module.check_one_faiss_build(("faiss-gpu 1.15.1",))
    both = ("faiss-cpu 1.15.1", "faiss-gpu 1.15.1")
    with pytest.raises(RetrievalError, match=r"2 faiss builds .*faiss-cpu 1\.15\.1, faiss-gpu 1\.15\.1.*"
                                             r"pip uninstall -y faiss-cpu faiss-gpu && pip install faiss-gpu==1\.15\.1"):
        gpu_module.check_one_faiss_build(both)
    monkeypatch.setattr(gpu_module, "faiss_builds", lambda: both)
    with pytest.raises(RetrievalError, match="side by side"):
        VectorIndex.build(mixture(300), [str(i) for i in range(300)], kind="exact")


@pytest.mark.cuda
@pytest.mark.skipif(gpu_count() == 0, reason="needs faiss-gpu and a CUDA GPU")
def test_a_real_gpu_index_finds_the_cpu_neighbours(tmp_path):
    """The faiss-gpu calls the stand-in test replaces, run for real: the exact index built on the GPU
    finds the CPU's neighbours, and the saved CPU copy loads and searches the same."""
    x = mixture(5000)
    paths = [str(i) for i in range(len(x))]
    cpu = VectorIndex.build(x, paths, kind="exact", device="cpu")
    gpu = VectorIndex.build(x, paths, kind="exact", device="gpu")
    assert gpu.device == "gpu" and gpu._gpu is not None
    found, expected = gpu.search_arrays(x[:100], 10)[1], cpu.search_arrays(x[:100], 10)[1]
    assert (found[:, 0] == np.arange(100)).all()
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, expected)]) >= 0.99
    gpu.save(tmp_path / "ix")
    np.testing.assert_array_equal(VectorIndex.load(tmp_path / "ix", device="cpu").search_arrays(x[:20], 1)[1][:, 0],
                                  np.arange(20))


def test_gpu_code_path_with_a_cpu_stand_in(monkeypatch, tmp_path):
    """faiss-gpu cannot run here: a CPU clone stands in for the GPU copy, so the orchestration
    (train and fill on the device, copy back, tuned parameters on both, search on the copy, save
    the CPU one) is exercised; the faiss-gpu calls themselves are one line each."""
    import alexnet_zoo.retrieval.index_gpu as gpu_module

    moved = []
    monkeypatch.setattr(index_module, "gpu_count", lambda: 1)
    for module in (index_module, gpu_module):  # searches copy in index.py, builds train and fill in index_gpu.py
        monkeypatch.setattr(module, "to_gpu", lambda index, factory: moved.append(factory) or faiss.clone_index(index))
    monkeypatch.setattr(gpu_module, "from_gpu", faiss.clone_index)
    monkeypatch.setattr(index_module, "gpu_parameters", faiss.ParameterSpace)
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
    # with a PCA in front: the IVF behind it is trained and filled on the device, the whole chain copied back
    whitened = {"kind": "ivfpq", "queries": 200, "pca": 16, "whiten": True}
    cpu, gpu = VectorIndex.build(x, paths, device="cpu", **whitened), VectorIndex.build(x, paths, **whitened)
    assert len(moved) == 3 and gpu.info["search_params"] == cpu.info["search_params"]
    np.testing.assert_array_equal(gpu.search_arrays(x[:50], 10)[1], cpu.search_arrays(x[:50], 10)[1])
    np.testing.assert_array_equal(gpu.vectors(0, 50), cpu.vectors(0, 50))
    gpu.save(tmp_path / "pca")
    loaded = VectorIndex.load(tmp_path / "pca", device="gpu")
    np.testing.assert_array_equal(loaded.search_arrays(x[:50], 10)[1], cpu.search_arrays(x[:50], 10)[1])
    assert len(moved) == 4 and loaded._gpu is not None  # the index behind the PCA copied, the PCA wrapped again
    loaded.add(x[:5], list("abcde"))
    assert loaded._gpu.ntotal == 6005 and {h.path for h in loaded.search(x[3], 2)[0]} == {"3", "d"}


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
    [data] = (tmp_path / "ix").glob("index.*.faiss")
    data.write_bytes(b"garbage" * 10)
    with pytest.raises(CorruptIndex, match=r"index\.[0-9a-f]{16}\.faiss: not a readable FAISS index"):
        VectorIndex.load(tmp_path / "ix")
    with pytest.raises(CorruptIndex, match="missing info.json"):
        VectorIndex.load(tmp_path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from alexnet_zoo.weights.store import save_pretrained

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
    info_paths = [json.loads(line) for line in (tmp_path / "ix" / info["files"]["paths"]).read_text().splitlines()]
    gpu_build = main(["index", "build", str(tmp_path / "feat"), "--out", str(tmp_path / "ix-gpu"), "--device", "gpu"])
    assert gpu_build == (0 if gpu_count() > 0 else 2)  # no GPU: a clear error, not a silent CPU build
    capsys.readouterr()
    query = variants(REAL[2], tmp_path / "q")["cropped"]
    # info.json is untrusted: local weights outside the index folder are only loaded when named again
    assert main(["index", "query", str(tmp_path / "ix"), str(query)]) == 2
    assert "outside the index folder" in capsys.readouterr().err
    assert main(["index", "query", str(tmp_path / "ix"), str(query), str(REAL[1]), "-k", "20", "--json",
                 "--grid", str(tmp_path / "grid.png"), "--pretrained", str(weights)]) == 0
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
    from alexnet_zoo.weights.store import save_pretrained
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


# ---- faults tried on purpose: names, crashes, numbers, untrusted folders ----------------------------

TERMINATORS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # every character str.splitlines() splits on
ODD_NAMES = [f"dir/a{c}b.jpg" for c in TERMINATORS] + [
    "undecodable-\udcff\udcfe.jpg",  # bytes ff fe of a non-UTF-8 name, as os.fsdecode gives them
    " leading and trailing spaces .jpg", "tab\there.jpg", '"quoted" \\back\\slash.jpg', "# not a comment.jpg", ""]


def test_paths_with_line_terminators_and_undecodable_bytes_round_trip(tmp_path):
    x = mixture(len(ODD_NAMES))
    index = VectorIndex.build(x, ODD_NAMES, kind="exact")
    index.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    assert loaded.paths == ODD_NAMES and loaded.count == len(ODD_NAMES)
    assert [h.path for h in loaded.search(x[3], 1)[0]] == [ODD_NAMES[3]]
    # the stored list is ASCII, one line a path, whatever the names hold
    stored = (tmp_path / "ix" / loaded.info["files"]["paths"]).read_bytes()
    assert stored.isascii() and stored.count(b"\n") == len(ODD_NAMES)
    with pytest.raises(InvalidVectors, match="paths must be str"):
        VectorIndex.build(x[:2], [Path("a.jpg"), "b.jpg"])


def _legacy_folder(folder: Path, x: np.ndarray, paths: list[str]) -> None:
    """A folder as the version before ids wrote it: index.faiss + paths.txt + info.json."""
    folder.mkdir()
    index = VectorIndex.build(x, paths, kind="exact")
    faiss.write_index(index.index, str(folder / "index.faiss"))
    (folder / "paths.txt").write_text("".join(p + "\n" for p in paths))
    (folder / "info.json").write_text(json.dumps({k: v for k, v in index.info.items()}))


_CRASHING_SAVE = """
import importlib.util, os, sys
import numpy as np
spec = importlib.util.spec_from_file_location("index_alone", sys.argv[1])  # index.py needs neither torch nor the package
index = sys.modules["index_alone"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(index)
index._step = lambda name: os._exit(17) if name == sys.argv[3] else None
x = np.random.default_rng(1).normal(size=(40, 8)).astype(np.float32)
index.VectorIndex.build(x, [f"new{i}" for i in range(40)], kind="exact").save(sys.argv[2])
"""
SAVE_STEPS = ["save:start", "save:index-written", "save:paths-written", "save:info-staged", "save:committed",
              "save:swept"]


@pytest.mark.parametrize("over", ["index", "old-format index", "nothing"])
def test_save_survives_a_crash_at_every_step(tmp_path, over):
    """A real process is killed (os._exit) at each step of a save over an index: the old index or
    the new one loads at that path, and the leftovers are gone after the next load / save."""
    import subprocess
    import sys

    script = tmp_path / "crash.py"
    script.write_text(_CRASHING_SAVE)
    old = [f"old{i}" for i in range(30)]
    for step in SAVE_STEPS:
        folder = tmp_path / step.replace(":", "-")
        if over == "index":
            VectorIndex.build(mixture(30, dim=8), old, kind="exact").save(folder)
        elif over == "old-format index":
            _legacy_folder(folder, mixture(30, dim=8), old)
        run = subprocess.run([sys.executable, str(script), index_module.__file__, str(folder), step],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 17, run.stderr
        committed = SAVE_STEPS.index(step) >= SAVE_STEPS.index("save:committed")
        if not committed and over == "nothing":
            with pytest.raises(CorruptIndex, match="missing info.json"):  # nothing was ever saved there
                VectorIndex.load(folder)
        else:
            loaded = VectorIndex.load(folder)
            assert loaded.paths == ([f"new{i}" for i in range(40)] if committed else old), step
            files = loaded.info.get("files", {"index": "index.faiss", "paths": "paths.txt"})
            assert sorted(p.name for p in folder.iterdir()) == sorted(["info.json", *files.values()]), step
        VectorIndex.build(mixture(5, dim=8), list("abcde"), kind="exact").save(folder)
        files = json.loads((folder / "info.json").read_text())["files"]
        assert sorted(p.name for p in folder.iterdir()) == sorted(["info.json", *files.values()])
        assert VectorIndex.load(folder).paths == list("abcde")
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_older_versions_interrupted_save_is_recovered(tmp_path):
    """The version before this one renamed the old folder aside, then the new one in: a crash in
    between left no index at the path, a hidden `.NAME.old-PID` and a hidden `.NAME.XXXX.tmp`."""
    x = mixture(20, dim=8)
    _legacy_folder(tmp_path / ".ix.old-4242", x, [f"old{i}" for i in range(20)])
    _legacy_folder(tmp_path / ".ix.k3j_9x.tmp", x[:10], [f"new{i}" for i in range(10)])
    with pytest.warns(UserWarning, match="recovered"):
        loaded = VectorIndex.load(tmp_path / "ix")
    assert loaded.paths == [f"new{i}" for i in range(10)]  # the new copy was complete: it wins
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # the old copy is removed
    # only a half-written new copy: the old one comes back
    (tmp_path / "ix").rename(tmp_path / "gone")
    _legacy_folder(tmp_path / ".iy.old-7", x, [f"old{i}" for i in range(20)])
    (tmp_path / ".iy.abc.tmp").mkdir()
    (tmp_path / ".iy.abc.tmp" / "index.faiss").write_bytes(b"half")
    with pytest.warns(UserWarning, match="recovered"):
        assert VectorIndex.load(tmp_path / "iy").paths == [f"old{i}" for i in range(20)]
    assert not (tmp_path / ".iy.abc.tmp").exists()


def test_save_refuses_other_folders_and_follows_the_umask(tmp_path):
    import os

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"precious")
    index = VectorIndex.build(mixture(10, dim=8), [str(i) for i in range(10)], kind="exact")
    with pytest.raises(RetrievalError, match=r"photos: holds holiday\.jpg .*not an index folder"):
        index.save(photos)
    assert sorted(p.name for p in photos.iterdir()) == ["holiday.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(RetrievalError, match="exists and is not a folder"):
        index.save(tmp_path / "file")
    old = os.umask(0o022)
    try:
        index.save(tmp_path / "shared" / "ix")
    finally:
        os.umask(old)
    assert (tmp_path / "shared" / "ix").stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in (tmp_path / "shared" / "ix").iterdir())
    (tmp_path / "shared" / "ix" / "NOTES.md").write_text("mine")  # a note beside an index survives a save
    index.save(tmp_path / "shared" / "ix")
    assert (tmp_path / "shared" / "ix" / "NOTES.md").read_text() == "mine"


def test_ivfpq_on_few_vectors_says_how_many_it_needs():
    x = mixture(200, dim=32)
    with pytest.raises(InvalidVectors, match=r"ivfpq index .* needs at least 256 training vectors, got 200 vectors"):
        VectorIndex.build(x, [str(i) for i in range(200)], kind="ivfpq")
    with pytest.raises(InvalidVectors, match=r"needs at least 256 training vectors, got a training sample of 100"):
        VectorIndex.build(mixture(400, dim=32), [str(i) for i in range(400)], kind="ivfpq", train_size=100)
    # the default sample is what the k-means needs (50 rows a list, at least 20,000), within 1 GiB of rows
    assert training_size(10_000_000, "IVF12649_HNSW32,Flat", "ivf", None, 64) == 632_450
    assert training_size(10_000_000, "IVF12649_HNSW32,Flat", "ivf", 100_000, 64) == 100_000
    assert training_size(10_000_000, "IVF16384,PQ64", "ivfpq", None, 4096) == (1 << 30) // (4 * 4096)
    assert training_size(5_000, "IVF70,Flat", "ivf", None, 64) == 5_000
    # wide vectors: the PCA in front of PQ is made small enough to train on the vectors there are
    wide = np.random.default_rng(0).normal(size=(400, 2048)).astype(np.float32)
    assert choose_factory(400, 2048, "ivfpq") == "PCAR256,IVF10,PQ64"
    index = VectorIndex.build(wide, [str(i) for i in range(400)], kind="ivfpq", queries=50)
    assert index.info["factory"] == "PCAR256,IVF10,PQ64" and index.search(wide[:1], 1)[0]
    single = VectorIndex.build(x[:1], ["one"], kind="hnsw")
    assert single.info["recall_at_10"] == 1.0  # nothing else to find is not a miss


@pytest.mark.parametrize("dim", [32, 2048])  # IVF,PQ and PCAR,IVF,PQ (the PCA undone on lookup)
def test_kept_lookups_give_the_same_vectors_and_survive_save_and_add(dim, tmp_path):
    x = mixture(600, dim=dim)
    index = VectorIndex.build(x, [str(i) for i in range(600)], kind="ivfpq", queries=50, device="cpu")
    ivf = faiss.extract_index_ivf(index.index.index)
    ranges = [(0, 1), (17, 18), (599, 600), (40, 60), (0, 600)]  # one id, a few, all (the pass over the lists)
    before = [index.vectors(lo, hi) for lo, hi in ranges]
    assert ivf.direct_map.no()  # a bulk user (dedupe, export) does not pay for the map
    index.keep_lookups()
    assert not ivf.direct_map.no()
    for (lo, hi), old in zip(ranges, before):
        np.testing.assert_allclose(index.vectors(lo, hi), old, atol=1e-6)  # the PCA undone one row or many
    ids = index.add(x[:3], ["a", "b", "c"])  # the map follows additions
    np.testing.assert_array_equal(index.vectors(600, 603), index.vectors(0, 3))
    assert ids.tolist() == [600, 601, 602]
    index.save(tmp_path / "ix")
    again = VectorIndex.load(tmp_path / "ix", device="cpu")
    np.testing.assert_array_equal(again.vectors(601, 602), index.vectors(601, 602))
    assert 17 in [hit.id for hit in index.search(index.vectors(17, 18), 10)[0]]


@pytest.mark.parametrize("call, message", [
    (lambda ix: ix.search(mixture(1, dim=32), 0), "k must be an integer >= 1"),
    (lambda ix: ix.search(mixture(1, dim=32), -3), "k must be an integer >= 1"),
    (lambda ix: ix.search(mixture(1, dim=32), True), "k must be an integer >= 1"),
    (lambda ix: ix.duplicates(0), r"threshold must be a cosine in \(0, 1\]"),
    (lambda ix: ix.duplicates(-0.5), r"threshold must be a cosine in \(0, 1\]"),
    (lambda ix: ix.duplicates(1.5), r"threshold must be a cosine in \(0, 1\]"),
    (lambda ix: ix.duplicates(float("nan")), r"threshold must be a cosine in \(0, 1\]"),
    (lambda ix: ix.duplicates(0.9, k=0), "k must be an integer >= 1"),
    (lambda ix: ix.duplicates(0.9, block=0), "block must be an integer >= 1"),
    (lambda ix: VectorIndex.build(mixture(10), list("abcdefghij"), queries=0), "queries must be"),
    (lambda ix: VectorIndex.build(mixture(10), list("abcdefghij"), train_size=-1), "train_size must be"),
    (lambda ix: VectorIndex.build(mixture(10), list("abcdefghij"), target_recall=1.5), "target_recall must be"),
    (lambda ix: VectorIndex.build(mixture(10), list("abcdefghij"), kind="lsh"), "unknown index kind"),
    (lambda ix: parse_size("1e400GB"), "memory size"),
    (lambda ix: parse_size("-1GB"), "memory size"),
    (lambda ix: parse_size("0"), "memory size"),
    (lambda ix: parse_size("..e+"), "memory size"),
    (lambda ix: parse_size(-5), "memory size"),
])
def test_numbers_are_checked_in_the_library(call, message):
    index = VectorIndex.build(mixture(50), [str(i) for i in range(50)], kind="exact")
    with pytest.raises(ValueError, match=message):
        call(index)


@pytest.mark.parametrize("argv, message", [
    (["index", "query", "ix", "q.jpg", "-k", "0"], "expected a whole number >= 1, got 0"),
    (["index", "query", "ix", "q.jpg", "-k", "-2"], "expected a whole number >= 1, got -2"),
    (["index", "query", "ix", "q.jpg", "--thumb", "0"], "expected a whole number from 16 to 1024"),
    (["index", "dedupe", "ix", "--threshold", "1.5"], r"expected a cosine in \(0, 1\]"),
    (["index", "dedupe", "ix", "--threshold", "-1"], r"expected a cosine in \(0, 1\]"),
    (["index", "dedupe", "ix", "--threshold", "nan"], r"expected a cosine in \(0, 1\]"),
    (["index", "dedupe", "ix", "-k", "0"], "expected a whole number >= 1"),
    (["index", "build", "f", "--out", "ix", "--memory", "0"], "memory size '0'"),
    (["index", "build", "f", "--out", "ix", "--memory", "lots"], "memory size 'lots'"),
    (["index", "build", "f", "--out", "ix", "--train-size", "0"], "expected a whole number >= 1, got 0"),
    (["extract", "imgs", "--out", "f", "--shard-size", "0"], "expected a whole number >= 1, got 0"),
    (["extract", "imgs", "--out", "f", "--shard-size", "-5"], "expected a whole number >= 1, got -5"),
    (["extract", "imgs", "--out", "f", "--batch-size", "0"], "expected a whole number from 1 to 65536"),
    (["extract", "imgs", "--out", "f", "--workers", "-1"], "expected a whole number from 0 to 1024"),
    (["extract", "imgs", "--out", "f", "--device", "tpu"], "not a device name|not supported"),
])
def test_numbers_are_checked_where_they_are_parsed(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_zero_query_vectors_are_refused_not_answered():
    x = mixture(50)
    index = VectorIndex.build(x, [str(i) for i in range(50)], kind="exact")
    queries = np.stack([x[0], np.zeros(32, np.float32), x[1]])
    with pytest.raises(ZeroQuery, match=r"rows \[1\] are zero vectors") as err:
        index.search(queries)
    assert err.value.rows == [1]
    assert [hits[0].id for hits in index.search(queries[[0, 2]], 1)] == [0, 1]
    l2 = VectorIndex.build(x, [str(i) for i in range(50)], kind="exact", metric="l2")
    assert len(l2.search(np.zeros(32, np.float32), 3)[0]) == 3  # a point like any other under L2


def test_cli_query_flags_a_zero_vector_and_answers_the_others(weights, tmp_path, capsys, monkeypatch):
    extractor = FeatureExtractor(alexnet(pretrained=weights), "pool5", device="cpu", weights=str(weights))
    index = VectorIndex.build(extractor(REAL), [str(p) for p in REAL], meta=extractor.info())
    index.save(tmp_path / "ix")
    black = tmp_path / "black.png"
    Image.new("RGB", (64, 64)).save(black)
    call = FeatureExtractor.__call__

    def zero_for_black(self, items):  # a layer whose activations are all zero for this picture
        out = call(self, items)
        out[[i for i, item in enumerate(items) if str(item) == str(black)]] = 0
        return out

    monkeypatch.setattr(FeatureExtractor, "__call__", zero_for_black)
    argv = ["index", "query", str(tmp_path / "ix"), str(black), str(REAL[0]), "--pretrained", str(weights), "-k", "2"]
    assert main(argv + ["--json"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out[0]["results"] == [] and "zero vector" in out[0]["error"] and "black.png" in captured.err
    assert out[1]["results"][0]["path"] == str(REAL[0]) and "error" not in out[1]


def _info_folder(tmp_path: Path, **changes) -> Path:
    folder = tmp_path / "ix"
    if not folder.exists():
        index = VectorIndex.build(mixture(300), [str(i) for i in range(300)], kind="hnsw", queries=50)
        index.info.update(model="alexnet", layer="fc7", weights="alexnet.bvlc_in1k", pool=None, normalized=True)
        index.save(folder)
        (tmp_path / "good.json").write_text((folder / "info.json").read_text())
    info = json.loads((tmp_path / "good.json").read_text())
    for key, value in changes.items():
        if value is KeyError:
            info.pop(key)
        else:
            info[key] = value
    (folder / "info.json").write_text(json.dumps(info))
    return folder


@pytest.mark.parametrize("changes, message", [
    ({"metric": "dot"}, "metric must be 'cosine' or 'l2'"),
    ({"metric": "l2"}, "info.json says 300 of dim 32, hnsw, l2"),  # the FAISS file is an inner-product index
    ({"kind": "magic"}, "kind must be 'exact' or 'ivf' or 'ivfpq' or 'hnsw'"),
    ({"kind": "ivf", "factory": "IVF4,PQ8", "search_params": {"nprobe": 2}}, "factory must be a factory string of"),
    ({"kind": "exact"}, "factory must be a factory string of the exact kind"),
    ({"kind": "ivfpq", "factory": "IVF4,PQ8", "search_params": {"nprobe": 2}}, "300 vectors of dim 32, hnsw"),
    ({"search_params": {"efSearch": -1}}, "search_params must be an object of efSearch"),
    ({"search_params": {"efSearch": 10 ** 9}}, "search_params must be"),
    ({"search_params": {"efSearch": "64"}}, "search_params must be"),
    ({"search_params": {"nprobe": 4}}, "search_params must be"),
    ({"search_params": [1, 2]}, "search_params must be"),
    ({"files": {"index": "../../etc/passwd", "paths": "paths.0123456789abcdef.jsonl"}}, "files must be"),
    ({"files": {"index": "index.0123456789abcdef.faiss", "paths": "paths.fedcba9876543210.jsonl"}},
     "files must be"),
    ({"dim": 31}, "info.json says 300 of dim 31"),
    ({"dim": "32"}, "dim must be an integer"),
    ({"dim": True}, "dim must be an integer"),
    ({"count": -1}, "count must be an integer >= 0"),
    ({"count": 299}, "300 vectors"),
    ({"pool": "sum"}, "pool must be null, 'avg' or 'max'"),
    ({"normalized": "yes"}, "normalized must be true or false"),
    ({"dtype": "int8"}, "dtype must be 'float32' or 'float16'"),
    ({"weights": ["a"]}, "weights must be a string"),
    ({"recall_at_10": float("nan")}, "recall_at_10 must be a number"),
    ({"format": "something.else"}, "not an alexnet_zoo index info.json"),
    ({"factory": KeyError}, "factory must be a FAISS factory string"),
])
def test_info_json_fields_are_validated(tmp_path, changes, message):
    folder = _info_folder(tmp_path, **changes)
    with pytest.raises(CorruptIndex) as err:
        VectorIndex.load(folder)
    assert str(folder) in str(err.value) and re.search(message, str(err.value)), err.value


def test_info_json_weights_are_not_followed_outside_the_index_folder(tmp_path, weights):
    from alexnet_zoo.errors import InvalidReference
    from alexnet_zoo.retrieval.query import trusted_weights
    from alexnet_zoo.weights.store import save_pretrained

    folder = tmp_path / "ix"
    folder.mkdir()
    assert trusted_weights("alexnet.bvlc_in1k", folder) == "alexnet.bvlc_in1k"
    assert trusted_weights("hf-hub:org/repo", folder) == "hf-hub:org/repo"
    for ref in (str(weights), "../w", "/etc", str(folder / ".." / "x")):
        with pytest.raises(InvalidReference, match=r"outside the index folder.*pass --pretrained"):
            trusted_weights(ref, folder)
    (folder / "escape").symlink_to(weights)  # a link inside that points out is outside
    with pytest.raises(InvalidReference, match="outside the index folder"):
        trusted_weights("escape", folder)
    save_pretrained(alexnet(), folder / "weights")  # an index that ships its weights
    assert trusted_weights("weights", folder) == str((folder / "weights").resolve())
    assert trusted_weights(str(folder / "weights"), folder) == str((folder / "weights").resolve())
    (folder / "model.onnx").write_bytes(b"not parsed")  # upstream files are never converted from a folder's say
    for ref in ("model.onnx", "nothing-here", 42, None, "hf-hub:../../x", "a\x00b"):
        with pytest.raises((InvalidReference, IndexMismatch)):
            trusted_weights(ref, folder)


def test_the_file_format_names_are_the_published_ones(tmp_path):
    """info.json and manifest.json name their format; folders written by earlier versions must still
    load, so the names stay what they were when the modules moved into retrieval/."""
    from alexnet_zoo.retrieval.shards import FORMAT as FEATURES_FORMAT

    VectorIndex.build(mixture(40), [f"p{i}" for i in range(40)], kind="exact").save(tmp_path / "ix")
    assert json.loads((tmp_path / "ix" / "info.json").read_text())["format"] == "alexnet_zoo.index"
    assert FEATURES_FORMAT == "alexnet_zoo.features"


def test_build_keeps_meta_bounded(tmp_path):
    """What build() stores of ``meta`` must stay loadable: a whole manifest with a huge failure list is
    refused before anything is built, naming what to pass instead."""
    from alexnet_zoo.retrieval.index import META_LIMIT

    huge = {"model": "alexnet", "failures": [{"path": f"/x/{i}.jpg", "error": "bad"} for i in range(40_000)]}
    with pytest.raises(ValueError, match=r"shards\.provenance"):
        VectorIndex.build(mixture(20), [f"p{i}" for i in range(20)], kind="exact", meta=huge)
    with pytest.raises(ValueError, match="JSON data"):
        VectorIndex.build(mixture(20), [f"p{i}" for i in range(20)], kind="exact", meta={"model": object()})
    assert len(json.dumps(huge)) > META_LIMIT


def test_tuning_finds_the_exact_neighbours_once_not_once_a_grid_step(monkeypatch):
    """The tuning sample's brute-force truth is a pass over every row (minutes at 10M vectors):
    computed once for the whole grid, once more for the stored recall's fresh sample."""
    import alexnet_zoo.retrieval.index_tuning as tuning

    calls = []
    real = tuning.faiss.knn
    monkeypatch.setattr(tuning.faiss, "knn", lambda *a, **kw: calls.append(len(a[1])) or real(*a, **kw))
    x = mixture(20000, dim=16)
    index = VectorIndex.build(x, [str(i) for i in range(len(x))], kind="ivfpq", queries=200, target_recall=0.999)
    chosen = index.info["search_params"]["nprobe"]
    assert len([p for p in index_module.search_grid("ivfpq", 10 ** 6) if p["nprobe"] <= chosen]) >= 2  # walked on
    assert calls == [len(x), len(x)]  # tuning truth + measured recall, each once


def test_a_pq_trained_on_few_vectors_warns_once_not_once_a_codebook(capfd):
    """faiss's k-means prints one line per PQ codebook below 39 points a code (128 lines for PQ128):
    the build says it once, with the counts, and the recall it measured."""
    x = np.random.default_rng(0).standard_normal((2000, 64)).astype("float32")
    with pytest.warns(UserWarning, match=r"IVF\d+,PQ32: its 32 PQ codebooks of 256 codes train on 2,000 vectors, "
                                         r"fewer than the 9,984"):
        built = VectorIndex.build(x, [f"{i}.jpg" for i in range(len(x))], kind="ivfpq", queries=50)
    assert "WARNING clustering" not in capfd.readouterr().err
    assert 0 < built.info["recall_at_10"] <= 1
    many = np.random.default_rng(1).standard_normal((10_000, 16)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough vectors: no warning at all
        VectorIndex.build(many, [f"{i}.jpg" for i in range(len(many))], kind="ivfpq", queries=50)
