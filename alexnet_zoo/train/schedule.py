"""Learning-rate schedules: the paper's (divide by 10 when the validation error stops improving,
three times), Caffe's fixed steps (bvlc_alexnet/solver.prototxt: lr_policy "step", gamma 0.1,
stepsize 100,000 iterations of 256 = every 20 epochs), and the modern warm-up + cosine.

One small class, set every step, with a state of plain numbers (it checkpoints with
``torch.load(weights_only=True)``), instead of torch's schedulers, whose mix of per-step and
per-epoch calls makes an exact mid-epoch resume fragile.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

__all__ = ["LRSchedule", "ScheduleKind"]

ScheduleKind = Literal["plateau", "step", "cosine", "constant"]


class LRSchedule:
    """lr(step) = base_lr x warm-up factor x the schedule's factor.

    - ``plateau``: the paper. :meth:`epoch_end` gets the validation top-1 error; after
      ``patience`` epochs without an improvement of ``threshold`` the rate is divided by 10, at
      most ``max_drops`` times (the paper: three); the next plateau sets :attr:`should_stop`
      ("three times prior to termination").
    - ``step``: Caffe's, multiplied by ``gamma`` every ``step_epochs`` epochs.
    - ``cosine``: from base_lr after the warm-up down to ``min_lr`` at ``total_steps``.
    - ``constant``.
    """

    def __init__(self, kind: ScheduleKind, base_lr: float, *, steps_per_epoch: int, total_steps: int,
                 gamma: float = 0.1, step_epochs: float = 20.0, patience: int = 5, threshold: float = 1e-3,
                 max_drops: int = 3, warmup_steps: int = 0, min_lr: float = 0.0) -> None:
        if kind not in ("plateau", "step", "cosine", "constant"):
            raise ValueError(f"unknown learning-rate schedule {kind!r}; choose plateau, step, cosine or constant")
        if steps_per_epoch < 1 or total_steps < 1:
            raise ValueError(f"a schedule needs at least one step per epoch and in all, got {steps_per_epoch}, "
                             f"{total_steps}")
        self.kind, self.base_lr, self.steps_per_epoch, self.total_steps = kind, base_lr, steps_per_epoch, total_steps
        self.gamma, self.step_size = gamma, max(1, round(step_epochs * steps_per_epoch))
        self.patience, self.threshold, self.max_drops = patience, threshold, max_drops
        self.warmup_steps, self.min_lr = warmup_steps, min_lr
        # plateau state
        self.scale, self.best, self.bad_epochs, self.drops, self.should_stop = 1.0, math.inf, 0, 0, False

    def lr(self, step: int) -> float:
        """The rate for the step that follows ``step`` completed steps."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind == "plateau":
            factor = self.scale
        elif self.kind == "step":
            factor = self.gamma ** (step // self.step_size)
        elif self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            t = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            return self.min_lr + (self.base_lr * warm - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        else:
            factor = 1.0
        return self.base_lr * warm * factor

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr

    def epoch_end(self, error: float) -> bool:
        """Feed the epoch's validation error (plateau only); True when the rate was just divided."""
        if self.kind != "plateau":
            return False
        if error < self.best - self.threshold:
            self.best, self.bad_epochs = error, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return False
        self.bad_epochs = 0
        if self.drops >= self.max_drops:
            self.should_stop = True
            return False
        self.scale *= 0.1
        self.drops += 1
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs,
                "drops": self.drops, "should_stop": self.should_stop}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"the checkpoint's schedule is {state.get('kind')!r}, this run's is {self.kind!r}")
        self.scale, self.best, self.bad_epochs = float(state["scale"]), float(state["best"]), int(state["bad_epochs"])
        self.drops, self.should_stop = int(state["drops"]), bool(state["should_stop"])
