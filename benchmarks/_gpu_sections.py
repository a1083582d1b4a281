"""The plan and the compute sections of benchmarks/gpu_check.py (tests, fidelity, inference, the
Triton LRN; training, decoding and faiss are in _gpu_training.py and _gpu_faiss.py), one function a
section, each taking the run's :class:`Plan` and its :class:`~_gpu_report.Section`. What a machine cannot run (no CUDA, no
faiss-gpu, no Triton, no pictures) is recorded as skipped with the reason, never left out silently.

Timings reuse benchmarks/train_throughput.py (``measure``: warm-up, then interleaved rounds with the
device synchronised, median seconds per call; the recipe's training step; the loader's per-worker
rates) and the library itself (``alexnet_zoo.train``'s loader, device decoding and step;
``alexnet_zoo.retrieval``'s factory choice and GPU copies), so what is measured is what ships.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from train_throughput import measure

from alexnet_zoo import alexnet
from alexnet_zoo.train.augment import PAPER_PREPROCESSING, BatchAugment
from alexnet_zoo.train.data import ImageFiles

__all__ = ["EPOCH_IMAGES", "NO_CUDA", "Plan", "fidelity", "inference", "lrn_kernels", "precision", "pytest_outcome",
           "run_tests", "static_compiles"]

EPOCH_IMAGES = 1_281_167  # ILSVRC-2012 training pictures: one epoch
NO_CUDA = "no CUDA GPU here"
Precision = tuple[torch.dtype | None, bool]  # (autocast dtype or None for fp32, TF32 allowed)


@dataclass(frozen=True)
class Plan:
    """What the run measures with: the full sizes on a GPU, tiny ones with ``--dry-run``."""

    root: Path  # the repository (tests/ lives there)
    device: torch.device
    dry_run: bool
    pictures: list[Path]  # JPEGs for the real-data sections (empty: those are skipped)
    weights: str | None  # a local weights folder for the fidelity section (None: random, seed 0)
    batch: int  # inference and pipeline batch
    train_batches: tuple[int, ...]
    vectors: int  # faiss database size
    dim: int
    workers: int  # loader worker processes
    rounds: int
    steps: int  # calls per timed round
    inference_batches: tuple[int, ...]

    @property
    def amp(self) -> torch.dtype | None:
        """The training autocast: bf16 on a GPU; fp32 on a CPU, whose bf16 is mostly emulated (slow)."""
        return torch.bfloat16 if self.cuda else None

    @property
    def amp_name(self) -> str:
        return "bf16" if self.amp is not None else "fp32"

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def precisions(self) -> dict[str, Precision]:
        if self.cuda:
            return {"fp32": (None, False), "tf32": (None, True), "fp16": (torch.float16, False),
                    "bf16": (torch.bfloat16, False)}
        if self.dry_run:  # what a CPU checks: that the code runs (the fidelity section tries bf16)
            return {"fp32": (None, False)}
        return {"fp32": (None, False), "bf16": (torch.bfloat16, False)}  # the CPU has no TF32; fp16 is emulated


@contextlib.contextmanager
def precision(device: torch.device, amp: torch.dtype | None, tf32: bool) -> Iterator[None]:
    """Autocast to ``amp`` (None: fp32) with TF32 matmuls and convolutions allowed or not (cuDNN
    allows TF32 by default: fp32 figures must turn it off to be fp32)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        # no autocast weight cache: CUDA graph capture needs that (each call is one forward anyway)
        with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None, cache_enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def static_compiles() -> None:
    """One static graph per batch size (as a deployment has), and room for every graph this run
    compiles of AlexNet.forward (precisions x batch sizes x train/eval): past dynamo's default limit
    of 8 it would quietly run eager and the "compile" rows would time that."""
    config = torch._dynamo.config
    config.automatic_dynamic_shapes = False
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, 64)


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _eval_input(plan: Plan, limit: int) -> torch.Tensor:
    """The evaluation input (256 short side, centre 227 crop, the paper's mean) of up to ``limit``
    readable pictures, on the device."""
    files = ImageFiles([(p, 0) for p in plan.pictures[:limit]], 256, "short_side")
    squares = [item.image for item in (files[i] for i in range(len(files))) if item.image is not None]
    if not squares:
        raise FileNotFoundError(f"none of the {len(files)} pictures given could be read")
    return BatchAugment(PAPER_PREPROCESSING, 227, train=False)(torch.stack(squares).to(plan.device))


def _model(plan: Plan) -> nn.Module:
    torch.manual_seed(0)
    return alexnet(pretrained=plan.weights) if plan.weights else alexnet()


# ---- the CUDA tests (the item 1) -------------------------------------------------------------

def run_tests(s, plan: Plan) -> None:
    """``pytest -m cuda`` (the tests marked as needing a GPU) in a subprocess, within the budget."""
    # a test module that imports a package this machine lacks (fastapi, say) must not stop the CUDA tests
    command = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-m", "cuda", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", str(plan.root / "tests")]
    s.set(command=" ".join(["python", *command[1:]]))
    if not plan.cuda:
        s.set(status="skipped", reason=f"{NO_CUDA}: the tests marked cuda skip themselves on a CPU")
        return
    env = {**os.environ, "PYTHONPATH": str(plan.root)}
    try:
        done = subprocess.run(command, cwd=plan.root, env=env, capture_output=True, text=True, check=False,
                              timeout=max(s.left(), 30))
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        s.set(status="cut", reason=f"pytest ran past the section's budget ({err.timeout:.0f} s)",
              output_tail=out.splitlines()[-40:])
        return
    lines = (done.stdout + done.stderr).splitlines()
    s.set(returncode=done.returncode, summary=lines[-1] if lines else "", output_tail=lines[-40:],
          **pytest_outcome(lines, done.returncode))
    s.report.log("\n".join(lines[-15:]))


def pytest_outcome(lines: list[str], returncode: int) -> dict:
    """status, collection_errors and failures of a ``pytest -rfEs`` run. A module this machine cannot
    import (fastapi missing, say) is an error and exit 1 though every CUDA test may have passed: its
    "ERROR tests/x.py" line is kept apart from a test's "ERROR tests/x.py::test" and "FAILED" lines."""
    errors = [line for line in lines if line.startswith("ERROR tests/")]
    uncollected = [line for line in errors if "::" not in line.split(" - ")[0]]
    broken = [line for line in lines if line.startswith("FAILED ")] + [e for e in errors if e not in uncollected]
    failed = bool(broken) or returncode not in (0, 1) or (returncode == 1 and not uncollected)
    return {"status": "failed" if failed else "done", "collection_errors": uncollected, "failures": broken}


# ---- fidelity (item 6; run early: it is cheap and says whether the fast numbers mean anything) -------

def _relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def fidelity(s, plan: Plan) -> None:
    """fc7 cosine of fp16 / bf16 autocast against fp32 on the pictures; the CUDA fp32 forward
    against the CPU's (TF32 off) within 1e-4 of the largest logit."""
    if not plan.pictures:
        s.set(status="skipped", reason="no pictures (give --images)")
        return
    x = _eval_input(plan, 64 if not plan.dry_run else 4)
    model = _model(plan).to(plan.device).eval()
    s.set(pictures=len(x), weights=plan.weights or "random (seed 0): give --weights for trained ones")
    with precision(plan.device, None, False):
        ref = model.extract(x, ("fc7", "fc8"))
    half = {"fp16": torch.float16, "bf16": torch.bfloat16} if plan.cuda else {"bf16": torch.bfloat16}
    for name, amp in half.items():
        with precision(plan.device, amp, False):
            fc7 = model.extract(x, ("fc7",))["fc7"].float()
        cos = F.cosine_similarity(fc7, ref["fc7"], dim=1)  # near 1 with random weights whatever the precision:
        s.add({"name": f"fc7 cosine {name} vs fp32", "min": cos.min().item(), "mean": cos.mean().item(),
               "max_relative_diff": _relative(fc7, ref["fc7"])})  # their fc7 vectors are all nearly parallel
    if not plan.cuda:
        s.skip("CUDA fp32 forward vs CPU", NO_CUDA)
        return
    cpu = copy.deepcopy(model).cpu()
    with torch.no_grad():
        on_cpu = cpu.extract(x.cpu(), ("fc7", "fc8"))
    for layer in ("fc7", "fc8"):
        err = _relative(ref[layer].cpu(), on_cpu[layer])
        s.add({"name": f"CUDA fp32 {layer} vs CPU", "max_relative_diff": err, "within_1e-4": err <= 1e-4})


# ---- inference (item 2) ------------------------------------------------------------------------------

def _forward(model: nn.Module, x: torch.Tensor, device: torch.device, p: Precision) -> Callable[[], None]:
    def call() -> None:
        with precision(device, *p):
            model(x)
    return call


def _graphed(model: nn.Module, x: torch.Tensor, device: torch.device, p: Precision) -> Callable[[], None]:
    """The forward captured once as a CUDA graph (static input), replayed: no launch overhead."""
    static = x.clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side), precision(device, *p):
        for _ in range(3):  # warm-up on a side stream, as the capture requires (cuDNN picks its algorithms)
            model(static)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with precision(device, *p), torch.cuda.graph(graph):
        model(static)
    return graph.replay


def _models(device: torch.device) -> dict[str, tuple[nn.Module, int]]:
    """(model, input size) per contender and layout: ours at 227, torchvision's at 224, ours without LRN."""
    torch.manual_seed(0)
    ours, tv = alexnet().eval(), torchvision.models.alexnet().eval()
    no_lrn = alexnet(lrn=False).eval()
    no_lrn.load_state_dict(ours.state_dict())
    out = {}
    for name, model, size in (("alexnet", ours, 227), ("torchvision", tv, 224), ("alexnet no-LRN", no_lrn, 227)):
        out[f"{name}|nchw"] = (copy.deepcopy(model).to(device), size)
        out[f"{name}|channels_last"] = (copy.deepcopy(model).to(device, memory_format=torch.channels_last), size)
    return out


def _input(batch: int, size: int, layout: str, device: torch.device) -> torch.Tensor:
    x = torch.randn(batch, 3, size, size, device=device) * 50
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _rows(s, plan: Plan, calls: dict[str, Callable[[], None]], meta: dict[str, dict], batch: int) -> dict[str, float]:
    seconds = measure(calls, plan.rounds, plan.device, warmup=2, steps=plan.steps)
    for name, sec in seconds.items():
        s.add({"name": name, **meta[name], "batch": batch, "ms": 1e3 * sec, "images_per_s": batch / sec})
    return {name: batch / sec for name, sec in seconds.items()}


def inference(s, plan: Plan) -> None:
    """Eager at every precision and layout (batch ``plan.batch`` and 1), then CUDA graphs and
    torch.compile where the budget allows; LRN's share from the no-LRN twin; ours against torchvision's best."""
    models = _models(plan.device)
    rates: dict[str, float] = {}
    for batch in plan.inference_batches:
        calls, meta = {}, {}
        for key, (model, size) in models.items():
            name, layout = key.split("|")
            x = _input(batch, size, layout, plan.device)
            for prec, p in plan.precisions().items():
                if name == "alexnet no-LRN" and (layout == "nchw" or batch == 1):
                    continue
                label = f"{name} {prec} {layout} eager"
                calls[label] = _forward(model, x, plan.device, p)
                meta[label] = {"model": name, "precision": prec, "layout": layout, "mode": "eager"}
        if s.affordable(f"eager, batch {batch}"):
            got = _rows(s, plan, calls, meta, batch)
            rates.update({f"{k} b{batch}": v for k, v in got.items()})
    for prec in plan.precisions():
        ours, bare = rates.get(f"alexnet {prec} channels_last eager b{plan.batch}"), \
            rates.get(f"alexnet no-LRN {prec} channels_last eager b{plan.batch}")
        if ours and bare:
            s.add({"name": f"LRN share of the forward, {prec} channels_last", "batch": plan.batch,
                   "lrn_share": 1 - ours / bare, "over_5_percent": 1 - ours / bare > 0.05})  # the bar
    rates.update(_graphs(s, plan, models))  # seconds in all: before the compiles, which take tens each
    rates.update(_compiled(s, plan, models))
    best = {who: max(((v, k) for k, v in rates.items() if k.startswith(who + " ") and "no-LRN" not in k
                      and k.endswith(f" b{plan.batch}")), default=(0.0, None)) for who in ("alexnet", "torchvision")}
    if best["alexnet"][1] and best["torchvision"][1]:
        s.set(target={"batch": plan.batch, "alexnet_best": best["alexnet"][1], "torchvision_best": best["torchvision"][1],
                      "ratio": best["alexnet"][0] / best["torchvision"][0], "goal": ">= 1.0 with the paper's LRN"})


def _compiled(s, plan: Plan, models: dict) -> dict[str, float]:
    order = [(who, prec) for prec in ("bf16", "fp16", "tf32") for who in ("alexnet", "torchvision")]
    if not plan.cuda or plan.dry_run:
        s.skip("torch.compile", NO_CUDA if not plan.cuda else "dry run: compiling takes tens of seconds a model")
        return {}
    static_compiles()
    rates = {}
    for who, prec in order:
        label = f"{who} {prec} channels_last compile"
        if not s.affordable(label):
            continue
        model, size = models[f"{who}|channels_last"]
        call = _forward(torch.compile(model), _input(plan.batch, size, "channels_last", plan.device), plan.device,
                        plan.precisions()[prec])
        start = time.perf_counter()
        try:
            call()
            torch.cuda.synchronize(plan.device)
        except Exception as err:  # noqa: BLE001 - a compiler failure is a finding: recorded, the rest still runs
            s.skip(label, f"torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
            continue
        compile_s = time.perf_counter() - start
        meta = {label: {"model": who, "precision": prec, "layout": "channels_last", "mode": "compile",
                        "compile_s": compile_s}}
        rates.update({f"{k} b{plan.batch}": v for k, v in _rows(s, plan, {label: call}, meta, plan.batch).items()})
    return rates


def _graphs(s, plan: Plan, models: dict) -> dict[str, float]:
    if not plan.cuda:
        s.skip("CUDA graphs", NO_CUDA)
        return {}
    rates = {}
    for batch in (plan.batch, 1):
        for who in ("alexnet", "torchvision"):
            for prec in ("bf16", "fp32"):
                label = f"{who} {prec} channels_last cuda-graph"
                if not s.affordable(f"{label} b{batch}"):
                    continue
                model, size = models[f"{who}|channels_last"]
                try:
                    call = _graphed(model, _input(batch, size, "channels_last", plan.device), plan.device,
                                    plan.precisions()[prec])
                except Exception as err:  # noqa: BLE001 - a capture the forward does not allow: say which and why
                    s.skip(f"{label} b{batch}", f"capture failed: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
                    continue
                meta = {label: {"model": who, "precision": prec, "layout": "channels_last", "mode": "cuda-graph"}}
                rates.update({f"{k} b{batch}": v for k, v in _rows(s, plan, {label: call}, meta, batch).items()})
    return rates


# ---- the Triton LRN against the torch operations (item 2's kernel) -----------------------------------

def lrn_kernels(s, plan: Plan) -> None:
    """LRN alone, and LRN + the 3x3 stride-2 max pool, on the conv1 and conv2 maps (forward, and
    forward + backward) as CUDA computes them now (the torch expression, then ``F.max_pool2d``) and
    as the Triton kernels do; the largest difference of each. Channels-last first: what training uses."""
    from alexnet_zoo.ops.lrn import local_response_norm
    from alexnet_zoo.ops.lrn_triton import triton_available, triton_lrn, triton_lrn_pool

    if not plan.cuda or not triton_available():
        s.set(status="skipped", reason=NO_CUDA if not plan.cuda else "Triton does not import here")
        return

    def torch_pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(local_response_norm(x), 3, 2, ceil_mode=True)

    def fused_pool(x: torch.Tensor) -> torch.Tensor:
        return triton_lrn_pool(x, True)

    order = [(d, layout) for layout in ("channels_last", "nchw") for d in (torch.bfloat16, torch.float32, torch.float16)]
    for dtype, layout in order:
        for shape in ((plan.batch, 96, 55, 55), (plan.batch, 256, 27, 27)):
            label = f"LRN {'x'.join(map(str, shape))} {str(dtype).split('.')[1]} {layout}"
            if s.affordable(label):
                x = torch.randn(shape, device=plan.device).mul(300).relu().to(dtype)
                x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
                s.add({"name": label, **_lrn_pair(plan, x, local_response_norm, triton_lrn, "lrn"),
                       **_lrn_pair(plan, x, torch_pool, fused_pool, "lrn_pool")})
                del x
    _release(plan.device)


def _lrn_pair(plan: Plan, x: torch.Tensor, reference: Callable, ours: Callable, name: str) -> dict[str, float]:
    """ms forward and forward + backward of the torch composition and the Triton kernel, their ratio, and
    the Triton output's largest difference from the composition's (relative to its largest value)."""
    xg = x.detach().clone().requires_grad_()
    grad = torch.randn_like(reference(x))

    def train(fn: Callable) -> Callable[[], None]:
        return lambda: fn(xg).backward(grad)

    seconds = measure({"torch": lambda: reference(x), "triton": lambda: ours(x), "torch train": train(reference),
                       "triton train": train(ours)}, plan.rounds, plan.device, warmup=2, steps=plan.steps)
    return {f"{name}_torch_ms": 1e3 * seconds["torch"], f"{name}_triton_ms": 1e3 * seconds["triton"],
            f"{name}_torch_train_ms": 1e3 * seconds["torch train"],
            f"{name}_triton_train_ms": 1e3 * seconds["triton train"],
            f"{name}_speedup": seconds["torch"] / seconds["triton"],
            f"{name}_train_speedup": seconds["torch train"] / seconds["triton train"],
            f"{name}_max_relative_diff": _relative(ours(x), reference(x))}
