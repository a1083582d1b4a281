"""Near-duplicate groups and calibration: groups of crafted pairs and vectors whose components are
known, best scores, the strict (complete) grouping, pair precision / recall / F1 worked out by hand,
the target-precision threshold, hostile label files, and ``index dedupe`` end to end on a small
real index (real CC0 pictures and altered copies, random weights) with --groups, --json, --csv,
--grid, --labels and --curve."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_features import REAL, generated, variants

from alexnet_zoo import alexnet
from alexnet_zoo.cli.main import main
from alexnet_zoo.errors import LabelFileError
from alexnet_zoo.retrieval.dedupe_eval import label_ids, pair_curve, read_groups_csv
from alexnet_zoo.retrieval.index import VectorIndex
from alexnet_zoo.retrieval.index_dedupe import duplicate_groups
from alexnet_zoo.retrieval.pr_curve import draw_pr_curve

# ---- groups ---------------------------------------------------------------------------------------

CHAIN = [(0, 1, 0.99), (1, 2, 0.97), (3, 4, 0.96), (5, 6, 0.955), (6, 7, 0.951), (8, 9, 0.96), (9, 10, 0.96),
         (8, 10, 0.97)]


def test_connected_groups_of_crafted_pairs():
    groups = duplicate_groups(CHAIN)
    # largest first; equal sizes by best score, then smallest id; members by best score, then id
    assert groups == [[(0, 0.99), (1, 0.99), (2, 0.97)], [(8, 0.97), (10, 0.97), (9, 0.96)],
                      [(5, 0.955), (6, 0.955), (7, 0.951)], [(3, 0.96), (4, 0.96)]]
    assert duplicate_groups([]) == []
    assert duplicate_groups(reversed(CHAIN)) == groups  # the pairs' order does not matter


def test_complete_groups_split_chains():
    groups = duplicate_groups(CHAIN, "complete")
    # 0-1-2 and 5-6-7 are chains (0-2 and 5-7 are no pair): their best pair stays, the third member drops
    # out; 8-9-10 is a triangle and stays whole
    assert groups == [[(8, 0.97), (10, 0.97), (9, 0.96)], [(0, 0.99), (1, 0.99)], [(3, 0.96), (4, 0.96)],
                      [(5, 0.955), (6, 0.955)]]
    with pytest.raises(ValueError, match="grouping must be one of connected, complete"):
        duplicate_groups(CHAIN, "single")
    with pytest.raises(ValueError, match="two different ids"):
        duplicate_groups([(1, 1, 0.99)])


def _reference_components(count: int, pairs: list[tuple[int, int, float]]) -> list[set[int]]:
    """Connected components by breadth-first search, the plain way."""
    near = {i: set() for i in range(count)}
    for i, j, _ in pairs:
        near[i].add(j)
        near[j].add(i)
    seen, out = set(), []
    for start in range(count):
        if start in seen or not near[start]:
            continue
        todo, part = [start], set()
        while todo:
            i = todo.pop()
            if i not in part:
                part.add(i)
                todo.extend(near[i] - part)
        seen |= part
        out.append(part)
    return out


def test_index_groups_on_crafted_vectors_match_brute_force():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(12, 32))
    x = np.concatenate([c + 0.08 * rng.normal(size=(int(n), 32)) for c, n in zip(centres, rng.integers(1, 6, 12))])
    x = np.concatenate([x, rng.normal(size=(30, 32))]).astype(np.float32)  # loners
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = VectorIndex.build(x, [f"v{i}" for i in range(len(x))], kind="exact")
    threshold = 0.97
    cos = x.astype(np.float64) @ x.T.astype(np.float64)
    truth = [(i, j, cos[i, j]) for i, j in itertools.combinations(range(len(x)), 2) if cos[i, j] >= threshold]
    groups = index.groups(threshold)
    assert sorted(map(sorted, ({i for i, _ in g} for g in groups))) == sorted(map(sorted, _reference_components(
        len(x), truth)))
    for g in groups:  # each member's best score: its best pair inside the group
        for i, best in g:
            assert best == pytest.approx(max(s for a, b, s in truth if i in (a, b)), abs=1e-5)
    assert [len(g) for g in groups] == sorted((len(g) for g in groups), reverse=True)
    for g in index.groups(threshold, grouping="complete"):  # every member at the threshold to every other
        ids = [i for i, _ in g]
        assert all(cos[a, b] >= threshold - 1e-5 for a, b in itertools.combinations(ids, 2))


def test_complete_grouping_of_an_angle_chain():
    """u, v, w in a plane: u-v at cosine 0.97, v-w at 0.96, so u-w (0.863) is no pair at 0.95;
    connected groups the three, complete keeps the better pair u-v only."""
    t1, t2 = np.arccos(0.97), np.arccos(0.96)
    x = np.zeros((5, 8), np.float32)
    x[:3, 0], x[:3, 1] = np.cos([0, t1, t1 + t2]), np.sin([0, t1, t1 + t2])
    x[3, 2], x[4, 3] = 1, 1
    index = VectorIndex.build(x, list("uvwab"), kind="exact")
    (group,) = index.groups(0.95)
    assert [i for i, _ in group] == [0, 1, 2]
    assert [s for _, s in group] == pytest.approx([0.97, 0.97, 0.96], abs=1e-5)
    assert [[i for i, _ in g] for g in index.groups(0.95, grouping="complete")] == [[0, 1]]
    with pytest.raises(ValueError, match="grouping must be one of"):
        index.groups(0.95, grouping="average")


# ---- calibration ----------------------------------------------------------------------------------

GROUPS = np.array([0, 0, 0, 1, 1, 2])  # true pairs: 0-1 0-2 1-2 3-4: four
FOUND = [(0, 1, 0.99), (3, 4, 0.98), (0, 5, 0.97), (1, 2, 0.96), (0, 2, 0.96), (2, 5, 0.90)]


def test_pair_precision_recall_f1_by_hand():
    curve = pair_curve(FOUND, GROUPS)
    assert curve.positives == 4
    rows = {r["threshold"]: r for r in curve.table([1.0, 0.99, 0.97, 0.96, 0.93, 0.9])}
    assert rows[1.0] == {"threshold": 1.0, "found": 0, "true_found": 0, "false_found": 0, "missed": 4,
                         "precision": None, "recall": 0.0, "f1": None}
    assert (rows[0.99]["precision"], rows[0.99]["recall"], rows[0.99]["f1"]) == (1.0, 0.25, pytest.approx(0.4))
    # at 0.97: 3 found (0-1, 3-4 true; 0-5 false): P 2/3, R 2/4, F1 = 2PR/(P+R) = 4/7
    assert rows[0.97]["precision"] == pytest.approx(2 / 3) and rows[0.97]["recall"] == 0.5
    assert rows[0.97]["f1"] == pytest.approx(4 / 7)
    # at 0.96 both tied pairs count: 5 found, 4 true: P 0.8, R 1, F1 8/9; 0.93 is the same (no score between)
    assert (rows[0.96]["found"], rows[0.96]["true_found"], rows[0.96]["missed"]) == (5, 4, 0)
    assert rows[0.96]["f1"] == pytest.approx(8 / 9) and rows[0.93] == rows[0.96] | {"threshold": 0.93}
    assert rows[0.9]["precision"] == pytest.approx(4 / 6) and rows[0.9]["false_found"] == 2
    assert curve.points() == [(0.99, 0.25, 1.0), (0.98, 0.5, 1.0), (0.97, 0.5, pytest.approx(2 / 3)),
                              (0.96, 1.0, 0.8), (0.9, 1.0, pytest.approx(2 / 3))]


def test_lowest_threshold_for_a_target_precision():
    curve = pair_curve(FOUND, GROUPS)
    assert curve.lowest_threshold(0.8) == 0.96  # precision 0.8 exactly, at full recall
    assert curve.lowest_threshold(0.81) == 0.98  # 0.96 gives 0.8, 0.97 2/3: only the top two pairs
    assert curve.lowest_threshold(0.6) == 0.9
    assert pair_curve([(0, 5, 0.99)], GROUPS).lowest_threshold(0.5) is None  # no threshold has a true pair
    assert pair_curve([], GROUPS).lowest_threshold(0.5) is None
    with pytest.raises(ValueError, match="target precision"):
        curve.lowest_threshold(0)


def test_label_ids_and_unlabelled_pictures(tmp_path):
    labels = tmp_path / "groups.csv"
    labels.write_text("path,group\na.jpg,cat\nb.jpg,cat\n\"c, d.jpg\",dog\n", encoding="utf-8")
    read = read_groups_csv(labels)
    assert read == {"a.jpg": ("cat", 2), "b.jpg": ("cat", 3), "c, d.jpg": ("dog", 4)}
    ids = label_ids(read, ["b.jpg", "x.jpg", "c, d.jpg", "a.jpg", "y.jpg"], labels)
    assert ids[0] == ids[3] and len(set(ids.tolist())) == 4  # x and y: groups of their own
    assert pair_curve([(1, 4, 0.99)], ids).at(0.99)["false_found"] == 1
    with pytest.raises(LabelFileError, match=r"groups\.csv:3: 'b\.jpg' is not in the index \(1 of 3"):
        label_ids(read, ["a.jpg", "c, d.jpg"], labels)


@pytest.mark.parametrize("content, message", [
    (b"", r": no labelled pictures"),
    (b"path,group\n", r": no labelled pictures"),
    (b"file,label\na,b\n", r":1: expected the header 'path,group'"),
    (b"a.jpg,1\n", r":1: expected the header 'path,group'"),
    (b"path,group\na.jpg,1\nb.jpg\n", r":3: expected 'path,group' \(two fields, neither empty\), got 1 field"),
    (b"path,group\na.jpg,1,extra\n", r":2: expected 'path,group' .* got 3 field"),
    (b"path,group\na.jpg, \n", r":2: expected 'path,group'"),
    (b"path,group\n,1\n", r":2: expected 'path,group'"),
    (b"path,group\na.jpg,1\n\nb.jpg,2\na.jpg,2\n", r":5: 'a\.jpg' is listed twice \(first on line 2\)"),
    (b"path,group\na.jpg,1\nb\xff.jpg,2\n", r":3: not UTF-8 text"),
    (b'path,group\n"a.jpg,1\n', r":2: not valid CSV"),
])
def test_hostile_label_files(tmp_path, content, message):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(content)
    with pytest.raises(LabelFileError, match=r"labels\.csv" + message):
        read_groups_csv(labels)


def test_missing_label_file_and_curve_png(tmp_path):
    with pytest.raises(LabelFileError, match=r"nope\.csv: cannot read"):
        read_groups_csv(tmp_path / "nope.csv")
    out = draw_pr_curve(pair_curve(FOUND, GROUPS).points(), tmp_path / "pr.png", target=0.8)
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (520, 400)
    assert len(image.getcolors(65536)) > 3  # axes, curve and target line drawn, not a blank page


# ---- the command, end to end ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def dup_index(tmp_path_factory):
    """An index of pool5 features (random weights: fc7 vectors are nearly parallel) of the real
    pictures, three altered copies of each, and three generated loners; its label file."""
    from alexnet_zoo.weights.store import save_pretrained

    root = tmp_path_factory.mktemp("dedupe")
    torch.manual_seed(0)
    weights = save_pretrained(alexnet(), root / "random-seed0")
    images = root / "imgs"
    rows = []
    for p in REAL:
        copies = [images / p.name] + list(variants(p, images).values())
        (images / p.name).write_bytes(p.read_bytes())
        rows += [(str(c), p.stem) for c in copies]
    generated(images, n=3)
    assert main(["extract", str(images), "--out", str(root / "feat"), "--pretrained", str(weights),
                 "--layer", "pool5", "--workers", "0", "--quiet"]) == 0
    assert main(["index", "build", str(root / "feat"), "--out", str(root / "ix")]) == 0
    labels = root / "groups.csv"
    with labels.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("path", "group"), *rows])
    return root / "ix", labels, len(REAL)


def test_cli_groups_json_csv_grid(dup_index, tmp_path, capsys):
    ix, _, originals = dup_index
    index = VectorIndex.load(ix)
    capsys.readouterr()
    assert main(["index", "dedupe", str(ix), "--threshold", "0.5", "--groups", "--json",
                 "--grid", str(tmp_path / "groups.png")]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert groups == [{"group": g, "size": len(m), "members": [{"id": i, "path": index.paths[i], "best_score": s}
                                                             for i, s in m]}
                      for g, m in enumerate(index.groups(0.5))]
    assert groups and all(g["size"] >= 2 for g in groups)
    grid = Image.open(tmp_path / "groups.png")
    widest = min(12, max(g["size"] for g in groups))
    assert grid.size[0] > widest * 128 and grid.size[1] > min(20, len(groups)) * 128
    assert main(["index", "dedupe", str(ix), "--threshold", "0.5", "--groups", "complete", "--csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["group", "id", "path", "best_score"]
    complete = index.groups(0.5, grouping="complete")
    assert [(int(g), int(i), p, float(s)) for g, i, p, s in rows[1:]] == [
        (g, i, index.paths[i], s) for g, m in enumerate(complete) for i, s in m]
    assert main(["index", "dedupe", str(ix), "--threshold", "0.5"]) == 0  # pairs, as before: the default
    text = capsys.readouterr().out.splitlines()
    assert text[-1] == f"{len(index.duplicates(0.5))} pairs at cosine >= 0.5" and originals


def test_cli_labels_table_target_and_curve(dup_index, tmp_path, capsys):
    ix, labels, originals = dup_index
    capsys.readouterr()
    argv = ["index", "dedupe", str(ix), "--labels", str(labels), "--threshold", "0.5", "--step", "0.05"]
    assert main([*argv, "--target-precision", "0.9", "--json", "--curve", str(tmp_path / "pr.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["true_pairs"] == 6 * originals and report["labelled"] == 4 * originals
    assert [r["threshold"] for r in report["table"]] == [round(0.5 + 0.05 * n, 6) for n in range(11)]
    index = VectorIndex.load(ix)
    curve = pair_curve(index.duplicates(0.5), label_ids(read_groups_csv(labels), index.paths, labels))
    assert report["table"] == curve.table(r["threshold"] for r in report["table"])
    target = report["threshold_for_target"]
    assert target == curve.lowest_threshold(0.9) and report["at_target"]["precision"] >= 0.9
    assert all(r["precision"] is None or r["precision"] < 0.9 for r in report["table"] if r["threshold"] < target
               and r["found"] > report["at_target"]["found"])
    assert Image.open(tmp_path / "pr.png").size == (520, 400)
    assert main([*argv, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(r["found"]) for r in rows] == [r["found"] for r in report["table"]]
    assert main([*argv, "--target-precision", "0.9"]) == 0
    assert f"lowest threshold with precision >= 0.9: {target:.6f}" in capsys.readouterr().out


def test_cli_dedupe_refusals(dup_index, tmp_path, capsys):
    ix, labels, _ = dup_index
    bad = tmp_path / "bad.csv"
    bad.write_text("path,group\nnot-indexed.jpg,x\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["index", "dedupe", str(ix), "--labels", str(bad)]) == 2
    assert "bad.csv:2: 'not-indexed.jpg' is not in the index" in capsys.readouterr().err
    assert main(["index", "dedupe", str(ix), "--target-precision", "0.9"]) == 2
    assert "--labels" in capsys.readouterr().err
    assert main(["index", "dedupe", str(ix), "--labels", str(labels), "--grid", str(tmp_path / "g.png")]) == 2
    assert "--curve PNG" in capsys.readouterr().err and not (tmp_path / "g.png").exists()
    for argv in (["--groups", "--labels", str(labels)], ["--json", "--csv"], ["--groups", "single"],
                 ["--labels", str(labels), "--target-precision", "1.5"], ["--labels", str(labels), "--step", "0"]):
        with pytest.raises(SystemExit) as stop:
            main(["index", "dedupe", str(ix), *argv])
        assert stop.value.code == 2
    # a precision no threshold reaches: exit status 1, said on stderr; a dissimilar label file makes it so
    wrong = tmp_path / "wrong.csv"
    paths = VectorIndex.load(ix).paths
    wrong.write_text("path,group\n" + "".join(f"{p},{n}\n" for n, p in enumerate(paths)), encoding="utf-8")
    assert main(["index", "dedupe", str(ix), "--labels", str(wrong), "--threshold", "0.5",
                 "--target-precision", "0.5"]) == 1
    assert "reaches precision 0.5" in capsys.readouterr().err
    assert Path(labels).is_file()
