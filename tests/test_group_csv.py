"""The one path,group CSV reader behind dedupe label files and the benchmark's groups files: the same
file read with each caller's checks, and the faults both refuse."""

from __future__ import annotations

import pytest

from alexnet_zoo.errors import GroundTruthError, LabelFileError
from alexnet_zoo.retrieval.group_csv import GroupRow, read_group_csv

LIMIT = 2 ** 20


def _pictures(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"not decoded here")


def test_one_file_read_with_either_callers_checks(tmp_path):
    _pictures(tmp_path / "pics", "a.jpg", "b c.jpg", "line\nbreak.png")
    csv = tmp_path / "groups.csv"
    csv.write_bytes('\ufeffpath,group\r\na.jpg, cat \r\n"line\nbreak.png",dog\r\n\r\n b c.jpg ,cat\r\n'.encode())
    verbatim = read_group_csv(csv, limit=LIMIT)  # a dedupe label file: paths as the index stores them
    assert verbatim == [GroupRow(2, "a.jpg", "cat"), GroupRow(3, "line\nbreak.png", "dog"),
                        GroupRow(6, " b c.jpg ", "cat")]  # a row spanning lines 3-4 is named by its first
    inside = read_group_csv(csv, limit=LIMIT, error=GroundTruthError, header="optional", root=tmp_path / "pics",
                            suffixes={".jpg", ".png"})
    assert [(r.line, r.path, r.group) for r in inside] == [(2, "a.jpg", "cat"), (3, "line\nbreak.png", "dog"),
                                                           (6, "b c.jpg", "cat")]
    csv.write_text("filename,group_id\na.jpg,cat\n")  # an alias header: skipped when optional, refused when required
    assert read_group_csv(csv, limit=LIMIT, header="optional") == [GroupRow(2, "a.jpg", "cat")]
    with pytest.raises(LabelFileError, match=r"groups\.csv:1: expected the header 'path,group', got 'filename"):
        read_group_csv(csv, limit=LIMIT)
    csv.write_text("a.jpg,cat\n")
    assert read_group_csv(csv, limit=LIMIT, header="optional") == [GroupRow(1, "a.jpg", "cat")]


@pytest.mark.parametrize(("raw", "options", "phrase"), [
    (b"path,group\na.jpg,c\x00t\n", {}, r"groups\.csv:2: a NUL byte"),
    (b"path,group\n\xc3(,x\n", {}, r"groups\.csv:2: not UTF-8 text \(byte 11\)"),
    (b"path,group\na.jpg,x\n" + b"b.jpg,y\n" * 20, {"limit": 64}, r"groups\.csv: larger than"),
    (b"path,group\n", {}, r"groups\.csv: no labelled pictures"),
    (b'path,group\n"a.jpg,cat\n', {}, r"groups\.csv:\d+: not valid CSV"),
    (b"path,group\n/etc/passwd,x\n", {"root": True}, r"groups\.csv:2: '/etc/passwd': expected a path inside"),
    (b"path,group\ngone.jpg,x\n", {"root": True}, r"groups\.csv:2: 'gone\.jpg': expected an image file in"),
    (b"path,group\nnotes.txt,x\n", {"root": True}, r"groups\.csv:2: 'notes\.txt': expected an image file in"),
    (b"path,group\na.jpg,x\na.jpg,y\n", {}, r"groups\.csv:3: 'a\.jpg' is listed twice \(first on line 2\)"),
])
def test_faults_are_the_callers_error_naming_file_and_line(tmp_path, raw, options, phrase):
    _pictures(tmp_path, "a.jpg", "notes.txt")
    (tmp_path / "groups.csv").write_bytes(raw)
    kwargs = {"limit": options.get("limit", LIMIT), "error": GroundTruthError}
    if options.get("root"):
        kwargs.update(root=tmp_path, suffixes={".jpg"})
    with pytest.raises(GroundTruthError, match=phrase):
        read_group_csv(tmp_path / "groups.csv", **kwargs)
