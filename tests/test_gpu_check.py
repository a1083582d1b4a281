"""benchmarks/gpu_check.py starts, and records what it measured and why it skipped the rest, before
any GPU time is spent on it: ``--dry-run`` end to end on the committed pictures, a run whose time is
spent (every row skipped with the budget named), and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PICTURES = ROOT / "tests" / "data" / "retrieval"
SECTIONS = ["tests", "fidelity", "inference", "training", "pipeline", "decoding", "faiss", "lrn"]


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports its siblings, as when run
    import gpu_check

    return gpu_check


def _rows(section: dict) -> dict[str, dict]:
    return {row["name"]: row for row in section["rows"]}


def test_dry_run_end_to_end(tmp_path):
    out = tmp_path / "check" / "gpu_check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--images", str(PICTURES), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["finished"] and report["plan"]["pictures"] == 3
    assert list(report["sections"]) == SECTIONS and set(report["budgets_s"]) == set(SECTIONS)
    assert {"torch", "cpu", "device", "triton"} <= set(report["environment"])
    log = out.with_suffix(".log").read_text()
    for name, section in report["sections"].items():
        assert section["status"] in ("done", "skipped"), (name, section)
        assert f"== {name}" in log and isinstance(section["seconds"], float)
        for row in section["rows"]:
            assert "skipped" in row or any(isinstance(v, (int, float)) for v in row.values()), row
    s = report["sections"]
    fidelity = _rows(s["fidelity"])["fc7 cosine bf16 vs fp32"]
    assert 0.9 < fidelity["min"] <= fidelity["mean"] <= 1.0 + 1e-6
    inference = _rows(s["inference"])
    for name in ("alexnet fp32 channels_last eager", "torchvision fp32 nchw eager"):
        assert inference[name]["images_per_s"] > 0 and inference[name]["batch"] == 2
    assert "lrn_share" in inference["LRN share of the forward, fp32 channels_last"]
    assert s["inference"]["target"]["ratio"] > 0
    training = _rows(s["training"])["recipe fp32 channels_last eager b2"]
    assert training["epoch90_hours"] == pytest.approx(90 * 1_281_167 / training["images_per_s"] / 3600)
    pipeline = _rows(s["pipeline"])
    assert pipeline["cpu decode, loader only"]["pictures"] == 4 and pipeline["cpu decode, loader only"]["unreadable"] == 0
    assert _rows(s["decoding"])["as given: CPU libjpeg-turbo, one thread"]["images_per_s"] > 0
    assert _rows(s["faiss"])["CPU IVF-PQ"]["added"] == 10_000
    if not torch.cuda.is_available():  # what a CPU cannot run is skipped, each part saying why
        assert "no CUDA GPU" in s["tests"]["reason"] and "pytest" in s["tests"]["command"]
        assert "no CUDA GPU" in s["lrn"]["reason"]
        for section, row in (("fidelity", "CUDA fp32 forward vs CPU"), ("inference", "torch.compile"),
                             ("inference", "CUDA graphs"), ("training", "compiled steps"),
                             ("pipeline", "device decode (nvJPEG)"), ("decoding", "as given: nvJPEG"),
                             ("decoding", "packed 256x256: nvJPEG")):
            assert "no CUDA GPU" in _rows(s[section])[row]["skipped"], (section, row)
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        assert "faiss has no GPU support" in _rows(s["faiss"])["GPU exact and IVF-PQ"]["skipped"]


def test_a_spent_budget_is_recorded_row_by_row(gpu_check, tmp_path, capsys):
    out = tmp_path / "cut.json"
    assert gpu_check.main(["--dry-run", "--images", str(PICTURES), "--out", str(out), "--only", "training",
                           "--deadline", "0"]) == 0
    report = json.loads(out.read_text())
    assert list(report["sections"]) == ["training"]
    rows = report["sections"]["training"]["rows"]
    assert rows and all("skipped" in row for row in rows)
    assert "budget (or the run's deadline) was spent" in rows[0]["skipped"]
    assert "== training" in capsys.readouterr().out


def test_refusals_are_one_line(gpu_check, tmp_path, capsys, monkeypatch):
    assert gpu_check.main(["--dry-run", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU here" in err and "--dry-run" in err
    assert not (tmp_path / "x.json").exists()


def test_pytest_outcome_tells_missing_modules_from_failures(monkeypatch):
    """On the GPU machine a test module may import what it lacks (fastapi): that is no failed CUDA test."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from _gpu_sections import pytest_outcome

    uncollected = ["ERROR tests/test_serve.py - ModuleNotFoundError: No module named 'fastapi'",
                   "9 passed, 700 deselected, 1 error in 30.1s"]
    assert pytest_outcome(uncollected, 1) == {"status": "done", "collection_errors": uncollected[:1], "failures": []}
    assert pytest_outcome(["9 passed, 700 deselected in 20.0s"], 0)["status"] == "done"
    failed = ["FAILED tests/test_lrn.py::test_lrn_cuda[dtype0] - AssertionError", "1 failed, 8 passed in 9s"]
    assert pytest_outcome(failed, 1) == {"status": "failed", "collection_errors": [], "failures": failed[:1]}
    setup = ["ERROR tests/test_index.py::test_a_real_gpu_index_finds_the_cpu_neighbours - RuntimeError"]
    assert pytest_outcome(setup, 1)["failures"] == setup
    assert pytest_outcome(["no tests ran in 3s"], 5)["status"] == "failed"  # nothing marked cuda was collected
