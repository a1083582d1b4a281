"""Numeric precision of inference, one vocabulary for evaluation and feature extraction.

``fp32`` is the reference. ``bf16`` autocast runs the convolutions and fc layers on bfloat16
and keeps fc7 vectors within a cosine of 0.999 of fp32's (tested). Whether it is faster cannot be
read off the CPU flags: with the same AVX512-BF16 instructions it is 1.8x fp32 on a Zen 4 EPYC and
0.53x on a Xeon without AMX (docs/benchmarks.md), and about 10x slower where it is emulated (AVX2),
though it still runs there, correctly, with one warning. ``fp16`` is the CUDA choice.

``int8`` is a property of the weights, not a context: a model quantised once
(``alexnet-zoo quantize``, :mod:`alexnet_zoo.deploy.quantize`) and loaded from its folder runs
in int8 on the CPU; :func:`model_precision` refuses ``int8`` for fp32 weights (naming the command
that makes int8 ones) and any float precision for int8 weights, and ``auto`` takes int8 for them.

``auto`` is the fastest precision that meets that fidelity bound on *this* machine: fp16 on CUDA;
on a CPU with native bf16, bf16 if a measurement says so, else fp32. The measurement (the network
at batch 8 in both precisions, about a second) runs once per CPU, torch version and thread count
and is kept in the cache folder (``precision.json``); where that cannot be written it is kept for
the process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time

import torch

from alexnet_zoo.eval.precision_names import PRECISIONS
from alexnet_zoo.ops.capabilities import cpu_capabilities
from alexnet_zoo.paths import cache_dir, write_json

__all__ = ["PRECISIONS", "autocast", "fastest_cpu_precision", "model_precision", "resolve_precision"]


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> fp16 on CUDA, :func:`fastest_cpu_precision` on the CPU, else fp32; other names are
    checked and returned."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return fastest_cpu_precision() if device.type == "cpu" else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"int8 inference runs on the CPU, not {device.type}: choose --device cpu")
    return precision


def model_precision(model: object, precision: str, device: torch.device) -> str:
    """:func:`resolve_precision` for ``model``: int8 weights (``model.precision == "int8"``) run
    with ``auto`` or ``int8`` only, and ``int8`` needs them."""
    stored = getattr(model, "precision", "fp32")
    if stored == "int8":
        if precision not in ("auto", "int8"):
            raise ValueError(f"these weights are int8 (quantised); precision {precision!r} needs the fp32 weights, "
                             f"or choose int8 / auto")
        return resolve_precision("int8", device)
    if precision == "int8":
        raise ValueError("precision int8 needs quantised weights: make them once with 'alexnet-zoo quantize "
                         "--pretrained W --calibration DIR --out Q', then load Q (--pretrained Q)")
    return resolve_precision(precision, device)


_SPEEDUP_NEEDED = 1.1  # bf16 must beat fp32 clearly: a tie keeps the exact reference


def fastest_cpu_precision() -> str:
    """``bf16`` where this CPU computes the network faster in bf16 than in fp32 (measured once,
    cached on disk per CPU, torch version and thread count), else ``fp32``."""
    if not cpu_capabilities().native_bf16:
        return "fp32"
    return _measured_choice(_machine_key())


def _machine_key() -> str:
    caps = cpu_capabilities()
    text = f"{caps.model}|{caps.summary()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def _measured_choice(key: str) -> str:
    try:
        path = cache_dir() / "precision.json"
        known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        path, known = None, {}
    if known.get(key) in ("fp32", "bf16"):
        return known[key]
    fp32_s, bf16_s = _time_network()
    choice = "bf16" if fp32_s > _SPEEDUP_NEEDED * bf16_s else "fp32"
    if path is not None:
        try:
            write_json(path, {**known, key: choice})
        except OSError:
            pass  # a read-only cache: the choice holds for this process
    return choice


def _time_network(batch: int = 8, rounds: int = 3) -> tuple[float, float]:
    """Best-of-``rounds`` seconds of one inference forward pass in fp32 and in bf16 autocast,
    interleaved, on the paper's network with small random weights (timing does not depend on them)."""
    # startup: the CLI parsers import PRECISIONS from here; the model stack (0.1 s) loads only to measure
    from alexnet_zoo.factory import alexnet

    with torch.device("meta"):
        model = alexnet()
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.01, 0.01)
    x = torch.randn(batch, 3, 227, 227) * 50
    best = {"fp32": float("inf"), "bf16": float("inf")}
    with torch.inference_mode():
        for i in range(rounds + 1):  # the first round prepacks the weights: not timed
            for name in ("fp32", "bf16"):
                with torch.autocast("cpu", torch.bfloat16, enabled=name == "bf16"):
                    start = time.perf_counter()
                    model(x)
                    if i:
                        best[name] = min(best[name], time.perf_counter() - start)
    return best["fp32"], best["bf16"]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (none for fp32 and int8)."""
    precision = resolve_precision(precision, device)
    if precision in ("fp32", "int8"):  # int8 is in the weights themselves
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
