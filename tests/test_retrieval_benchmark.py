"""python -m alexnet_zoo.benchmarks.retrieval end to end on tiny generated folders of real JPEGs, with
random weights: the report's keys, the per-query CSV, the crop and flip paths, the one-line errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alexnet_zoo.benchmarks.retrieval import main
from alexnet_zoo.errors import GroundTruthError

FAST = ["--pretrained", "none", "--device", "cpu", "--precision", "fp32", "--no-progress", "--batch-size", "4"]


def _pictures(folder, names, groups, seed=0, noise=8.0):
    """One random base picture per group; each name a noisy copy of its group's base (``noise``:
    the standard deviation of the added noise, in grey levels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bases = {g: rng.integers(0, 256, (72, 96, 3)) for g in set(groups)}
    for name, g in zip(names, groups):
        noisy = np.clip(bases[g] + rng.normal(0, noise, bases[g].shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / name, quality=90)


def test_ukbench_end_to_end(tmp_path):
    _pictures(tmp_path / "ukb", [f"ukbench{i:05d}.jpg" for i in range(8)], [i // 4 for i in range(8)])
    out, per_query = tmp_path / "report.json", tmp_path / "queries.csv"
    report = main(["--dataset", "ukbench", "--data", str(tmp_path / "ukb"), "--json", str(out),
                   "--csv", str(per_query), "--recall-k", "1", "4", *FAST])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    for key in ("dataset", "primary", "queries", "mAP", "ns_score", "recall_at", "precision_at", "data", "features",
                "measure", "query_flip", "weights", "arch", "environment"):
        assert key in saved, key
    assert saved["dataset"] == "ukbench" and saved["primary"] == "ns_score" and saved["queries"] == 8
    assert 0.0 <= saved["ns_score"] <= 4.0 and 0.0 <= saved["mAP"] <= 1.0
    assert saved["features"]["layer"] == "fc7" and saved["features"]["dim"] == 4096
    assert set(saved["recall_at"]) == {"1", "4"} and saved["weights"] == "random"
    rows = list(csv.DictReader(per_query.open()))
    assert len(rows) == 8 and rows[0]["query"] == "ukbench00000"
    assert np.mean([int(r["ns"]) for r in rows]) == pytest.approx(saved["ns_score"])
    assert np.mean([float(r["ap"]) for r in rows]) == pytest.approx(saved["mAP"], abs=1e-5)


def test_oxford_boxes_flip_and_euclidean(tmp_path):
    names = ["a_1.jpg", "a_2.jpg", "a_3.jpg", "b_1.jpg", "b_2.jpg"]
    _pictures(tmp_path / "jpg", names, [0, 0, 0, 1, 1])
    gt = tmp_path / "gt_files"
    gt.mkdir()
    for q, image, good, junk in (("a_q1", "a_1", "a_1\na_2\n", "a_3\n"), ("b_q1", "b_2", "b_1\nb_2\n", "")):
        (gt / f"{q}_query.txt").write_text(f"oxc1_{image} 4.5 3 90.2 70\n")
        (gt / f"{q}_good.txt").write_text(good)
        (gt / f"{q}_ok.txt").write_text("")
        (gt / f"{q}_junk.txt").write_text(junk)
    report = main(["--dataset", "oxford5k", "--data", str(tmp_path), "--layer", "pool5", "--query-flip",
                   "--no-normalize", *FAST])
    assert report["queries"] == 2 and "ns_score" not in report and report["measure"] == "euclidean"
    assert report["features"]["dim"] == 9216 and report["query_flip"] is True
    assert 0.0 < report["mAP"] <= 1.0
    (gt / "b_q1_query.txt").write_text("oxc1_b_2 500 500 600 600\n")  # beyond the 96x72 picture
    with pytest.raises(GroundTruthError, match=r"b_q1 .*b_2\.jpg.*outside the 96x72 picture"):
        main(["--dataset", "oxford5k", "--data", str(tmp_path), *FAST])


def test_groups_and_the_command_line_error(tmp_path):
    _pictures(tmp_path / "pics", ["x.jpg", "y.jpg", "z.jpg"], [0, 0, 1])
    (tmp_path / "groups.csv").write_text("path,group\nx.jpg,cup\ny.jpg,cup\nz.jpg,pen\n")
    report = main(["--dataset", "groups", "--data", str(tmp_path / "pics"), "--groups", str(tmp_path / "groups.csv"),
                   *FAST])
    assert report["queries"] == 2 and report["data"]["notes"] and report["recall_at"]["1"] in (0.0, 0.5, 1.0)
    (tmp_path / "groups.csv").write_text("path,group\nx.jpg,cup\nmissing.jpg,cup\n")
    done = subprocess.run([sys.executable, "-m", "alexnet_zoo.benchmarks.retrieval", "--dataset", "groups",
                           "--data", str(tmp_path / "pics"), "--groups", str(tmp_path / "groups.csv"), *FAST],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "groups.csv:3: 'missing.jpg': expected an image file" in done.stderr


def test_copydays_figures_per_attack_family_checked_by_hand():
    """Four database rows (three originals, a distractor) as unit axes; each query's vector puts its
    original at a chosen rank, so every AP is known: one positive at rank r (1-based) scores
    (0 + 1/r) / 2 by compute_ap's trapezoids, 1 at rank 1."""
    from pathlib import Path

    from alexnet_zoo.retrieval.benchmark_eval import evaluate_rankings, summarize
    from alexnet_zoo.retrieval.benchmark_sets import BenchmarkSet, Query

    database = np.eye(4, dtype=np.float32)
    plan = [("jpeg/10", 0, []), ("jpeg/10", 1, [3]), ("crops/50", 2, []), ("strong", 0, [1, 2])]  # (level, own, above)
    queries, vectors = [], []
    for i, (level, own, above) in enumerate(plan):
        v = np.zeros(4, np.float32)
        v[own] = 0.5
        for j, other in enumerate(above):
            v[other] = 0.9 - 0.1 * j
        vectors.append(v / np.linalg.norm(v))
        queries.append(Query(f"{level}/{i}", Path(f"{i}.jpg"), frozenset({own}), family=level))
    bset = BenchmarkSet("copydays", Path("."), tuple(Path(f"{n}.jpg") for n in "abcd"), tuple(queries), "map")
    results = evaluate_rankings(database, np.stack(vectors), bset, (1,), progress=False)
    assert [r.ap for r in results] == pytest.approx([1.0, 0.25, 1.0, 1 / 6])
    figures = summarize(results, (1,), bset.queries)
    assert figures["families"] == {"jpeg": {"queries": 2, "mAP": pytest.approx(0.625)},
                                   "crops": {"queries": 1, "mAP": pytest.approx(1.0)},
                                   "strong": {"queries": 1, "mAP": pytest.approx(1 / 6)}}
    assert figures["levels"]["jpeg/10"]["mAP"] == pytest.approx(0.625)
    assert figures["mAP"] == pytest.approx((1 + 0.25 + 1 + 1 / 6) / 4) and figures["recall_at"]["1"] == 0.5
    assert "families" not in summarize(results, (1,))  # datasets without attacks: as before


def test_copydays_end_to_end_on_real_pictures(tmp_path):
    """A small Copydays layout made from the CC0 test pictures: attacked copies made here."""
    from pathlib import Path

    real = sorted((Path(__file__).parent / "data" / "retrieval").glob("*.png"))[:2] + \
        [Path(__file__).parent / "data" / "retrieval" / "rocket.jpg"]
    root = tmp_path / "copydays"
    for folder in ("original", "jpegqual/10", "crops/50", "strong", "distractors"):
        (root / folder).mkdir(parents=True)
    for block, path in zip(("2000", "2001", "2002"), real):
        img = Image.open(path).convert("RGB").resize((120, 90))
        img.save(root / "original" / f"{block}00.jpg", quality=95)
        img.save(root / "jpegqual" / "10" / f"{block}00.jpg", quality=10)
        img.crop((17, 13, 103, 77)).save(root / "crops" / "50" / f"{block}00.jpg", quality=95)
        img.rotate(180).save(root / "strong" / f"{block}01.jpg", quality=75)
    _pictures(root / "distractors", ["d1.jpg", "d2.jpg"], [0, 1])
    per_query = tmp_path / "q.csv"
    report = main(["--dataset", "copydays", "--data", str(root), "--distractors", "1", "--layer", "pool5",
                   "--csv", str(per_query), "--recall-k", "1", *FAST])
    assert report["dataset"] == "copydays" and report["queries"] == 9 and report["data"]["images"] == 4
    assert set(report["families"]) == {"jpeg", "crops", "strong"} and set(report["levels"]) == {
        "jpeg/10", "crops/50", "strong"}
    assert all(part["queries"] == 3 for part in report["families"].values())
    aps = [float(r["ap"]) for r in csv.DictReader(per_query.open())]
    assert report["mAP"] == pytest.approx(np.mean(aps), abs=1e-5)
    assert report["families"]["jpeg"]["mAP"] == pytest.approx(np.mean(aps[:3]), abs=1e-5)
    assert report["data"]["distractors"] == "1" and any("distractor" in n for n in report["data"]["notes"])
