"""benchmarks/retrieval.py end to end: index kinds against exact search on synthetic vectors and on a
real features folder (fc7 of pictures, PCA-whitened in front of every kind)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_features import generated

from alexnet_zoo.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "retrieval.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          check=False, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                      "OMP_NUM_THREADS": "1"})


def test_synthetic_vectors_every_kind(tmp_path):
    done = _run("--n", "3000", "--dim", "16", "--queries", "50", "--rounds", "1", "--kinds", "exact", "ivf", "hnsw",
                "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    rows = {r["kind"]: r for r in report["results"]}
    assert rows["exact"]["recall_at_10"] == 1.0 and rows["exact"]["speedup_vs_exact"] == 1.0
    assert rows["ivf"]["factory"].endswith(",Flat") and rows["ivf"]["recall_at_10"] >= 0.9
    assert report["data"]["n"] == 3000 and "| ivf | IVF" in done.stdout


def test_dedupe_with_fewer_lists_reports_its_pair_recall(tmp_path):
    done = _run("--n", "4000", "--dim", "16", "--queries", "50", "--rounds", "1", "--kinds", "ivf", "hnsw",
                "--dedupe", "0.99", "--dedupe-nprobe", "1", "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    rows = {r["kind"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert rows["ivf"]["dedupe_nprobe"] == 1 and rows["hnsw"]["dedupe_nprobe"] is None
    for row in rows.values():  # 2% of the rows are near-copies: the sample's pairs exist and are found
        check = row["dedupe_check"]
        assert check["sample_rows"] == 200 and check["true_pairs"] > 0 and 0.5 <= check["pair_recall"] <= 1
    assert "pair recall" in done.stdout


def test_real_features_with_pca_whitening(tmp_path):
    source = tmp_path / "pictures"
    generated(source, 40)
    feats = tmp_path / "feats"
    assert main(["extract", str(source), "--out", str(feats), "--pretrained", "none", "--layer", "fc7",
                 "--batch-size", "8"]) == 0
    done = _run("--features", str(feats), "--queries", "8", "--pca", "12", "--whiten", "--rounds", "1",
                "--kinds", "exact", "hnsw", "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["data"]["features"] == str(feats) and report["data"]["n"] == 32 and report["data"]["dim"] == 4096
    assert report["data"]["pca"] == 12 and report["data"]["whiten"] is True and report["data"]["layer"] == "fc7"
    for row in report["results"]:  # truth is exact search of the 4096-d vectors: the PCA may lose some
        assert 0 <= row["recall_at_10"] <= 1
    assert "PCA 12 whitened" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--features", "nowhere"], "nowhere"),
    (["--whiten"], "--whiten needs --pca"),
    (["--pca", "0"], "--pca must be at least 1"),
    (["--n", "300", "--dim", "8", "--pca", "9"], "more than the vectors' 8 dimensions"),
    (["--n", "20", "--queries", "5", "--dim", "64", "--pca", "40", "--whiten", "--kinds", "exact"],
     "needs at least 40 training vectors"),
])
def test_bad_arguments_are_one_line(args, message, tmp_path):
    done = _run(*args)
    assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
