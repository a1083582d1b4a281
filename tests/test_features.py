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
from alexnet_zoo.extraction import ExtractionMismatch, extract_to_shards, list_images, read_features
from alexnet_zoo.features import FeatureExtractor

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
    from alexnet_zoo.images import load_image
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
    assert bf16.info()["precision"] == "bf16" and FeatureExtractor(model, device="cpu").info()["precision"] == "fp32"
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
        assert (tmp_path / "full" / f"{name}.paths.txt").read_text() == (tmp_path / "part" / f"{name}.paths.txt").read_text()
    vectors, paths, manifest = read_features(tmp_path / "part")
    assert paths == [str(p) for p in gen] and vectors.shape == (6, 256) and manifest["layer"] == "conv5"
    assert not list((tmp_path / "part").glob(".*tmp"))  # no temporary files left behind
    with pytest.raises(ExtractionMismatch, match="layer"):
        extract_to_shards(FeatureExtractor(model, "fc7", device="cpu"), tmp_path / "imgs", tmp_path / "part",
                          shard_size=3, progress=False)


_RANK_SCRIPT = """
import sys, torch
torch.distributed.init_process_group("gloo")
from alexnet_zoo.extraction import extract_to_shards
from alexnet_zoo.features import FeatureExtractor
from alexnet_zoo.factory import create_model
model = create_model("alexnet", pretrained=sys.argv[1])
extract_to_shards(FeatureExtractor(model, "conv5", device="cpu", batch_size=2), sys.argv[2], sys.argv[3],
                  shard_size=2, progress=False)
torch.distributed.destroy_process_group()
"""


def test_two_torchrun_ranks_equal_one_process(model, tmp_path):
    from alexnet_zoo.pretrained import save_pretrained

    weights = save_pretrained(model, tmp_path / "weights")
    generated(tmp_path / "imgs", n=5)
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    str(script), str(weights), str(tmp_path / "imgs"), str(tmp_path / "two")],
                   check=True, env=env, timeout=240, capture_output=True)
    assert sorted(p.name for p in (tmp_path / "two").glob("*.npy"))[0].startswith("rank-00000-")
    one = extract_to_shards(FeatureExtractor(alexnet(pretrained=weights), "conv5", device="cpu"), tmp_path / "imgs",
                            tmp_path / "one", shard_size=2, progress=False)
    v1, p1, _ = read_features(tmp_path / "one")
    v2, p2, merged = read_features(tmp_path / "two")
    assert p1 == p2 and merged["count"] == one["count"] == 5 and merged["world_size"] == 2
    np.testing.assert_allclose(v1, v2, atol=1e-5)
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["complete"]
