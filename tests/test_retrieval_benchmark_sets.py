"""The benchmark layout readers on crafted folders: each dataset's own layout, and malformed ground truth
refused with the file and line named. The readers never decode a picture, so empty files stand in."""

from __future__ import annotations

import pytest

from alexnet_zoo.errors import GroundTruthError, LabelFileError
from alexnet_zoo.retrieval.benchmark_sets import read_benchmark, read_groups, read_holidays, read_oxford, read_ukbench


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def test_holidays_groups_by_prefix_and_skips_the_query_in_its_own_ranking(tmp_path):
    _touch(tmp_path / "jpg", "100000.jpg", "100001.jpg", "100002.jpg", "100100.jpg", "100101.jpg")
    (tmp_path / "README").write_text("not a picture")  # other files are no images and are ignored
    s = read_holidays(tmp_path)
    assert [p.name for p in s.images] == ["100000.jpg", "100001.jpg", "100002.jpg", "100100.jpg", "100101.jpg"]
    assert [(q.name, sorted(q.positives), sorted(q.junk), q.index) for q in s.queries] == [
        ("100000", [1, 2], [0], 0), ("100100", [4], [3], 3)]
    assert s.primary == "map" and s.root == tmp_path / "jpg"
    assert issubclass(GroundTruthError, LabelFileError)


@pytest.mark.parametrize(("names", "phrase"), [
    (["100000.jpg", "holiday.jpg"], "holiday.jpg: not a name of this dataset"),
    (["100001.jpg", "100002.jpg"], "group 1000 has no query 100000.jpg"),
    (["100000.jpg", "100100.jpg", "100101.jpg"], "group 1000 holds its query only"),
    (["100000.jpg", "100000.png", "100001.jpg"], "the same picture as"),
    ([], "no images"),
])
def test_holidays_refusals(tmp_path, names, phrase):
    _touch(tmp_path, *names)
    with pytest.raises(GroundTruthError, match=phrase):
        read_holidays(tmp_path)


def test_ukbench_groups_of_four_every_image_a_query(tmp_path):
    _touch(tmp_path / "full", *[f"ukbench{i:05d}.jpg" for i in range(10)])
    s = read_ukbench(tmp_path)
    assert len(s.queries) == 10 and s.primary == "ns"
    assert sorted(s.queries[5].positives) == [4, 5, 6, 7]  # its group of four, itself included
    assert s.queries[5].junk == frozenset() and s.queries[5].index == 5
    assert sorted(s.queries[9].positives) == [8, 9]
    assert "fewer than 4" in s.notes[0] and "group 2" in s.notes[0]
    _touch(tmp_path / "full", "photo.jpg")
    with pytest.raises(GroundTruthError, match=r"photo\.jpg: not a name.*ukbenchNNNNN"):
        read_ukbench(tmp_path)


def _oxford(root, query="oxc1_a_1 10 20 110.5 220", good="a_1\na_2\n", ok="a_3\n", junk="b_1\n"):
    _touch(root / "jpg", "a_1.jpg", "a_2.jpg", "a_3.jpg", "b_1.jpg", "c_1.jpg")
    gt = root / "gt_files"
    gt.mkdir(exist_ok=True)
    for kind, text in (("query", query), ("good", good), ("ok", ok), ("junk", junk)):
        if text is not None:
            (gt / f"a_q1_{kind}.txt").write_text(text)
    return gt


def test_oxford_reads_gt_files_with_boxes_and_junk(tmp_path):
    _oxford(tmp_path, good="a_1\na_2\nmissing_7\n")
    s = read_oxford(tmp_path)
    (q,) = s.queries
    assert [p.stem for p in s.images] == ["a_1", "a_2", "a_3", "b_1", "c_1"]
    assert (q.name, q.image.name, q.box) == ("a_q1", "a_1.jpg", (10.0, 20.0, 110.5, 220.0))
    assert sorted(q.positives) == [0, 1, 2] and sorted(q.junk) == [3] and q.index is None
    assert "1 ground-truth name(s)" in s.notes[0]


def test_paris_layout_subfolders_and_no_prefix(tmp_path):
    gt = tmp_path / "gt"
    _touch(tmp_path / "paris" / "defense", "paris_defense_000001.jpg", "paris_defense_000002.jpg")
    gt.mkdir()
    (gt / "defense_1_query.txt").write_text("paris_defense_000001 1 2 3 4\n")
    (gt / "defense_1_good.txt").write_text("paris_defense_000002\n")
    (gt / "defense_1_ok.txt").write_text("")
    (gt / "defense_1_junk.txt").write_text("")
    s = read_benchmark("paris6k", tmp_path)
    assert s.dataset == "paris6k" and s.queries[0].image.name == "paris_defense_000001.jpg"
    assert sorted(s.queries[0].positives) == [1]


@pytest.mark.parametrize(("kw", "phrase"), [
    ({"query": "oxc1_a_1 10 20 5 220"}, r"a_q1_query\.txt:1: .*x1 < x2"),
    ({"query": "oxc1_a_1 10 20 nan 220"}, r"a_q1_query\.txt:1: "),
    ({"query": "oxc1_a_1 10 20 110"}, r"a_q1_query\.txt:1: .*four numbers"),
    ({"query": "oxc1_a_1 1 2 3 4\noxc1_a_2 1 2 3 4"}, r"a_q1_query\.txt: 2 non-empty lines"),
    ({"query": "oxc1_zz 1 2 3 4"}, r"a_q1_query\.txt:1: its image 'zz' is not among"),
    ({"good": "a_1\na 2\n"}, r"a_q1_good\.txt:2: 'a 2': expected one image name a line"),
    ({"ok": None}, r"a_q1_ok\.txt: cannot read"),
    ({"good": "x_9\n", "ok": ""}, r"no image of a_q1_good\.txt or _ok\.txt"),
    ({"junk": "a_2\n"}, r"'a_2' is in good/ok too"),
])
def test_oxford_refusals_name_the_file_and_line(tmp_path, kw, phrase):
    _oxford(tmp_path, **kw)
    with pytest.raises(GroundTruthError, match=phrase):
        read_oxford(tmp_path)


def test_oxford_refuses_binary_and_missing_ground_truth(tmp_path):
    gt = _oxford(tmp_path)
    (gt / "a_q1_junk.txt").write_bytes(b"b_1\n\xff\xfe\n")
    with pytest.raises(GroundTruthError, match=r"a_q1_junk\.txt:2: not UTF-8"):
        read_oxford(tmp_path)
    (gt / "a_q1_junk.txt").write_bytes(b"b_1\x00\n")
    with pytest.raises(GroundTruthError, match=r"a_q1_junk\.txt:1: a NUL byte"):
        read_oxford(tmp_path)
    with pytest.raises(GroundTruthError, match="no ground truth; expected a gt_files or gt folder"):
        read_oxford(tmp_path / "jpg")
    for f in gt.glob("*_query.txt"):
        f.unlink()
    with pytest.raises(GroundTruthError, match="no <name>_query.txt"):
        read_oxford(tmp_path)


def test_groups_csv(tmp_path):
    _touch(tmp_path / "pics", "a.jpg", "b.jpg", "c.jpg", "sub/d.png")
    csv = tmp_path / "groups.csv"
    csv.write_text("filename,group_id\na.jpg,cat\nc.jpg,dog\nb.jpg,cat\n\nsub/d.png,cat\n")
    s = read_groups(csv, tmp_path / "pics")
    assert [p.name for p in s.images] == ["a.jpg", "c.jpg", "b.jpg", "d.png"]  # the file's order
    assert [(q.name, sorted(q.positives), sorted(q.junk)) for q in s.queries] == [
        ("a.jpg", [2, 3], [0]), ("b.jpg", [0, 3], [2]), ("sub/d.png", [0, 2], [3])]  # c.jpg: a distractor
    assert "1 image(s) alone" in s.notes[0]


@pytest.mark.parametrize(("text", "phrase"), [
    ("a.jpg,cat\nb.jpg\n", r"groups\.csv:2: expected 'path,group' .* 1 field\(s\): 'b\.jpg'"),
    ("a.jpg,cat\nb.jpg,cat,x\n", r"groups\.csv:2: .*two fields"),
    ("a.jpg,cat\nnope.jpg,cat\n", r"groups\.csv:2: 'nope\.jpg': expected an image file in"),
    ("a.jpg,cat\n../a.jpg,cat\n", r"groups\.csv:2: '\.\./a\.jpg': expected a path inside"),
    ("a.jpg,cat\na.jpg,dog\n", r"groups\.csv:2: 'a\.jpg' is listed twice \(first on line 1\)"),
    ("a.jpg,cat\n./a.jpg,dog\n", r"groups\.csv:2: '\./a\.jpg' is listed twice \(first on line 1\)"),
    ("a.jpg,cat\nb.jpg,dog\n", "no group holds two images"),
    ('a.jpg,cat\n"b.jpg,cat\n', r"groups\.csv:\d+: "),
])
def test_groups_refusals(tmp_path, text, phrase):
    _touch(tmp_path, "a.jpg", "b.jpg")
    (tmp_path / "groups.csv").write_text(text)
    with pytest.raises(GroundTruthError, match=phrase):
        read_groups(tmp_path / "groups.csv", tmp_path)


def test_read_benchmark_dispatch(tmp_path):
    with pytest.raises(ValueError, match="needs --groups"):
        read_benchmark("groups", tmp_path)
    with pytest.raises(ValueError, match="--groups is for --dataset groups"):
        read_benchmark("holidays", tmp_path, tmp_path / "g.csv")
    with pytest.raises(GroundTruthError, match="not a folder"):
        read_benchmark("ukbench", tmp_path / "absent")


# ---- INRIA Copydays -----------------------------------------------------------------------------------

def _copydays(root):
    """original/ with three blocks; two JPEG copies at quality 10, two 50% crops, two strong copies."""
    _touch(root / "original", "200000.jpg", "200100.jpg", "200200.jpg")
    _touch(root / "jpegqual" / "10", "200000.jpg", "200100.jpg")
    _touch(root / "crops" / "50", "200000.jpg", "200200.jpg")
    _touch(root / "strong", "200001.jpg", "200203.jpg")
    _touch(root / "distractors", "x1.jpg", "sub/x2.png", "x3.jpg")


def test_copydays_queries_are_the_attacked_copies_and_their_originals_the_positives(tmp_path):
    _copydays(tmp_path)
    s = read_benchmark("copydays", tmp_path)
    assert [p.name for p in s.images] == ["200000.jpg", "200100.jpg", "200200.jpg"] and s.primary == "map"
    assert [(q.name, q.family, sorted(q.positives), sorted(q.junk), q.index) for q in s.queries] == [
        ("jpeg/10/200000", "jpeg/10", [0], [], None), ("jpeg/10/200100", "jpeg/10", [1], [], None),
        ("crops/50/200000", "crops/50", [0], [], None), ("crops/50/200200", "crops/50", [2], [], None),
        ("strong/200001", "strong", [0], [], None), ("strong/200203", "strong", [2], [], None)]
    assert "3 original picture(s); the full Copydays has 157" in s.notes
    with_count = read_benchmark("copydays", tmp_path, distractors="2")  # the first two of distractors/
    assert [p.relative_to(tmp_path / "distractors").as_posix() for p in with_count.images[3:]] == ["sub/x2.png",
                                                                                                  "x1.jpg"]
    folder = read_benchmark("copydays", tmp_path, distractors=tmp_path / "distractors")
    assert len(folder.images) == 6 and "3 distractor(s) in the database" in folder.notes
    (tmp_path / "jpeg").mkdir()  # the folder names a mirror may use are read as the same family
    assert len(read_benchmark("copydays", tmp_path).queries) == 6


@pytest.mark.parametrize(("change", "phrase"), [
    (lambda r: _touch(r / "strong", "209901.jpg"), r"209901\.jpg: no original of this copy.*block NNNN"),
    (lambda r: _touch(r / "crops" / "50", "200300.jpg"), r"200300\.jpg: no original of this copy.*name of an original"),
    (lambda r: _touch(r / "jpegqual" / "best", "200000.jpg"), r"jpegqual/best: expected only level folders.*quality"),
    (lambda r: _touch(r / "crops", "200000.jpg"), r"crops/200000\.jpg: expected only level folders.*percent"),
    (lambda r: _touch(r / "original", "holiday.jpg"), r"holiday\.jpg: not a name of this dataset"),
])
def test_copydays_refusals(tmp_path, change, phrase):
    _copydays(tmp_path)
    change(tmp_path)
    with pytest.raises(GroundTruthError, match=phrase):
        read_benchmark("copydays", tmp_path)


def test_copydays_layout_and_options_refused(tmp_path):
    _touch(tmp_path / "pics", "200000.jpg")
    with pytest.raises(GroundTruthError, match="no original/ folder"):
        read_benchmark("copydays", tmp_path / "pics")
    _touch(tmp_path / "cd" / "original", "200000.jpg")
    with pytest.raises(GroundTruthError, match="no attacked copies; expected jpegqual/"):
        read_benchmark("copydays", tmp_path / "cd")
    _copydays(tmp_path / "cd")
    with pytest.raises(GroundTruthError, match=r"distractors: 3 pictures; expected at least the 9 asked for"):
        read_benchmark("copydays", tmp_path / "cd", distractors="9")
    with pytest.raises(GroundTruthError, match="nowhere: not a folder"):
        read_benchmark("copydays", tmp_path / "cd", distractors=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="--distractors is for --dataset copydays"):
        read_benchmark("holidays", tmp_path / "cd", distractors="2")
