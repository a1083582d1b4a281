"""Where an index works: the CPU, or a GPU where faiss sees one (a faiss-gpu build with
``StandardGpuResources``), and the copies between them.

Exact and IVF indexes are trained, filled and searched on the GPU and copied back to the CPU for
saving; HNSW graphs stay on the CPU. A faiss-cpu build, or a machine whose CUDA driver is missing,
simply counts no GPU. Torch-free: faiss and numpy only.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from typing import Any, Literal

import faiss
import numpy as np
from tqdm import tqdm

from alexnet_zoo.errors import RetrievalError
from alexnet_zoo.retrieval.index_pca import Projection, assemble, wrap
from alexnet_zoo.retrieval.index_policy import new_index
from alexnet_zoo.retrieval.vector_checks import Metric, faiss_metric

__all__ = ["FAISS_BUILDS", "GPU_MAX_K", "Device", "check_one_faiss_build", "faiss_builds", "filled", "from_gpu",
           "gpu_count", "gpu_parameters", "gpu_supported", "resolve_device", "to_gpu"]

Device = Literal["auto", "cpu", "gpu"]
GPU_MAX_K = 2048  # faiss-gpu's k-selection limit (k and nprobe); larger searches run on the CPU copy


ADD_CHUNK = 1 << 18  # rows a call to faiss's add while filling: progress, no extra memory


# PyPI distributions that install the same ``faiss`` package folder (docs/retrieval.md, "GPU")
FAISS_BUILDS = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cuvs", "faiss-gpu-cu11", "faiss-gpu-cu12", "faiss-gpu-cu12-cuvs",
                "faiss-gpu-cu13-cuvs", "faiss-cuda")


@functools.cache
def faiss_builds() -> tuple[str, ...]:
    """The installed faiss distributions, as "name version" (read once: installs do not change under a process)."""
    found = []
    for name in FAISS_BUILDS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return tuple(found)


def check_one_faiss_build(builds: tuple[str, ...] | None = None) -> None:
    """Refuse two faiss builds side by side (pip installs faiss-gpu beside the faiss-cpu this package
    depends on without a word): both write the one ``faiss`` folder, so it holds whichever was
    unpacked last, and uninstalling either leaves it broken. Says how to keep one."""
    builds = faiss_builds() if builds is None else builds
    if len(builds) > 1:
        names = " ".join(b.split()[0] for b in builds)
        raise RetrievalError(f"{len(builds)} faiss builds are installed side by side ({', '.join(builds)}); they share "
                             f"one 'faiss' folder, which is now a mix of them. Keep one: pip uninstall -y {names} && "
                             "pip install faiss-gpu==1.15.1 (GPU machines; or faiss-cpu)")


def gpu_count() -> int:
    """GPUs faiss can use: 0 on faiss-cpu builds (no ``StandardGpuResources``) or without a CUDA device.
    Two faiss builds installed together are a :class:`RetrievalError` (:func:`check_one_faiss_build`)."""
    check_one_faiss_build()
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except RuntimeError:  # a faiss-gpu build on a machine whose CUDA driver is missing or broken
        return 0


def resolve_device(device: str | None = "auto", *, gpus: int | None = None) -> Literal["cpu", "gpu"]:
    """Where the index works: "auto" (or None) is the GPU when faiss sees one, else the CPU; "gpu" /
    "cuda[:N]" insists on a GPU and raises :class:`RetrievalError` without one; "cpu" opts out.
    ``gpus`` overrides the detected count (for tests and callers that already know)."""
    gpus = gpu_count() if gpus is None else gpus
    name = "auto" if device is None else str(device).lower()
    if name == "cpu":
        return "cpu"
    if name == "auto":
        return "gpu" if gpus > 0 else "cpu"
    if name in ("gpu", "cuda") or name.startswith(("gpu:", "cuda:")):
        if gpus == 0:
            raise RetrievalError(f"device={device!r} asked for a GPU, but faiss sees none (a faiss-cpu build, or no "
                                 "CUDA device); install faiss-gpu or use device='cpu'")
        return "gpu"
    raise ValueError(f"device must be 'auto', 'cpu' or 'gpu', got {device!r}")


def gpu_supported(factory: str) -> bool:
    """Whether faiss-gpu can hold an index of this factory string: flat and IVF (PQ / SQ / flat
    lists, after an optional PCA) can; HNSW graphs cannot (they stay on the CPU)."""
    return "HNSW" not in factory


_GPU_RESOURCES: Any = None


def _gpu_resources() -> Any:
    """One ``StandardGpuResources`` per process (it holds a scratch allocation of the GPU's memory)."""
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    return _GPU_RESOURCES


def to_gpu(index: faiss.Index, factory: str) -> faiss.Index | None:
    """A GPU copy of a CPU index (device 0), or None with a warning when faiss-gpu refuses it (some
    PQ sizes need float16 lookup tables to fit the GPU's shared memory: tried second). The warning
    names the caller of the index method that asked for the copy."""
    error: Exception | None = None
    for half in (False, True):
        options = faiss.GpuClonerOptions()
        options.useFloat16LookupTables = half
        try:
            return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index, options)
        except RuntimeError as err:
            error = err
    warnings.warn(f"faiss-gpu cannot hold {factory} ({str(error).splitlines()[0]}); using the CPU", stacklevel=3)
    return None


def from_gpu(index: faiss.Index) -> faiss.Index:
    """The CPU copy of a GPU index (what is saved and decoded)."""
    return faiss.index_gpu_to_cpu(index)


def gpu_parameters() -> Any:
    """The parameter setter of GPU indexes (nprobe through their IDMap / PCA layers)."""
    return faiss.GpuParameterSpace()


def filled(searched: np.ndarray, x: np.ndarray, factory: str, metric: Metric, projection: Projection | None,
           device: str, rng: np.random.Generator, size: int) -> tuple[faiss.IndexIDMap2, faiss.Index | None]:
    """(CPU index, its GPU copy or None) of ``factory`` trained on ``size`` of the ``searched``
    vectors (those after the PCA) on ``device``, behind the PCA, holding row i under id i. With a
    PCA the GPU copy is of the index behind it, wrapped again (:func:`~alexnet_zoo.retrieval.index_pca.wrap`)."""
    inner = new_index(searched.shape[1], factory, faiss_metric(metric))
    work = to_gpu(inner, factory) if device == "gpu" and gpu_supported(factory) else None
    top = work if work is not None else inner
    if not inner.is_trained:
        top.train(searched[np.sort(rng.choice(len(x), size, replace=False))])
    if projection is not None:
        _add_in_chunks(top, searched, None)  # positions are the ids
        cpu = from_gpu(work) if work is not None else inner
        return assemble(cpu, projection, metric), (wrap(work, projection, metric) if work is not None else None)
    index = faiss.IndexIDMap2(top)
    _add_in_chunks(index, x, np.arange(len(x), dtype=np.int64))
    if work is not None:  # keep the GPU one for searching, the CPU copy for saving and decoding
        return from_gpu(index), index
    return index, None


def _add_in_chunks(index: faiss.Index, x: np.ndarray, ids: np.ndarray | None) -> None:
    """``index.add`` (``add_with_ids``) a chunk of :data:`ADD_CHUNK` rows at a time, so filling
    millions of vectors (minutes) shows progress on a terminal."""
    with tqdm(total=len(x), unit="vec", unit_scale=True, desc="filling the index", disable=None,
              leave=False) as bar:
        for lo in range(0, len(x), ADD_CHUNK):
            hi = min(lo + ADD_CHUNK, len(x))
            if ids is None:
                index.add(x[lo:hi])
            else:
                index.add_with_ids(x[lo:hi], ids[lo:hi])
            bar.update(hi - lo)
