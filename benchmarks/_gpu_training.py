"""benchmarks/gpu_check.py's training sections: the recipe's step on synthetic batches (eager and
compiled), the real input pipeline on pictures (CPU workers, or nvJPEG with ``decode="device"``),
and the decoders alone. Each training row says the 90-epoch time its rate implies (arithmetic from a
measured rate: 90 x 1,281,167 pictures / images/s)."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torchvision
from _gpu_sections import EPOCH_IMAGES, NO_CUDA, Plan, static_compiles
from torchvision.io import ImageReadMode
from train_throughput import loader_rate, measure, plain_loop, recipe_step, recipe_trainer

from alexnet_zoo.train.data import EpochSampler, ImageFiles, decode_batch, make_loader
from alexnet_zoo.train.loop import batch_to_device, train_step
from alexnet_zoo.train.pack import pack_folder

__all__ = ["decoding", "pipeline", "training"]

TARGET = 16_000  # images/s: 90 epochs in 2 hours (docs/training.md)


@contextlib.contextmanager
def _tf32(allowed: bool) -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _epochs(images_per_s: float) -> dict[str, float | bool]:
    return {"epoch90_hours": 90 * EPOCH_IMAGES / images_per_s / 3600, "meets_16000": images_per_s >= TARGET}


def _step_row(s, plan: Plan, label: str, step: Callable[[], None], batch: int, **meta) -> None:
    seconds = measure({label: step}, plan.rounds, plan.device, warmup=1 if plan.dry_run else 2, steps=plan.steps)[label]
    s.add({"name": label, "batch": batch, **meta, "ms": 1e3 * seconds, "images_per_s": batch / seconds,
           **_epochs(batch / seconds)})


def training(s, plan: Plan) -> None:
    """Forward + backward + the paper's SGD on synthetic uint8 batches already on the device
    (augmentation included, as the recipe runs it): bf16 channels-last eager at every batch, the
    plain torchvision-style fp32 loop for reference, then compiled where the budget allows."""
    dev, amp = plan.device, plan.amp
    for b in plan.train_batches:
        label = f"recipe {plan.amp_name} channels_last eager b{b}"
        if s.affordable(label):
            _step_row(s, plan, label, recipe_step(b, dev, amp=amp, channels_last=True, compile=False), b,
                      precision=plan.amp_name, mode="eager")
            _free(dev)
    label = f"plain loop fp32 nchw b{plan.batch}"
    if s.affordable(label):
        with _tf32(False):
            _step_row(s, plan, label, plain_loop(plan.batch, dev), plan.batch, precision="fp32", mode="eager")
        _free(dev)
    if not plan.cuda or plan.dry_run:
        s.skip("compiled steps", NO_CUDA if not plan.cuda else "dry run: compiling takes tens of seconds a step")
        return
    static_compiles()
    for b in sorted(plan.train_batches, key=lambda b: (b != 256, -b)):  # 256 first, then the largest
        label = f"recipe bf16 channels_last compile b{b}"
        if not s.affordable(label):
            continue
        step = recipe_step(b, dev, amp=amp, channels_last=True, compile=True)
        start = time.perf_counter()
        try:
            step()
            torch.cuda.synchronize(dev)
        except Exception as err:  # noqa: BLE001 - a compiler failure is a finding: recorded, the rest still runs
            s.skip(label, f"torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
            continue
        compile_s = time.perf_counter() - start  # the first step: compiling, and the step itself
        _step_row(s, plan, label, step, b, precision="bf16", mode="compile", compile_s=compile_s)
        del step
        _free(dev)


def _timed_pass(loader, plan: Plan, decode: tuple | None, t, warm: int) -> tuple[float, int, int]:
    """(seconds, pictures, unreadable) over the loader after ``warm`` batches, with ``t``'s step or without."""
    count = failed = 0
    start = time.perf_counter()
    for i, batch in enumerate(loader):
        images, labels, bad = batch_to_device(batch, decode, plan.device)
        if t is not None:
            train_step(t, images, labels, plan.batch)
        if i == warm - 1:
            if plan.cuda:
                torch.cuda.synchronize(plan.device)
            start = time.perf_counter()
        elif i >= warm:
            count, failed = count + len(labels), failed + len(bad)
    if plan.cuda:
        torch.cuda.synchronize(plan.device)
    return time.perf_counter() - start, count, failed


def pipeline(s, plan: Plan) -> None:
    """The recipe's loader on the pictures (repeated to fill the batches; the page cache holds
    them, so this is decoding and resizing, not disk): pictures/s alone and with the bf16 step."""
    if not plan.pictures:
        s.set(status="skipped", reason="no pictures (give --images)")
        return
    warm, timed = (1, 2) if plan.dry_run else (2, 8)
    need = (warm + timed) * plan.batch
    samples = [(p, i % 1000) for i, p in enumerate(plan.pictures)] * math.ceil(need / len(plan.pictures))
    s.set(workers=plan.workers, batch=plan.batch, timed_batches=timed, distinct_pictures=len(plan.pictures))
    for mode in ("cpu", "device"):
        if mode == "device" and not plan.cuda:
            s.skip("device decode (nvJPEG)", NO_CUDA)
            continue
        if not s.affordable(f"{mode} decode"):
            continue
        raw = mode == "device"
        dataset = ImageFiles(samples[:need], 256, "short_side", raw=raw)
        sampler = EpochSampler(dataset, num_replicas=1, rank=0, seed=0, shuffle=False)
        loader = make_loader(dataset, batch_size=plan.batch, sampler=sampler, workers=plan.workers,
                             pin_memory=plan.cuda, raw=raw, drop_last=True)
        decode = (256, "short_side", "bilinear") if raw else None
        t = recipe_trainer(plan.device, amp=plan.amp, channels_last=True, compile=False)
        for with_step in (False, True):
            seconds, count, failed = _timed_pass(loader, plan, decode, t if with_step else None, warm)
            step = f" + {plan.amp_name} step" if with_step else " only"
            row = {"name": f"{mode} decode, loader{step}", "decode": mode,
                   "workers": plan.workers, "pictures": count, "unreadable": failed, "images_per_s": count / seconds}
            s.add({**row, **(_epochs(count / seconds) if with_step and count else {})})
        del loader, t
        _free(plan.device)


def _device_files(paths: list[Path]) -> list[torch.Tensor]:
    """The encoded bytes of the files the recipe would send to nvJPEG (ImageFiles with raw=True)."""
    files = ImageFiles([(p, 0) for p in paths], 256, "short_side", raw=True)
    return [item.image for item in (files[i] for i in range(len(files))) if item.image is not None
            and item.image.dim() == 1]


def _decode_rows(s, plan: Plan, kind: str, encoded: list[torch.Tensor]) -> None:
    batch = (encoded * math.ceil(plan.batch / len(encoded)))[:plan.batch]
    calls = {f"{kind}: CPU libjpeg-turbo, one thread": lambda: [torchvision.io.decode_jpeg(f) for f in batch]}
    if plan.cuda:
        calls[f"{kind}: nvJPEG, batched"] = lambda: torchvision.io.decode_jpeg(batch, mode=ImageReadMode.RGB,
                                                                               device=plan.device)
        calls[f"{kind}: nvJPEG + resize to 256 (decode_batch)"] = lambda: decode_batch(batch, 256, "short_side",
                                                                                        plan.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's note on TorchCodec
            seconds = measure(calls, plan.rounds, plan.device, warmup=1, steps=1)
    finally:
        torch.set_num_threads(threads)
    for name, sec in seconds.items():
        s.add({"name": name, "pictures": len(batch), "distinct": len(encoded), "images_per_s": len(batch) / sec})
    if not plan.cuda:
        s.skip(f"{kind}: nvJPEG", NO_CUDA)


def decoding(s, plan: Plan, folder: Path | None) -> None:
    """Pictures/s of the decoders alone, on the pictures as they are and packed to 256x256 JPEGs
    (``alexnet-zoo pack``), and the recipe's whole worker (``loader_rate``: decode + resize)."""
    jpegs = [p for p in plan.pictures if p.suffix.lower() in (".jpg", ".jpeg")]
    encoded = _device_files(jpegs)
    if folder is None or not encoded:
        s.set(status="skipped", reason="no JPEGs nvJPEG could take among the pictures (give --images)")
        return
    _decode_rows(s, plan, "as given", encoded)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        source.mkdir()
        for p in jpegs:
            (source / p.name).symlink_to(p.resolve())
        pack_folder(source, Path(tmp) / "packed", size=256, workers=min(8, os.cpu_count() or 1), progress=False)
        _decode_rows(s, plan, "packed 256x256", _device_files(sorted((Path(tmp) / "packed").iterdir())))
    if s.affordable("recipe worker"):
        s.add({"name": "recipe worker, one thread (read + decode + resize)",
               **loader_rate(folder, limit=len(jpegs), rounds=1 if plan.dry_run else 3)})
