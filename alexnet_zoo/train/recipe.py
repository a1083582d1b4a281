"""The paper's training recipe (Krizhevsky et al. 2012, sections 4-5) on today's hardware.

Defaults are the paper: SGD with momentum 0.9 and weight decay 0.0005 in the paper's own update
rule, batches of 128, learning rate 0.01 divided by 10 when the validation error stops improving
(three times), about 90 epochs, the paper's initialisation, dropout 0.5, random 227 crops of the
256x256 image with horizontal flips, PCA colour shifts, mean subtraction. Each is an option and
is recorded, with its source, in ``run_config.json``. Modern options (bf16/fp16 autocast,
channels-last, ``torch.compile``, label smoothing, warm-up, cosine) are off unless asked for.

One process per GPU under ``torchrun`` (DDP; ``--batch-size`` is the global batch, split over the
processes), or the paper's two-GPU model parallelism with ``--towers cuda:0,cuda:1``. Shape as
torchvision's reference script: :func:`get_args_parser`, :func:`load_data`,
:func:`train_one_epoch`, :func:`evaluate`, and :func:`main` taking an argument list.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from alexnet_zoo.models.config import ARCHS
from alexnet_zoo.eval.evaluate import predict
from alexnet_zoo.factory import create_model
from alexnet_zoo.paths import write_json
from alexnet_zoo.weights.store import save_pretrained
from alexnet_zoo.train.augment import PAPER_PREPROCESSING, BatchAugment, step_generator
from alexnet_zoo.train.checkpoint import (find_checkpoint, list_checkpoints, load_training_checkpoint, restore_rng,
                                          save_training_checkpoint, update_training_state)
from alexnet_zoo.train.data import (EpochSampler, ImageFiles, PictureBatch, ShardSampler, decode_batch,
                                    folder_samples, make_loader, split_synthetic)
from alexnet_zoo.train.logs import MetricsLog, UnreadableFiles
from alexnet_zoo.train.optim import build_optimizer
from alexnet_zoo.train.plot import plot_metrics
from alexnet_zoo.train.schedule import LRSchedule
from alexnet_zoo.train.towers import TwoTowerAlexNet
from alexnet_zoo.data.transforms import BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING, ImagePreprocess

__all__ = ["RECIPE_SOURCES", "Bounded", "Trainer", "available_devices", "check_args", "check_device", "evaluate",
           "get_args_parser", "load_data", "main", "parse_args", "train_one_epoch", "train_step"]

PREPROCESSINGS = {"paper": PAPER_PREPROCESSING, "bvlc": BVLC_PREPROCESSING, "torchvision": TORCHVISION_PREPROCESSING}
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_PROTOCOL_NAMES = {"center": "centre crop", "ten": "ten crops (corners, centre, mirrored; softmax averaged)"}

# Where each default comes from; written into run_config.json beside the values used.
RECIPE_SOURCES = {
    "batch_size": "paper sec. 5: batches of 128 examples (Caffe's train_val.prototxt: 256)",
    "lr": "paper sec. 5: 0.01, the same for all layers (Caffe solver.prototxt: base_lr 0.01)",
    "momentum": "paper sec. 5: 0.9 (Caffe: 0.9)",
    "weight_decay": "paper sec. 5: 0.0005 (Caffe: 0.0005)",
    "optimizer": "paper sec. 5: v <- 0.9 v - 0.0005 eps w - eps dL/dw, w <- w + v (paper-sgd; 'sgd' = torch's form)",
    "param_groups": "paper: one rate and decay for every weight; caffe: biases lr_mult 2, decay_mult 0",
    "lr_schedule": "paper sec. 5: divided by 10 when the validation error stopped improving, three times "
                   "(plateau); Caffe solver.prototxt: step, gamma 0.1, stepsize 100,000 x 256 images = 20 epochs",
    "epochs": "paper sec. 5: roughly 90 cycles through the 1.2 M training images (Caffe: 450,000 x 256)",
    "init": "paper sec. 5: weights N(0, 0.01), biases 1 in conv2/4/5 and fc6/7, else 0 (caffe: fc6/7 std "
            "0.005, biases 0.1)",
    "dropout": "paper sec. 4.2: 0.5 on the outputs of fc6 and fc7",
    "preprocessing": "paper sec. 2: short side 256, central 256x256, mean pixel subtracted from raw RGB "
                     "(bvlc: squashed to 256x256, BGR)",
    "crop_size": "paper sec. 4.1: random 224x224 patches of the 256x256 images; 227 is what conv1's "
                 "arithmetic needs and Caffe's crop_size",
    "flip": "paper sec. 4.1: horizontal reflections of the patches",
    "pca_std": "paper sec. 4.1: alpha ~ N(0, 0.1) per image per use, PCA of ImageNet's RGB covariance "
               "(eigenvalues/vectors of fb.resnet.torch)",
    "val_protocol": "paper sec. 4.1: test error from the softmax averaged over ten 224 patches (corners, centre, "
                    "mirrors) = 'ten'; default 'center' (one crop, 10x cheaper) to follow training",
}


# ---- arguments ---------------------------------------------------------------------------------------

def _number_text(x: float | None) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else f"{x:g}"


class Bounded:
    """An argparse type for a number with a range: the parser's ``error:`` line names the option,
    the range and the value (``-b 0`` was a ZeroDivisionError, far from its cause). :meth:`check`
    holds the same rule for a Namespace built in Python."""

    def __init__(self, kind: type[int] | type[float], low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> None:
        self.kind, self.low, self.high, self.low_open, self.high_open = kind, low, high, low_open, high_open
        self.__name__ = "integer" if kind is int else "number"  # argparse's fallback message uses it

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        low, high = _number_text(self.low), _number_text(self.high)
        if self.low is not None and self.high is not None:
            return f"{what} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {high}"
        return what

    def check(self, value: Any) -> Any:
        """``value`` when it is in range; ValueError saying the range otherwise."""
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (self.kind is not int or float(value).is_integer())
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        if not ok:
            raise ValueError(f"must be {self.describe()}, got {value!r}")
        return value

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None
        try:
            return self.check(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None


POSITIVE_INT, COUNT = Bounded(int, 1), Bounded(int, 0)
POSITIVE, NON_NEGATIVE, FRACTION = Bounded(float, 0, low_open=True), Bounded(float, 0), Bounded(float, 0, 1)
SEED = Bounded(int, 0, 2**32 - 1)  # numpy's SeedSequence and every derived seed stay in range


def _device_option(text: str) -> str:
    """--device: ``auto`` or a device this machine has (checked now: an ``error:`` line, not a
    torch traceback after the data is loaded)."""
    try:
        check_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _towers_option(text: str) -> str:
    """--towers: two devices this machine has, comma-separated."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected two devices as DEV0,DEV1 (e.g. cuda:0,cuda:1), got {text!r}")
    try:
        for part in parts:
            if part == "auto":
                raise ValueError("each tower needs a named device, not 'auto'")
            check_device(part)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _model_config_option(text: str) -> str:
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. hidden=1024), got {text!r}")
    return text


def get_args_parser(add_help: bool = True, prog: str = "python -m alexnet_zoo.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, add_help=add_help,
                                description="Train AlexNet with the 2012 paper's recipe (defaults) or modern options.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", type=Path, help="folder holding train/ and val/ (class folders, or val/ + val.txt)")
    g.add_argument("--train-dir", type=Path, help="training folder (default: DATA/train)")
    g.add_argument("--val-dir", type=Path, help="validation folder (default: DATA/val, when it exists)")
    g.add_argument("--synthetic", type=COUNT, default=0, metavar="N", help="N synthetic pictures instead of --data")
    g.add_argument("--synthetic-classes", type=POSITIVE_INT, default=10)
    g.add_argument("--preprocessing", choices=sorted(PREPROCESSINGS), default="paper",
                   help="resize mode, channel order, pixel scale and mean (paper: short side, RGB 0-255)")
    g.add_argument("--image-size", type=POSITIVE_INT, default=256, help="side of the square picture crops are cut from")
    g.add_argument("--crop-size", type=POSITIVE_INT, default=227,
                   help="227 (Caffe) or 224 (the paper's text); at most --image-size")
    g.add_argument("--no-random-crop", dest="random_crop", action="store_false", help="train on centre crops")
    g.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal reflections")
    g.add_argument("--pca-std", type=NON_NEGATIVE, default=0.1, help="std of the PCA colour shifts' alpha (0: off)")
    g.add_argument("--workers", type=COUNT, default=min(8, os.cpu_count() or 1),
                   help="loader processes per GPU (0: load in the training process)")
    g.add_argument("--prefetch-factor", type=POSITIVE_INT, default=4, help="batches prefetched by each worker")
    g.add_argument("--decode", choices=("cpu", "device"), default="cpu",
                   help="decode JPEGs in the workers (cpu) or on the training device (nvJPEG on CUDA)")
    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=sorted(ARCHS), default="alexnet")
    g.add_argument("--init", choices=("paper", "caffe", "torch"), default="paper")
    g.add_argument("--dropout", type=FRACTION, default=0.5, help="probability, in [0, 1]")
    g.add_argument("--num-classes", type=POSITIVE_INT, default=None,
                   help="default: the number of training classes (at least that many)")
    g.add_argument("--model-config", action="append", default=[], metavar="KEY=VALUE", type=_model_config_option,
                   help="any AlexNetConfig field, e.g. hidden=1024 or lrn=false (repeatable)")
    g.add_argument("--towers", default=None, metavar="DEV0,DEV1", type=_towers_option,
                   help="the paper's two-GPU model parallelism: tower 1 on DEV0, tower 2 on DEV1")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=("paper-sgd", "sgd"), default="paper-sgd")
    g.add_argument("--lr", type=POSITIVE, default=0.01)
    g.add_argument("--momentum", type=Bounded(float, 0, 1, high_open=True), default=0.9, help="in [0, 1)")
    g.add_argument("--weight-decay", type=NON_NEGATIVE, default=5e-4)
    g.add_argument("--param-groups", choices=("paper", "caffe"), default="paper")
    g.add_argument("-b", "--batch-size", type=POSITIVE_INT, default=128, help="global batch, split over the processes")
    g.add_argument("--eval-batch-size", type=POSITIVE_INT, default=None, help="per process (default: the training one)")
    g.add_argument("--label-smoothing", type=Bounded(float, 0, 1, high_open=True), default=0.0, help="in [0, 1)")
    g.add_argument("--lr-schedule", choices=("plateau", "step", "cosine", "constant"), default="plateau")
    g.add_argument("--lr-gamma", type=Bounded(float, 0, 1, low_open=True), default=0.1,
                   help="step schedule's factor, in (0, 1]")
    g.add_argument("--lr-step-epochs", type=POSITIVE, default=20.0, help="step schedule's period")
    g.add_argument("--plateau-patience", type=POSITIVE_INT, default=5, help="epochs without improvement before /10")
    g.add_argument("--plateau-threshold", type=NON_NEGATIVE, default=1e-3, help="improvement of the error that counts")
    g.add_argument("--plateau-max-drops", type=COUNT, default=3)
    g.add_argument("--no-plateau-stop", dest="plateau_stop", action="store_false",
                   help="keep training after the last division instead of stopping at the next plateau")
    g.add_argument("--warmup-epochs", type=NON_NEGATIVE, default=0.0)
    g.add_argument("--min-lr", type=NON_NEGATIVE, default=0.0, help="cosine schedule's final rate (at most --lr)")
    g = p.add_argument_group("run")
    g.add_argument("--epochs", type=POSITIVE_INT, default=90)
    g.add_argument("--max-steps", type=POSITIVE_INT, default=None,
                   help="stop (with a checkpoint) after this global step")
    g.add_argument("--device", default="auto", type=_device_option,
                   help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N, mps")
    g.add_argument("--amp", choices=sorted(AMP_DTYPES), default="none", help="autocast dtype")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--compile", action="store_true", help="torch.compile the training model")
    g.add_argument("--tf32", action="store_true", help="TF32 matmuls on CUDA (fp32 runs)")
    g.add_argument("--seed", type=SEED, default=0)
    g.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower)")
    g.add_argument("--dist-backend", choices=("auto", "nccl", "gloo"), default="auto")
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", type=Path, default=Path("runs/alexnet"))
    g.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                   help="continue a run: alone, from the latest checkpoint in --output-dir (or from scratch "
                        "when it has none); or from a checkpoint folder / run folder")
    g.add_argument("--checkpoint-every", type=COUNT, default=0, metavar="STEPS",
                   help="also checkpoint every this many steps (one is always written at each epoch's end)")
    g.add_argument("--keep-checkpoints", type=COUNT, default=3, help="newest checkpoints kept (0: all)")
    g.add_argument("--log-every", type=POSITIVE_INT, default=20,
                   help="steps between metrics rows (Caffe's display: 20)")
    g.add_argument("--eval-every", type=POSITIVE_INT, default=1, help="epochs between validations")
    g.add_argument("--val-protocol", choices=("center", "ten"), default="center",
                   help="validate on the centre crop (fast), or on the paper's ten crops with averaged softmax "
                        "(alexnet_zoo.eval.evaluate's code; 10x the compute)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--tensorboard", action="store_true", help="also log to OUTPUT_DIR/tensorboard")
    g.add_argument("--no-export", dest="export", action="store_false",
                   help="do not write the final model to OUTPUT_DIR/final")
    return p


def _combination_problem(args: argparse.Namespace) -> str | None:
    """What is wrong between options that are each in range, or None."""
    if args.crop_size > args.image_size:
        return f"--crop-size {args.crop_size} is larger than the {args.image_size}-pixel pictures (--image-size)"
    if args.min_lr > args.lr:
        return f"--min-lr {args.min_lr:g} is above --lr {args.lr:g}"
    return None


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> None:
    """Every numeric option in its range and the combinations sound, for a Namespace that did
    not come through the parser (the parser's types already checked each value). ValueError."""
    parser = parser or get_args_parser(add_help=False)
    for action in parser._actions:  # noqa: SLF001 - the one place the options' types are declared
        value = getattr(args, action.dest, None)
        if value is None:
            continue
        try:
            if isinstance(action.type, Bounded):
                action.type.check(value)
            elif action.type in (_device_option, _towers_option):
                action.type(str(value))
        except (ValueError, argparse.ArgumentTypeError) as err:
            raise ValueError(f"{'/'.join(action.option_strings)}: {err}") from None
    problem = _combination_problem(args)
    if problem:
        raise ValueError(problem)


def parse_args(argv: Sequence[str] | None = None, prog: str = "python -m alexnet_zoo.train") -> argparse.Namespace:
    """The parsed options; a value out of range or a bad combination is argparse's ``error:``
    line (exit 2), named for the command the user typed (``prog``: ``alexnet-zoo train`` too)."""
    parser = get_args_parser(prog=prog)
    args = parser.parse_args(argv)
    problem = _combination_problem(args)
    if problem:
        parser.error(problem)
    return args


def _model_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-config expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


# ---- data -------------------------------------------------------------------------------------------

def load_data(args: argparse.Namespace) -> tuple[Dataset, Dataset | None, list[str]]:
    """(training set, validation set or None, class names) for --synthetic or --data."""
    preprocessing = PREPROCESSINGS[args.preprocessing]
    if args.synthetic:
        train, val = split_synthetic(args.synthetic, args.synthetic_classes, args.image_size, args.seed)
        return train, val, train.classes
    train_dir = args.train_dir or (args.data / "train" if args.data else None)
    if train_dir is None:
        raise ValueError("give --data DIR (holding train/ and val/), --train-dir, or --synthetic N")
    samples, classes = folder_samples(train_dir)
    raw = args.decode == "device"
    build = dict(size=args.image_size, mode=preprocessing.resize_mode, interpolation=preprocessing.interpolation,
                 raw=raw)
    train = ImageFiles(samples, **build)
    val_dir = args.val_dir or (args.data / "val" if args.data and (args.data / "val").exists() else None)
    val = None
    if val_dir is not None:
        val_samples, _ = folder_samples(val_dir, {name: i for i, name in enumerate(classes)})
        bad = sorted({label for _, label in val_samples if not 0 <= label < len(classes)})
        if bad:
            raise ValueError(f"{val_dir}: labels {bad[:5]} are outside the {len(classes)} training classes")
        val = ImageFiles(val_samples, **build)
    return train, val, classes


# ---- the loop ---------------------------------------------------------------------------------------

@dataclass
class Trainer:
    """Everything a step needs. ``model`` is what trains (maybe DDP- and compile-wrapped);
    ``module`` the bare network (AlexNet or TwoTowerAlexNet) it wraps."""

    model: nn.Module
    module: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    augment: BatchAugment
    device: torch.device
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    decode: tuple[int, str, str] | None = None  # (size, resize mode, interpolation) when decoding on the device
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    step: int = 0  # optimizer steps done
    unreadable: UnreadableFiles | None = None  # where skipped pictures are counted and listed


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def _on_device(batch: PictureBatch | Sequence[Any], decode: tuple[int, str, str] | None, device: torch.device
               ) -> tuple[Tensor, Tensor, list[tuple[str, str]]]:
    """A loader's batch -> (uint8 pictures on ``device``, their labels there, [(path, error)] of
    the pictures that could not be read, in the workers or by the device decoder)."""
    if not isinstance(batch, PictureBatch):  # a plain (images, labels) pair
        batch = PictureBatch(batch[0], batch[1], [], [])
    failed = list(batch.failed)
    labels = batch.labels
    if isinstance(batch.images, list):
        if decode is None:
            raise ValueError("a batch of encoded files needs decode=(size, resize mode, interpolation)")
        images, bad = decode_batch(batch.images, decode[0], decode[1], device, decode[2],  # type: ignore[arg-type]
                                   paths=batch.paths)
        if bad:
            gone = {i for i, _ in bad}
            failed += [(batch.paths[i] if batch.paths else f"picture {i}", error) for i, error in bad]
            labels = labels[[i for i in range(len(labels)) if i not in gone]]
    else:
        images = batch.images.to(device, non_blocking=_async(device))
    return images, labels.to(device, non_blocking=_async(device)), failed


def _topk_correct(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    k = min(5, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    hits = top == labels[:, None]
    return hits[:, 0].sum(), hits.any(dim=1).sum()


def train_step(t: Trainer, images: Tensor, labels: Tensor, batch_size: int | None = None
               ) -> tuple[Tensor, Tensor, float]:
    """One optimizer step on a uint8 batch: (mean loss over its pictures, [top-1 hits, top-5 hits,
    pictures], learning rate used).

    The loss that is back-propagated is summed over the pictures and divided by ``batch_size``
    (default: their number), the batch the loader was asked for: a batch that lost unreadable
    pictures keeps a full one's scale, every picture weighs the same wherever it landed, and DDP's
    average over processes stays the single-process gradient with no extra communication. A batch
    with no readable picture still runs (zero gradient), so every process takes the same steps."""
    lr = t.schedule.apply(t.optimizer, t.step)
    x = t.augment(images.to(t.device, non_blocking=_async(t.device)), step_generator(t.seed, t.rank, t.step))
    labels = labels.to(t.device, non_blocking=_async(t.device))
    n = len(labels)
    with _autocast(t.device, t.amp_dtype):
        logits = t.model(x)
    if n:
        loss = t.criterion(logits.float(), labels)
        objective = loss if batch_size in (None, n) else loss * (n / batch_size)
    else:  # keeps the graph (and DDP's gradient exchange) whole; contributes nothing
        loss = objective = logits.float().sum() * 0.0
    t.optimizer.zero_grad(set_to_none=True)
    if t.scaler is not None:
        t.scaler.scale(objective).backward()
        t.scaler.step(t.optimizer)
        t.scaler.update()
    else:
        objective.backward()
        t.optimizer.step()
    t.step += 1
    with torch.no_grad():
        top1, top5 = _topk_correct(logits.detach(), labels)
    count = top1.new_full((), n)  # a fill kernel: torch.tensor(n, device=cuda) would wait for the GPU to drain
    return loss.detach(), torch.stack([top1, top5, count]), lr


def _all_reduce(x: Tensor, op: str = "sum") -> Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        if op == "mean":
            x /= dist.get_world_size()
    return x


def train_one_epoch(t: Trainer, loader: DataLoader, epoch: int, *, start_batch: int, steps_per_epoch: int,
                    log: MetricsLog, log_every: int = 20, max_steps: int | None = None,
                    checkpoint: Callable[[int, int], Any] | None = None, checkpoint_every: int = 0,
                    progress: bool = True, running: Tensor | None = None) -> tuple[int, float]:
    """Train from batch ``start_batch`` of ``epoch`` to its end (or to ``max_steps``). Returns
    (batches of the epoch done, mean training loss per picture over the epoch's batches so far,
    all ranks).

    ``running`` is this process's (loss x pictures, pictures) of the epoch's batches before
    ``start_batch`` (float64 on ``t.device``), added to in place: a checkpoint saves it, so a
    resumed epoch's loss is the whole epoch's, as an uninterrupted run's (the plateau schedule
    reads it when there is no validation set). Unreadable pictures are left out of their batch
    and recorded in ``t.unreadable``; logged rows carry the run's count of them (``skipped``)."""
    t.model.train()
    bar = tqdm(total=steps_per_epoch, initial=start_batch, desc=f"epoch {epoch}", disable=not progress,
               dynamic_ncols=True, leave=False)
    loss_sum = running if running is not None else torch.zeros(2, dtype=torch.float64, device=t.device)
    done, tick, images_seen = start_batch, time.perf_counter(), 0
    local_batch = loader.batch_size or 1
    skipped = t.unreadable.counts if t.unreadable is not None else {"train": 0}
    for batch in loader:
        images, labels, failed = _on_device(batch, t.decode, t.device)
        if failed and t.unreadable is not None:
            t.unreadable.add("train", failed)
        loss, hits, lr = train_step(t, images, labels, batch_size=local_batch)
        count = hits[2].double()
        loss_sum += torch.stack([loss.double() * count, count])
        done, images_seen = done + 1, images_seen + local_batch * t.world_size
        bar.update(1)
        last = done == steps_per_epoch or (max_steps is not None and t.step >= max_steps)
        if t.step % log_every == 0 or last:
            local = torch.cat([(loss.double() * count)[None], hits.double(),
                               torch.tensor([skipped["train"]], dtype=torch.float64, device=t.device)])
            total_loss, top1, top5, pictures, total_skipped = _all_reduce(local).tolist()
            elapsed = time.perf_counter() - tick
            row = {"event": "train", "step": t.step, "epoch": epoch,
                   "loss": total_loss / pictures if pictures else None, "lr": lr,
                   "top1": 100 * top1 / pictures if pictures else None,
                   "top5": 100 * top5 / pictures if pictures else None,
                   "images_per_s": images_seen / elapsed if elapsed > 0 else None, "skipped": int(total_skipped)}
            log.log(row)
            postfix = {"loss": "-" if row["loss"] is None else f"{row['loss']:.4f}", "lr": f"{lr:.3g}"}
            if total_skipped:
                postfix["skipped"] = int(total_skipped)
            bar.set_postfix(postfix)
            tick, images_seen = time.perf_counter(), 0
        if checkpoint is not None and checkpoint_every and t.step % checkpoint_every == 0 and done < steps_per_epoch:
            checkpoint(epoch, done)
        if max_steps is not None and t.step >= max_steps:
            break
    bar.close()
    return done, _mean_loss(loss_sum)


def _mean_loss(running: Tensor) -> float:
    """Mean loss per picture of (loss x pictures, pictures) summed over the processes."""
    total, pictures = _all_reduce(running.clone()).tolist()
    return total / pictures if pictures else math.nan


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, augment: BatchAugment, device: torch.device, *,
             amp_dtype: torch.dtype | None = None, decode: tuple[int, str, str] | None = None,
             progress: bool = False, protocol: str = "center",
             unreadable: UnreadableFiles | None = None) -> dict[str, float]:
    """Validation, summed over all ranks: mean cross-entropy (without label smoothing), top-1 and
    top-5 accuracy (percent) of the readable pictures, and how many could not be read.

    ``protocol`` ``center``: the centre crop (``augment``'s evaluation input); ``ten``: the
    paper's test, alexnet_zoo.eval.evaluate's own code (:func:`alexnet_zoo.eval.evaluate.predict`: ten
    crops, softmax averaged), the loss then being that of the averaged probabilities."""
    if protocol not in ("center", "ten"):
        raise ValueError(f"unknown validation protocol {protocol!r}; choose center or ten")
    was_training = model.training
    model.eval()
    preprocess = None
    if protocol == "ten":
        preprocess = ImagePreprocess(dataclasses.replace(augment.p, crop=augment.crop)).to(device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top-1 hits, top-5 hits
    count = bad = 0  # readable and unreadable pictures (host counters: no copy to the GPU per batch)
    for batch in tqdm(loader, desc="val", disable=not progress, leave=False, dynamic_ncols=True):
        images, labels, failed = _on_device(batch, decode, device)
        if failed and unreadable is not None:
            unreadable.add("val", failed)
        if len(labels):
            with _autocast(device, amp_dtype):
                if preprocess is not None:
                    scores = predict(model, [images], "ten", preprocess)  # probabilities
                else:
                    scores = model(augment(images))  # logits
            if preprocess is not None:
                loss = nn.functional.nll_loss(scores.float().clamp_min(1e-45).log(), labels, reduction="sum")
            else:
                loss = nn.functional.cross_entropy(scores.float(), labels, reduction="sum")
            top1, top5 = _topk_correct(scores, labels)
            sums += torch.stack([loss.double(), top1.double(), top5.double()])
        count, bad = count + len(labels), bad + len(failed)
    model.train(was_training)
    totals = torch.cat([sums, torch.tensor([count, bad], dtype=torch.float64).to(device)])
    loss, top1, top5, count, bad = _all_reduce(totals).tolist()
    if count == 0:
        raise ValueError("the validation set is empty" + (f" ({int(bad)} unreadable pictures)" if bad else ""))
    return {"loss": loss / count, "top1": 100 * top1 / count, "top5": 100 * top5 / count, "count": int(count),
            "unreadable": int(bad)}


# ---- setup ------------------------------------------------------------------------------------------

def _init_distributed(backend: str, device: str = "auto") -> tuple[int, int, int]:
    """(rank, world size, local rank); joins the process group when torchrun started several
    (auto: NCCL when the processes train on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            on_gpu = device.startswith("cuda") or device == "auto"
            backend = "nccl" if torch.cuda.is_available() and on_gpu else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return rank, world, local_rank


def _require_tensorboard() -> None:
    """--tensorboard without the package fails here, before any data or model is loaded, not at
    the first logged step of a long run."""
    try:
        import torch.utils.tensorboard  # noqa: F401 - imports the tensorboard package
    except ImportError as err:
        raise ImportError(f"--tensorboard needs the tensorboard package (pip install tensorboard): {err}") from err


def _gather(obj: Any) -> list[Any]:
    """Every process's ``obj`` (all_gather_object under DDP; [obj] alone)."""
    if dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """The devices this process can train on, for error messages."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        found.append("mps")
    return found


def check_device(name: str) -> torch.device | None:
    """The device ``name`` stands for (None for ``auto``), or ValueError naming it and what this
    machine has: ``--device cuda`` without a GPU used to be a torch traceback at the first copy."""
    if name == "auto":
        return None
    have = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name!r} is not a device name (cpu, cuda, cuda:N, mps); available here: {have}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None else
                   f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU or driver")
            raise ValueError(f"{name}: no CUDA GPU is available ({why}); available here: {have}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: there are {torch.cuda.device_count()} CUDA GPUs; available here: {have}")
    elif device.type == "mps":
        if not _mps_available():
            built = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_built()
            why = ("no Metal device (macOS 12.3+ on an Apple GPU)" if built else "this torch build has no MPS support")
            raise ValueError(f"{name}: Apple's MPS is not available ({why}); available here: {have}")
        if device.index not in (None, 0):
            raise ValueError(f"{name}: there is one MPS device, 'mps'; available here: {have}")
    elif device.type != "cpu":
        raise ValueError(f"{name}: training runs on cpu, cuda or mps; available here: {have}")
    return device


def _device(name: str, local_rank: int, world: int = 1) -> torch.device:
    """The training device: ``name`` checked, ``auto`` resolved, ``cuda`` made this process's GPU."""
    device = check_device(name)
    if device is None:  # auto
        device = torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() and world == 1
                              else "cpu")
    if device.type == "cuda" and device.index is None:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {local_rank} of this node has no GPU of its own: {torch.cuda.device_count()} "
                             f"CUDA GPUs for {world} processes")
        device = torch.device("cuda", local_rank)
    if device.type == "mps":
        device = torch.device("mps")
        if world > 1:
            raise ValueError("--device mps trains in one process: torch.distributed has no backend for MPS tensors")
    return device


def _amp_dtype(name: str, devices: Sequence[torch.device]) -> torch.dtype | None:
    """--amp's dtype, refused up front where autocast would fail on these devices (bf16 on a GPU
    without it); bf16 on a CPU without native bf16 runs on generic kernels (alexnet_zoo.ops.onednn)."""
    dtype = AMP_DTYPES[name]
    for device in devices:
        if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"--amp bf16: {device} ({torch.cuda.get_device_name(device)}) has no bf16; "
                             f"use --amp fp16")
        if dtype == torch.bfloat16 and device.type == "mps" and not torch.backends.mps.is_macos_or_newer(14, 0):
            raise ValueError("--amp bf16 on mps needs macOS 14 or newer; use --amp fp16")
    return dtype


def _async(device: torch.device) -> bool:
    """Pinned memory and non-blocking copies: on CUDA only. MPS and the CPU copy in order."""
    return device.type == "cuda"


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _model_state(module: nn.Module) -> dict[str, Tensor]:
    """The weights in the grouped AlexNet's names and layout, whatever the parallelism."""
    return module.grouped_state_dict() if isinstance(module, TwoTowerAlexNet) else module.state_dict()


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _say(rank: int, message: str) -> None:
    if rank == 0:
        print(message, flush=True)


# ---- main -------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | argparse.Namespace | None = None) -> dict[str, Any]:
    """Train; returns a summary (output folder, step, epoch, last validation, final model folder,
    last checkpoint, unreadable training pictures skipped)."""
    if isinstance(argv, argparse.Namespace):
        args = argv
        check_args(args)
    else:
        args = parse_args(argv)
    rank, world, local_rank = _init_distributed(args.dist_backend, args.device)
    try:
        return _run(args, rank, world, local_rank)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _run(args: argparse.Namespace, rank: int, world: int, local_rank: int) -> dict[str, Any]:
    if args.batch_size % world:
        raise ValueError(f"--batch-size {args.batch_size} (global) does not split over {world} processes")
    if args.towers and world > 1:
        raise ValueError("--towers (model parallelism) runs in one process; do not combine it with torchrun")
    if args.tensorboard:
        _require_tensorboard()
    device = _device(args.device, local_rank, world)
    tower_devices = [d.strip() for d in args.towers.split(",")] if args.towers else None
    if tower_devices:  # the first tower's device takes the batches (pinned memory when it is a GPU)
        device = torch.device(tower_devices[0])
    amp_dtype = _amp_dtype(args.amp, [torch.device(d) for d in tower_devices] if tower_devices else [device])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.deterministic
        if args.tf32:  # matmuls in TF32 (convolutions already are, by PyTorch's default)
            torch.set_float32_matmul_precision("high")
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    local_batch = args.batch_size // world
    out = Path(args.output_dir)

    # data
    train_set, val_set, classes = load_data(args)
    if args.num_classes is not None and args.num_classes < len(classes):
        raise ValueError(f"--num-classes {args.num_classes} is fewer than the {len(classes)} training classes")
    raw = isinstance(train_set, ImageFiles) and train_set.raw
    sampler = EpochSampler(train_set, num_replicas=world, rank=rank, seed=args.seed)
    steps_per_epoch = sampler.num_samples // local_batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training pictures do not fill one batch of {args.batch_size}")
    pin = _async(device)
    train_loader = make_loader(train_set, batch_size=local_batch, sampler=sampler, workers=args.workers,
                               pin_memory=pin, raw=raw, drop_last=True, prefetch_factor=args.prefetch_factor,
                               seed=args.seed)
    val_loader = None
    if val_set is not None:
        val_loader = make_loader(val_set, batch_size=args.eval_batch_size or local_batch,
                                 sampler=ShardSampler(len(val_set), num_replicas=world, rank=rank),
                                 workers=args.workers, pin_memory=pin, raw=raw,
                                 prefetch_factor=args.prefetch_factor, seed=args.seed)
    base = PREPROCESSINGS[args.preprocessing]
    preprocessing = dataclasses.replace(base, resize=args.image_size, crop=args.crop_size)
    decode = (args.image_size, base.resize_mode, base.interpolation) if raw else None

    # model, optimizer, schedule
    torch.manual_seed(args.seed)  # the same initial weights in every process
    num_classes = args.num_classes or len(classes)
    model = create_model(args.arch, num_classes=num_classes, init=args.init, dropout=args.dropout,
                         **_model_overrides(args.model_config))
    model.preprocessing = preprocessing
    if tower_devices:
        module: nn.Module = TwoTowerAlexNet.from_grouped(model, tower_devices)
        device = module.devices[0]
    else:
        module = model.to(device)
    if args.channels_last:
        module.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(module, args.optimizer, lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay, groups=args.param_groups)
    schedule = LRSchedule(args.lr_schedule, args.lr, steps_per_epoch=steps_per_epoch,
                          total_steps=steps_per_epoch * args.epochs, gamma=args.lr_gamma,
                          step_epochs=args.lr_step_epochs, patience=args.plateau_patience,
                          threshold=args.plateau_threshold, max_drops=args.plateau_max_drops,
                          warmup_steps=round(args.warmup_epochs * steps_per_epoch), min_lr=args.min_lr)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None

    # resume
    step = epoch = epoch_step = skipped_before = 0
    # this process's (loss x pictures, pictures) of the current epoch's batches; a checkpoint holds
    # the sum over the processes, which rank 0 takes back on resume
    running = torch.zeros(2, dtype=torch.float64, device=device)
    end_pending = False  # the checkpoint was written after the epoch's last batch, before its validation
    resumed_from = None
    if args.resume:
        source = out if args.resume == "latest" else Path(args.resume)
        if args.resume == "latest" and not list_checkpoints(out):
            _say(rank, f"--resume: no checkpoint in {out} yet; starting from scratch")
        else:
            resumed_from = find_checkpoint(source)
            weights, state, rng = load_training_checkpoint(resumed_from, rank)
            if state["batch_size"] != args.batch_size:
                raise ValueError(f"{resumed_from}: trained with --batch-size {state['batch_size']}, not "
                                 f"{args.batch_size}; the data order would not continue")
            if isinstance(module, TwoTowerAlexNet):
                module.load_grouped_state_dict(weights)
            else:
                module.load_state_dict(weights)
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            step, epoch, epoch_step = state["step"], state["epoch"], state["epoch_step"]
            skipped_before = int(state.get("skipped", 0))
            end_pending = bool(state.get("epoch_end_pending", False))
            if state.get("epoch_loss") is not None:
                if rank == 0:
                    running = torch.tensor(state["epoch_loss"], dtype=torch.float64, device=device)
            elif epoch_step:
                _say(rank, f"{resumed_from} predates saved epoch losses: epoch {epoch}'s loss will cover its "
                           f"batches from {epoch_step} on")
            if rng is not None and state.get("world_size") == world:
                restore_rng(rng)
            else:
                torch.manual_seed(args.seed + 1_000_003 * rank + step)
            _say(rank, f"resumed from {resumed_from}: step {step}, epoch {epoch}, batch {epoch_step}"
                       + (" (trained; validating it now)" if end_pending else ""))
    if resumed_from is None:
        if list_checkpoints(out):
            raise FileExistsError(f"{out} holds checkpoints of an earlier run; pass --resume, or another --output-dir")
        torch.manual_seed(args.seed + 1_000_003 * rank)  # dropout: one stream per process

    train_model: nn.Module = module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                              gradient_as_bucket_view=True)
    if args.compile:
        train_model = torch.compile(train_model)
    augment = BatchAugment(preprocessing, args.crop_size, train=True, flip=args.flip, random_crop=args.random_crop,
                           pca_std=args.pca_std, channels_last=args.channels_last)
    eval_augment = BatchAugment(preprocessing, args.crop_size, train=False, channels_last=args.channels_last)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    unreadable = UnreadableFiles(out, rank=rank, resume=resumed_from is not None)
    if rank == 0:
        unreadable.counts["train"] = skipped_before  # the run's count goes on from the checkpoint's
    t = Trainer(train_model, module, criterion, optimizer, schedule, augment, device, amp_dtype, scaler, decode,
                args.seed, rank, world, step, unreadable)

    log = MetricsLog(out, enabled=rank == 0, resume_step=step if resumed_from else None, tensorboard=args.tensorboard,
                     redo_epoch_end=end_pending)
    if rank == 0:
        config = {"args": {k: _plain(v) for k, v in vars(args).items()}, "world_size": world, "device": str(device),
                  "local_batch_size": local_batch, "steps_per_epoch": steps_per_epoch, "num_classes": num_classes,
                  "classes": classes[:1000], "model_config": model.config.to_dict(), "augment": augment.describe(),
                  "sources": RECIPE_SOURCES, "torch": torch.__version__, "resumed_from": _plain(resumed_from)}
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "run_config.json", config)

    def train_state(at_epoch: int, at_batch: int, pending: bool) -> dict[str, Any]:
        """What a checkpoint holds besides weights and random states (collective: every rank)."""
        unreadable.sync(_gather)  # failures.txt lists every file skipped up to this checkpoint
        skipped = _all_reduce(torch.tensor([unreadable.counts["train"]], dtype=torch.float64, device=device))
        return {"epoch": at_epoch, "epoch_step": at_batch, "epoch_end_pending": pending,
                "epoch_loss": _all_reduce(running.clone()).tolist(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict() if scaler else None, "world_size": world,
                "batch_size": args.batch_size, "seed": args.seed, "skipped": int(skipped.item())}

    written: dict[str, Any] = {}

    def checkpoint(at_epoch: int, at_batch: int) -> Path:
        if written.get("at") == (t.step, at_epoch, at_batch):  # --max-steps on a --checkpoint-every step:
            return written["path"]  # saved already; rewriting a folder in place is not atomic
        state = train_state(at_epoch, at_batch, pending=at_batch == steps_per_epoch)
        path = save_training_checkpoint(out, t.step, model_state=_model_state(module), train_state=state, rank=rank,
                                        keep=args.keep_checkpoints, barrier=_barrier)
        written.update(at=(t.step, at_epoch, at_batch), path=path)
        return path

    progress = args.progress and rank == 0
    val_metrics: dict[str, float] | None = None
    last_checkpoint: Path | None = resumed_from
    if end_pending and resumed_from is not None and resumed_from.resolve().parent != (out / "checkpoints").resolve():
        last_checkpoint = checkpoint(epoch, epoch_step)  # another run's checkpoint: its state is not ours to change
    while epoch < args.epochs and not schedule.should_stop:
        if not end_pending:
            if args.max_steps is not None and t.step >= args.max_steps:
                break
            sampler.set_epoch(epoch, epoch_step * local_batch)
            done, _ = train_one_epoch(t, train_loader, epoch, start_batch=epoch_step, steps_per_epoch=steps_per_epoch,
                                      log=log, log_every=args.log_every, max_steps=args.max_steps,
                                      checkpoint=checkpoint, checkpoint_every=args.checkpoint_every,
                                      progress=progress, running=running)
            last_checkpoint = checkpoint(epoch, done)  # before validation, plots or TensorBoard can lose it
            if done < steps_per_epoch:  # stopped by --max-steps part-way through the epoch
                break
        end_pending = False
        train_loss = _mean_loss(running)
        error = None if val_loader is not None else train_loss
        if val_loader is not None and ((epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs):
            try:
                # validation draws no random numbers; forked anyway, so the training stream (saved
                # before it) continues the same whether or not a resume redid the validation
                cuda = sorted({d.index or 0 for d in _devices_of(module) if d.type == "cuda"})
                with torch.random.fork_rng(devices=cuda, device_type="cuda"):
                    val_metrics = evaluate(module, val_loader, eval_augment, device, amp_dtype=amp_dtype,
                                           decode=decode, progress=progress, protocol=args.val_protocol,
                                           unreadable=unreadable)
            except Exception:
                if rank == 0:
                    print(f"validation after epoch {epoch} failed; its training is saved in {last_checkpoint}: "
                          f"fix the cause and run again with --resume to validate it and go on",
                          file=sys.stderr, flush=True)
                raise
            log.log({"event": "val", "step": t.step, "epoch": epoch, "loss": val_metrics["loss"],
                     "lr": schedule.lr(max(t.step - 1, 0)), "top1": val_metrics["top1"], "top5": val_metrics["top5"],
                     "protocol": args.val_protocol, "unreadable": val_metrics["unreadable"]})
            error = 1 - val_metrics["top1"] / 100
            _say(rank, f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_metrics['loss']:.4f}, "
                       f"top-1 {val_metrics['top1']:.2f}%, top-5 {val_metrics['top5']:.2f}% ({args.val_protocol})"
                       + (f", {val_metrics['unreadable']} unreadable" if val_metrics["unreadable"] else ""))
        elif val_loader is None:
            _say(rank, f"epoch {epoch}: train loss {train_loss:.4f} (no validation set: the schedule reads it)")
        if error is not None and schedule.epoch_end(error):
            _say(rank, f"epoch {epoch}: the error stopped improving; learning rate divided by 10 "
                       f"({schedule.drops} of {schedule.max_drops})")
        if not args.plateau_stop:
            schedule.should_stop = False
        log.log({"event": "epoch", "step": t.step, "epoch": epoch, "loss": train_loss, "lr": schedule.lr(t.step)})
        epoch, epoch_step = epoch + 1, 0
        running.zero_()
        if last_checkpoint is not None:  # the same weights: only the schedule's verdict and the epoch change
            update_training_state(last_checkpoint, train_state(epoch, 0, pending=False), rank=rank,
                                  barrier=_barrier)
        if rank == 0:
            plot_metrics(log.rows(), out / "curves.png")

    unreadable.sync(_gather)
    skipped = _all_reduce(torch.tensor([unreadable.counts["train"]], dtype=torch.float64, device=device)).item()
    if skipped:
        _say(rank, f"skipped {int(skipped)} unreadable training pictures; listed in {unreadable.path}")
    final = None
    if rank == 0:
        plot_metrics(log.rows(), out / "curves.png")
        if args.export:
            grouped = module.to_grouped() if isinstance(module, TwoTowerAlexNet) else module
            meta: dict[str, Any] = {
                "description": f"Trained from scratch with alexnet_zoo.train ({epoch} epochs, {t.step} steps).",
                "classes": classes, "training": {"step": t.step, "epoch": epoch, "val": val_metrics,
                                                 "recipe": "alexnet_zoo.train", "run_dir": str(out)}}
            if val_metrics is not None:  # read by `alexnet-zoo weights publish` for the model card
                dataset = str(args.val_dir or (args.data / "val" if args.data else "synthetic validation set"))
                meta["metrics"] = [{"top1": val_metrics["top1"], "top5": val_metrics["top5"], "dataset": dataset,
                                    "protocol": f"{_PROTOCOL_NAMES[args.val_protocol]} {args.crop_size}, after "
                                                f"the last epoch",
                                    "source": f"alexnet_zoo.train run {out}"}]
            final = save_pretrained(grouped, out / "final", preprocessing=preprocessing, meta=meta)
    log.close()
    _barrier()
    return {"output_dir": out, "step": t.step, "epoch": epoch, "val": val_metrics, "final": final,
            "checkpoint": last_checkpoint, "skipped": int(skipped)}


def _devices_of(module: nn.Module) -> set[torch.device]:
    return {p.device for p in module.parameters()}


if __name__ == "__main__":
    main(sys.argv[1:])
