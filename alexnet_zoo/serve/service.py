"""What the routes work on: the index and the extractor, loaded once, and the searches they answer.

The index is searched from many requests at once. FAISS documents its CPU indexes as safe for
concurrent searches (nothing here changes the index while serving); its GPU indexes are not, and
:class:`~alexnet_zoo.retrieval.index.VectorIndex` makes its GPU copy on first use, so searches on a
GPU device go through one lock.

Searches and id lookups run in their own pool of threads, one per core, each with one OpenMP
thread for faiss: a search of one query gains nothing from more, and on a busy machine a team of
OpenMP threads waits at each barrier for a thread the scheduler has put aside (4 to 8 ms for a
0.15 ms search, measured on two shared cores). Their own pool also keeps id queries from queuing
behind the decoding of uploads, which runs in the event loop's default pool.

Near-duplicate groups cost a pass over the whole index: each threshold's groups are kept (the last
few), computed once however many requests ask at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np
import torch

from alexnet_zoo.retrieval.index import SearchHit, VectorIndex
from alexnet_zoo.retrieval.index_dedupe import GROUPINGS, Group, duplicate_groups
from alexnet_zoo.retrieval.query import extractor_for, index_device
from alexnet_zoo.retrieval.vector_checks import zero_rows
from alexnet_zoo.serve.api_errors import ApiError
from alexnet_zoo.serve.batching import MicroBatcher

__all__ = ["MAX_K", "Service", "search_threads"]

MAX_K = 1000  # neighbours a request may ask for
_KEPT_GROUPINGS = 8  # (threshold, grouping) results kept
_T = TypeVar("_T")


def _one_omp_thread() -> None:
    """The search pool's initializer: faiss's OpenMP thread count is per calling thread (an ICV of
    its data environment), so this leaves other threads (the duplicates pass) their default."""
    faiss.omp_set_num_threads(1)


def search_threads() -> int:
    """Threads of the search pool: one per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Service:
    """The loaded index and model of one index folder, and the searches the API answers."""

    def __init__(self, folder: str | os.PathLike, *, pretrained: str | None = None, precision: str = "auto",
                 device: str | None = None, max_batch: int = 32, max_wait: float = 0.005,
                 progress: bool = True) -> None:
        folder = Path(folder)
        say = (lambda text: print(f"alexnet-zoo serve: {text}", file=sys.stderr, flush=True)) if progress \
            else (lambda text: None)
        say(f"loading the index {folder} ...")
        self.index = VectorIndex.load(folder, device=index_device(device))
        self.index.keep_lookups()  # neighbours-of-an-id: a lookup, not a pass over the lists
        info = self.index.info
        say(f"{info['count']:,} vectors ({info['factory']}, {info['layer']}); loading the model ...")
        self.extractor = extractor_for({**info, "precision": precision}, pretrained=pretrained, device=device,
                                       folder=folder, batch_size=max_batch)
        say(f"ready: {self.extractor.info()['model']} {info['layer']} on {self.extractor.device}, "
            f"precision {self.extractor.precision}")
        self.folder = folder
        self.batcher = MicroBatcher(self.extractor.embed_batch, max_batch=max_batch, max_wait=max_wait)
        self._search_lock = threading.Lock() if self.index.device == "gpu" else contextlib.nullcontext()
        self._groups: OrderedDict[tuple[float, str], asyncio.Task[tuple[int, list[Group]]]] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Start the batcher and the search pool (in the server's event loop: its lifespan)."""
        self._pool = ThreadPoolExecutor(max_workers=search_threads(), thread_name_prefix="alexnet-zoo-search",
                                        initializer=_one_omp_thread)
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._pool = None

    async def _in_pool(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._pool is None:
            raise RuntimeError("the service is not running: start() it in the server's event loop (its lifespan)")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def check_id(self, item: int) -> int:
        if not 0 <= item < self.index.count:
            raise ApiError(404, "unknown_id", f"no indexed picture has id {item}",
                           f"an id from 0 to {self.index.count - 1} (ids are the ones search results carry)")
        return item

    def _search(self, vectors: np.ndarray, k: int) -> list[list[SearchHit]]:
        with self._search_lock:
            return self.index.search(vectors, k)

    def _search_ids(self, item: int, k: int) -> list[list[SearchHit]]:
        with self._search_lock:  # by the stored vector, in the index's own space (after its PCA, if any)
            return self.index.search_ids([item], k)

    async def by_picture(self, picture: torch.Tensor, k: int) -> list[SearchHit]:
        """The k nearest indexed pictures of a decoded upload (uint8 RGB (3, H, W))."""
        prepared = await asyncio.to_thread(self.extractor.prepare, picture)
        vector = (await self.batcher(prepared))[None]
        if self.index.info["metric"] == "cosine" and zero_rows(vector).size:
            raise ApiError(422, "zero_vector", f"the picture's {self.index.info['layer']} activations are all zero, "
                           "so no indexed picture is nearer than another", "a picture whose features are not zero "
                           "(another picture, or an index of another layer)")
        return (await self._in_pool(self._search, vector, k))[0]

    async def by_id(self, item: int, k: int) -> list[SearchHit]:
        """The k nearest other indexed pictures of indexed picture ``item``."""
        self.check_id(item)
        return await self._in_pool(self._neighbours, item, k)

    def _neighbours(self, item: int, k: int) -> list[SearchHit]:
        """:meth:`by_id`'s lookup and search in one trip to the pool (each trip is a thread wake-up)."""
        vector = self.index.vectors(item, item + 1)
        if self.index.info["metric"] == "cosine" and zero_rows(vector).size:
            raise ApiError(422, "zero_vector", f"indexed picture {item} has a zero vector: it has no neighbours",
                           "the id of a picture with non-zero features")
        hits = self._search_ids(item, k + 1)[0]
        return [h for h in hits if h.id != item][:k]

    async def groups(self, threshold: float, grouping: str) -> tuple[int, list[Group]]:
        """(pairs found, groups) of near-duplicates at cosine >= ``threshold``."""
        if self.index.info["metric"] != "cosine":
            raise ApiError(409, "not_cosine", "near-duplicates need a cosine index; this one is "
                           f"{self.index.info['metric']}", "an index built with --metric cosine")
        if grouping not in GROUPINGS:
            raise ApiError(422, "bad_grouping", f"unknown grouping {grouping!r}", f"one of {', '.join(GROUPINGS)}")
        key = (float(threshold), grouping)
        task = self._groups.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._compute_groups, *key))
            self._groups[key] = task
            while len(self._groups) > _KEPT_GROUPINGS:
                self._groups.popitem(last=False)
        self._groups.move_to_end(key)
        return await asyncio.shield(task)

    def _compute_groups(self, threshold: float, grouping: str) -> tuple[int, list[Group]]:
        with self._search_lock:
            pairs = self.index.duplicates(threshold)
        return len(pairs), duplicate_groups(pairs, grouping)

    def path(self, item: int) -> str:
        return self.index.paths[self.check_id(item)]

    def info(self, max_upload: int) -> dict[str, Any]:
        info, ours = self.index.info, self.extractor.info()
        return {"model": ours["model"], "weights": info.get("weights"), "layer": info["layer"],
                "pool": info.get("pool"), "dim": info["dim"], "count": self.index.count, "kind": info["kind"],
                "factory": info["factory"], "metric": info["metric"], "recall_at_10": info["recall_at_10"],
                "precision": str(self.extractor.precision), "device": str(self.extractor.device), "max_k": MAX_K,
                "max_upload_bytes": max_upload}
