"""PCA (whitening) in front of the index, and indexes that grow and shrink: the projection against
numpy and faiss's PCAMatrix, save / load round trips, queries and added vectors transformed, damaged
PCA files refused, add / remove against a full rebuild for every kind, crash safety of the updates,
and the CLI (`index build --pca`, `index add`, `index remove`) end to end on real pictures."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import faiss
import numpy as np
import pytest
import torch
from test_features import REAL, generated
from test_index import SAVE_STEPS, mixture

import alexnet_zoo.retrieval.index as index_module
from alexnet_zoo import alexnet
from alexnet_zoo.cli.index_update import as_stored
from alexnet_zoo.cli.main import main
from alexnet_zoo.errors import CorruptIndex, IndexMismatch, InvalidVectors, RetrievalError
from alexnet_zoo.retrieval.index import VectorIndex
from alexnet_zoo.retrieval.index_pca import learn_projection, project, projection_of
from alexnet_zoo.retrieval.index_policy import training_size
from alexnet_zoo.retrieval.index_tuning import exact_knn
from alexnet_zoo.retrieval.vector_checks import prepare


def unit(x: np.ndarray) -> np.ndarray:
    return prepare(np.asarray(x, np.float32), "cosine")


# ---- PCA ------------------------------------------------------------------------------------------

def test_whitening_whitens_and_matches_faiss_pca():
    """On its training vectors the whitened projection has the identity covariance; plain PCA keeps
    the variances (descending); both agree with faiss's PCAMatrix up to the sign of each direction."""
    train = unit(mixture(2000, dim=32, seed=3))
    for whiten in (True, False):
        a, b = learn_projection(train, 8, whiten=whiten, what="test")
        y = train.astype(np.float64) @ a.T + b
        cov = np.cov(y, rowvar=False)
        assert np.abs(y.mean(axis=0)).max() < 1e-4
        if whiten:
            np.testing.assert_allclose(cov, np.eye(8), atol=1e-3)
        else:
            variances = np.diag(cov)
            assert np.all(np.diff(variances) <= 1e-9) and np.abs(cov - np.diag(variances)).max() < 1e-5
        reference = faiss.PCAMatrix(32, 8, -0.5 if whiten else 0.0)
        reference.train(train)
        theirs = reference.apply(train).astype(np.float64)  # faiss's covariance is not divided by N: a scale apart
        scale = np.linalg.norm(theirs, axis=0) / np.linalg.norm(y, axis=0)
        np.testing.assert_allclose(scale, 1 / np.sqrt(len(train) - 1) if whiten else 1, rtol=1e-2)
        np.testing.assert_allclose(np.abs(theirs / scale), np.abs(y), atol=2e-3)


@pytest.mark.parametrize("kind", ["exact", "ivf", "ivfpq", "hnsw"])
def test_pca_round_trip_and_queries_through_it(kind, tmp_path):
    x, train = mixture(3000, dim=32), mixture(1500, dim=32, seed=5)
    paths = [f"p{i}" for i in range(len(x))]
    index = VectorIndex.build(x, paths, kind=kind, pca=12, whiten=True, pca_train=train, queries=200)
    info = index.info
    assert info["pca"]["dim"] == 12 and info["pca"]["whiten"] is True and info["pca"]["train"] == "separate"
    assert info["pca"]["trained_on"] == 1500 and 0 < info["pca"]["recall_at_10_original"] <= 1
    assert info["dim"] == 32 and index.dim == 32 and index.vectors(0, 4).shape == (4, 12)
    assert info["recall_at_10"] >= (1.0 if kind == "exact" else 0.9)
    index.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    assert loaded.info == json.loads((tmp_path / "ix" / "info.json").read_text())
    queries = mixture(30, dim=32, seed=9)
    for got, want in zip(loaded.search_arrays(queries, 10), index.search_arrays(queries, 10)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.vectors(), index.vectors())
    # queries go through the projection: exact search over the projected vectors is the oracle
    projection = projection_of(loaded.index)
    space = project(unit(x), projection, "cosine")
    _, truth = exact_knn(space, project(unit(queries), projection, "cosine"), 10)
    _, found = loaded.search_arrays(queries, 10)
    assert (found == truth).all() if kind == "exact" else np.mean(found[:, 0] == truth[:, 0]) >= 0.9
    # ... and so do added vectors (the index holds them projected)
    new = mixture(20, dim=32, seed=11)
    loaded.add(new, [f"new{i}" for i in range(20)])
    stored = loaded.vectors(3000, 3020)
    expected = project(unit(new), projection, "cosine")
    if kind == "ivfpq":  # PQ / SQ codes are approximations: close in direction
        cosines = np.sum(stored * expected, axis=1) / np.linalg.norm(stored, axis=1)
        assert cosines.mean() > 0.95
    else:
        assert np.abs(stored - expected).max() < 1e-5
    # a search by id is by the stored (projected) vector
    hits = loaded.search_ids([5, 3010], 10)
    if kind == "ivfpq":  # inner products of decoded codes: a longer code can outscore the vector's own
        assert "p5" in [h.path for h in hits[0]] and "new10" in [h.path for h in hits[1]]
    else:
        assert [h[0].path for h in hits] == ["p5", "new10"]


def test_pca_learned_on_the_indexed_vectors_and_dedupe_in_the_whitened_space():
    x = mixture(800, dim=24, seed=2)
    x[400] = x[7] * 1.5  # a copy: cosine 1 in any linear space
    index = VectorIndex.build(x, [str(i) for i in range(800)], kind="exact", pca=10, whiten=True)
    assert index.info["pca"]["train"] == "indexed" and index.info["pca"]["trained_on"] == 800
    projection = projection_of(index.index)
    y = project(unit(x), projection, "cosine")
    g = y @ y.T
    i, j = np.nonzero(np.triu(g >= 0.98, 1))
    truth = {(int(a), int(b)) for a, b in zip(i, j)}
    assert (7, 400) in truth
    assert {(a, b) for a, b, _ in index.duplicates(0.98)} == truth


def test_pca_refuses_what_it_cannot_learn():
    x = mixture(50, dim=16)
    paths = [str(i) for i in range(50)]
    with pytest.raises(InvalidVectors, match="have only 16; choose --pca 16 or fewer"):
        VectorIndex.build(x, paths, kind="exact", pca=17)
    with pytest.raises(InvalidVectors, match="needs at least 12 training vectors, got 10 \\(pca_train\\)"):
        VectorIndex.build(x, paths, kind="exact", pca=12, pca_train=mixture(10, dim=16))
    with pytest.raises(InvalidVectors, match="pca_train: vectors of dim 8, the indexed ones have 16"):
        VectorIndex.build(x, paths, kind="exact", pca=4, pca_train=mixture(100, dim=8))
    flat = np.repeat(mixture(3, dim=16), 20, axis=0)[:50]  # 3 distinct vectors: 2 directions of variance
    with pytest.raises(InvalidVectors, match="vary in only 2 directions.*choose --pca 2 or fewer"):
        VectorIndex.build(flat, paths, kind="exact", pca=4, whiten=True)
    VectorIndex.build(flat, paths, kind="exact", pca=4)  # plain PCA keeps the flat directions harmlessly
    with pytest.raises(ValueError, match="need pca=D"):
        VectorIndex.build(x, paths, kind="exact", whiten=True)
    with pytest.raises(ValueError, match="pca must be an integer >= 1"):
        VectorIndex.build(x, paths, kind="exact", pca=0)


def _pca_folder(tmp_path, **build):
    folder = tmp_path / "ix"
    VectorIndex.build(mixture(300, dim=16), [f"p{i}" for i in range(300)], kind="exact", **build).save(folder)
    return folder, json.loads((folder / "info.json").read_text())


@pytest.mark.parametrize("change, message", [
    (lambda info: info["pca"].update(dim=6), "a PCA of 16 -> 8 dims.*info.json says PCA 16 -> 6"),
    (lambda info: info["pca"].update(dim=17), "pca must be an object with dim \\(1..16\\)"),
    (lambda info: info["pca"].update(whiten="yes"), "pca must be an object"),
    (lambda info: info["pca"].update(trained_on=3), "pca must be an object"),
    (lambda info: info["pca"].update(recall_at_10_original=float("nan")), "pca must be an object"),
    (lambda info: info.pop("pca"), "a transform in front of the index that info.json names no \"pca\" for"),
    (lambda info: info.update(metric="l2"), "a transform chain of LinearTransform, NormalizationTransform"),
    (lambda info: info.update(changes_since_recall={"added": -1, "removed": 0}), "changes_since_recall must be"),
])
def test_damaged_pca_info_is_refused(tmp_path, change, message):
    folder, info = _pca_folder(tmp_path, pca=8, whiten=True)
    change(info)
    (folder / "info.json").write_text(json.dumps(info))
    with pytest.raises(CorruptIndex, match=message):
        VectorIndex.load(folder)


def test_damaged_pca_files_are_refused(tmp_path):
    folder, info = _pca_folder(tmp_path, pca=8, whiten=True)
    path = folder / info["files"]["index"]
    index = faiss.read_index(str(path))
    transform = faiss.downcast_VectorTransform(faiss.downcast_index(index.index).chain.at(0))
    a = faiss.vector_to_array(transform.A)
    a[5] = np.nan
    faiss.copy_array_to_vector(a, transform.A)
    faiss.write_index(index, str(path))
    with pytest.raises(CorruptIndex, match=f"{re.escape(str(path))}: a PCA matrix holding NaN or inf"):
        VectorIndex.load(folder)
    # info.json claims a PCA the file does not hold
    plain, plain_info = _pca_folder(tmp_path / "plain")
    plain_info["pca"] = {"dim": 8, "whiten": True, "trained_on": 300, "train": "indexed"}
    (plain / "info.json").write_text(json.dumps(plain_info))
    with pytest.raises(CorruptIndex, match="a IndexFlatIP without the PCA in front"):
        VectorIndex.load(plain)


# ---- indexes that grow and shrink ---------------------------------------------------------------------

def _same(a: VectorIndex, b: VectorIndex, queries: np.ndarray) -> None:
    assert a.paths == b.paths and a.count == b.count
    np.testing.assert_allclose(a.vectors(), b.vectors(), atol=1e-6)
    for got, want in zip(a.search_arrays(queries, 10), b.search_arrays(queries, 10)):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("pca", [None, {"pca": 8, "whiten": True}])
def test_add_and_remove_equal_a_rebuild_for_exact_indexes(tmp_path, pca):
    x, train = mixture(500, dim=16), mixture(400, dim=16, seed=4)
    paths = [f"p{i}" for i in range(500)]
    build = {"kind": "exact", **({"pca_train": train, **pca} if pca else {})}
    index = VectorIndex.build(x[:300], paths[:300], **build)
    index.save(tmp_path / "ix")
    grown = VectorIndex.load(tmp_path / "ix")
    ids, skipped = grown.add_new(x[250:], paths[250:])  # 50 already indexed
    assert skipped == 50 and ids.tolist() == list(range(300, 500))
    gone = [paths[i] for i in (0, 17, 299, 300, 499)]
    assert grown.remove(gone) == 5
    grown.save(tmp_path / "ix")
    grown = VectorIndex.load(tmp_path / "ix")
    keep = [i for i in range(500) if paths[i] not in gone]
    rebuilt = VectorIndex.build(x[keep], [paths[i] for i in keep], **build)
    _same(grown, rebuilt, mixture(40, dim=16, seed=8))
    assert grown.info.get("changes_since_recall") == ({"added": 200, "removed": 5} if pca else None)


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "hnsw"])
def test_approximate_indexes_find_added_vectors_and_lose_removed_ones(kind, tmp_path):
    x = mixture(6000, dim=32)
    paths = [f"p{i}" for i in range(len(x))]
    index = VectorIndex.build(x[:5000], paths[:5000], kind=kind, queries=200)
    factory, params = index.info["factory"], index.info["search_params"]
    ids, skipped = index.add_new(x[5000:], paths[5000:])
    assert skipped == 0 and len(ids) == 1000
    assert index.info["changes_since_recall"] == {"added": 1000, "removed": 0}
    _, found = index.search_arrays(x[5000:], 1)
    assert np.mean(found[:, 0] == ids) >= 0.9  # each added vector is its own nearest neighbour
    gone = paths[::7]
    assert index.remove(gone) == len(gone)
    index.save(tmp_path / "ix")
    loaded = VectorIndex.load(tmp_path / "ix")
    assert loaded.info["factory"] == factory and loaded.info["search_params"] == params
    assert loaded.info["changes_since_recall"] == {"added": 1000, "removed": len(gone)}
    keep = [i for i in range(6000) if i % 7]
    assert loaded.paths == [paths[i] for i in keep] and loaded.count == len(keep)
    hits = loaded.search(x[::7], 10)
    assert not {h.path for row in hits for h in row} & set(gone)
    _, found = loaded.search_arrays(x[keep[:500]], 1)
    assert np.mean(found[:, 0] == np.arange(500)) >= 0.9  # the kept ones under their new ids
    if kind == "hnsw":  # the graph is rebuilt from the stored vectors: a build of the kept rows
        rebuilt = VectorIndex.build(x[keep], [paths[i] for i in keep], kind="hnsw", queries=200)
        rebuilt._apply(params)
        _same(loaded, rebuilt, mixture(40, dim=32, seed=8))


@pytest.mark.parametrize("pca", [None, 64])
def test_removal_from_an_ivf_pq_behind_a_pcar(pca):
    """A small memory budget makes IVF-PQ reduce with its own PCAR first (and behind a whitening PCA
    too): the lists' ids are renumbered under both transforms."""
    x = mixture(3000, dim=128)
    paths = [f"p{i}" for i in range(3000)]
    whitening = {"pca": pca, "whiten": True} if pca else {}
    index = VectorIndex.build(x, paths, kind="ivfpq", memory=3000 * 24, queries=100, **whitening)
    assert index.info["factory"].startswith("PCAR")
    gone = set(paths[::5])
    index.remove(sorted(gone))
    assert index.count == 2400 and index.paths == [p for p in paths if p not in gone]
    hits = index.search(x[:200], 10)
    assert all(0 <= h.id < 2400 and h.path == index.paths[h.id] and h.path not in gone for row in hits for h in row)
    assert all(i < j < 2400 for i, j, _ in index.duplicates(0.99)) and index.vectors().shape == (2400, pca or 128)



@pytest.mark.parametrize("pca", [None, 16])
def test_removal_under_kept_lookups(pca):
    """A served index keeps faiss's direct map (keep_lookups), under which faiss cannot remove: the
    map is dropped for the removal and rebuilt from the renumbered lists."""
    x = mixture(3000, dim=32)
    paths = [f"p{i}" for i in range(3000)]
    index = VectorIndex.build(x, paths, kind="ivfpq", queries=100, **({"pca": pca} if pca else {}))
    index.keep_lookups()
    before = index.vectors()
    keep = [i for i in range(3000) if i % 4]
    assert index.remove(paths[::4]) == 750
    np.testing.assert_array_equal(index.vectors(), before[keep])  # the bulk pass, then lookups one id at a time
    np.testing.assert_array_equal(np.concatenate([index.vectors(i, i + 1) for i in range(0, 2250, 9)]),
                                  before[keep][::9])


def test_updates_refuse_other_features_unknown_paths_and_emptying():
    x = mixture(60, dim=16)
    meta = {"model": "alexnet", "layer": "fc7", "weights": "w"}
    index = VectorIndex.build(x[:40], [f"p{i}" for i in range(40)], kind="exact", meta=meta)
    with pytest.raises(IndexMismatch, match="layer='fc6' vs 'fc7'"):
        index.add_new(x[40:], [f"n{i}" for i in range(20)], meta={**meta, "layer": "fc6"})
    with pytest.raises(IndexMismatch, match="pool=None vs '\\(none\\)'"):
        index.add_new(x[40:], [f"n{i}" for i in range(20)], meta={**meta, "pool": None})
    with pytest.raises(IndexMismatch, match="dim 8, the index holds dim 16"):
        index.add_new(x[40:, :8], [f"n{i}" for i in range(20)], meta=meta)
    ids, skipped = index.add_new(x[40:], ["p1"] + [f"n{i}" for i in range(18)] + ["n0"], meta=meta)
    assert len(ids) == 18 and skipped == 2 and index.count == 58
    with pytest.raises(RetrievalError, match="1 of the 2 paths to remove are not in the index .*'nope'"):
        index.remove(["p3", "nope"])
    with pytest.raises(RetrievalError, match="would leave the index empty"):
        index.remove(index.paths)
    assert index.count == 58  # nothing changed


_CRASHING_UPDATE = """
import importlib.util, os, sys
import numpy as np
spec = importlib.util.spec_from_file_location("index_alone", sys.argv[1])
index = sys.modules["index_alone"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(index)
index._step = lambda name: os._exit(17) if name == sys.argv[3] else None
loaded = index.VectorIndex.load(sys.argv[2])
if sys.argv[4] == "add":
    loaded.add_new(np.random.default_rng(1).normal(size=(10, 8)).astype(np.float32), [f"new{i}" for i in range(10)])
else:
    loaded.remove([f"old{i}" for i in range(0, 30, 3)])
loaded.save(sys.argv[2])
"""


@pytest.mark.parametrize(("update", "kind"), [("add", "exact"), ("remove", "hnsw")])
def test_updates_survive_a_crash_at_every_step(tmp_path, update, kind):
    """A real process adding to / removing from a saved index is killed at each step of its save:
    the old index or the updated one loads, with nothing left over."""
    script = tmp_path / "crash.py"
    script.write_text(_CRASHING_UPDATE)
    old = [f"old{i}" for i in range(30)]
    new = old + [f"new{i}" for i in range(10)] if update == "add" else [p for i, p in enumerate(old) if i % 3]
    for step in SAVE_STEPS:
        folder = tmp_path / f"{step.replace(':', '-')}"
        VectorIndex.build(mixture(30, dim=8), old, kind=kind, pca=4, whiten=True).save(folder)
        run = subprocess.run([sys.executable, str(script), index_module.__file__, str(folder), step, update],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 17, run.stderr
        committed = SAVE_STEPS.index(step) >= SAVE_STEPS.index("save:committed")
        loaded = VectorIndex.load(folder)
        assert loaded.paths == (new if committed else old), step
        assert ("changes_since_recall" in loaded.info) == committed
        assert sorted(p.name for p in folder.iterdir()) == sorted(["info.json", *loaded.info["files"].values()])


# ---- the command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from alexnet_zoo.weights.store import save_pretrained

    torch.manual_seed(0)
    return save_pretrained(alexnet(), tmp_path_factory.mktemp("w") / "random-seed0")



def test_extract_again_then_index_add_keeps_the_index_in_step_with_its_folder(weights, tmp_path, capsys):
    """The whole growth loop: pictures join and leave a folder; extract (incremental) + index add
    give the index a rebuild of the final folder would give."""
    source = tmp_path / "pics"
    made = generated(source, n=6, seed=4)
    feats, ix = tmp_path / "feats", tmp_path / "ix"
    extract = ["extract", str(source), "--out", str(feats), "--pretrained", str(weights), "--layer", "pool5",
               "--workers", "0", "--quiet"]
    assert main(extract) == 0
    assert main(["index", "build", str(feats), "--out", str(ix), "--kind", "exact"]) == 0
    made[2].unlink()
    generated(tmp_path / "more", n=2, seed=5)[0].rename(source / "zz-new.png")
    assert main(extract) == 0
    capsys.readouterr()
    assert main(["index", "add", str(ix), str(feats)]) == 0
    assert "added 1 vectors, skipped 5 already indexed, removed 1 gone from the source; 6 vectors" in \
        capsys.readouterr().out
    assert main(["index", "add", str(ix), str(feats)]) == 0  # again: nothing to do
    assert "added 0 vectors, skipped 6 already indexed, removed 0 gone from the source" in capsys.readouterr().out
    updated = VectorIndex.load(ix)
    fresh = tmp_path / "fresh"
    assert main(["extract", str(source), "--out", str(tmp_path / "fresh.feats"), *extract[4:]]) == 0
    assert main(["index", "build", str(tmp_path / "fresh.feats"), "--out", str(fresh), "--kind", "exact"]) == 0
    rebuilt = VectorIndex.load(fresh)
    assert sorted(updated.paths) == rebuilt.paths and str(made[2]) not in updated.paths
    order = [updated.paths.index(p) for p in rebuilt.paths]
    np.testing.assert_allclose(updated.vectors()[order], rebuilt.vectors(), rtol=0, atol=1e-4)  # fp16 rows, other batches


def test_cli_pca_build_add_remove_end_to_end(weights, tmp_path, capsys, monkeypatch):
    first, second, other = tmp_path / "first", tmp_path / "second", tmp_path / "train"
    first.mkdir()
    for p in REAL:
        (first / p.name).write_bytes(p.read_bytes())
    generated(first, n=5, seed=1)
    generated(second, n=4, seed=2)
    (second / REAL[0].name).write_bytes(REAL[0].read_bytes())  # the same picture under another path: a new row
    generated(other, n=8, seed=3)
    extract = ["--pretrained", str(weights), "--layer", "pool5", "--workers", "0", "--quiet"]
    for folder in (first, second, other):
        assert main(["extract", str(folder), "--out", str(folder) + ".feats", *extract]) == 0
    ix = tmp_path / "ix"
    assert main(["index", "build", f"{first}.feats", "--out", str(ix), "--pca", "6", "--whiten",
                 "--pca-train", f"{other}.feats"]) == 0
    out = capsys.readouterr().out
    assert "PCA-whitened to 6 dims, Flat over 8 vectors, 1-recall@10 1.000 (" in out
    info = json.loads((ix / "info.json").read_text())
    assert info["pca"] == {**info["pca"], "dim": 6, "whiten": True, "trained_on": 8, "train": "separate"}
    # --train-size reaches the policy that sizes the k-means sample (and the sample trains the index)
    sized = []
    monkeypatch.setattr(index_module, "training_size", lambda *a: sized.append(a) or training_size(*a))
    assert main(["index", "build", f"{first}.feats", "--out", str(tmp_path / "ivf"), "--kind", "ivf",
                 "--train-size", "4"]) == 0
    assert sized == [(8, "IVF1,Flat", "ivf", 4, 9216)] and training_size(*sized[0]) == 4
    capsys.readouterr()
    # a query by picture goes through the PCA: an indexed picture finds itself
    assert main(["index", "query", str(ix), str(first / REAL[1].name), "-k", "3", "--json",
                 "--pretrained", str(weights)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["results"][0]["path"] == str(first / REAL[1].name)
    assert main(["index", "dedupe", str(ix), "--threshold", "0.99", "--json"]) == 0
    capsys.readouterr()
    # add: the second folder's pictures; adding it again skips them all
    assert main(["index", "add", str(ix), f"{second}.feats"]) == 0
    assert "added 5 vectors, skipped 0 already indexed, removed 0 gone from the source; 13 vectors" in capsys.readouterr().out
    assert main(["index", "add", str(ix), f"{second}.feats"]) == 0
    out = capsys.readouterr().out
    assert "added 0 vectors, skipped 5 already indexed, removed 0 gone from the source; 13 vectors" in out and "5 added and 0 removed since" in out
    # remove by --paths (another spelling of the stored absolute path: relative, ./ and //) and --paths-file
    monkeypatch.chdir(tmp_path)
    assert main(["index", "remove", str(ix), "--paths", f"./second//{REAL[0].name}"]) == 0
    assert "removed 1 vectors; 12 left" in capsys.readouterr().out
    listed = tmp_path / "gone.txt"
    listed.write_text(f"{first / REAL[1].name}\n# a comment\n{first / REAL[2].name}\n")
    assert main(["index", "remove", str(ix), "--paths-file", str(listed)]) == 0
    assert "removed 2 vectors; 10 left" in capsys.readouterr().out
    loaded = VectorIndex.load(ix)
    assert loaded.count == 10 and str(first / REAL[1].name) not in loaded.paths
    assert loaded.info["changes_since_recall"] == {"added": 5, "removed": 3}
    # refusals: one line, exit status 2, the index unchanged
    assert main(["extract", str(second), "--out", str(tmp_path / "raw.feats"), *extract, "--no-normalize"]) == 0
    capsys.readouterr()
    for argv, message in [
        (["index", "add", str(ix), str(tmp_path / "raw.feats")], "normalized=False vs True"),
        (["index", "remove", str(ix), "--paths", "nope.jpg"], "not in the index"),
        (["index", "build", f"{first}.feats", "--out", str(tmp_path / "ix2"), "--pca", "9"],
         "needs at least 9 training vectors, got 8"),
        (["index", "build", f"{first}.feats", "--out", str(tmp_path / "ix2"), "--whiten"], "need --pca D"),
        (["index", "build", f"{first}.feats", "--out", str(tmp_path / "ix2"), "--pca", "4", "--pca-train",
          str(tmp_path / "raw.feats")], "--pca-train features of normalized=False"),
        (["index", "build", f"{first}.feats", "--out", str(tmp_path / "ix2"), "--pca", "4", "--pca-train",
          str(listed)], "expected a features folder"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
    assert VectorIndex.load(ix).paths == loaded.paths


def test_removal_paths_are_matched_as_stored_then_as_the_same_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stored = ["x/a.jpg", "./x/a.jpg", str(tmp_path / "b.jpg"), "c.jpg"]
    assert as_stored(["x/a.jpg", "c.jpg"], stored) == ["x/a.jpg", "c.jpg"]  # stored as typed: itself
    assert as_stored(["b.jpg", "./c.jpg", str(tmp_path / "c.jpg")], stored) == [stored[2], "c.jpg", "c.jpg"]
    assert as_stored(["x//a.jpg", "d.jpg"], stored) == ["x//a.jpg", "d.jpg"]  # two stored matches, or none: kept
