"""A training run once it is built: its epochs (train, checkpoint, validate, the schedule's
verdict, the curves) and its end (the count of unreadable pictures, the exported model).

Checkpoints follow the order that makes a crash at any point resumable to the same losses: an
epoch's checkpoint is written as soon as its last batch is trained, before validation (which can
fail) and before plots or TensorBoard; the epoch's verdict then only updates its ``state.pt``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from alexnet_zoo.data.transforms import Preprocessing
from alexnet_zoo.train.augment import BatchAugment
from alexnet_zoo.train.checkpoint import save_training_checkpoint, update_training_state
from alexnet_zoo.train.data import EpochSampler
from alexnet_zoo.train.distributed import all_reduce, barrier, gather, say
from alexnet_zoo.train.logs import MetricsLog, UnreadableFiles
from alexnet_zoo.train.loop import Trainer, evaluate, mean_loss, train_one_epoch
from alexnet_zoo.train.plot import plot_metrics
from alexnet_zoo.train.towers import TwoTowerAlexNet
from alexnet_zoo.weights.store import save_pretrained

__all__ = ["PROTOCOL_NAMES", "Session"]

PROTOCOL_NAMES = {"center": "centre crop", "ten": "ten crops (corners, centre, mirrored; softmax averaged)"}


def _model_state(module: nn.Module) -> dict[str, Tensor]:
    """The weights in the grouped AlexNet's names and layout, whatever the parallelism."""
    return module.grouped_state_dict() if isinstance(module, TwoTowerAlexNet) else module.state_dict()


def _devices_of(module: nn.Module) -> set[torch.device]:
    return {p.device for p in module.parameters()}


@dataclass
class Session:
    """A built run and where it stands. ``running`` is this process's (loss x pictures, pictures)
    of the current epoch's batches; a checkpoint holds the sum over the processes, which rank 0
    takes back on resume. ``end_pending``: the checkpoint was written after the epoch's last
    batch, before its validation. Built by name (``Session(args=..., ...)``)."""

    args: argparse.Namespace
    out: Path
    rank: int
    world: int
    trainer: Trainer
    eval_augment: BatchAugment
    sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader | None
    steps_per_epoch: int
    log: MetricsLog
    unreadable: UnreadableFiles  # the trainer's: where skipped pictures are counted and listed
    running: Tensor
    epoch: int = 0
    epoch_step: int = 0
    end_pending: bool = False
    resumed_from: Path | None = None
    last_checkpoint: Path | None = None
    val_metrics: dict[str, float] | None = None
    _written: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> bool:
        return self.args.progress and self.rank == 0

    def skipped(self) -> int:
        """Unreadable training pictures skipped so far by every process (collective: every rank);
        failures.txt lists each of them after this call."""
        self.unreadable.sync(gather)
        count = torch.tensor([self.unreadable.counts["train"]], dtype=torch.float64, device=self.trainer.device)
        return int(all_reduce(count).item())

    def train_state(self, at_epoch: int, at_batch: int, pending: bool) -> dict[str, Any]:
        """What a checkpoint holds besides weights and random states (collective: every rank)."""
        t, args = self.trainer, self.args
        skipped = self.skipped()
        return {"epoch": at_epoch, "epoch_step": at_batch, "epoch_end_pending": pending,
                "epoch_loss": all_reduce(self.running.clone()).tolist(),
                "optimizer": t.optimizer.state_dict(), "schedule": t.schedule.state_dict(),
                "scaler": t.scaler.state_dict() if t.scaler else None, "world_size": self.world,
                "batch_size": args.batch_size, "seed": args.seed, "skipped": skipped}

    def checkpoint(self, at_epoch: int, at_batch: int) -> Path:
        """Write the checkpoint of this step (once: a second call at the same point returns it)."""
        t = self.trainer
        if self._written.get("at") == (t.step, at_epoch, at_batch):  # --max-steps on a --checkpoint-every step:
            return self._written["path"]  # saved already; rewriting a folder in place is not atomic
        state = self.train_state(at_epoch, at_batch, pending=at_batch == self.steps_per_epoch)
        path = save_training_checkpoint(self.out, t.step, model_state=_model_state(t.module), train_state=state,
                                        rank=self.rank, keep=self.args.keep_checkpoints, barrier=barrier)
        self._written.update(at=(t.step, at_epoch, at_batch), path=path)
        return path

    def train_epochs(self) -> None:
        """Epochs until --epochs, the schedule's stop, or --max-steps."""
        self.last_checkpoint = self.resumed_from
        resumed = self.resumed_from
        if self.end_pending and resumed is not None and resumed.resolve().parent != (self.out / "checkpoints").resolve():
            # another run's checkpoint: its state is not ours to change
            self.last_checkpoint = self.checkpoint(self.epoch, self.epoch_step)
        while self.epoch < self.args.epochs and not self.trainer.schedule.should_stop:
            if not self.end_pending and not self._train_epoch():
                break
            self.end_pending = False
            self._end_epoch()

    def _train_epoch(self) -> bool:
        """The current epoch's batches from ``epoch_step``, then its checkpoint; False when
        --max-steps stopped the run (before the epoch or part-way through it)."""
        t, args = self.trainer, self.args
        if args.max_steps is not None and t.step >= args.max_steps:
            return False
        self.sampler.set_epoch(self.epoch, self.epoch_step * (args.batch_size // self.world))
        done, _ = train_one_epoch(t, self.train_loader, self.epoch, start_batch=self.epoch_step,
                                  steps_per_epoch=self.steps_per_epoch, log=self.log, log_every=args.log_every,
                                  max_steps=args.max_steps, checkpoint=self.checkpoint,
                                  checkpoint_every=args.checkpoint_every, progress=self.progress, running=self.running)
        self.last_checkpoint = self.checkpoint(self.epoch, done)  # before validation, plots or TensorBoard can lose it
        return done == self.steps_per_epoch  # else stopped by --max-steps part-way through the epoch

    def _end_epoch(self) -> None:
        """Validate (when due), let the schedule judge the epoch, log it, move to the next and
        record the verdict in the epoch's checkpoint, then draw the curves."""
        args, schedule, epoch = self.args, self.trainer.schedule, self.epoch
        train_loss = mean_loss(self.running)
        error = None if self.val_loader is not None else train_loss
        if self.val_loader is not None and ((epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs):
            error = self._validate(train_loss)
        elif self.val_loader is None:
            say(self.rank, f"epoch {epoch}: train loss {train_loss:.4f} (no validation set: the schedule reads it)")
        if error is not None and schedule.epoch_end(error):
            say(self.rank, f"epoch {epoch}: the error stopped improving; learning rate divided by 10 "
                           f"({schedule.drops} of {schedule.max_drops})")
        if not args.plateau_stop:
            schedule.should_stop = False
        step = self.trainer.step
        self.log.log({"event": "epoch", "step": step, "epoch": epoch, "loss": train_loss, "lr": schedule.lr(step)})
        self.epoch, self.epoch_step = epoch + 1, 0
        self.running.zero_()
        if self.last_checkpoint is not None:  # the same weights: only the schedule's verdict and the epoch change
            update_training_state(self.last_checkpoint, self.train_state(self.epoch, 0, pending=False),
                                  rank=self.rank, barrier=barrier)
        if self.rank == 0:
            plot_metrics(self.log.rows(), self.out / "curves.png")

    def _validate(self, train_loss: float) -> float:
        """The epoch's validation, logged and said; returns the error the schedule reads."""
        t, args, epoch = self.trainer, self.args, self.epoch
        try:
            # validation draws no random numbers; forked anyway, so the training stream (saved
            # before it) continues the same whether or not a resume redid the validation
            cuda = sorted({d.index or 0 for d in _devices_of(t.module) if d.type == "cuda"})
            with torch.random.fork_rng(devices=cuda, device_type="cuda"):
                metrics = evaluate(t.module, self.val_loader, self.eval_augment, t.device, amp_dtype=t.amp_dtype,
                                   decode=t.decode, progress=self.progress, protocol=args.val_protocol,
                                   unreadable=self.unreadable)
        except Exception:
            if self.rank == 0:
                print(f"validation after epoch {epoch} failed; its training is saved in {self.last_checkpoint}: "
                      f"fix the cause and run again with --resume to validate it and go on",
                      file=sys.stderr, flush=True)
            raise
        self.val_metrics = metrics
        self.log.log({"event": "val", "step": t.step, "epoch": epoch, "loss": metrics["loss"],
                      "lr": t.schedule.lr(max(t.step - 1, 0)), "top1": metrics["top1"], "top5": metrics["top5"],
                      "protocol": args.val_protocol, "unreadable": metrics["unreadable"]})
        say(self.rank, f"epoch {epoch}: train loss {train_loss:.4f}, val loss {metrics['loss']:.4f}, "
                       f"top-1 {metrics['top1']:.2f}%, top-5 {metrics['top5']:.2f}% ({args.val_protocol})"
                       + (f", {metrics['unreadable']} unreadable" if metrics["unreadable"] else ""))
        return 1 - metrics["top1"] / 100

    def finish(self, classes: list[str], preprocessing: Preprocessing) -> dict[str, Any]:
        """The run's end (collective: every rank): say what was skipped, draw the curves, export
        the model (rank 0) and return the summary :func:`alexnet_zoo.train.run.main` returns."""
        skipped = self.skipped()
        if skipped:
            say(self.rank, f"skipped {skipped} unreadable training pictures; listed in {self.unreadable.path}")
        final = None
        if self.rank == 0:
            plot_metrics(self.log.rows(), self.out / "curves.png")
            if self.args.export:
                final = self._export(classes, preprocessing)
        self.log.close()
        barrier()
        return {"output_dir": self.out, "step": self.trainer.step, "epoch": self.epoch, "val": self.val_metrics,
                "final": final, "checkpoint": self.last_checkpoint, "skipped": skipped}

    def _export(self, classes: list[str], preprocessing: Preprocessing) -> Path:
        """The trained model as pretrained weights in OUTPUT_DIR/final, with its classes and metrics."""
        args, out, step, val = self.args, self.out, self.trainer.step, self.val_metrics
        module = self.trainer.module
        grouped = module.to_grouped() if isinstance(module, TwoTowerAlexNet) else module
        meta: dict[str, Any] = {
            "description": f"Trained from scratch with alexnet_zoo.train ({self.epoch} epochs, {step} steps).",
            "classes": classes, "training": {"step": step, "epoch": self.epoch, "val": val,
                                             "recipe": "alexnet_zoo.train", "run_dir": str(out)}}
        if val is not None:  # read by `alexnet-zoo weights publish` for the model card
            dataset = str(args.val_dir or (args.data / "val" if args.data else "synthetic validation set"))
            meta["metrics"] = [{"top1": val["top1"], "top5": val["top5"], "dataset": dataset,
                                "protocol": f"{PROTOCOL_NAMES[args.val_protocol]} {args.crop_size}, after "
                                            f"the last epoch",
                                "source": f"alexnet_zoo.train run {out}"}]
        return save_pretrained(grouped, out / "final", preprocessing=preprocessing, meta=meta)
