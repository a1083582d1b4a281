"""The paper's training recipe (Krizhevsky et al. 2012, sections 4-5) on today's hardware.

Defaults are the paper: SGD with momentum 0.9 and weight decay 0.0005 in the paper's own update
rule, batches of 128, learning rate 0.01 divided by 10 when the validation error stops improving
(three times), about 90 epochs, the paper's initialisation, dropout 0.5, random 227 crops of the
256x256 image with horizontal flips, PCA colour shifts, mean subtraction. Each is an option and
is recorded, with its source, in ``run_config.json``. Modern options (bf16/fp16 autocast,
channels-last, ``torch.compile``, label smoothing, warm-up, cosine) are off unless asked for.

One process per GPU under ``torchrun`` (DDP; ``--batch-size`` is the global batch, split over the
processes), or the paper's two-GPU model parallelism with ``--towers cuda:0,cuda:1``. Shaped as
torchvision's reference script: :func:`load_data` and :func:`main` taking an argument list here,
the options in ``args.py``, the loop in ``loop.py``. :func:`main` builds the run in named steps
(data, model, resume, session) and hands it to :class:`~alexnet_zoo.train.session.Session`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from alexnet_zoo.data.transforms import Preprocessing
from alexnet_zoo.factory import create_model
from alexnet_zoo.paths import write_json
from alexnet_zoo.train.args import PREPROCESSINGS, RECIPE_SOURCES, check_args, model_overrides, parse_args
from alexnet_zoo.train.augment import BatchAugment
from alexnet_zoo.train.checkpoint import find_checkpoint, list_checkpoints, load_training_checkpoint, restore_rng
from alexnet_zoo.train.data import EpochSampler, ImageFiles, ShardSampler, folder_samples, make_loader, split_synthetic
from alexnet_zoo.train.distributed import init_distributed, leave_distributed, say
from alexnet_zoo.train.logs import MetricsLog, UnreadableFiles
from alexnet_zoo.train.loop import Trainer
from alexnet_zoo.train.optim import build_optimizer
from alexnet_zoo.train.placement import Placement, place
from alexnet_zoo.train.schedule import LRSchedule
from alexnet_zoo.train.session import Session
from alexnet_zoo.train.towers import TwoTowerAlexNet

__all__ = ["load_data", "main"]


def main(argv: Sequence[str] | argparse.Namespace | None = None) -> dict[str, Any]:
    """Train; returns a summary (output folder, step, epoch, last validation, final model folder,
    last checkpoint, unreadable training pictures skipped)."""
    if isinstance(argv, argparse.Namespace):
        args = argv
        check_args(args)
    else:
        args = parse_args(argv)
    rank, world, local_rank = init_distributed(args.dist_backend, args.device)
    try:
        return _run(args, rank, world, local_rank)
    finally:
        leave_distributed()


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
    build = {"size": args.image_size, "mode": preprocessing.resize_mode,
             "interpolation": preprocessing.interpolation, "raw": raw}
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


# ---- the run, step by step ---------------------------------------------------------------------

@dataclass
class _Data:
    """The data step's result: loaders, their sampler and what the batches need on the device."""

    classes: list[str]
    sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader | None
    steps_per_epoch: int
    preprocessing: Preprocessing  # the run's: --preprocessing at --image-size / --crop-size
    decode: tuple[int, str, str] | None  # (size, resize mode, interpolation) when decoding on the device


@dataclass
class _Model:
    """The model step's result: ``model`` the grouped AlexNet built, ``module`` what trains (the
    model itself on ``device``, or its two towers), and what optimises it."""

    model: nn.Module
    module: nn.Module
    device: torch.device
    num_classes: int
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler | None


@dataclass
class _Start:
    """Where the run starts: from scratch, or where a checkpoint left it."""

    running: Tensor  # (loss x pictures, pictures) of the epoch's batches so far (rank 0's holds the sum)
    step: int = 0
    epoch: int = 0
    epoch_step: int = 0
    skipped: int = 0  # unreadable training pictures skipped before
    end_pending: bool = False
    resumed_from: Path | None = None


def _run(args: argparse.Namespace, rank: int, world: int, local_rank: int) -> dict[str, Any]:
    if args.batch_size % world:
        raise ValueError(f"--batch-size {args.batch_size} (global) does not split over {world} processes")
    if args.towers and world > 1:
        raise ValueError("--towers (model parallelism) runs in one process; do not combine it with torchrun")
    if args.tensorboard:
        _require_tensorboard()
    placement = place(args, local_rank, world)
    out = Path(args.output_dir)
    data = _prepare_data(args, rank, world, placement.pin_memory)
    built = _build_model(args, data, placement)
    start = _resume(args, out, rank, world, built)
    session = _session(args, out, rank, world, data, built, start, placement)
    if rank == 0:
        _write_run_config(session, data, built)
    session.train_epochs()
    return session.finish(data.classes, data.preprocessing)


def _require_tensorboard() -> None:
    """--tensorboard without the package fails here, before any data or model is loaded, not at
    the first logged step of a long run."""
    try:
        import torch.utils.tensorboard  # noqa: F401 - imports the tensorboard package
    except ImportError as err:
        raise ImportError(f"--tensorboard needs the tensorboard package (pip install tensorboard): {err}") from err


def _prepare_data(args: argparse.Namespace, rank: int, world: int, pin_memory: bool) -> _Data:
    """The datasets, this rank's sampler and loaders, and the run's preprocessing."""
    local_batch = args.batch_size // world
    train_set, val_set, classes = load_data(args)
    if args.num_classes is not None and args.num_classes < len(classes):
        raise ValueError(f"--num-classes {args.num_classes} is fewer than the {len(classes)} training classes")
    raw = isinstance(train_set, ImageFiles) and train_set.raw
    sampler = EpochSampler(train_set, num_replicas=world, rank=rank, seed=args.seed)
    steps_per_epoch = sampler.num_samples // local_batch
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training pictures do not fill one batch of {args.batch_size}")
    train_loader = make_loader(train_set, batch_size=local_batch, sampler=sampler, workers=args.workers,
                               pin_memory=pin_memory, raw=raw, drop_last=True, prefetch_factor=args.prefetch_factor,
                               seed=args.seed)
    val_loader = None
    if val_set is not None:
        val_loader = make_loader(val_set, batch_size=args.eval_batch_size or local_batch,
                                 sampler=ShardSampler(len(val_set), num_replicas=world, rank=rank),
                                 workers=args.workers, pin_memory=pin_memory, raw=raw,
                                 prefetch_factor=args.prefetch_factor, seed=args.seed)
    base = PREPROCESSINGS[args.preprocessing]
    preprocessing = dataclasses.replace(base, resize=args.image_size, crop=args.crop_size)
    decode = (args.image_size, base.resize_mode, base.interpolation) if raw else None
    return _Data(classes=classes, sampler=sampler, train_loader=train_loader, val_loader=val_loader,
                 steps_per_epoch=steps_per_epoch, preprocessing=preprocessing, decode=decode)


def _build_model(args: argparse.Namespace, data: _Data, placement: Placement) -> _Model:
    """The model (the same initial weights in every process), placed; optimizer, schedule, scaler."""
    torch.manual_seed(args.seed)  # the same initial weights in every process
    num_classes = args.num_classes or len(data.classes)
    model = create_model(args.arch, num_classes=num_classes, init=args.init, dropout=args.dropout,
                         **model_overrides(args.model_config))
    model.preprocessing = data.preprocessing
    device = placement.device
    if placement.towers:
        module: nn.Module = TwoTowerAlexNet.from_grouped(model, placement.towers)
        device = module.devices[0]
    else:
        module = model.to(device)
    if args.channels_last:
        module.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(module, args.optimizer, lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay, groups=args.param_groups)
    steps = data.steps_per_epoch
    schedule = LRSchedule(args.lr_schedule, args.lr, steps_per_epoch=steps, total_steps=steps * args.epochs,
                          gamma=args.lr_gamma, step_epochs=args.lr_step_epochs, patience=args.plateau_patience,
                          threshold=args.plateau_threshold, max_drops=args.plateau_max_drops,
                          warmup_steps=round(args.warmup_epochs * steps), min_lr=args.min_lr)
    scaler = torch.amp.GradScaler(device.type) if placement.amp_dtype == torch.float16 else None
    return _Model(model=model, module=module, device=device, num_classes=num_classes, optimizer=optimizer,
                  schedule=schedule, scaler=scaler)


def _resume(args: argparse.Namespace, out: Path, rank: int, world: int, built: _Model) -> _Start:
    """Where to start: --resume's checkpoint restored into ``built``, or from scratch (refused
    where ``out`` holds an earlier run's checkpoints); seeds dropout's stream per process."""
    start = _Start(running=torch.zeros(2, dtype=torch.float64, device=built.device))
    if args.resume:
        source = out if args.resume == "latest" else Path(args.resume)
        if args.resume == "latest" and not list_checkpoints(out):
            say(rank, f"--resume: no checkpoint in {out} yet; starting from scratch")
        else:
            _restore(find_checkpoint(source), args, rank, world, built, start)
    if start.resumed_from is None:
        if list_checkpoints(out):
            raise FileExistsError(f"{out} holds checkpoints of an earlier run; pass --resume, or another --output-dir")
        torch.manual_seed(args.seed + 1_000_003 * rank)  # dropout: one stream per process
    return start


def _restore(path: Path, args: argparse.Namespace, rank: int, world: int, built: _Model, start: _Start) -> None:
    """Load the checkpoint at ``path`` into the model, optimizer, schedule, scaler and ``start``."""
    start.resumed_from = path
    weights, state, rng = load_training_checkpoint(path, rank)
    if state["batch_size"] != args.batch_size:
        raise ValueError(f"{path}: trained with --batch-size {state['batch_size']}, not "
                         f"{args.batch_size}; the data order would not continue")
    if isinstance(built.module, TwoTowerAlexNet):
        built.module.load_grouped_state_dict(weights)
    else:
        built.module.load_state_dict(weights)
    built.optimizer.load_state_dict(state["optimizer"])
    built.schedule.load_state_dict(state["schedule"])
    if built.scaler is not None and state.get("scaler"):
        built.scaler.load_state_dict(state["scaler"])
    start.step, start.epoch, start.epoch_step = state["step"], state["epoch"], state["epoch_step"]
    start.skipped = int(state.get("skipped", 0))
    start.end_pending = bool(state.get("epoch_end_pending", False))
    if state.get("epoch_loss") is not None:
        if rank == 0:
            start.running = torch.tensor(state["epoch_loss"], dtype=torch.float64, device=built.device)
    elif start.epoch_step:
        say(rank, f"{path} predates saved epoch losses: epoch {start.epoch}'s loss will cover its "
                  f"batches from {start.epoch_step} on")
    if rng is not None and state.get("world_size") == world:
        restore_rng(rng)
    else:
        torch.manual_seed(args.seed + 1_000_003 * rank + start.step)
    say(rank, f"resumed from {path}: step {start.step}, epoch {start.epoch}, batch {start.epoch_step}"
              + (" (trained; validating it now)" if start.end_pending else ""))


def _session(args: argparse.Namespace, out: Path, rank: int, world: int, data: _Data, built: _Model,
             start: _Start, placement: Placement) -> Session:
    """The training model (DDP- and compile-wrapped as asked), augmentations, trainer and log."""
    train_model: nn.Module = built.module
    if world > 1:
        # lazy, to keep startup light: only torchrun runs need it
        from torch.nn.parallel import DistributedDataParallel

        device = built.device
        train_model = DistributedDataParallel(built.module, gradient_as_bucket_view=True,
                                              device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)
    augment = BatchAugment(data.preprocessing, args.crop_size, train=True, flip=args.flip,
                           random_crop=args.random_crop, pca_std=args.pca_std, channels_last=args.channels_last)
    eval_augment = BatchAugment(data.preprocessing, args.crop_size, train=False, channels_last=args.channels_last)
    unreadable = UnreadableFiles(out, rank=rank, resume=start.resumed_from is not None)
    if rank == 0:
        unreadable.counts["train"] = start.skipped  # the run's count goes on from the checkpoint's
    trainer = Trainer(model=train_model, module=built.module,
                      criterion=nn.CrossEntropyLoss(label_smoothing=args.label_smoothing),
                      optimizer=built.optimizer, schedule=built.schedule, augment=augment, device=built.device,
                      amp_dtype=placement.amp_dtype, scaler=built.scaler, decode=data.decode, seed=args.seed,
                      rank=rank, world_size=world, step=start.step, unreadable=unreadable)
    log = MetricsLog(out, enabled=rank == 0, resume_step=start.step if start.resumed_from else None,
                     tensorboard=args.tensorboard, redo_epoch_end=start.end_pending)
    return Session(args=args, out=out, rank=rank, world=world, trainer=trainer, eval_augment=eval_augment,
                   sampler=data.sampler, train_loader=data.train_loader, val_loader=data.val_loader,
                   steps_per_epoch=data.steps_per_epoch, log=log, unreadable=unreadable, running=start.running,
                   epoch=start.epoch, epoch_step=start.epoch_step, end_pending=start.end_pending,
                   resumed_from=start.resumed_from)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _write_run_config(session: Session, data: _Data, built: _Model) -> None:
    """run_config.json: every option used, where each default comes from, and what was built."""
    args, world = session.args, session.world
    config = {"args": {k: _plain(v) for k, v in vars(args).items()}, "world_size": world,
              "device": str(built.device), "local_batch_size": args.batch_size // world,
              "steps_per_epoch": data.steps_per_epoch, "num_classes": built.num_classes,
              "classes": data.classes[:1000], "model_config": built.model.config.to_dict(),
              "augment": session.trainer.augment.describe(), "sources": RECIPE_SOURCES, "torch": torch.__version__,
              "resumed_from": _plain(session.resumed_from)}
    session.out.mkdir(parents=True, exist_ok=True)
    write_json(session.out / "run_config.json", config)
