"""PCA / PCA whitening in the retrieval benchmark (--pca D --whiten --pca-train): the projection on
hand-made vectors against one worked out here in numpy, the whole command on a small UKBench layout
of real JPEGs (a picture folder, a .npy and the evaluated set as training data) checked against
vectors extracted and projected by hand, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from alexnet_zoo import alexnet
from alexnet_zoo.benchmarks.retrieval import main
from alexnet_zoo.benchmarks.retrieval_pca import OPTIMISTIC, apply_pca, learn_benchmark_pca
from alexnet_zoo.errors import InvalidVectors
from alexnet_zoo.retrieval.benchmark_eval import evaluate_rankings, summarize
from alexnet_zoo.retrieval.benchmark_sets import read_benchmark
from test_retrieval_benchmark import _pictures

FAST = ["--device", "cpu", "--precision", "fp32", "--no-progress", "--batch-size", "4"]


def _manual(train: np.ndarray, x: np.ndarray, dim: int, whiten: bool, unit: bool) -> np.ndarray:
    """PCA (whitening) worked out directly: eigenvectors of the training covariance."""
    if unit:
        train = train / np.linalg.norm(train, axis=1, keepdims=True)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    mean = train.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(train - mean, rowvar=False))
    values, vectors = values[::-1][:dim], vectors[:, ::-1][:, :dim]
    y = (x - mean) @ (vectors / np.sqrt(values) if whiten else vectors)
    return y / np.linalg.norm(y, axis=1, keepdims=True) if unit else y


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_the_projection_is_the_one_worked_out_by_hand(whiten, metric):
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(12, 12)) * np.linspace(3, 0.5, 12)  # unequal variances: distinct directions
    train, database, queries = (rng.normal(size=(n, 12)) @ mix for n in (200, 30, 7))
    if metric == "cosine":
        database /= np.linalg.norm(database, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    projection = learn_benchmark_pca(train, 5, whiten=whiten, metric=metric, what="train", d_in=12)
    db, q = apply_pca(database.astype(np.float32), queries.astype(np.float32), projection, metric)
    unit = metric == "cosine"
    want_db, want_q = (_manual(train, v, 5, whiten, unit) for v in (database, queries))
    assert db.shape == (30, 5) and q.shape == (7, 5)
    # the directions' signs are arbitrary: compare what the ranking sees (inner products, distances)
    np.testing.assert_allclose(q @ db.T, want_q @ want_db.T, atol=2e-4, rtol=2e-4)
    np.testing.assert_allclose(np.linalg.norm(q[:, None] - db[None], axis=2),
                               np.linalg.norm(want_q[:, None] - want_db[None], axis=2), atol=2e-4, rtol=2e-4)
    if unit:
        np.testing.assert_allclose(np.linalg.norm(db, axis=1), 1.0, atol=1e-5)


def test_refusals_on_vectors():
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidVectors, match=r"needs at least 9 training vectors, got 8 \(train\)"):
        learn_benchmark_pca(rng.normal(size=(8, 12)), 9, whiten=False, metric="cosine", what="train", d_in=12)
    with pytest.raises(InvalidVectors, match="train: vectors of dim 10, the evaluated ones have 12"):
        learn_benchmark_pca(rng.normal(size=(20, 10)), 4, whiten=False, metric="cosine", what="train", d_in=12)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A UKBench folder of 8 pictures (two objects), 12 other pictures to learn the PCA on, and
    local random weights (seeded, so every run and the check by hand use the same network)."""
    from alexnet_zoo.weights.store import save_pretrained

    root = tmp_path_factory.mktemp("pcabench")
    # noisy enough that the PCA changes the figures (without it: mAP 1, N-S 4; whitened on "other": 0.84, 2.9)
    _pictures(root / "ukb", [f"ukbench{i:05d}.jpg" for i in range(8)], [i // 4 for i in range(8)], noise=60)
    _pictures(root / "other", [f"o{i:02d}.jpg" for i in range(12)], [i // 3 for i in range(12)], seed=1, noise=60)
    torch.manual_seed(0)
    return root, save_pretrained(alexnet(), root / "random-seed0")


def _by_hand(root, weights, dim, whiten, train_folder):
    """The figures of vectors extracted here, projected by :func:`_manual`, and (checked to differ,
    so the comparison can fail) those of the vectors as extracted."""
    from alexnet_zoo.factory import model_for_weights
    from alexnet_zoo.retrieval.extraction import list_images
    from alexnet_zoo.retrieval.features import FeatureExtractor

    extractor = FeatureExtractor(model_for_weights(str(weights)), "fc7", device="cpu", precision="fp32", batch_size=4)
    bset = read_benchmark("ukbench", root / "ukb", None, None)
    database = np.asarray(extractor(list(bset.images)), np.float64)
    train = database if train_folder is None else np.asarray(extractor(list_images(train_folder)), np.float64)
    x = _manual(train, database, dim, whiten, True).astype(np.float32)
    figures = summarize(evaluate_rankings(x, x, bset, (1,), progress=False), (1,))
    raw = database.astype(np.float32)
    assert figures["mAP"] != pytest.approx(summarize(evaluate_rankings(raw, raw, bset, (1,), progress=False),
                                                     (1,))["mAP"], abs=1e-3)
    return figures, train


def test_end_to_end_with_a_separate_picture_folder_and_npy(layout, tmp_path):
    root, weights = layout
    argv = ["--dataset", "ukbench", "--data", str(root / "ukb"), "--pretrained", str(weights), "--recall-k", "1",
            "--pca", "6", "--whiten", *FAST]
    out = tmp_path / "report.json"
    report = main([*argv, "--pca-train", str(root / "other"), "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["pca"] == {"dim": 6, "dim_in": 4096, "whiten": True, "trained_on": 12, "train": "separate",
                            "kind": "pictures", "source": str(root / "other"), "listed": 12, "overlap": 0,
                            "note": None}
    figures, train = _by_hand(root, weights, 6, True, root / "other")
    assert report["ns_score"] == pytest.approx(figures["ns_score"])
    assert report["mAP"] == pytest.approx(figures["mAP"], abs=1e-5)
    np.save(tmp_path / "train.npy", train.astype(np.float32))
    from_npy = main([*argv, "--pca-train", str(tmp_path / "train.npy")])
    assert from_npy["pca"]["kind"] == "npy" and from_npy["pca"]["trained_on"] == 12
    assert from_npy["mAP"] == pytest.approx(report["mAP"], abs=1e-5)


def test_end_to_end_learned_on_the_evaluated_set_says_so(layout):
    root, weights = layout
    report = main(["--dataset", "ukbench", "--data", str(root / "ukb"), "--pretrained", str(weights),
                   "--recall-k", "1", "--pca", "4", *FAST])
    assert report["pca"]["train"] == "evaluated" and report["pca"]["note"] == OPTIMISTIC
    assert report["pca"]["trained_on"] == 8 and report["pca"]["whiten"] is False
    figures, _ = _by_hand(root, weights, 4, False, None)
    assert report["mAP"] == pytest.approx(figures["mAP"], abs=1e-5)


def test_the_refusals(layout):
    root, weights = layout
    base = ["--dataset", "ukbench", "--data", str(root / "ukb"), "--pretrained", str(weights), *FAST]
    with pytest.raises(InvalidVectors, match=r"--pca 5000: the fc7 vectors have only 4096 dimensions"):
        main([*base, "--pca", "5000"])
    from alexnet_zoo.cli.failures import CommandError

    with pytest.raises(CommandError, match="add --pca D"):
        main([*base, "--whiten"])
    done = subprocess.run([sys.executable, "-m", "alexnet_zoo.benchmarks.retrieval", *base, "--pca", "20",
                           "--pca-train", str(root / "other")], check=False, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "needs at least 20 training vectors, got 12" in done.stderr


def test_end_to_end_with_a_features_folder(layout, tmp_path):
    """--pca-train FEATURES from `alexnet-zoo extract` of the same pictures: the figures of the picture
    folder run; features of another layer are refused, naming the field."""
    from alexnet_zoo.cli.main import main as cli
    from alexnet_zoo.errors import IndexMismatch

    root, weights = layout
    argv = ["--dataset", "ukbench", "--data", str(root / "ukb"), "--pretrained", str(weights), "--recall-k", "1",
            "--pca", "5", "--whiten", *FAST]
    common = ["--pretrained", str(weights), "--device", "cpu", "--precision", "fp32", "--dtype", "float32", "--quiet"]
    assert cli(["extract", str(root / "other"), "--out", str(tmp_path / "feats"), *common]) == 0
    from_pictures = main([*argv, "--pca-train", str(root / "other")])
    from_features = main([*argv, "--pca-train", str(tmp_path / "feats")])
    assert from_features["pca"]["kind"] == "features" and from_features["pca"]["trained_on"] == 12
    assert from_features["mAP"] == pytest.approx(from_pictures["mAP"], abs=1e-5)
    assert from_features["ns_score"] == pytest.approx(from_pictures["ns_score"])
    assert cli(["extract", str(root / "other"), "--out", str(tmp_path / "fc6"), "--layer", "fc6", *common]) == 0
    with pytest.raises(IndexMismatch, match=r"fc6.*--pca-train features of layer='fc6', the indexed ones layer='fc7'"):
        main([*argv, "--pca-train", str(tmp_path / "fc6")])
