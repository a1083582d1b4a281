"""The FAISS index folder: exact and approximate kinds against the exact oracle, ids, save/load,
typed errors, and the extract / index CLI end to end on real CC0 pictures (random weights)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_zoo import alexnet
from alexnet_zoo.cli import main
from alexnet_zoo.features import FeatureExtractor
from alexnet_zoo.index import (CorruptIndex, IndexMismatch, InvalidVectors, VectorIndex, choose_factory, exact_knn,
                               parse_size)
from test_features import REAL, generated, variants


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
    capsys.readouterr()
    query = variants(REAL[2], tmp_path / "q")["cropped"]
    assert main(["index", "query", str(tmp_path / "ix"), str(query), str(REAL[1]), "-k", "20", "--json",
                 "--grid", str(tmp_path / "grid.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["query"] for o in out] == [str(query), str(REAL[1])]
    assert len(out[0]["results"]) == 6 and set(out[0]["results"][0]) == {"path", "id", "score"}
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
