"""The ceiling of an evaluation's speed: the protocol's per-batch work alone, on images already in
memory, measured with the same code :func:`alexnet_zoo.eval.loop.evaluate` runs per batch, so the
full pipeline (decoding included) can be judged against it (benchmarks/eval_throughput.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from alexnet_zoo.data.transforms import Preprocessing
from alexnet_zoo.devices import resolve_device
from alexnet_zoo.eval._device import prepare, synchronize
from alexnet_zoo.eval.metrics import Accuracy
from alexnet_zoo.eval.precision import autocast, model_precision
from alexnet_zoo.eval.protocols import image_sizes, predict

__all__ = ["model_throughput"]


def model_throughput(model: nn.Module, protocol: str = "center", *, sizes: Sequence[int] | None = None,
                     batch_size: int = 32, batches: int = 5, device: torch.device | str | None = None,
                     precision: str = "auto", flip: bool = True, preprocessing: Preprocessing | None = None,
                     warmup: int = 1) -> float:
    """Images per second of the protocol's work alone (crops, normalisation, forward, softmax,
    ranking: everything :func:`alexnet_zoo.eval.loop.evaluate` does per batch) on random uint8
    images already in memory: the ceiling the full pipeline, decoding included, is measured against."""
    device = resolve_device(device)
    precision = model_precision(model, precision, device)
    model, preprocess, dense = prepare(model, protocol, device, preprocessing)
    sizes = image_sizes(protocol, preprocess.preprocessing, sizes if protocol == "dense" else None)
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (batch_size, 3, s, s), dtype=torch.uint8, generator=generator) for s in sizes]
    labels = torch.zeros(batch_size, dtype=torch.long)
    if device.type == "cuda":  # as the DataLoader delivers them
        images, labels = [x.pin_memory() for x in images], labels.pin_memory()

    def one_batch(accuracy: Accuracy | None) -> Accuracy:
        x = [img.to(device, non_blocking=True) for img in images]
        probs = predict(model, x, protocol, preprocess, dense=dense, flip=flip)
        accuracy = accuracy or Accuracy(probs.shape[-1], device=device)
        accuracy.update(probs, labels.to(device))
        return accuracy

    with torch.inference_mode(), autocast(device, precision):
        accuracy = None
        for _ in range(warmup):
            accuracy = one_batch(accuracy)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            accuracy = one_batch(accuracy)
        synchronize(device)
    return batches * batch_size / (time.perf_counter() - start)
