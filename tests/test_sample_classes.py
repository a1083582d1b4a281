"""benchmarks/sample_classes.py: WNID class folders of links from a labelled picture folder, the
training set the trained-weights figures in docs/deploy.md and docs/benchmarks.md come from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_features import generated

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sample_classes.py"), *args], capture_output=True,
                          text=True, timeout=120, check=False, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def _labelled(folder: Path, rows: list[str]) -> list[Path]:
    pictures = generated(folder, n=3)
    (folder / "labels.csv").write_text("filename,wnid,class_index,synset_words\n" + "".join(r + "\n" for r in rows))
    return pictures


def test_class_folders_hold_links_to_all_but_the_skipped(tmp_path):
    pictures = _labelled(tmp_path / "p", [])
    names = sorted(p.name for p in pictures)
    _labelled(tmp_path / "p", [f"{names[0]},n01440764,0,a", f"{names[1]},n01443537,1,b", f"{names[2]},n01440764,0,a"])
    done = _run("--pictures", str(tmp_path / "p"), "--out", str(tmp_path / "out"), "--skip", "1")
    assert done.returncode == 0, done.stderr
    assert "2 pictures in class folders" in done.stdout
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*")) == sorted(
        [f"n01443537/{names[1]}", f"n01440764/{names[2]}"])
    link = tmp_path / "out" / "n01443537" / names[1]
    assert link.is_symlink() and link.read_bytes() == (tmp_path / "p" / names[1]).read_bytes()


@pytest.mark.parametrize("row, message", [
    ("../escape.png,n01440764,0,a", "expected filename,wnid of a picture beside it"),
    ("missing.png,n01440764,0,a", "missing.png"),
    ("{first},not-a-wnid,0,a", "not-a-wnid"),
])
def test_bad_label_rows_are_one_line_with_their_line_number(tmp_path, row, message):
    pictures = _labelled(tmp_path / "p", [])
    _labelled(tmp_path / "p", [row.format(first=pictures[0].name)])
    done = _run("--pictures", str(tmp_path / "p"), "--out", str(tmp_path / "out"))
    assert done.returncode != 0 and message in done.stderr and "labels.csv:2" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_altered_copies_are_written_as_pictures_in_the_class_folders(tmp_path):
    pictures = _labelled(tmp_path / "p", [])
    names = sorted(p.name for p in pictures)
    _labelled(tmp_path / "p", [f"{names[0]},n01440764,0,a", f"{names[1]},n01443537,1,b"])
    done = _run("--pictures", str(tmp_path / "p"), "--out", str(tmp_path / "out"), "--altered")
    assert done.returncode == 0, done.stderr
    assert "14 pictures in class folders" in done.stdout
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    kinds = ("brighter", "crop_centre", "crop_corner", "jpeg", "overlay", "rescale", "rotate")
    assert written == sorted([f"n01440764/{Path(names[0]).stem}-{k}.png" for k in kinds]
                             + [f"n01443537/{Path(names[1]).stem}-{k}.png" for k in kinds])
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))


def test_an_undecodable_picture_is_reported_and_the_others_written(tmp_path):
    pictures = _labelled(tmp_path / "p", [])
    broken = tmp_path / "p" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    _labelled(tmp_path / "p", [f"{pictures[0].name},n01440764,0,a", "broken.jpg,n01443537,1,b"])
    done = _run("--pictures", str(tmp_path / "p"), "--out", str(tmp_path / "out"), "--altered")
    assert done.returncode == 0, done.stderr
    assert "7 pictures in class folders" in done.stdout and "skipped" in done.stderr and "broken.jpg" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out" / "n01443537").exists()


def test_a_negative_skip_is_refused(tmp_path):
    _labelled(tmp_path / "p", [])
    done = _run("--pictures", str(tmp_path / "p"), "--out", str(tmp_path / "out"), "--skip", "-2")
    assert done.returncode == 2 and "--skip must be at least 0, not -2" in done.stderr
