"""How decoded batches reach the model: worker processes beside it, or threads between its passes.

DataLoader worker processes decode while the model computes. That hides decoding only where
the model leaves cores idle (a GPU does the forward pass, or the CPU has more cores than torch's
threads). Where the model's threads keep every core busy, a worker preempts one of them and its
partners wait at the next barrier: decoding then costs about twice its own CPU time. Measured on
this project's 2-core machine (``docs/benchmarks.md``), the centre-crop evaluation ran at 0.78 of
the model-only rate with two worker processes and at 0.89 when a thread pool decoded each batch
on both cores between forward passes (``mode="threads"``: the decoders release the GIL).
``mode="auto"`` picks threads on the CPU when torch's threads cover the cores, processes otherwise.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["LOADER_HELP", "LOADER_MODES", "LoaderMode", "iterate_batches", "loader_mode"]

LoaderMode = Literal["auto", "processes", "threads"]
LOADER_MODES = ("auto", "processes", "threads")
LOADER_HELP = ("decode in worker processes beside the model, or in threads between its passes "
               "(auto: threads when the model's CPU threads cover every core)")


def loader_mode(mode: LoaderMode, device: torch.device, workers: int) -> Literal["processes", "threads"]:
    """The mode ``auto`` stands for: threads where the model runs on the CPU with as many torch
    threads as there are usable cores (decoding cannot overlap without stalling it), else
    processes. An explicit mode is returned as is."""
    if mode not in LOADER_MODES:
        raise ValueError(f"unknown loader mode {mode!r}; choose auto, processes or threads")
    if mode != "auto":
        return mode
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = device.type == "cpu" and torch.get_num_threads() >= cores
    return "threads" if busy and workers > 0 else "processes"


def _lower_priority(niceness: int, worker_id: int) -> None:
    os.nice(niceness)


def iterate_batches(dataset: Dataset, batches: Iterable[Sequence[int]], collate: Callable[[list[Any]], Any], *,
                    workers: int = 0, mode: LoaderMode = "auto", device: torch.device | str = "cpu",
                    worker_niceness: int = 0, prefetch_factor: int = 4) -> Iterator[Any]:
    """``collate([dataset[i] for i in batch])`` for each batch of indices, in order.

    ``processes``: a DataLoader with ``workers`` processes (pinned memory on CUDA), each
    ``worker_niceness`` steps below the model in CPU priority. ``threads``: ``workers`` threads
    fetch the items of one batch at a time, while the model waits (no start-up, no inter-process
    copies). ``workers=0``: items are fetched in the calling thread."""
    device = torch.device(device)
    if not 0 <= worker_niceness <= 19:
        raise ValueError(f"worker_niceness must be 0 (the model's priority) to 19 (the lowest), got {worker_niceness}")
    if workers == 0:
        yield from (collate([dataset[i] for i in batch]) for batch in batches)
    elif loader_mode(mode, device, workers) == "threads":
        with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
            for batch in batches:
                yield collate(list(pool.map(dataset.__getitem__, batch)))
    else:
        yield from DataLoader(dataset, batch_sampler=list(batches), num_workers=workers, collate_fn=collate,
                              pin_memory=device.type == "cuda", prefetch_factor=prefetch_factor,
                              worker_init_fn=functools.partial(_lower_priority, worker_niceness)
                              if worker_niceness else None)
