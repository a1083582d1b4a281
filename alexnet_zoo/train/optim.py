"""The paper's update rule (section 5) as an optimizer, and the parameter groups of the recipes.

    v <- 0.9 v - 0.0005 * eps * w - eps * dL/dw ;   w <- w + v

``torch.optim.SGD`` keeps its momentum in gradient units and multiplies by the learning rate at
each step, so the two agree while the rate is constant and differ after every division by 10:
the paper's (and Caffe's SGDSolver's) velocity carries the old rate until it decays. Both are
offered; the paper's is the default.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import nn

__all__ = ["PaperSGD", "ParamGroups", "build_optimizer", "param_groups"]

ParamGroups = Literal["paper", "caffe"]


class PaperSGD(torch.optim.Optimizer):
    """SGD with momentum and weight decay written exactly as the paper's update; the velocity
    lives in weight units (``state["velocity"]``). Multi-tensor (``torch._foreach_*``) per device."""

    def __init__(self, params: Iterable, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"PaperSGD needs lr, momentum, weight_decay >= 0, got {lr}, {momentum}, {weight_decay}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            by_device: dict[tuple, tuple[list, list, list]] = defaultdict(lambda: ([], [], []))
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("PaperSGD does not support sparse gradients")
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params, grads, velocities = by_device[(p.device, p.dtype)]
                params.append(p)
                grads.append(p.grad)
                velocities.append(state["velocity"])
            for params, grads, velocities in by_device.values():
                torch._foreach_mul_(velocities, momentum)
                if decay:
                    torch._foreach_add_(velocities, params, alpha=-lr * decay)
                torch._foreach_add_(velocities, grads, alpha=-lr)
                torch._foreach_add_(params, velocities)
        return loss


def param_groups(model: nn.Module, kind: ParamGroups, weight_decay: float) -> list[dict]:
    """``paper``: one group, every parameter decayed. ``caffe``: BVLC's train_val.prototxt, biases
    at twice the rate (lr_mult 2) and without decay (decay_mult 0)."""
    if kind == "paper":
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay,
                 "lr_mult": 1.0}]
    if kind != "caffe":
        raise ValueError(f"unknown parameter grouping {kind!r}; choose paper or caffe")
    weights = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("bias")]
    biases = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    return [{"params": weights, "weight_decay": weight_decay, "lr_mult": 1.0},
            {"params": biases, "weight_decay": 0.0, "lr_mult": 2.0}]


def build_optimizer(model: nn.Module, name: str, *, lr: float, momentum: float, weight_decay: float,
                    groups: ParamGroups = "paper") -> torch.optim.Optimizer:
    """``paper-sgd`` (:class:`PaperSGD`) or ``sgd`` (``torch.optim.SGD``, foreach)."""
    parameter_groups = param_groups(model, groups, weight_decay)
    if name == "paper-sgd":
        return PaperSGD(parameter_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameter_groups, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True)
    raise ValueError(f"unknown optimizer {name!r}; choose paper-sgd or sgd")
