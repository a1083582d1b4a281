"""Evaluation: crops against torchvision's, softmax averaging, ranking ties, dense vs centre, known
accuracies from a model with known logits, every dataset layout, unreadable files, the recipe."""

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from alexnet_zoo import alexnet, alexnet_owt, save_pretrained
from alexnet_zoo.benchmarks.imagenet import main as imagenet_main
from alexnet_zoo.cli.main import main as cli_main
from alexnet_zoo.data.batching import iterate_batches, loader_mode
from alexnet_zoo.data.categories import imagenet_categories
from alexnet_zoo.data.datasets import ImageDataset, collate, find_labelled_images, from_label_file
from alexnet_zoo.data.images import load_image
from alexnet_zoo.data.transforms import (
    BVLC_PREPROCESSING,
    TORCHVISION_PREPROCESSING,
    ImagePreprocess,
    Preprocessing,
    center_crop,
)
from alexnet_zoo.eval.classify import classify_files
from alexnet_zoo.eval.loop import dataset_for, evaluate
from alexnet_zoo.eval.metrics import Accuracy, rank
from alexnet_zoo.eval.protocols import average_softmax, dense_probs, predict, score_maps, ten_crops
from alexnet_zoo.eval.throughput import model_throughput

TRUNCATED = Path(__file__).parent / "data" / "images" / "truncated_jpeg.jpg"
WNIDS = [c.wnid for c in imagenet_categories()]


def _noise_image(path: Path, size=(300, 200), seed=0) -> Path:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=g).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


# ---- crops ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("crop,shape", [(227, (256, 256)), (224, (256, 256)), (224, (250, 301))])
def test_ten_crops_equal_torchvision_tencrop_exactly(crop, shape):
    x = torch.randint(0, 256, (3, 3, *shape), dtype=torch.uint8)
    ours = ten_crops(x, crop).view(3, 10, 3, crop, crop)
    for i in range(3):
        assert torch.equal(ours[i], torch.stack(v2.TenCrop(crop)(x[i])))
    assert ten_crops(x, crop).is_contiguous(memory_format=torch.channels_last)


def test_ten_crops_of_a_real_picture_equal_pil_tencrop(tmp_path):
    """The 256x256 image the dataset returns, cut by torchvision's PIL TenCrop: same pixels."""
    img = load_image(_noise_image(tmp_path / "a.png", (320, 240)))
    square = BVLC_PREPROCESSING.transforms().square(img)
    assert square.shape == (3, 256, 256)
    reference = [TF.pil_to_tensor(c) for c in v2.TenCrop(227)(TF.to_pil_image(square))]
    assert torch.equal(ten_crops(square[None], 227), torch.stack(reference))


def test_center_crop_equals_torchvision_resize_then_centercrop(tmp_path):
    """Short-side preprocessing: CenterCrop(224) of the centre 256x256 = torchvision's Resize(256) + CenterCrop(224)."""
    for size in [(301, 200), (200, 333), (256, 256), (513, 257)]:
        img = load_image(_noise_image(tmp_path / f"{size}.png", size))
        x = TF.pil_to_tensor(img)
        reference = TF.center_crop(TF.resize(x, [256], antialias=True), [224, 224])
        preprocess = TORCHVISION_PREPROCESSING.transforms()
        ours = center_crop(preprocess.square(img), 224)
        assert torch.equal(ours, reference), size
        assert torch.equal(preprocess.normalize(ours), preprocess(img))  # and the library's own single-image path


# ---- averaging, ranking, accuracy ----------------------------------------------------------------

def test_average_softmax_is_the_mean_of_softmax():
    logits = torch.randn(4 * 10, 7) * 3
    expected = torch.stack([torch.softmax(logits[i * 10:(i + 1) * 10], dim=-1).mean(0) for i in range(4)])
    torch.testing.assert_close(average_softmax(logits, 10), expected)
    assert not torch.allclose(expected, torch.softmax(logits.view(4, 10, 7).mean(1), -1))  # not softmax of the mean


class _PooledLinear(nn.Module):
    """A small model that sees where in the crop things are (so crops and mirrors matter)."""

    def __init__(self, preprocessing: Preprocessing, classes: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, classes)
        self.preprocessing = preprocessing

    def forward(self, x):
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) / 50)


def test_ten_protocol_is_mean_softmax_over_torchvision_tencrop():
    p = BVLC_PREPROCESSING
    model = _PooledLinear(p).eval()
    preprocess = p.transforms()
    x = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    with torch.inference_mode():
        ours = predict(model, [x], "ten", preprocess)
        for i in range(2):
            crops = preprocess.normalize(torch.stack(v2.TenCrop(227)(x[i])))
            expected = torch.softmax(model(crops), dim=-1).mean(0)
            torch.testing.assert_close(ours[i], expected)


def test_rank_breaks_ties_towards_the_lower_class():
    probs = torch.tensor([[0.1, 0.3, 0.3, 0.1, 0.1, 0.1], [1 / 6] * 6])
    values, idx = rank(probs, 5)
    assert idx.tolist() == [[1, 2, 0, 3, 4], [0, 1, 2, 3, 4]]
    torch.testing.assert_close(values, probs.gather(1, idx))
    acc = Accuracy(6)
    acc.update(probs, torch.tensor([2, 5]))  # 2 ties for first but loses to 1; 5 ties but is 6th
    assert (acc.top1, acc.top5) == (0.0, 0.5)
    acc.update(probs, torch.tensor([1, 0]))
    assert (acc.top1, acc.top5) == (0.5, 0.75)
    assert {r["index"]: (r["images"], r["top1"], r["top5"]) for r in acc.per_class()} == {
        0: (1, 1.0, 1.0), 1: (1, 1.0, 1.0), 2: (1, 0.0, 1.0), 5: (1, 0.0, 0.0)}
    with pytest.raises(ValueError, match="label 9 is outside"):
        acc.update(probs, torch.tensor([9, 0]))


# ---- dense ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("build", [alexnet, alexnet_owt])
def test_dense_equals_centre_on_a_crop_sized_input(build):
    model = build().eval()
    side = model.preprocessing.crop  # 227 (BVLC) or 224 (torchvision)
    preprocess = ImagePreprocess(Preprocessing(**{**model.preprocessing.to_dict(), "resize": side}))
    x = torch.randint(0, 256, (2, 3, side, side), dtype=torch.uint8)
    with torch.inference_mode():
        xn = preprocess.normalize(x)
        logits, scores = model(xn), model.to_dense()(xn)
        assert scores.shape == (2, 1000, 1, 1)
        torch.testing.assert_close(scores.flatten(1), logits, rtol=1e-4, atol=1e-4)
        centre = predict(model, [x], "center", preprocess)
        torch.testing.assert_close(predict(model, [x], "dense", preprocess, flip=False), centre)
        mirrored = predict(model, [x.flip(-1)], "center", preprocess)
        torch.testing.assert_close(predict(model, [x], "dense", preprocess), (centre + mirrored) / 2)


def test_windowed_score_maps_equal_dense_alexnet(monkeypatch):
    """The CPU fast dense form (fc layers over pool5 windows) gives the convolutional score maps."""
    model = alexnet().eval()
    x = torch.randn(2, 3, 259, 291) * 60
    with torch.inference_mode():
        ours = score_maps(model)(x)
        monkeypatch.setenv("ALEXNET_ZOO_NATIVE", "0")  # plain torch: fc6 as a 6x6 F.conv2d
        reference = model.to_dense()(x)
    assert ours.shape == reference.shape == (2, 1000, 2, 3)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_dense_averages_the_score_map_then_softmax():
    class Map(nn.Module):
        def forward(self, x):  # (N, 2, 1, 2) score map from the first pixel column
            return torch.stack([x[:, 0, :1, :2], -x[:, 0, :1, :2]], dim=1)

    x = torch.tensor([[[[1.0, 3.0]]]]).expand(1, 3, 1, 2)
    expected = torch.softmax(torch.tensor([2.0, -2.0]), 0)  # map mean (2, -2); the mirror has the same mean
    torch.testing.assert_close(dense_probs(Map(), x)[0], expected)


# ---- a model with known logits gives known accuracy ----------------------------------------------

class _KnownLogits(nn.Module):
    """Scores a constant-colour picture by the table row its red value selects."""

    preprocessing = Preprocessing(resize=8, resize_mode="squash", crop=6, scale=255.0, mean=(0, 0, 0), std=(1, 1, 1))

    def __init__(self, table: dict[int, list[float]]) -> None:
        super().__init__()
        self.table = torch.zeros(256, 10)
        for red, row in table.items():
            self.table[red] = torch.tensor(row)

    def forward(self, x):
        return self.table[x[:, 0].mean(dim=(-2, -1)).round().long()]


KNOWN = {  # red value: (label, logits)
    10: (3, [0, 0, 0, 5, 0, 0, 0, 0, 0, 0]),  # right
    20: (4, [0, 3, 0, 0, 2, 0, 0, 0, 0, 1]),  # second: top-5 only
    30: (5, [6, 5, 4, 3, 2, -1, 1, 0.5, 0.2, 0.1]),  # last: wrong
    40: (2, [0, 0, 4, 0, 0, 0, 0, 4, 0, 0]),  # tied with 7: the lower index wins, right
    50: (9, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # tied with 1..8 for second: 1..4 win, wrong
}


def _known_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for red, (label, _) in KNOWN.items():
        Image.new("RGB", (12, 9), (red, 7, 200)).save(root / f"red{red}.png")
        rows.append(f"red{red}.png,{label}")
    (root / "labels.csv").write_text("filename,class_index\n" + "\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("protocol", ["center", "ten"])
def test_known_logits_give_known_top1_top5(tmp_path, protocol):
    model = _KnownLogits({red: row for red, (_, row) in KNOWN.items()})
    found = find_labelled_images(_known_folder(tmp_path / "known"))
    result = evaluate(model, dataset_for(found.samples, model, protocol), protocol, batch_size=2, progress=False)
    assert result.images == 5 and not result.failed
    assert (result.top1, result.top5) == (2 / 5, 3 / 5)
    assert result.top_indices[:, 0].tolist() == [3, 1, 0, 2, 0]
    assert result.top_indices[3].tolist() == [2, 7, 0, 1, 3] and result.top_indices[4].tolist() == [0, 1, 2, 3, 4]
    expected = torch.softmax(torch.tensor(KNOWN[30][1]), 0).sort(descending=True).values[:5]
    torch.testing.assert_close(result.top_probs[2], expected)
    per_class = {r["index"]: (r["top1"], r["top5"]) for r in result.per_class}
    assert per_class == {3: (1.0, 1.0), 4: (0.0, 1.0), 5: (0.0, 0.0), 2: (1.0, 1.0), 9: (0.0, 0.0)}


def test_model_throughput_runs_the_same_batch_code():
    model = _KnownLogits({})
    assert model_throughput(model, "ten", batch_size=4, batches=2, preprocessing=model.preprocessing) > 0


# ---- layouts -------------------------------------------------------------------------------------

def test_layout_wnid_folders(tmp_path):
    root = tmp_path / "val"
    _noise_image(root / WNIDS[0] / "a.JPEG")
    _noise_image(root / WNIDS[7] / "sub" / "b.png")
    (root / WNIDS[7] / "notes.txt").write_text("not an image")
    found = find_labelled_images(root)
    assert found.layout == "wnid_folders"
    assert [(Path(p).name, label) for p, label in found.samples] == [("a.JPEG", 0), ("b.png", 7)]
    (root / "n00000001").mkdir()
    with pytest.raises(ValueError, match="n00000001 is not one of the 1,000"):
        find_labelled_images(root)


def test_layout_flat_folder_with_caffe_val_txt(tmp_path):
    root = tmp_path / "val"
    for i in (1, 2, 4):
        _noise_image(root / f"ILSVRC2012_val_{i:08d}.JPEG", seed=i)
    lines = "ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n" \
            "ILSVRC2012_val_00000003.JPEG 230\nILSVRC2012_val_00000004.JPEG 809\n"
    labels = tmp_path / "val.txt"
    labels.write_text(lines)
    found = find_labelled_images(root, labels)
    assert found.layout == "label_file" and found.label_file == labels
    assert [(Path(p).name, label) for p, label in found.samples] == [
        ("ILSVRC2012_val_00000001.JPEG", 65), ("ILSVRC2012_val_00000002.JPEG", 970),
        ("ILSVRC2012_val_00000004.JPEG", 809)]
    assert found.missing == ("ILSVRC2012_val_00000003.JPEG",)
    shutil.copy(labels, root / "val.txt")  # found in the folder without --labels
    assert find_labelled_images(root).samples == found.samples
    labels.write_text(lines + "ILSVRC2012_val_00000005.JPEG cat\n")
    with pytest.raises(ValueError, match=r"val.txt:5: expected 'FILENAME CLASS_INDEX'"):
        find_labelled_images(root, labels)
    with pytest.raises(ValueError, match="none of the 1 files"):
        from_label_file(tmp_path, _write(tmp_path / "other.txt", "ILSVRC2012_val_00000001.JPEG 1\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_layout_csv(tmp_path):
    root = tmp_path / "samples"
    _noise_image(root / "x.JPEG")
    _noise_image(root / "y.JPEG", seed=1)
    shared_style = 'filename,wnid,class_index,synset_words\nx.JPEG,n01440764,0,"tench, Tinca tinca"\n' \
                   f'y.JPEG,{WNIDS[5]},5,"electric ray"\n'
    for text in (shared_style, "x.JPEG,0\ny.JPEG,5\n", f"file,wnid\nx.JPEG,{WNIDS[0]}\ny.JPEG,{WNIDS[5]}\n"):
        found = find_labelled_images(root, _write(tmp_path / "labels.csv", text))
        assert found.layout == "csv"
        assert [(Path(p).name, label) for p, label in found.samples] == [("x.JPEG", 0), ("y.JPEG", 5)]
    _write(root / "labels.csv", "x.JPEG,0\ny.JPEG,5\n")  # found in the folder
    assert find_labelled_images(root).layout == "csv"
    with pytest.raises(ValueError, match=r"labels.csv:2: 'dog' is neither a class index nor"):
        find_labelled_images(root, _write(tmp_path / "labels.csv", "x.JPEG,0\ny.JPEG,dog\n"))
    with pytest.raises(ValueError, match="expected a header with a filename column"):
        find_labelled_images(root, _write(tmp_path / "labels.csv", "picture,what\nx.JPEG,0\n"))


def test_layout_wnid_prefixed_files(tmp_path):
    root = tmp_path / "flat"
    _noise_image(root / f"{WNIDS[0]}_1.JPEG")
    _noise_image(root / f"{WNIDS[999]}_2.JPEG", seed=2)
    found = find_labelled_images(root)
    assert found.layout == "wnid_prefix"
    assert [label for _, label in found.samples] == [0, 999]
    _noise_image(root / "holiday.jpg")
    with pytest.raises(ValueError, match="without a WNID prefix .*holiday.jpg"):
        find_labelled_images(root)


def test_no_layout_is_a_clear_error(tmp_path):
    (tmp_path / "train").mkdir()
    _noise_image(tmp_path / "picture.jpg")
    with pytest.raises(ValueError, match="no labelled images found.*folders train"):
        find_labelled_images(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_labelled_images(tmp_path / "absent")


# ---- unreadable files ----------------------------------------------------------------------------

def _folder_with_bad_files(root: Path) -> Path:
    _noise_image(root / WNIDS[1] / "good1.JPEG", (260, 240))
    _noise_image(root / WNIDS[2] / "good2.JPEG", (240, 300), seed=3)
    shutil.copy(TRUNCATED, root / WNIDS[1] / "truncated.JPEG")
    (root / WNIDS[2] / "text.JPEG").write_text("this is not a JPEG")
    return root


def test_dataset_returns_markers_for_unreadable_files(tmp_path):
    found = find_labelled_images(_folder_with_bad_files(tmp_path / "val"))
    dataset = ImageDataset(found.samples, BVLC_PREPROCESSING)
    items = [dataset[i] for i in range(len(dataset))]
    assert [it.images is None for it in items] == [False, True, False, True]
    assert "truncated.JPEG" in items[1].error and "text.JPEG" in items[3].error
    batch = collate(items)
    assert len(batch) == 2 and batch.images[0].shape == (2, 3, 256, 256) and batch.images[0].dtype == torch.uint8
    assert batch.labels.tolist() == [1, 2] and [i for i, _ in batch.failed] == [1, 3]
    assert len(collate(items[1:2])) == 0


@pytest.mark.parametrize("workers,loader", [(0, "auto"), (1, "processes"), (2, "threads")])
def test_unreadable_files_are_counted_listed_and_left_out(tmp_path, workers, loader):
    found = find_labelled_images(_folder_with_bad_files(tmp_path / "val"))
    model = alexnet_owt()
    result = evaluate(model, dataset_for(found.samples, model, "center"), "center", batch_size=3, workers=workers,
                      loader=loader, progress=False)
    assert result.images == 2 and len(result.failed) == 2
    assert sorted(Path(p).name for p, _ in result.failed) == ["text.JPEG", "truncated.JPEG"]
    assert sum(r["images"] for r in result.per_class) == 2
    assert [Path(p).name for p in result.paths] == ["good1.JPEG", "good2.JPEG"]


def test_loaders_deliver_the_same_batches_in_order(tmp_path):
    """Worker processes, decoding threads and the calling thread give identical batches."""
    root = tmp_path / "val"
    for i in range(7):
        _noise_image(root / WNIDS[i % 3] / f"p{i}.JPEG", (250 + 10 * i, 240), seed=i)
    found = find_labelled_images(root)
    dataset = ImageDataset(found.samples, BVLC_PREPROCESSING)
    order = [range(0, 3), range(3, 6), range(6, 7)]
    runs = {mode: list(iterate_batches(dataset, order, collate, workers=workers, mode=mode))
            for mode, workers in (("auto", 0), ("processes", 2), ("threads", 2))}
    for mode in ("processes", "threads"):
        assert [b.indices.tolist() for b in runs[mode]] == [[0, 1, 2], [3, 4, 5], [6]]
        for ours, reference in zip(runs[mode], runs["auto"]):
            assert torch.equal(ours.images[0], reference.images[0]) and torch.equal(ours.labels, reference.labels)


def test_loader_mode_auto_takes_threads_only_when_the_model_fills_the_cpu(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores)
    assert loader_mode("auto", torch.device("cpu"), 2) == "threads"
    assert loader_mode("auto", torch.device("cuda"), 2) == "processes"
    monkeypatch.setattr(torch, "get_num_threads", lambda: max(cores - 1, 0))
    assert loader_mode("auto", torch.device("cpu"), 2) == ("processes" if cores > 1 else "threads")
    assert loader_mode("processes", torch.device("cpu"), 2) == "processes"
    with pytest.raises(ValueError, match="unknown loader mode"):
        loader_mode("fibres", torch.device("cpu"), 2)


# ---- the recipe and the CLI ----------------------------------------------------------------------

def test_recipe_writes_json_and_predictions(tmp_path, capsys):
    root = _folder_with_bad_files(tmp_path / "val")
    _noise_image(root / WNIDS[3] / "good3.png", (300, 300), seed=4)
    weights = save_pretrained(alexnet_owt(), tmp_path / "weights", preprocessing=TORCHVISION_PREPROCESSING)
    out, preds = tmp_path / "report.json", tmp_path / "predictions.csv"
    report = imagenet_main(["--data", str(root), "--pretrained", str(weights), "--protocol", "ten",
                            "--batch-size", "2", "--workers", "0", "--json", str(out), "--predictions", str(preds)])
    printed = capsys.readouterr().out
    assert "top-1 accuracy" in printed and "top-5 accuracy" in printed and "images/s" in printed
    assert "2 unreadable image(s)" in printed and "truncated.JPEG" in printed
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(report))
    for key in ("top1", "top5", "images", "failed", "images_per_second", "protocol", "weights", "per_class",
                "environment"):
        assert key in on_disk, key
    assert on_disk["images"] == 3 and on_disk["failed"] == 2 and on_disk["protocol"] == "ten"
    assert on_disk["weights"] == str(weights) and on_disk["crop"] == 224
    assert 0 <= on_disk["top1"] <= on_disk["top5"] <= 1
    assert {"torch", "cpu", "device", "workers"} <= set(on_disk["environment"])
    with preds.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "label", *(f"pred{i}" for i in range(1, 6)), *(f"prob{i}" for i in range(1, 6))]
    assert len(rows) == 4 and [int(r[1]) for r in rows[1:]] == [1, 2, 3]
    top1 = sum(r[1] == r[2] for r in rows[1:]) / 3
    top5 = sum(r[1] in r[2:7] for r in rows[1:]) / 3
    assert (top1, top5) == (on_disk["top1"], on_disk["top5"])
    assert all(float(r[7]) >= float(r[8]) for r in rows[1:])


def test_recipe_dense_at_two_scales_and_limit(tmp_path, capsys):
    root = tmp_path / "flat"
    for i in range(4):
        _noise_image(root / f"{WNIDS[10 * i]}_{i}.JPEG", (250 + 20 * i, 230), seed=i)
    report = imagenet_main(["--data", str(root), "--pretrained", "none", "--protocol", "dense", "--scales", "227",
                            "256", "--limit", "2", "--batch-size", "2", "--workers", "0", "--no-progress"])
    assert report["sizes"] == [227, 256] and report["images"] == 2 and report["weights"] == "random"
    assert [r["index"] for r in report["per_class"]] == [0, 20]  # evenly spaced: items 0 and 2
    with pytest.raises(ValueError, match="for --protocol dense"):
        imagenet_main(["--data", str(root), "--scales", "256"])


def test_cli_evaluate_is_the_recipe_with_the_same_options(tmp_path, capsys):
    """`alexnet-zoo evaluate` and `python -m alexnet_zoo.benchmarks.imagenet`: one parser
    definition, one evaluator, the same report."""
    from alexnet_zoo.benchmarks.imagenet import build_parser
    from alexnet_zoo.cli.main import build_parser as cli_parser

    def options(parser) -> dict:
        return {a.dest: (a.option_strings, a.default, a.choices, a.nargs) for a in parser._actions if a.dest != "help"}

    [evaluate_parser] = [a.choices["evaluate"] for a in cli_parser()._actions if hasattr(a, "choices")
                         and isinstance(a.choices, dict) and "evaluate" in a.choices]
    assert options(evaluate_parser) == options(build_parser())
    root = _folder_with_bad_files(tmp_path / "val")
    weights = save_pretrained(alexnet(num_classes=1000, hidden=64), tmp_path / "weights")
    argv = ["--data", str(root), "--pretrained", str(weights), "--protocol", "ten", "--workers", "0", "--no-progress",
            "--device", "cpu", "--precision", "fp32"]
    assert cli_main(["evaluate", *argv, "--json", str(tmp_path / "cli.json")]) == 0
    printed = capsys.readouterr().out
    assert "top-1 accuracy" in printed and "2 unreadable image(s)" in printed
    recipe = imagenet_main([*argv, "--json", str(tmp_path / "recipe.json")])
    cli_report = json.loads((tmp_path / "cli.json").read_text())
    for key in ("top1", "top5", "images", "failed", "per_class", "protocol", "weights", "crop"):
        assert cli_report[key] == json.loads(json.dumps(recipe[key])), key
    assert cli_report["images"] == 2 and cli_report["per_class"][0]["wnid"] == WNIDS[1]


def test_recipe_errors_are_one_line(tmp_path):
    """`python -m alexnet_zoo.benchmarks.imagenet` on a missing folder: one error line, status 2."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "alexnet_zoo.benchmarks.imagenet", "--data", str(tmp_path / "nope"),
                           "--pretrained", "none"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("imagenet: error: ") and str(tmp_path / "nope") in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_classify_ten_crops_uses_the_evaluation_code(tmp_path, capsys):
    path = _noise_image(tmp_path / "a.jpg", (320, 240))
    model = alexnet_owt(init="paper").eval()
    preprocess = model.preprocessing.transforms()
    [prediction] = classify_files(model, [path], preprocess, top=5, crops=10)
    with torch.inference_mode():
        probs, idx = rank(predict(model, [preprocess.square(load_image(path))[None]], "ten", preprocess), 5)
    assert [c["index"] for c in prediction.classes] == idx[0].tolist()
    torch.testing.assert_close(torch.tensor([c["probability"] for c in prediction.classes]), probs[0])
    assert cli_main(["classify", str(path), "--pretrained", "none", "--crops", "10", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["classes"]) == 5
