"""Micro-batching: concurrent picture queries gathered into one forward pass.

Each request puts its preprocessed picture on an asyncio queue and awaits a future. One worker
takes the first waiting picture, then whatever else arrives within ``max_wait`` seconds (up to
``max_batch``), and runs the batch in one thread (the model already uses every core: one batch at
a time is the model-bound rate). A failing batch fails each of its requests with the error, and
the worker goes on with the next: the service keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Run ``embed`` ((N, 3, H, W) float tensor -> (N, dim) vectors) on batches of queued pictures.
    :meth:`start` and :meth:`stop` are called inside the server's event loop (its lifespan)."""

    def __init__(self, embed: Callable[[torch.Tensor], np.ndarray], *, max_batch: int = 32,
                 max_wait: float = 0.005) -> None:
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait >= 0, got {max_batch}, {max_wait}")
        self.embed, self.max_batch, self.max_wait = embed, max_batch, max_wait
        self.batches = 0  # forward passes run, and pictures in them: how well requests were gathered
        self.pictures = 0
        self._queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future[np.ndarray]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alexnet-zoo-model")
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._queue, self._worker, self._pool = None, None, None

    async def __call__(self, picture: torch.Tensor) -> np.ndarray:
        """The vector (dim,) of one preprocessed picture (3, H, W), computed in some batch."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running: start() it in the server's event loop (its lifespan)")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((picture, future))
        return await future

    async def _gather(self) -> list[tuple[torch.Tensor, asyncio.Future[np.ndarray]]]:
        """The first waiting picture and those that come within ``max_wait``, at most ``max_batch``."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 and self._queue.empty():
                break
            try:
                batch.append(self._queue.get_nowait() if not self._queue.empty()
                             else await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(p, f) for p, f in batch if not f.cancelled()]  # a client that went away
            if not live:
                continue
            try:
                stacked = torch.stack([p for p, _ in live])
                vectors = await loop.run_in_executor(self._pool, self.embed, stacked)
            except Exception as err:  # noqa: BLE001 - handed to each request, which answers it
                for _, f in live:
                    if not f.done():
                        f.set_exception(err)
                continue
            self.batches += 1
            self.pictures += len(live)
            for (_, f), v in zip(live, vectors):
                if not f.done():
                    f.set_result(v)

    def stats(self) -> dict[str, Any]:
        return {"batches": self.batches, "pictures": self.pictures}
