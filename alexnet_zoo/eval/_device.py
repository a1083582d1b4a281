"""Mechanics shared by the evaluation loop and the throughput measurement: a model and its
preprocessing placed on the device a protocol runs on, and the wait for that device that every
timing needs (CUDA and MPS run asynchronously)."""

from __future__ import annotations

import torch
from torch import nn

from alexnet_zoo.data.transforms import ImagePreprocess, Preprocessing
from alexnet_zoo.eval.protocols import score_maps

__all__ = ["prepare", "synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished its queued work, so a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def prepare(model: nn.Module, protocol: str, device: torch.device,
            preprocessing: Preprocessing | None) -> tuple[nn.Module, ImagePreprocess, nn.Module | None]:
    """``model`` in eval mode on ``device`` (channels-last on CUDA), the preprocessing it needs on
    that device, and its dense form for the ``dense`` protocol (else None)."""
    preprocessing = preprocessing or getattr(model, "preprocessing", None)
    if preprocessing is None:
        raise ValueError("the model carries no preprocessing: build it with alexnet(...) / create_model(...) "
                         "or pass preprocessing=")
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    dense = score_maps(model) if protocol == "dense" else None
    return model, ImagePreprocess(preprocessing).to(device), dense
