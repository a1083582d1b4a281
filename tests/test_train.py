"""The training recipe on the CPU: augmentation statistics, schedules, the paper's update rule,
the two-tower split, runs on synthetic and real pictures, an exact resume (fp16's scaler too),
torchrun (gloo) against one process with the whole batch, unreadable pictures skipped and listed,
ten-crop validation against alexnet_zoo.eval.protocols, and TensorBoard's event files."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from alexnet_zoo import alexnet
from alexnet_zoo.data.transforms import BVLC_PREPROCESSING
from alexnet_zoo.train import main
from alexnet_zoo.train.augment import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    PAPER_PREPROCESSING,
    BatchAugment,
    lighting_offsets,
)
from alexnet_zoo.train.checkpoint import find_checkpoint, list_checkpoints, load_training_checkpoint
from alexnet_zoo.train.data import EpochSampler, SyntheticImages, folder_samples
from alexnet_zoo.train.logs import read_metrics
from alexnet_zoo.train.loop import Trainer, train_step
from alexnet_zoo.train.optim import PaperSGD
from alexnet_zoo.train.pack import pack_folder
from alexnet_zoo.train.schedule import LRSchedule
from alexnet_zoo.train.towers import TwoTowerAlexNet

ROOT = Path(__file__).resolve().parents[1]
IMAGES = Path(__file__).parent / "data" / "images"
# a small, fast configuration of the real recipe: 67-pixel crops of 72-pixel squares, fc6/fc7 of 256
TINY = ["--synthetic", "24", "--synthetic-classes", "4", "--image-size", "72", "--crop-size", "67", "-b", "8",
        "--model-config", "hidden=256", "--workers", "0", "--log-every", "1", "--no-progress"]
DETERMINISTIC = ["--dropout", "0", "--no-random-crop", "--no-flip", "--pca-std", "0"]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run) if r["event"] == "train"]


def _rows(run: Path, *events: str) -> list[dict]:
    """The metrics rows of these events (all when none), without the timing."""
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in read_metrics(run)
            if not events or r["event"] in events]


# ---- augmentation -----------------------------------------------------------------------------------

def test_pca_lighting_has_the_papers_statistics():
    vec, val = torch.tensor(IMAGENET_EIGVEC, dtype=torch.float64), torch.tensor(IMAGENET_EIGVAL, dtype=torch.float64)
    assert torch.allclose(vec.T @ vec, torch.eye(3, dtype=torch.float64), atol=2e-3)  # columns: unit eigenvectors
    shifts = lighting_offsets(200_000, 0.1, torch.Generator().manual_seed(0)).double()
    assert shifts.mean(0).abs().max() < 1e-3
    # covariance of the shifts = P diag((0.1 lambda)^2) P^T; along each eigenvector: std 0.1 * lambda
    expected = vec @ torch.diag((0.1 * val) ** 2) @ vec.T
    assert torch.allclose(torch.cov(shifts.T), expected, rtol=0.02, atol=1e-7)
    along = shifts @ vec
    assert torch.allclose(along.std(0), 0.1 * val, rtol=0.01)
    assert along.T.corrcoef().sub(torch.eye(3, dtype=torch.float64)).abs().max() < 0.01  # independent alphas


def test_lighting_is_one_shift_per_image_in_the_preprocessings_scale_and_order():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    for pre in (BVLC_PREPROCESSING, PAPER_PREPROCESSING):
        plain = BatchAugment(pre, 8, train=True, flip=False, random_crop=False, pca_std=0.0)
        lit = BatchAugment(pre, 8, train=True, flip=False, random_crop=False, pca_std=0.1)
        delta = lit(images, torch.Generator().manual_seed(3)) - plain(images)
        per_image = delta[:, :, :1, :1]
        assert torch.allclose(delta, per_image.expand_as(delta), atol=1e-4)  # the same shift on every pixel
        rgb = lighting_offsets(64, 0.1, torch.Generator().manual_seed(3)) * 255  # 0..1 -> 0..255
        if pre.channel_order == "BGR":
            rgb = rgb.flip(1)
        assert torch.allclose(per_image.flatten(1), rgb, atol=1e-3)
        assert per_image.flatten(1).std(0).min() > 1.0  # drawn afresh for every image


def test_crops_and_flips_are_slices_of_the_picture():
    images = torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8)
    aug = BatchAugment(BVLC_PREPROCESSING, 15, train=True, pca_std=0.0)
    x = aug(images, torch.Generator().manual_seed(0))
    reference = aug.normalize(images)
    flips = 0
    for i in range(16):
        found = [(top, left, flip) for top in range(6) for left in range(6) for flip in (False, True)
                 if torch.equal(x[i], (reference[i, :, top:top + 15, left:left + 15].flip(-1) if flip
                                       else reference[i, :, top:top + 15, left:left + 15]))]
        assert found, f"image {i} is not a (flipped) crop"
        flips += found[0][2]
    assert 0 < flips < 16
    centre = BatchAugment(BVLC_PREPROCESSING, 15, train=False)(images)
    assert torch.equal(centre, reference[:, :, 2:17, 2:17])


def test_evaluation_input_equals_the_library_preprocessing():
    picture = Image.open(IMAGES / "hopper.jpg").convert("RGB")
    reference = BVLC_PREPROCESSING.transforms()
    resized = reference.resized(picture)  # 256x256 squash, uint8
    ours = BatchAugment(BVLC_PREPROCESSING, 227, train=False)(resized[None])[0]
    assert torch.allclose(ours, reference(picture), atol=1e-4)


# ---- schedules and the update rule ------------------------------------------------------------------

def test_plateau_divides_three_times_then_stops():
    s = LRSchedule("plateau", 0.01, steps_per_epoch=10, total_steps=900, patience=2)
    assert s.lr(0) == 0.01
    drops = [s.epoch_end(e) for e in (0.9, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7)]
    assert drops.count(True) == 3 and s.drops == 3 and math.isclose(s.lr(500), 1e-5)
    assert s.should_stop
    fresh = LRSchedule("plateau", 0.01, steps_per_epoch=10, total_steps=900, patience=2)
    fresh.load_state_dict(torch.load(_roundtrip(s.state_dict()), weights_only=True))
    assert fresh.state_dict() == s.state_dict()


def _roundtrip(obj, path=None):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_caffe_step_and_cosine_schedules():
    # solver.prototxt: base_lr 0.01, gamma 0.1, stepsize 100,000 iterations of 256 images; 5,000 steps/epoch
    caffe = LRSchedule("step", 0.01, steps_per_epoch=5000, total_steps=450_000, step_epochs=20)
    assert [caffe.lr(s) for s in (0, 99_999, 100_000, 250_000)] == pytest.approx([0.01, 0.01, 0.001, 0.0001])
    cosine = LRSchedule("cosine", 0.1, steps_per_epoch=10, total_steps=100, warmup_steps=10)
    assert cosine.lr(0) == pytest.approx(0.01) and cosine.lr(9) == pytest.approx(0.1)
    assert cosine.lr(55) == pytest.approx(0.05) and cosine.lr(100) == pytest.approx(0.0)


def test_paper_sgd_is_the_papers_update():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = PaperSGD([w], lr=0.1, momentum=0.9, weight_decay=5e-4)
    v = torch.zeros(2)
    expected = w.detach().clone()
    for grad in (torch.tensor([0.5, 1.0]), torch.tensor([-1.0, 0.25])):
        w.grad = grad.clone()
        opt.step()
        v = 0.9 * v - 0.0005 * 0.1 * expected - 0.1 * grad
        expected = expected + v
        assert torch.allclose(w.detach(), expected)
    # with a constant rate it is torch's SGD in other units
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    pa, pb = PaperSGD([a], lr=0.05), torch.optim.SGD([b], lr=0.05, momentum=0.9, weight_decay=5e-4)
    for i in range(5):
        for p, o in ((a, pa), (b, pb)):
            p.grad = torch.full((3,), float(i) - 2.0)
            o.step()
    assert torch.allclose(a, b, atol=1e-6)


# ---- the two towers ---------------------------------------------------------------------------------

def test_two_tower_model_equals_the_grouped_model():
    grouped = alexnet(num_classes=10, hidden=64, dropout=0.0)
    towers = TwoTowerAlexNet.from_grouped(grouped, ("cpu", "cpu"))
    state = towers.grouped_state_dict()
    assert list(state) == list(grouped.state_dict())
    assert all(torch.equal(state[k], v) for k, v in grouped.state_dict().items())
    x = torch.randn(3, 3, 99, 99) * 60
    with torch.no_grad():
        assert torch.allclose(towers.eval()(x), grouped.eval()(x), atol=1e-5, rtol=1e-4)
    # and they train alike: one step of the paper's SGD from the same weights
    grouped.train(), towers.train()
    y = torch.tensor([1, 5, 9])
    for net in (grouped, towers):
        opt = PaperSGD(net.parameters(), lr=0.01)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    after = towers.grouped_state_dict()
    for key, value in grouped.state_dict().items():
        assert torch.allclose(after[key], value, atol=1e-6), key
    assert torch.equal(towers.to_grouped().fc6.weight, after["fc6.weight"])


# ---- data -------------------------------------------------------------------------------------------

def test_epoch_sampler_resumes_part_way_and_shards_like_one_process():
    data = SyntheticImages(20, 4, size=8)
    whole = EpochSampler(data, num_replicas=1, rank=0, seed=5)
    whole.set_epoch(3)
    order = list(whole)
    whole.set_epoch(3, start=8)
    assert list(whole) == order[8:]
    shards = [EpochSampler(data, num_replicas=2, rank=r, seed=5) for r in (0, 1)]
    for s in shards:
        s.set_epoch(3)
    a, b = list(shards[0]), list(shards[1])
    for i in range(2):  # global batch i of 8 = the two local batches of 4
        assert sorted(a[4 * i:4 * i + 4] + b[4 * i:4 * i + 4]) == sorted(order[8 * i:8 * i + 8])


def _picture_folder(root: Path) -> Path:
    """train/ as class folders and val/ as flat pictures with Caffe's val.txt, from tests/data/images."""
    classes = {"hopper": ["hopper.jpg", "hopper_orientation_6.jpg", "hopper.gif"],
               "sample": ["pil_sample_rgb.jpg", "pil_sample_cmyk.jpg", "pil123p.png", "transparent.png"]}
    for split in ("train",):
        for name, files in classes.items():
            (root / split / name).mkdir(parents=True)
            for f in files:
                shutil.copy(IMAGES / f, root / split / name / f)
    (root / "val").mkdir()
    shutil.copy(IMAGES / "hopper.jpg", root / "val" / "a.jpg")
    shutil.copy(IMAGES / "pil_sample_rgb.jpg", root / "val" / "b.jpg")
    (root / "val" / "val.txt").write_text("a.jpg 0\nb.jpg 1\n")
    return root


def test_folder_layouts(tmp_path):
    root = _picture_folder(tmp_path)
    samples, classes = folder_samples(root / "train")
    assert classes == ["hopper", "sample"] and len(samples) == 7
    val, _ = folder_samples(root / "val", {"hopper": 0, "sample": 1})
    assert [(p.name, label) for p, label in val] == [("a.jpg", 0), ("b.jpg", 1)]
    with pytest.raises(FileNotFoundError, match="val.txt"):
        folder_samples(tmp_path / "train" / "hopper")  # pictures but no labels
    # the evaluator's flat layouts carry ImageNet indices: mapped by WNID onto a subset of the classes
    subset = tmp_path / "subset"
    for wnid in ("n01440764", "n01484850"):  # ImageNet classes 0 and 2
        (subset / "train" / wnid).mkdir(parents=True)
        shutil.copy(IMAGES / "hopper.jpg", subset / "train" / wnid / "a.JPEG")
    (subset / "val").mkdir()
    shutil.copy(IMAGES / "hopper.jpg", subset / "val" / "n01484850_7.JPEG")
    _, classes = folder_samples(subset / "train")
    val, _ = folder_samples(subset / "val", {name: i for i, name in enumerate(classes)})
    assert [label for _, label in val] == [1]


# ---- whole runs ---------------------------------------------------------------------------------------

def test_a_few_steps_on_synthetic_pictures_write_everything(tmp_path):
    out = tmp_path / "run"
    result = main(TINY + ["--epochs", "2", "--output-dir", str(out), "--checkpoint-every", "2"])
    assert result["step"] == 6 and result["epoch"] == 2
    rows = read_metrics(out)
    train = [r for r in rows if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all({"step", "epoch", "loss", "lr"} <= set(r) and math.isfinite(r["loss"]) for r in rows)
    assert [r["epoch"] for r in rows if r["event"] == "val"] == [0, 1]
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("event,step,epoch,loss,lr")
    assert Image.open(out / "curves.png").size == (960, 320)
    config = json.loads((out / "run_config.json").read_text())
    assert config["args"]["momentum"] == 0.9 and config["args"]["weight_decay"] == 5e-4
    assert config["args"]["lr_schedule"] == "plateau" and "paper" in config["sources"]["lr_schedule"]
    assert config["augment"]["pca_std"] == 0.1 and config["model_config"]["init"] == "paper"
    # checkpoints: the newest kept, complete, loadable without pickle
    kept = ["step-000000003", "step-000000004", "step-000000006"]  # every 2 steps and every epoch, newest 3
    assert [c.name for c in list_checkpoints(out)] == kept
    weights, state, rng = load_training_checkpoint(find_checkpoint(out))
    assert state["step"] == 6 and state["epoch"] == 2 and state["epoch_step"] == 0 and rng is not None
    assert set(state) >= {"optimizer", "schedule", "scaler"}
    # the final model loads through the library and computes what the last checkpoint holds
    model = alexnet(pretrained=out / "final").eval()
    reference = alexnet(num_classes=4, hidden=256).eval()
    reference.load_state_dict(weights)
    x = torch.randn(2, 3, 67, 67)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x))
    assert model.preprocessing.crop == 67 and model.preprocessing.resize_mode == "short_side"
    from alexnet_zoo.weights.publish import folder_card  # what `alexnet-zoo weights publish` writes from it

    card = folder_card(out / "final", "someone/alexnet-trained")
    assert "centre crop 67" in card and "Trained from scratch with alexnet_zoo.train" in card


def test_a_few_steps_on_a_folder_of_real_pictures(tmp_path):
    root = _picture_folder(tmp_path / "data")
    packed = tmp_path / "packed"
    assert pack_folder(root, packed, size=72, workers=2, progress=False) == 9
    assert pack_folder(root, packed, size=72, workers=2, progress=False) == 0  # done already: skipped
    assert (packed / "val" / "val.txt").is_file()
    assert Image.open(packed / "train" / "sample" / "pil123p.png").size == (72, 72)
    # decoded in two workers / on the device (the CPU here) with one worker reading bytes
    for data, decode, workers in ((root, "cpu", "2"), (packed, "device", "1")):
        out = tmp_path / decode
        result = main(["--data", str(data), "--image-size", "72", "--crop-size", "67", "-b", "2", "--epochs", "1",
                       "--model-config", "hidden=128", "--workers", workers, "--decode", decode, "--no-progress",
                       "--log-every", "1", "--output-dir", str(out), "--no-export"])
        assert result["step"] == 3 and result["val"]["count"] == 2
        assert len(_losses(out)) == 3 and all(math.isfinite(v) for v in _losses(out))


def test_loss_falls_when_overfitting_16_pictures():
    torch.manual_seed(0)
    model = alexnet(num_classes=4, init="caffe")  # the full network; BVLC's init, as Caffe trained it
    optimizer = PaperSGD(model.parameters(), lr=0.01)
    schedule = LRSchedule("constant", 0.01, steps_per_epoch=1, total_steps=30)
    augment = BatchAugment(PAPER_PREPROCESSING, 67, train=True)  # random crops, flips and colour shifts
    t = Trainer(model, model, torch.nn.CrossEntropyLoss(), optimizer, schedule, augment, torch.device("cpu"))
    data = SyntheticImages(16, 4, size=72)
    images = torch.stack([data[i][0] for i in range(16)])
    labels = torch.tensor([data[i][1] for i in range(16)])
    losses = [train_step(t, images, labels)[0].item() for _ in range(30)]
    assert losses[0] == pytest.approx(math.log(4), abs=0.1)
    assert min(losses[-10:]) < 0.5 * losses[0] and sum(losses[-5:]) / 5 < 0.8 * losses[0], losses


def test_a_stopped_and_resumed_run_gives_the_same_losses(tmp_path):
    # random crops, flips, colour shifts and dropout all on: the resume must restore every stream
    args = TINY + ["--epochs", "2"]
    main(args + ["--output-dir", str(tmp_path / "straight"), "--no-export"])
    stopped = tmp_path / "stopped"
    first = main(args + ["--output-dir", str(stopped), "--max-steps", "4", "--no-export"])  # mid-epoch 2
    assert first["step"] == 4 and first["checkpoint"].name == "step-000000004"
    with pytest.raises(FileExistsError, match="--resume"):
        main(args + ["--output-dir", str(stopped)])
    resumed = main(args + ["--output-dir", str(stopped), "--resume", "--no-export"])
    assert resumed["step"] == 6
    expected = _losses(tmp_path / "straight")
    assert len(expected) == 6 and _losses(stopped) == expected  # exact, step by step
    assert _rows(stopped, "epoch") == _rows(tmp_path / "straight", "epoch")  # the whole epoch's loss, resumed
    a = load_file(str(find_checkpoint(tmp_path / "straight") / "model.safetensors"))
    b = load_file(str(find_checkpoint(stopped) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_is_written_once_when_max_steps_meets_checkpoint_every(tmp_path, monkeypatch):
    from alexnet_zoo.train import session as recipe

    saved = []
    real = recipe.save_training_checkpoint
    monkeypatch.setattr(recipe, "save_training_checkpoint", lambda out, step, **kw: saved.append(step) or real(
        out, step, **kw))
    result = main(TINY + ["--epochs", "1", "--max-steps", "2", "--checkpoint-every", "2",
                          "--output-dir", str(tmp_path / "run"), "--no-export"])
    assert saved == [2] and result["checkpoint"].name == "step-000000002"  # not removed and written again


def test_fp16_gradient_scaler_state_is_checkpointed_and_resumed(tmp_path):
    args = TINY + ["--epochs", "1", "--amp", "fp16", "--no-export"]  # GradScaler("cpu") here, "cuda" on a GPU
    main(args + ["--output-dir", str(tmp_path / "straight")])
    main(args + ["--output-dir", str(tmp_path / "stopped"), "--max-steps", "2"])
    main(args + ["--output-dir", str(tmp_path / "stopped"), "--resume"])
    states = [torch.load(find_checkpoint(tmp_path / name) / "state.pt", weights_only=True)
              for name in ("straight", "stopped")]
    assert states[0]["scaler"]["_growth_tracker"] == 3 and states[0]["scaler"]["scale"] > 1
    assert states[1]["scaler"] == states[0]["scaler"]  # the growth tracker went on from the checkpoint's
    assert _losses(tmp_path / "stopped") == _losses(tmp_path / "straight")


def test_torchrun_on_two_processes_matches_one_process_with_the_whole_batch(tmp_path):
    args = TINY + DETERMINISTIC + ["--synthetic", "16", "--epochs", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "alexnet_zoo.train", *args, "--output-dir", str(tmp_path / "ddp")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    main(args + ["--output-dir", str(tmp_path / "one")])
    config = json.loads((tmp_path / "ddp" / "run_config.json").read_text())
    assert config["world_size"] == 2 and config["local_batch_size"] == 4
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)
    a = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    for key in b:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key


def test_modern_options_and_towers_run_on_cpu(tmp_path):
    result = main(TINY + ["--epochs", "1", "--amp", "bf16", "--channels-last", "--label-smoothing", "0.1",
                          "--lr-schedule", "cosine", "--warmup-epochs", "0.5", "--optimizer", "sgd",
                          "--param-groups", "caffe", "--output-dir", str(tmp_path / "modern"), "--no-export"])
    assert result["step"] == 3 and all(math.isfinite(v) for v in _losses(tmp_path / "modern"))
    lrs = [r["lr"] for r in read_metrics(tmp_path / "modern") if r["event"] == "train"]
    assert lrs[0] < lrs[1]  # warm-up
    towers = main(TINY + DETERMINISTIC + ["--epochs", "1", "--towers", "cpu,cpu", "--output-dir", str(tmp_path / "t")])
    grouped = main(TINY + DETERMINISTIC + ["--epochs", "1", "--output-dir", str(tmp_path / "g")])
    assert _losses(tmp_path / "t") == pytest.approx(_losses(tmp_path / "g"), rel=1e-4)
    a, b = load_file(str(towers["final"] / "model.safetensors")), load_file(str(grouped["final"] / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_command_lines(tmp_path):
    from alexnet_zoo.cli.main import main as cli

    assert cli(["train", *TINY, "--synthetic", "8", "--epochs", "1", "--output-dir", str(tmp_path / "cli"),
                "--no-export"]) == 0
    assert _losses(tmp_path / "cli")
    assert cli(["train", "--output-dir", str(tmp_path / "x")]) == 2  # no data given: an error, not a traceback
    done = subprocess.run([sys.executable, "-m", "alexnet_zoo.train", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0 and "--resume" in done.stdout and "--towers" in done.stdout


# ---- unreadable pictures, the ten-crop test, TensorBoard -------------------------------------------------

def _folder_with_unreadable_pictures(root: Path) -> Path:
    """The real-picture folder plus a truncated JPEG and a text file named .jpg in train/, and a
    text file named .jpg in val/."""
    _picture_folder(root)
    shutil.copy(IMAGES / "truncated_jpeg.jpg", root / "train" / "hopper" / "truncated_jpeg.jpg")
    (root / "train" / "sample" / "notes.jpg").write_text("not a picture\n")
    (root / "val" / "c.jpg").write_text("not a picture either\n")
    (root / "val" / "val.txt").write_text("a.jpg 0\nb.jpg 1\nc.jpg 1\n")
    return root


def test_unreadable_pictures_are_skipped_counted_and_listed(tmp_path):
    root = _folder_with_unreadable_pictures(tmp_path / "data")
    bad_train = {str(root / "train" / "hopper" / "truncated_jpeg.jpg"), str(root / "train" / "sample" / "notes.jpg")}
    bad_val = str(root / "val" / "c.jpg")
    # 9 training files in batches of 3: every file is drawn once; in worker processes, and with the
    # workers only reading bytes for the device decoder (the CPU here), with the ten-crop validation
    for decode, workers, protocol in (("cpu", "2", "center"), ("device", "1", "ten")):
        out = tmp_path / decode
        with pytest.warns(RuntimeWarning, match="skipped an unreadable (train|val) picture") as caught:
            result = main(["--data", str(root), "--image-size", "72", "--crop-size", "67", "-b", "3",
                           "--epochs", "1", "--model-config", "hidden=128", "--workers", workers, "--decode", decode,
                           "--val-protocol", protocol, "--no-progress", "--log-every", "1", "--output-dir", str(out),
                           "--no-export"])
        warned = " ".join(str(w.message) for w in caught)
        assert all(name in warned for name in ("truncated_jpeg.jpg", "notes.jpg", "c.jpg"))
        assert result["step"] == 3 and result["skipped"] == 2
        assert result["val"]["count"] == 2 and result["val"]["unreadable"] == 1
        rows = read_metrics(out)
        train = [r for r in rows if r["event"] == "train"]
        assert len(train) == 3 and all(math.isfinite(r["loss"]) for r in train)
        assert train[-1]["skipped"] == 2 and [r["skipped"] for r in train] == sorted(r["skipped"] for r in train)
        val = [r for r in rows if r["event"] == "val"]
        assert val[0]["unreadable"] == 1 and val[0]["protocol"] == protocol
        listed = [line.split("\t") for line in (out / "failures.txt").read_text().splitlines()
                  if not line.startswith("#")]
        assert {(split, path) for split, path, _ in listed} == {("train", p) for p in bad_train} | {("val", bad_val)}
        assert all(reason for _, _, reason in listed)
        assert not list(out.glob(".failures.txt.*"))  # written atomically: no temporary file left
        state = torch.load(find_checkpoint(out) / "state.pt", weights_only=True)
        assert state["skipped"] == 2


def test_decode_batch_reports_what_it_cannot_decode(tmp_path):
    from alexnet_zoo.train.data import decode_batch

    text = tmp_path / "text.jpg"
    text.write_text("not a picture")
    paths = [str(IMAGES / "hopper.jpg"), str(text), str(IMAGES / "truncated_jpeg.jpg"), str(IMAGES / "hopper.gif")]
    files = [torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8) for p in paths]
    images, failed = decode_batch(files, 32, "short_side", torch.device("cpu"), paths=paths)
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert [i for i, _ in failed] == [1, 2]
    assert "text.jpg" in failed[0][1] and "truncated_jpeg.jpg" in failed[1][1]
    empty, failed = decode_batch(files[1:3], 32, "short_side", torch.device("cpu"), paths=paths[1:3])
    assert empty.shape == (0, 3, 32, 32) and len(failed) == 2


def test_torchrun_with_unreadable_pictures_matches_one_process(tmp_path):
    root = _folder_with_unreadable_pictures(tmp_path / "data")
    # seed 20 shuffles both unreadable files into process 1's first batch of 2: it steps on nothing
    # while process 0 (and the single process, with half its batch of 4) learns from the rest
    args = ["--data", str(root), "--image-size", "72", "--crop-size", "67", "-b", "4", "--epochs", "1",
            "--seed", "20", "--model-config", "hidden=128", "--workers", "0", "--no-progress", "--log-every", "1",
            *DETERMINISTIC]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "alexnet_zoo.train", *args, "--output-dir", str(tmp_path / "ddp")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    with pytest.warns(RuntimeWarning, match="skipped an unreadable"):
        one = main(args + ["--output-dir", str(tmp_path / "one")])
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(tmp_path / "one"), rel=1e-5)
    rows = {name: [r for r in read_metrics(tmp_path / name) if r["event"] == "train"] for name in ("ddp", "one")}
    assert [r["skipped"] for r in rows["ddp"]] == [r["skipped"] for r in rows["one"]] == [2, 2]
    assert (tmp_path / "ddp" / "failures.txt").read_text() == (tmp_path / "one" / "failures.txt").read_text()
    a = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    b = load_file(str(one["final"] / "model.safetensors"))
    for key in b:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key


def test_ten_crop_validation_is_alexnet_zoo_evaluates(tmp_path):
    import dataclasses

    from alexnet_zoo.eval.loop import dataset_for
    from alexnet_zoo.eval.loop import evaluate as library_evaluate
    from alexnet_zoo.train.data import ImageFiles, ShardSampler, make_loader
    from alexnet_zoo.train.loop import evaluate

    root = _folder_with_unreadable_pictures(tmp_path / "data")
    samples, _ = folder_samples(root / "train")  # 7 pictures of every kind, 2 unreadable files
    pre = dataclasses.replace(PAPER_PREPROCESSING, resize=72, crop=67)
    torch.manual_seed(0)
    model = alexnet(num_classes=4, hidden=128, init="torch").eval()
    model.preprocessing = pre
    files = ImageFiles(samples, 72, pre.resize_mode, pre.interpolation)
    loader = make_loader(files, batch_size=3, sampler=ShardSampler(len(files), num_replicas=1, rank=0), workers=0,
                         pin_memory=False)
    ours = evaluate(model, loader, BatchAugment(pre, 67, train=False), torch.device("cpu"), protocol="ten")
    theirs = library_evaluate(model, dataset_for(samples, model, "ten"), "ten", batch_size=4, device="cpu",
                              precision="fp32", progress=False)
    assert ours["count"] == theirs.images == 7 and ours["unreadable"] == len(theirs.failed) == 2
    assert ours["top1"] == pytest.approx(100 * theirs.top1) and ours["top5"] == pytest.approx(100 * theirs.top5)
    # with 4 classes the library keeps every class's probability: the mean -log p(label) must agree
    p_label = theirs.top_probs[theirs.top_indices == theirs.labels[:, None]]
    assert ours["loss"] == pytest.approx(-p_label.double().log().mean().item(), rel=1e-5)
    centre = evaluate(model, loader, BatchAugment(pre, 67, train=False), torch.device("cpu"))
    assert centre["loss"] != pytest.approx(ours["loss"], rel=1e-6)  # the protocols differ


def test_tensorboard_logs_the_loss_and_fails_early_without_the_package(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="tensorboard is in the test extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    main(TINY + ["--synthetic", "16", "--epochs", "1", "--tensorboard", "--output-dir", str(out), "--no-export"])
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "val/loss", "val/top1"} <= set(events.Tags()["scalars"])
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    expected = [(r["step"], r["loss"]) for r in read_metrics(out) if r["event"] == "train"]
    assert [s for s, _ in logged] == [s for s, _ in expected] == [1, 2]
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    # without the package: an error at start-up naming it, before any output or data loading
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        main(["--data", str(tmp_path / "nowhere"), "--tensorboard", "--output-dir", str(tmp_path / "none")])
    assert not (tmp_path / "none").exists()
    from alexnet_zoo.cli.main import main as cli

    assert cli(["train", *TINY, "--tensorboard", "--output-dir", str(tmp_path / "none")]) == 2


# ---- an epoch is never lost; resumed epochs count every batch; checked options and devices -----------

def _real_args(root: Path, *extra: str) -> list[str]:
    return ["--data", str(root), "--image-size", "72", "--crop-size", "67", "-b", "2", "--model-config", "hidden=128",
            "--workers", "0", "--no-progress", "--log-every", "1", *extra]


def test_a_failed_validation_loses_no_epoch_and_the_run_resumes_from_it(tmp_path, monkeypatch, capsys):
    from alexnet_zoo.cli.main import main as cli
    from alexnet_zoo.train import session as recipe

    root = _picture_folder(tmp_path / "data")  # 7 training pictures: 3 steps an epoch; 2 validation pictures
    args = _real_args(root, "--epochs", "2", "--no-export")
    main(args + ["--output-dir", str(tmp_path / "straight")])
    good = {f.name: f.read_bytes() for f in (root / "val").glob("*.jpg")}
    for name in good:  # the validation pictures become unreadable: validation fails after a whole epoch
        (root / "val" / name).write_text("gone\n")
    out = tmp_path / "run"
    with pytest.warns(RuntimeWarning, match="unreadable val picture"):
        assert cli(["train", *args, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: the validation set is empty" in err and "--resume" in err and "Traceback" not in err
    state = torch.load(find_checkpoint(out) / "state.pt", weights_only=True)  # the epoch, trained and saved
    assert (state["step"], state["epoch"], state["epoch_step"], state["epoch_end_pending"]) == (3, 0, 3, True)
    for name, data in good.items():  # repaired
        (root / "val" / name).write_bytes(data)
    # the resumed run validates epoch 0 first; then drawing its curves fails: the epoch's verdict is saved
    real_plot = recipe.plot_metrics

    def broken_plot(rows, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(recipe, "plot_metrics", broken_plot)
    with pytest.raises(OSError, match="No space left"):
        main(args + ["--output-dir", str(out), "--resume"])
    state = torch.load(find_checkpoint(out) / "state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["epoch_step"], state["epoch_end_pending"]) == (3, 1, 0, False)
    monkeypatch.setattr(recipe, "plot_metrics", real_plot)
    result = main(args + ["--output-dir", str(out), "--resume"])
    assert result["step"] == 6 and result["epoch"] == 2
    # one uninterrupted run's rows (each validation once), schedule and weights, exactly
    assert _rows(out) == _rows(tmp_path / "straight")
    assert [r["epoch"] for r in _rows(out, "val")] == [r["epoch"] for r in _rows(out, "epoch")] == [0, 1]
    states = [torch.load(find_checkpoint(run) / "state.pt", weights_only=True) for run in (out, tmp_path / "straight")]
    assert states[0]["schedule"] == states[1]["schedule"]
    a = load_file(str(find_checkpoint(out) / "model.safetensors"))
    b = load_file(str(find_checkpoint(tmp_path / "straight") / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_a_resumed_epoch_feeds_the_whole_epochs_loss_to_the_plateau_schedule(tmp_path):
    root = _picture_folder(tmp_path / "data")
    shutil.rmtree(root / "val")  # no validation set: the plateau schedule reads the training loss
    # patience 1: every epoch's loss decides; the threshold makes the decisions depend on its value
    args = _real_args(root, *DETERMINISTIC, "--epochs", "4", "--plateau-patience", "1", "--plateau-threshold", "0.05",
                      "--no-export")
    main(args + ["--output-dir", str(tmp_path / "straight")])
    stopped = tmp_path / "stopped"
    main(args + ["--output-dir", str(stopped), "--max-steps", "5", "--checkpoint-every", "2"])  # epoch 1, batch 2 of 3
    state = torch.load(find_checkpoint(stopped) / "state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["epoch_step"]) == (5, 1, 2) and state["epoch_loss"][1] == 4
    main(args + ["--output-dir", str(stopped), "--resume"])
    expected = _rows(tmp_path / "straight", "epoch")
    assert [r["epoch"] for r in expected] == [0, 1, 2, 3]
    assert _rows(stopped, "epoch") == expected  # the epoch losses and the learning rates they decided
    assert _rows(stopped, "train") == _rows(tmp_path / "straight", "train")
    lrs = [r["lr"] for r in expected]
    assert len(set(lrs)) > 1  # the schedule divided the rate on the way: the decisions were compared
    states = [torch.load(find_checkpoint(run) / "state.pt", weights_only=True)
              for run in (stopped, tmp_path / "straight")]
    assert states[0]["schedule"] == states[1]["schedule"]  # best error, patience count, drops


@pytest.mark.parametrize("option, message", [
    (["-b", "0"], "argument -b/--batch-size: must be an integer >= 1, got '0'"),
    (["--batch-size", "two"], "argument -b/--batch-size: must be an integer >= 1, got 'two'"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    (["--lr", "0"], "argument --lr: must be a number > 0"),
    (["--lr", "nan"], "argument --lr: must be a number > 0, got 'nan'"),
    (["--momentum", "1"], "argument --momentum: must be a number in [0, 1)"),
    (["--weight-decay", "-0.0001"], "argument --weight-decay: must be a number >= 0"),
    (["--workers", "-1"], "argument --workers: must be an integer >= 0"),
    (["--warmup-epochs", "inf"], "argument --warmup-epochs: must be a number >= 0"),
    (["--label-smoothing", "1"], "argument --label-smoothing: must be a number in [0, 1)"),
    (["--dropout", "1.5"], "argument --dropout: must be a number in [0, 1]"),
    (["--log-every", "0"], "argument --log-every: must be an integer >= 1"),
    (["--eval-every", "0"], "argument --eval-every: must be an integer >= 1"),
    (["--prefetch-factor", "0"], "argument --prefetch-factor: must be an integer >= 1"),
    (["--seed", "-1"], "argument --seed: must be an integer in [0, 4294967295]"),
    (["--crop-size", "300"], "--crop-size 300 is larger than the 256-pixel pictures (--image-size)"),
    (["--min-lr", "0.1"], "--min-lr 0.1 is above --lr 0.01"),
    (["--model-config", "hidden"], "argument --model-config: expected KEY=VALUE"),
    (["--towers", "cpu"], "argument --towers: expected two devices"),
])
def test_numeric_options_are_checked_by_the_parser(option, message, tmp_path, capsys):
    from alexnet_zoo.cli.main import main as cli

    with pytest.raises(SystemExit) as exit_:
        cli(["train", "--synthetic", "8", *option, "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "error:" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_options_at_their_bounds_are_accepted_and_a_namespace_is_checked_too(tmp_path):
    from alexnet_zoo.train.args import get_args_parser, parse_args

    args = parse_args(["--dropout", "1", "--label-smoothing", "0", "--momentum", "0", "--workers", "0", "--seed", "0",
                       "--crop-size", "256", "--min-lr", "0.01", "--pca-std", "0", "--keep-checkpoints", "0"])
    assert (args.dropout, args.crop_size, args.min_lr) == (1.0, 256, 0.01)
    namespace = get_args_parser().parse_args(TINY + ["--output-dir", str(tmp_path / "run")])
    namespace.batch_size = 0  # set in Python, past the parser: the same rule, as a ValueError
    with pytest.raises(ValueError, match=r"-b/--batch-size: must be an integer >= 1, got 0"):
        main(namespace)
    namespace.batch_size, namespace.label_smoothing = 8, 1.0
    with pytest.raises(ValueError, match=r"--label-smoothing: must be a number in \[0, 1\)"):
        main(namespace)
    namespace.label_smoothing, namespace.num_classes = 0.0, 3
    with pytest.raises(ValueError, match="--num-classes 3 is fewer than the 4 training classes"):
        main(namespace)
    assert not list_checkpoints(tmp_path / "run")


def test_a_device_this_machine_lacks_is_named_with_what_it_has(tmp_path, capsys, monkeypatch):
    from alexnet_zoo.cli.main import main as cli
    from alexnet_zoo.train import placement as recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for device, says in (("cuda", "cuda: no CUDA GPU is available"), ("cuda:1", "cuda:1: no CUDA GPU is available"),
                         ("mps", "mps: Apple's MPS is not available"), ("gpu", "'gpu' is not a device name")):
        with pytest.raises(SystemExit) as exit_:
            cli(["train", *TINY, "--device", device, "--output-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and says in err and "available here: cpu" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        cli(["train", *TINY, "--towers", "cpu,cuda:0", "--output-dir", str(tmp_path / "run")])
    assert "argument --towers: cuda:0: no CUDA GPU is available" in capsys.readouterr().err
    assert recipe._device("auto", 0) == torch.device("cpu")
    # a machine with two GPUs: a third is named, with the two there are
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"cuda:2: there are 2 CUDA GPUs; available here: cpu, cuda:0, cuda:1"):
        recipe.check_device("cuda:2")
    with pytest.raises(ValueError, match="process 2 of this node has no GPU of its own"):
        recipe._device("cuda", local_rank=2, world=3)
    assert not (tmp_path / "run").exists()


def test_mps_takes_the_plain_path(monkeypatch):
    """Apple's GPU wherever CUDA goes, without CUDA's extras: no pinned memory or non-blocking
    copies, one process, autocast dtypes it has."""
    from alexnet_zoo.train import placement as recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert recipe.check_device("mps") == torch.device("mps") and "mps" in recipe.available_devices()
    assert recipe._device("auto", 0) == recipe._device("mps", 0) == torch.device("mps")
    assert recipe._device("auto", 0, world=2) == torch.device("cpu")  # torchrun: gloo on the CPUs
    with pytest.raises(ValueError, match="--device mps trains in one process"):
        recipe._device("mps", 0, world=2)
    with pytest.raises(ValueError, match="there is one MPS device"):
        recipe.check_device("mps:1")
    mps = torch.device("mps")
    assert not recipe.non_blocking(mps) and recipe.non_blocking(torch.device("cuda", 0))
    assert recipe._amp_dtype("fp16", [mps]) == torch.float16 and recipe._amp_dtype("none", [mps]) is None
    for macos_14, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor, ok=macos_14: ok)
        if expected is None:
            with pytest.raises(ValueError, match="--amp bf16 on mps needs macOS 14"):
                recipe._amp_dtype("bf16", [mps])
        else:
            assert recipe._amp_dtype("bf16", [mps]) == expected
    assert recipe._amp_dtype("bf16", [torch.device("cpu")]) == torch.bfloat16  # emulated where not native


def test_train_throughput_help_is_a_whole_sentence():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--help"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0
    description = " ".join(done.stdout.split("options:")[0].split("]")[-1].split())
    assert "against the plain" in description
    assert description.endswith("on the same model, batch, device and thread count.")


def test_device_decoded_pictures_get_the_pixel_limit_too(tmp_path):
    """``--decode device`` hands a JPEG's bytes to nvJPEG, which has no pixel limit: a few hundred
    bytes declaring 20000x20000 must be set aside before they are sent, like on the CPU path."""
    import io

    from PIL import Image

    from alexnet_zoo.train.data import ImageFiles

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2  # height, width
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    (tmp_path / "fine.jpg").write_bytes(buffer.getvalue())
    files = ImageFiles([(tmp_path / "bomb.jpg", 0), (tmp_path / "fine.jpg", 1)], 32, "squash", raw=True)
    bomb, fine = files[0], files[1]
    assert bomb.image is None and "bomb.jpg" in bomb.error and "over the limit" in bomb.error
    assert fine.error is None and fine.image.dim() == 1 and bytes(fine.image.numpy()) == buffer.getvalue()
