"""Feature extraction and resumable / distributed sharded extraction, on real CC0 pictures and
generated ones, with random-initialised weights (offline)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from alexnet_zoo import alexnet
from alexnet_zoo.errors import ExtractionMismatch
from alexnet_zoo.eval.precision import resolve_precision
from alexnet_zoo.retrieval.extraction import extract_to_shards, list_images
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.retrieval.shards import read_features

DATA = Path(__file__).parent / "data" / "retrieval"
REAL = sorted(DATA.glob("*.png")) + sorted(DATA.glob("*.jpg"))
ROOT = Path(__file__).parent.parent


def generated(folder: Path, n: int = 7, seed: int = 0) -> list[Path]:
    """Pictures of random coloured shapes on random backgrounds, different sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        w, h = int(rng.integers(160, 360)), int(rng.integers(160, 360))
        img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            box = [x0, y0, x0 + int(rng.integers(30, w // 2)), y0 + int(rng.integers(30, h // 2))]
            fill = tuple(int(v) for v in rng.integers(0, 255, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        path = folder / f"gen-{i:02d}.png"
        img.save(path)
        out.append(path)
    return out


def variants(path: Path, folder: Path) -> dict[str, Path]:
    """Resized, recompressed (JPEG q=25) and cropped (centre 80%) copies."""
    img = Image.open(path).convert("RGB")
    folder.mkdir(parents=True, exist_ok=True)
    w, h = img.size
    out = {"resized": folder / f"{path.stem}-resized.png", "jpeg": folder / f"{path.stem}-jpeg.jpg",
           "cropped": folder / f"{path.stem}-cropped.png"}
    img.resize((w * 2 // 3, h * 2 // 3), Image.BICUBIC).save(out["resized"])
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=25)
    out["jpeg"].write_bytes(buf.getvalue())
    img.crop((w // 10, h // 10, w - w // 10, h - h // 10)).save(out["cropped"])
    return out


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return alexnet()


def test_layers_shapes_normalisation_and_dtypes(model):
    imgs = [Image.open(p) for p in REAL]
    fc7 = FeatureExtractor(model, device="cpu")
    v = fc7(imgs)
    assert v.shape == (3, 4096) and v.dtype == np.float32 and fc7.dim == 4096
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert FeatureExtractor(model, "conv5", pool="max", device="cpu")(REAL[0]).shape == (1, 256)
    assert FeatureExtractor(model, "pool5", device="cpu").dim == 9216
    assert FeatureExtractor(model, "conv5", pool=None, device="cpu").dim == 256 * 13 * 13
    half = FeatureExtractor(model, dtype="float16", normalize=False, device="cpu")(REAL[:1])
    assert half.dtype == np.float16 and abs(np.linalg.norm(half.astype(np.float32)) - 1) > 1e-3
    # paths, PIL images, uint8 tensors and a preprocessed batch give the same vectors
    from torchvision.transforms.v2.functional import pil_to_tensor

    from alexnet_zoo.data.images import load_image
    t = pil_to_tensor(load_image(REAL[1]))
    np.testing.assert_allclose(fc7([REAL[1]]), fc7(t), atol=1e-5)
    np.testing.assert_allclose(fc7([REAL[1]]), fc7(fc7.prepare(t)[None]), atol=1e-5)
    with pytest.raises(ValueError, match="unknown layer"):
        FeatureExtractor(model, "fc9")


def test_bf16_vectors_stay_close_to_fp32_and_say_so(model):
    """bf16 arithmetic (the fast CPU choice) keeps each image's vector and its nearest neighbour."""
    fp32 = FeatureExtractor(model, "pool5", device="cpu", precision="fp32")
    bf16 = FeatureExtractor(model, "pool5", device="cpu", precision="bf16")
    a, b = fp32(REAL), bf16(REAL)
    assert np.all(np.sum(a * b, axis=1) > 0.999)
    assert np.array_equal(np.argsort(-(a @ a.T), axis=1)[:, 1], np.argsort(-(b @ a.T), axis=1)[:, 1])
    auto = resolve_precision("auto", torch.device("cpu"))  # bf16 where this CPU has native bf16, else fp32
    assert bf16.info()["precision"] == "bf16" and FeatureExtractor(model, device="cpu").info()["precision"] == auto
    with pytest.raises(ValueError, match="unknown precision"):
        FeatureExtractor(model, device="cpu", precision="fp8")


def test_list_images_folder_list_glob(tmp_path):
    gen = generated(tmp_path / "g", n=3)
    assert list_images(tmp_path / "g") == [str(p) for p in gen]
    (tmp_path / "list.txt").write_text("g/gen-01.png\n\n# comment\n" + str(gen[2]) + "\n")
    assert list_images(tmp_path / "list.txt") == [str(tmp_path / "g/gen-01.png"), str(gen[2])]
    assert list_images(str(tmp_path / "g" / "*-0[02].png")) == [str(gen[0]), str(gen[2])]
    with pytest.raises(FileNotFoundError, match="expected a folder"):
        list_images(tmp_path / "nothing")


def _extractor(model):
    return FeatureExtractor(model, "conv5", pool="avg", device="cpu", batch_size=2)


def test_extraction_resumes_to_the_same_shards(model, tmp_path):
    gen = generated(tmp_path / "imgs", n=6)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    full = extract_to_shards(_extractor(model), tmp_path / "imgs", tmp_path / "full", shard_size=3, progress=False)
    assert full["count"] == 6 and len(full["shards"]) == 3 and full["complete"]
    assert "broken.jpg" in (tmp_path / "full" / "failures.txt").read_text()
    part = extract_to_shards(_extractor(model), tmp_path / "imgs", tmp_path / "part", shard_size=3, max_shards=1,
                             workers=2, loader="threads", progress=False)
    assert len(part["shards"]) == 1 and not part["complete"]
    rest = extract_to_shards(_extractor(model), tmp_path / "imgs", tmp_path / "part", shard_size=3, progress=False)
    assert rest["shards"] == full["shards"] and rest["failures"] == full["failures"]
    for name in [s["name"] for s in full["shards"]]:
        np.testing.assert_array_equal(np.load(tmp_path / "full" / f"{name}.npy"), np.load(tmp_path / "part" / f"{name}.npy"))
        assert (tmp_path / "full" / f"{name}.paths.jsonl").read_bytes() == \
            (tmp_path / "part" / f"{name}.paths.jsonl").read_bytes()
    vectors, paths, manifest = read_features(tmp_path / "part")
    assert paths == [str(p) for p in gen] and vectors.shape == (6, 256) and manifest["layer"] == "conv5"
    assert not list((tmp_path / "part").glob(".*tmp"))  # no temporary files left behind
    with pytest.raises(ExtractionMismatch, match="layer"):
        extract_to_shards(FeatureExtractor(model, "fc7", device="cpu"), tmp_path / "imgs", tmp_path / "part",
                          shard_size=3, progress=False)


_RANK_SCRIPT = """
import sys, torch
torch.distributed.init_process_group("gloo")
from alexnet_zoo.retrieval.extraction import extract_to_shards
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.factory import create_model
model = create_model("alexnet", pretrained=sys.argv[1])
extract_to_shards(FeatureExtractor(model, "conv5", device="cpu", batch_size=2), sys.argv[2], sys.argv[3],
                  shard_size=2, progress=False)
torch.distributed.destroy_process_group()
"""


def test_two_torchrun_ranks_equal_one_process(model, tmp_path):
    from alexnet_zoo.weights.store import save_pretrained

    weights = save_pretrained(model, tmp_path / "weights")
    generated(tmp_path / "imgs", n=5)
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(script), str(weights), str(tmp_path / "imgs"), str(tmp_path / "two")],
                   check=True, env=env, timeout=240, capture_output=True)
    assert min(p.name for p in (tmp_path / "two").glob("*.npy")).startswith("rank-00000-")
    one = extract_to_shards(FeatureExtractor(alexnet(pretrained=weights), "conv5", device="cpu"), tmp_path / "imgs",
                            tmp_path / "one", shard_size=2, progress=False)
    v1, p1, _ = read_features(tmp_path / "one")
    v2, p2, merged = read_features(tmp_path / "two")
    assert p1 == p2 and merged["count"] == one["count"] == 5 and merged["world_size"] == 2
    np.testing.assert_allclose(v1, v2, atol=1e-5)
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["complete"]
    # the source grows: the ranks extract the new pictures only, and rank 0 folds their run in
    for i, path in enumerate(generated(tmp_path / "later", n=8, seed=3)[5:]):
        path.rename(tmp_path / "imgs" / f"new-{i}.png")
    (tmp_path / "imgs" / "gen-02.png").unlink()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(script), str(weights), str(tmp_path / "imgs"), str(tmp_path / "two")],
                   check=True, env=env, timeout=240, capture_output=True)
    extract_to_shards(FeatureExtractor(alexnet(pretrained=weights), "conv5", device="cpu"), tmp_path / "imgs",
                      tmp_path / "one", shard_size=2, progress=False)
    v1, p1, grown_one = read_features(tmp_path / "one")
    v2, p2, grown_two = read_features(tmp_path / "two")
    assert p1 == p2 and len(p2) == 7 and str(tmp_path / "imgs" / "gen-02.png") not in p2
    np.testing.assert_allclose(v1, v2, atol=1e-5)
    assert grown_two["increments"][0]["world_size"] == 2 and grown_one["increments"][0]["world_size"] == 1
    assert grown_two["removed"] == grown_one["removed"] == [{"row": 2, "path": str(tmp_path / "imgs" / "gen-02.png")}]
    assert not list((tmp_path / "two").glob("manifest-inc-*"))


# ---- a folder that grows: incremental extraction --------------------------------------------------

def _grow(folder: Path) -> None:
    """The source changes: three pictures join, one picture and the broken file leave."""
    for i, path in enumerate(generated(folder.parent / "later", n=9, seed=1)[6:]):
        path.rename(folder / f"new-{i}.png")
    (folder / "gen-01.png").unlink()
    (folder / "broken.jpg").unlink()
    (folder / "also-broken.jpg").write_bytes(b"GIF89a not really")


def _grown_folder(model, tmp_path: Path) -> tuple[Path, Path]:
    """(source, features folder) after a first complete extraction of six pictures and a broken file."""
    generated(tmp_path / "imgs", n=6)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    first = extract_to_shards(_extractor(model), tmp_path / "imgs", tmp_path / "feat", shard_size=2, progress=False)
    assert first["complete"] and first["count"] == 6 and len(first["failures"]) == 1
    _grow(tmp_path / "imgs")
    return tmp_path / "imgs", tmp_path / "feat"


def test_incremental_extract_equals_a_full_extract_of_the_final_folder(model, tmp_path, capsys):
    from alexnet_zoo.cli.main import main
    from alexnet_zoo.retrieval.shards import live_count
    from alexnet_zoo.weights.store import save_pretrained

    source, feat = _grown_folder(model, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in feat.glob("shard-*")}
    grown = extract_to_shards(_extractor(model), source, feat, shard_size=2, progress=True)
    assert "extract feat: 4 new, 1 removed" in capsys.readouterr().err  # the three pictures and also-broken.jpg
    assert {p.name: p.stat().st_mtime_ns for p in feat.glob("shard-*")} == before  # old shards untouched
    assert grown["version"] == 3 and grown["count"] == 9 and live_count(grown) == 8
    assert grown["removed"] == [{"row": 1, "path": str(source / "gen-01.png")}]
    assert grown["increments"][0]["inputs"] == 4 and grown["increments"][0]["removed"] == 1
    assert [Path(f["path"]).name for f in grown["failures"]] == ["also-broken.jpg"]
    assert (feat / "failures.txt").read_text().startswith(str(source / "also-broken.jpg"))
    assert not list(feat.glob("manifest-inc-*")) and not list(feat.glob(".*tmp"))
    vectors, paths, manifest = read_features(feat)
    full = extract_to_shards(_extractor(model), source, tmp_path / "full", shard_size=2, progress=False)
    v_full, p_full, _ = read_features(tmp_path / "full")
    assert sorted(paths) == p_full and len(paths) == live_count(manifest) == 8
    row = {p: i for i, p in enumerate(p_full)}
    np.testing.assert_array_equal(vectors, v_full[[row[p] for p in paths]])
    assert manifest["failures"] == full["failures"]
    every, all_paths, _ = read_features(feat, removed=True)  # the removed rows too, as stored
    assert len(all_paths) == 9 and all_paths[1] == str(source / "gen-01.png") and every.shape == (9, 256)
    assert extract_to_shards(_extractor(model), source, feat, shard_size=2, progress=False) == grown  # nothing new
    generated(tmp_path / "again", n=2)[1].rename(source / "gen-01.png")  # a removed picture comes back
    back = extract_to_shards(_extractor(model), source, feat, shard_size=2, progress=False)
    assert back["removed"] == grown["removed"] and len(back["increments"]) == 2 and live_count(back) == 9
    v_back, p_back, _ = read_features(feat)
    assert p_back.count(str(source / "gen-01.png")) == 1 and p_back[-1] == str(source / "gen-01.png")
    np.testing.assert_array_equal(v_back[-1], every[1])  # the same picture, the same vector as its removed row
    (source / "gen-01.png").unlink()
    # the command: another picture joins; it alone is extracted, and the summary says what the folder holds
    weights = save_pretrained(model, tmp_path / "w")
    cli = tmp_path / "cli"
    args = ["extract", str(source), "--out", str(cli), "--pretrained", str(weights), "--layer", "conv5",
            "--workers", "0", "--quiet", "--dtype", "float32", "--precision", "fp32"]
    assert main(args) == 0
    generated(tmp_path / "one-more", n=1, seed=7)[0].rename(source / "zz-last.png")
    assert main(args) == 0
    assert "9 vectors" in capsys.readouterr().out.splitlines()[-1]
    assert read_features(cli)[1][-1] == str(source / "zz-last.png")


def test_an_incremental_run_needs_the_folders_settings(model, tmp_path):
    source, feat = _grown_folder(model, tmp_path)
    for other in (FeatureExtractor(model, "fc7", device="cpu"),
                  FeatureExtractor(model, "conv5", pool="max", device="cpu"),
                  FeatureExtractor(model, "conv5", device="cpu", dtype="float16"),
                  FeatureExtractor(model, "conv5", device="cpu",
                                   precision="bf16" if _extractor(model).precision == "fp32" else "fp32")):
        with pytest.raises(ExtractionMismatch, match="adding pictures needs the same model"):
            extract_to_shards(other, source, feat, shard_size=2, progress=False)
    assert json.loads((feat / "manifest.json").read_text())["version"] == 2  # untouched
    assert not list(feat.glob("inc-*"))


def test_a_crash_in_an_incremental_run_then_rerun_gives_the_uninterrupted_folder(model, tmp_path, monkeypatch):
    import shutil

    source, feat = _grown_folder(model, tmp_path)
    shutil.copytree(feat, tmp_path / "crash")
    shutil.copytree(feat, tmp_path / "stop")
    whole = extract_to_shards(_extractor(model), source, feat, shard_size=1, progress=False)
    stopped = extract_to_shards(_extractor(model), source, tmp_path / "stop", shard_size=1, max_shards=2,
                                progress=False)
    assert not stopped["complete"] and stopped["increment"] == 1 and len(stopped["shards"]) == 2
    assert len(read_features(tmp_path / "stop")[1]) == len(read_features(tmp_path / "stop", removed=True)[1]) == 6
    crashing = _extractor(model)
    calls = {"n": 0}
    embed = crashing.embed_batch

    def dies_on_the_third_batch(batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return embed(batch)

    monkeypatch.setattr(crashing, "embed_batch", dies_on_the_third_batch)
    with pytest.raises(RuntimeError, match="killed"):
        extract_to_shards(crashing, source, tmp_path / "crash", shard_size=1, progress=False)
    assert json.loads((tmp_path / "crash" / "manifest.json").read_text())["version"] == 2  # not folded
    for folder in (tmp_path / "crash", tmp_path / "stop"):
        assert extract_to_shards(_extractor(model), source, folder, shard_size=1, progress=False) == whole
        assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in feat.iterdir())
        for npy in feat.glob("inc-*"):
            assert (folder / npy.name).read_bytes() == npy.read_bytes()


def test_incremental_runs_on_ranks_equal_one_process(model, tmp_path):
    """Ranks of a torchrun job (here in turn, without a process group: the last to finish folds)."""
    source, feat = _grown_folder(model, tmp_path)
    one = extract_to_shards(_extractor(model), source, feat, shard_size=2, progress=False)
    ranks = [_extractor(model), _extractor(model)]
    generated(tmp_path / "ranked-src", n=6)
    for rank, extractor in enumerate(ranks):  # a first run on two ranks, into a new folder
        extract_to_shards(extractor, tmp_path / "ranked-src", tmp_path / "ranked", shard_size=2, rank=rank,
                          world_size=2, progress=False)
    read_features(tmp_path / "ranked")  # merges the ranks
    _grow_plain(tmp_path / "ranked-src", source)
    parts = [extract_to_shards(e, tmp_path / "ranked-src", tmp_path / "ranked", shard_size=2, rank=r, world_size=2,
                               progress=False) for r, e in enumerate(ranks)]
    assert parts[0]["increment"] == 1 and parts[1]["increments"][0]["world_size"] == 2
    assert [s["name"] for s in parts[1]["shards"]][-2:] == ["inc-00001-rank-00000-shard-00000",
                                                             "inc-00001-rank-00001-shard-00000"]
    v, p, grown = read_features(tmp_path / "ranked")
    assert grown["removed"] == [{"row": 1, "path": str(tmp_path / "ranked-src" / "gen-01.png")}]
    assert [Path(x).name for x in p] == [Path(x).name for x in read_features(feat)[1]]
    np.testing.assert_array_equal(v, read_features(feat)[0])
    assert one["increments"][0]["world_size"] == 1


def _grow_plain(folder: Path, like: Path) -> None:
    """``folder`` changed as :func:`_grow` changed ``like``: the same pictures join and leave."""
    (folder / "gen-01.png").unlink()
    for path in sorted(like.glob("new-*.png")) + [like / "also-broken.jpg"]:
        (folder / path.name).write_bytes(path.read_bytes())


# ---- faults tried on purpose: odd names, non-files, numbers, devices, provenance, storage ----------

TERMINATORS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # every character str.splitlines() splits on


def _picture(path: Path, shade: int) -> None:
    Image.new("RGB", (48, 40), (shade, 255 - shade, 90)).save(path, format="PNG")


def test_file_names_with_any_line_terminator_round_trip_to_the_index(model, tmp_path):
    """Names holding each line terminator, and one whose bytes are not UTF-8: extraction, the
    shards, the index and the index's path list give back exactly the names listed."""
    from alexnet_zoo.retrieval.index import VectorIndex

    folder = tmp_path / "imgs"
    folder.mkdir()
    names = [f"a{c}b.png" for c in TERMINATORS] + [os.fsdecode(b"latin1-\xe9t\xe9.png"), " spaced .png"]
    for i, name in enumerate(names):
        _picture(folder / name, 20 * i)
    listed = list_images(folder)
    assert sorted(listed) == sorted(str(folder / n) for n in names)
    manifest = extract_to_shards(_extractor(model), folder, tmp_path / "feat", shard_size=5, progress=False)
    assert manifest["count"] == len(names) and manifest["failures"] == []
    vectors, paths, _ = read_features(tmp_path / "feat")
    assert paths == listed and vectors.shape == (len(names), 256)
    VectorIndex.build(vectors, paths, meta=manifest).save(tmp_path / "ix")
    assert VectorIndex.load(tmp_path / "ix").paths == listed
    # the list files a user writes: NUL-separated (find -print0) and JSON lines hold any name
    (tmp_path / "all.txt").write_bytes(b"\0".join(os.fsencode(p) for p in listed) + b"\0")
    assert list_images(tmp_path / "all.txt") == listed
    (tmp_path / "all.jsonl").write_text("".join(json.dumps(p) + "\n" for p in listed))
    assert list_images(tmp_path / "all.jsonl") == listed
    # a plain list splits on "\n" only: the other terminators stay in the name; CRLF, BOM, spaces
    plain = [p for p in listed if "\n" not in p and "\r" not in p]
    text = "\ufeff# made on Windows\r\n" + "".join(p + "\r\n" for p in plain) + "\r\n"
    (tmp_path / "plain.txt").write_bytes(text.encode("utf-8", "surrogateescape"))
    assert list_images(tmp_path / "plain.txt") == plain
    with pytest.raises(ExtractionMismatch, match=r"bad\.jsonl: line 1 is not a JSON string"):
        (tmp_path / "bad.jsonl").write_text("images/a.jpg\n")
        list_images(tmp_path / "bad.jsonl")


def test_broken_links_folders_and_pipes_named_like_pictures_are_failures(model, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _picture(folder / "good.png", 10)
    (folder / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    (folder / "album.jpg").mkdir()
    _picture(folder / "album.jpg" / "inside.png", 200)
    os.mkfifo(folder / "pipe.png")  # read_image would block on it forever
    manifest = extract_to_shards(_extractor(model), folder, tmp_path / "feat", progress=False)
    errors = {Path(f["path"]).name: f["error"] for f in manifest["failures"]}
    assert manifest["count"] == 2 and set(errors) == {"gone.jpg", "album.jpg", "pipe.png"}
    assert "broken symbolic link" in errors["gone.jpg"] and "a folder" in errors["album.jpg"]
    assert "not a regular file" in errors["pipe.png"]
    lines = (tmp_path / "feat" / "failures.txt").read_text().splitlines()
    assert len(lines) == 3 and all(line.split("\t")[0].endswith(("gone.jpg", "album.jpg", "pipe.png")) for line in lines)


def test_failures_txt_keeps_one_line_a_failure(model, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "bro\nken\u2028.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (folder / os.fsdecode(b"bad-\xff.jpg")).write_bytes(b"nope")
    manifest = extract_to_shards(_extractor(model), folder, tmp_path / "feat", progress=False)
    assert sorted(f["path"] for f in manifest["failures"]) == sorted(str(p) for p in folder.iterdir())
    lines = (tmp_path / "feat" / "failures.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == 2 and any("bro\\nken\\u2028.jpg" in line for line in lines)
    assert any("bad-\\xff.jpg" in line for line in lines)


@pytest.mark.parametrize("kwargs, message", [
    ({"shard_size": 0}, "shard_size must be an integer >= 1"),
    ({"shard_size": -3}, "shard_size must be an integer >= 1"),
    ({"shard_size": 2.5}, "shard_size must be an integer >= 1"),
    ({"workers": -1}, "workers must be an integer >= 0"),
    ({"max_shards": 0}, "max_shards must be an integer >= 1"),
    ({"rank": 2, "world_size": 2}, "rank 2 is not in 0..1"),
    ({"rank": 0, "world_size": 0}, "world_size must be an integer >= 1"),
])
def test_extraction_numbers_are_checked_before_any_shard(model, tmp_path, kwargs, message):
    generated(tmp_path / "imgs", n=2)
    with pytest.raises(ValueError, match=message):
        extract_to_shards(_extractor(model), tmp_path / "imgs", tmp_path / "feat", progress=False, **kwargs)
    assert not list((tmp_path / "feat").glob("*")) if (tmp_path / "feat").exists() else True
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        FeatureExtractor(model, device="cpu", batch_size=0)


def test_a_missing_gpu_is_one_clear_error(model, tmp_path, capsys):
    from alexnet_zoo.cli.main import main
    from alexnet_zoo.retrieval.query import index_device

    assert index_device("mps") == index_device("cpu") == "cpu" and index_device("cuda:1") == "auto"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device 'cuda'.*available here: cpu"):
            FeatureExtractor(model, device="cuda")
        with pytest.raises(SystemExit):
            main(["extract", str(DATA), "--out", str(tmp_path / "f"), "--device", "cuda", "--pretrained", "none"])
        assert "device 'cuda'" in capsys.readouterr().err and not (tmp_path / "f").exists()
    if not (torch.backends.mps.is_available()):
        with pytest.raises(ValueError, match="MPS is not available"):
            FeatureExtractor(model, device="mps")


def test_local_weights_are_recorded_as_loaded_not_as_the_spec_they_claim(tmp_path):
    """A local folder whose config.json names a spec: the features say the folder (a query loads
    those bytes), and keep the claim as information."""
    from alexnet_zoo.cli.main import main
    from alexnet_zoo.retrieval.query import weights_claim, weights_reference
    from alexnet_zoo.weights.specs import get_weight_spec
    from alexnet_zoo.weights.store import save_pretrained

    torch.manual_seed(0)
    spec = get_weight_spec("alexnet.bvlc_in1k")
    folder = save_pretrained(alexnet(), tmp_path / "claims-bvlc", spec=spec)
    loaded = alexnet(pretrained=folder)
    assert weights_reference(str(folder), loaded) == str(folder.resolve())
    assert weights_claim(str(folder), loaded) == spec.name
    generated(tmp_path / "imgs", n=2)
    assert main(["extract", str(tmp_path / "imgs"), "--out", str(tmp_path / "feat"), "--pretrained", str(folder),
                 "--layer", "conv5", "--workers", "0", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "feat" / "manifest.json").read_text())
    assert manifest["weights"] == str(folder.resolve()) and manifest["weights_spec"] == spec.name


def test_float16_storage_is_the_default_and_keeps_the_vectors(model, tmp_path, capsys):
    from alexnet_zoo.cli.main import main
    from alexnet_zoo.retrieval.index import VectorIndex
    from alexnet_zoo.weights.store import save_pretrained

    weights = save_pretrained(model, tmp_path / "w")
    images = REAL + generated(tmp_path / "g", n=4)
    for layer in ("fc7", "pool5"):
        out = tmp_path / f"feat-{layer}"
        assert main(["extract", str(tmp_path / "g"), "--out", str(out), "--pretrained", str(weights), "--layer", layer,
                     "--workers", "0", "--quiet"]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["dtype"] == "float16" and np.load(out / "shard-00000.npy").dtype == np.float16
    full = FeatureExtractor(model, "fc7", device="cpu", precision="fp32")
    half = FeatureExtractor(model, "fc7", device="cpu", precision="fp32", dtype="float16")
    a, b = full(images), half(images).astype(np.float32)
    assert b.dtype == np.float32 and np.all(np.sum(a * b, axis=1) / np.linalg.norm(b, axis=1) > 0.9999)
    pool = FeatureExtractor(model, "pool5", device="cpu", precision="fp32")
    x32 = pool(images)
    x16 = x32.astype(np.float16)
    paths = [str(p) for p in images]
    queries = pool([variants(p, tmp_path / "v")["cropped"] for p in REAL])
    hits32 = VectorIndex.build(x32, paths).search_arrays(queries, len(images))[1]
    hits16 = VectorIndex.build(x16, paths).search_arrays(queries, len(images))[1]
    np.testing.assert_array_equal(hits32[:, :3], hits16[:, :3])
    raw = FeatureExtractor(model, "conv1", pool="max", device="cpu", normalize=False, dtype="float16",
                           precision="fp32")
    with pytest.raises(ValueError, match=r"conv1 values reach .* beyond float16's 65504.*float32"):
        raw.embed_batch(torch.full((1, 3, 227, 227), 1e6))  # raw conv1 maps of a saturated input: ~5e5
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    assert "default float16" in " ".join(capsys.readouterr().out.split())


def _features_folder(model, tmp_path: Path) -> Path:
    generated(tmp_path / "imgs", n=3)
    extract_to_shards(_extractor(model), tmp_path / "imgs", tmp_path / "feat", shard_size=2, progress=False)
    return tmp_path / "feat"


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(dim=0), "dim must be an integer"),
    (lambda m: m.update(dtype="object"), "dtype must be 'float32' or 'float16'"),
    (lambda m: m.update(count=99), r"count must be the sum of the shards' counts \(3\)"),
    (lambda m: m["shards"][0].update(name="../../etc/passwd"), r"shards\[0\] must be"),
    (lambda m: m["shards"][1].update(start=0), r"shards\[1\] must be"),
    (lambda m: m["shards"][0].update(count=5), r"shards\[0\] must be"),
    (lambda m: m.update(shards={"a": 1}), "shards must be a list"),
    (lambda m: m.update(failures=[1]), "failures must be a list of {path, error}"),
    (lambda m: m.update(version=4), "version must be 1, 2 or 3"),
    (lambda m: m.update(removed=[]), "removed must be absent below version 3"),
    (lambda m: m.update(inputs_sha256="abc"), "inputs_sha256 must be 64 hex digits"),
    (lambda m: m.update(slice=[0, 10 ** 6]), "slice must be"),
    (lambda m: m.update(complete="yes"), "complete must be true or false"),
    (lambda m: m.update(precision="fp8"), "precision must be one of"),
])
def test_manifest_fields_are_validated(model, tmp_path, change, message):
    folder = _features_folder(model, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExtractionMismatch, match=message) as err:
        read_features(folder)
    assert str(folder / "manifest.json") in str(err.value)


def test_shard_files_are_checked_before_they_are_loaded(model, tmp_path):
    from alexnet_zoo.errors import CorruptFeatures

    folder = _features_folder(model, tmp_path)
    npy = folder / "shard-00000.npy"
    good = npy.read_bytes()
    header = io.BytesIO()  # claims 10**9 rows (1 TB) in a file of a few bytes: refused, nothing allocated
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 9, 256)})
    npy.write_bytes(header.getvalue() + b"\0" * 64)
    with pytest.raises(CorruptFeatures, match=r"shard-00000\.npy: holds float32 \(1000000000, 256\)"):
        read_features(folder)
    npy.write_bytes(good[:-8])
    with pytest.raises(CorruptFeatures, match="shard-00000.npy: holds"):
        read_features(folder)
    npy.write_bytes(b"PK\x03\x04 a zip, not an array")
    with pytest.raises(CorruptFeatures, match="shard-00000.npy: not a .npy file"):
        read_features(folder)
    npy.write_bytes(good)
    (folder / "shard-00001.paths.jsonl").write_text('"a"\n"b"\n')  # one row more than the shard holds
    with pytest.raises(CorruptFeatures, match="more than the 1 paths expected"):
        read_features(folder)
    (folder / "shard-00001.paths.jsonl").unlink()
    with pytest.raises(CorruptFeatures, match=r"shard-00001\.paths\.jsonl: missing"):
        read_features(folder)


def test_a_folder_of_the_previous_format_is_still_read(model, tmp_path):
    """Version 1 (no "version"): .paths.txt shards and text failures; read as written, not resumed."""
    folder = _features_folder(model, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    _, paths, _ = read_features(folder)
    manifest.pop("version")
    manifest["failures"] = ["x.jpg\tbroken"]
    for shard in manifest["shards"]:
        rows = [json.loads(line) for line in (folder / f"{shard['name']}.paths.jsonl").read_text().splitlines()]
        (folder / f"{shard['name']}.paths.txt").write_text("".join(r + "\n" for r in rows))
        (folder / f"{shard['name']}.paths.jsonl").unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert read_features(folder)[1] == paths
    with pytest.raises(ExtractionMismatch, match="older alexnet_zoo"):
        extract_to_shards(_extractor(model), tmp_path / "imgs", folder, shard_size=2, progress=False)
