"""benchmarks/gpu_check.py's faiss section: exact, IVF-PQ and IVF-Flat (the factories ``choose_factory``
picks for the size and the device, built with ``new_index``'s settings and copied by ``to_gpu``, as
the library builds them) on random Gaussian vectors, on the GPU and on the CPU. Recall@10 is against the exact GPU
search. On the CPU the exact search runs a share of the queries, and the IVF-PQ add a share of the
vectors (a full CPU build of 10M takes minutes: docs/benchmarks.md has one); each row says its count."""

from __future__ import annotations

import time

import numpy as np
import torch
from _gpu_sections import Plan

__all__ = ["faiss_gpu"]

QUERIES, K = 1000, 10
CPU_BUILD_S = 45  # the least budget the CPU IVF-PQ build may start with (its training cannot be cut short)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)]))


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _vectors(plan: Plan, n: int, seed: int) -> np.ndarray:
    """n x dim float32 Gaussian vectors, drawn on the device (seconds on a GPU, not a minute on one core)."""
    g = torch.Generator(plan.device).manual_seed(seed)
    return torch.randn(n, plan.dim, generator=g, device=plan.device).cpu().numpy()


def faiss_gpu(s, plan: Plan) -> None:
    try:
        import faiss
    except ImportError:
        s.set(status="skipped", reason="faiss is not installed here (neither faiss-cpu nor faiss-gpu)")
        return

    from alexnet_zoo.retrieval.index_gpu import faiss_builds, from_gpu, gpu_count, gpu_parameters, to_gpu
    from alexnet_zoo.retrieval.index_policy import choose_factory, new_index, training_size

    s.set(builds=list(faiss_builds()))
    gpus = gpu_count()
    s.set(faiss=faiss.__version__, gpus=gpus, vectors=plan.vectors, dim=plan.dim, queries=QUERIES)
    if gpus == 0:
        reason = ("faiss has no GPU support here (a faiss-cpu build: no StandardGpuResources; install the faiss-gpu "
                  "wheel, see docs/benchmarks.md)" if not hasattr(faiss, "StandardGpuResources")
                  else "faiss-gpu sees no CUDA device")
        if not plan.dry_run:
            s.set(status="skipped", reason=reason)
            return
        s.skip("GPU exact and IVF-PQ", reason)  # the dry run still checks the CPU half starts
    x, q = _vectors(plan, plan.vectors, 0), _vectors(plan, QUERIES, 1)
    cpu_queries = 100 if plan.dry_run else 200
    flat = faiss.IndexFlatL2(plan.dim)
    add_s, _ = _timed(lambda: flat.add(x))
    search_s, (_, cpu_found) = _timed(lambda: flat.search(q[:cpu_queries], K))
    s.add({"name": "CPU exact", "add_s": add_s, "queries": cpu_queries, "queries_per_s": cpu_queries / search_s,
           "threads": faiss.omp_get_max_threads()})
    truth = cpu_found
    factory = choose_factory(plan.vectors, plan.dim, "ivfpq")  # as built on the CPU (its quantizer may be a graph)
    train = x[:training_size(plan.vectors, factory, "ivfpq", 500_000, plan.dim)]
    s.set(factory=factory, train_size=len(train))
    if gpus:
        gpu = to_gpu(flat, "Flat")  # a GPU copy of the filled index: the copy is the add
        search_s, (_, truth) = _timed(lambda: gpu.search(q, K))
        s.add({"name": "GPU exact", "queries": QUERIES, "queries_per_s": QUERIES / search_s,
               "recall_at_10_vs_cpu": _recall(truth[:cpu_queries], cpu_found)})
        del gpu
        for kind in ("ivfpq", "ivf"):  # as built on a GPU: a flat quantizer
            gpu_factory = choose_factory(plan.vectors, plan.dim, kind, gpu=True)
            _gpu_ivf(s, plan, x, q, truth, gpu_factory, train, (new_index, to_gpu, from_gpu, gpu_parameters))
    flat.reset()  # its 2.5 GB are not needed below
    if s.left() < CPU_BUILD_S and not plan.dry_run:
        s.skip("CPU IVF-PQ", f"under {CPU_BUILD_S} s of the section's budget left: the CPU k-means alone takes about that")
    else:
        _cpu_ivfpq(s, plan, x, q[:cpu_queries], truth[:cpu_queries], factory, train, new_index)


def _gpu_ivf(s, plan: Plan, x, q, truth, factory: str, train, lib) -> None:
    """Train, fill and search an IVF index of ``factory`` on the GPU, then search its CPU copy."""
    import faiss

    new_index, to_gpu, from_gpu, gpu_parameters = lib
    name = f"GPU {factory}"
    if not s.affordable(name):
        return
    index = to_gpu(new_index(plan.dim, factory, faiss.METRIC_L2), factory)
    if index is None:
        s.skip(name, f"faiss-gpu cannot hold {factory}")
        return
    train_s, _ = _timed(lambda: index.train(train))
    add_s, _ = _timed(lambda: index.add(x))
    row = {"name": name, "factory": factory, "train_s": train_s, "add_s": add_s}
    for nprobe in (16, 64, 256):
        gpu_parameters().set_index_parameter(index, "nprobe", nprobe)
        search_s, (_, found) = _timed(lambda: index.search(q, K))
        row[f"nprobe{nprobe}"] = {"queries_per_s": len(q) / search_s, "recall_at_10": _recall(found, truth)}
    s.add(row)
    if s.affordable(f"CPU search of the GPU-built {factory}"):
        cpu = from_gpu(index)
        out = {"name": f"CPU search of the GPU-built {factory}", "factory": factory}
        for nprobe in (16, 64, 256):
            faiss.ParameterSpace().set_index_parameter(cpu, "nprobe", nprobe)
            search_s, (_, found) = _timed(lambda: cpu.search(q[:200], K))
            out[f"nprobe{nprobe}"] = {"queries_per_s": 200 / search_s, "recall_at_10": _recall(found, truth[:200])}
        s.add(out)


def _cpu_ivfpq(s, plan: Plan, x, q, truth, factory: str, train, new_index) -> None:
    """Train on the same sample, then add in chunks of a million while the budget lasts."""
    import faiss

    index = new_index(plan.dim, factory, faiss.METRIC_L2)
    train_s, _ = _timed(lambda: index.train(train))
    added, add_s, chunk = 0, 0.0, 1_000_000
    while added < len(x) and (added == 0 or s.left() > 0):
        seconds, _ = _timed(lambda start=added: index.add(x[start:start + chunk]))
        added, add_s = min(added + chunk, len(x)), add_s + seconds
    row = {"name": "CPU IVF-PQ", "factory": factory, "train_s": train_s, "added": added,
           "add_vectors_per_s": added / add_s}
    if added == len(x):
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", 64)
        search_s, (_, found) = _timed(lambda: index.search(q, K))
        row["nprobe64"] = {"queries_per_s": len(q) / search_s, "recall_at_10": _recall(found, truth)}
    s.add(row)
