"""The training loop: one optimizer step (:func:`train_step`), one epoch of them
(:func:`train_one_epoch`) and validation summed over the processes (:func:`evaluate`), on the
state a :class:`Trainer` holds. Batches arrive as uint8 (decoded in the workers, or on the device
here); the augmentation runs on the device (``augment.py``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from alexnet_zoo.data.transforms import ImagePreprocess
from alexnet_zoo.devices import non_blocking
from alexnet_zoo.eval.protocols import predict
from alexnet_zoo.train.augment import BatchAugment, step_generator
from alexnet_zoo.train.data import PictureBatch, decode_batch
from alexnet_zoo.train.distributed import all_reduce
from alexnet_zoo.train.logs import MetricsLog, UnreadableFiles
from alexnet_zoo.train.schedule import LRSchedule

__all__ = ["Trainer", "batch_to_device", "evaluate", "mean_loss", "train_one_epoch", "train_step"]


@dataclass
class Trainer:
    """Everything a step needs. ``model`` is what trains (maybe DDP- and compile-wrapped);
    ``module`` the bare network (AlexNet or TwoTowerAlexNet) it wraps. The seven parts every
    step uses come first; the options after ``device`` are given by name."""

    model: nn.Module
    module: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    augment: BatchAugment
    device: torch.device
    _: KW_ONLY  # the rest by name
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


def batch_to_device(batch: PictureBatch | Sequence[Any], decode: tuple[int, str, str] | None, device: torch.device
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
        images = batch.images.to(device, non_blocking=non_blocking(device))
    return images, labels.to(device, non_blocking=non_blocking(device)), failed


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
    x = t.augment(images.to(t.device, non_blocking=non_blocking(t.device)), step_generator(t.seed, t.rank, t.step))
    labels = labels.to(t.device, non_blocking=non_blocking(t.device))
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
        images, labels, failed = batch_to_device(batch, t.decode, t.device)
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
            total_loss, top1, top5, pictures, total_skipped = all_reduce(local).tolist()
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
    return done, mean_loss(loss_sum)


def mean_loss(running: Tensor) -> float:
    """Mean loss per picture of (loss x pictures, pictures) summed over the processes."""
    total, pictures = all_reduce(running.clone()).tolist()
    return total / pictures if pictures else math.nan


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, augment: BatchAugment, device: torch.device, *,
             amp_dtype: torch.dtype | None = None, decode: tuple[int, str, str] | None = None,
             progress: bool = False, protocol: str = "center",
             unreadable: UnreadableFiles | None = None) -> dict[str, float]:
    """Validation, summed over all ranks: mean cross-entropy (without label smoothing), top-1 and
    top-5 accuracy (percent) of the readable pictures, and how many could not be read.

    ``protocol`` ``center``: the centre crop (``augment``'s evaluation input); ``ten``: the
    paper's test, alexnet_zoo.eval's own code (:func:`alexnet_zoo.eval.protocols.predict`: ten
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
        images, labels, failed = batch_to_device(batch, decode, device)
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
    loss, top1, top5, count, bad = all_reduce(totals).tolist()
    if count == 0:
        raise ValueError("the validation set is empty" + (f" ({int(bad)} unreadable pictures)" if bad else ""))
    return {"loss": loss / count, "top1": 100 * top1 / count, "top5": 100 * top5 / count, "count": int(count),
            "unreadable": int(bad)}
