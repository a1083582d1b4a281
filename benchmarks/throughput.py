"""Inference throughput of alexnet_zoo's AlexNet against torchvision's, in one process.

Every contender runs on the same batch, dtype and thread count; runs are interleaved round by
round (so drifting clocks and noisy neighbours hit all alike) and the median round is reported.
Contenders:

* ``alexnet_zoo``        - the paper's network at 227, default (fast) path
* ``alexnet_zoo/no-lrn`` - the same weights without LRN: the difference is LRN's cost
* ``plain port``         - the paper's network as a straightforward nn.Sequential with
                            torch.nn.LocalResponseNorm (what most ports do)
* ``torchvision``        - torchvision.models.alexnet at 224, contiguous and channels_last

Ratios are against torchvision's fastest eager fp32 memory format at the same batch size.
``--compile`` adds torch.compile'd torchvision and plain port (and prints their compile time):
the speed a user gets after waiting for the compiler, for comparison.

    python benchmarks/throughput.py                      # batch 1 and 32, fp32 (and bf16 where native)
    python benchmarks/throughput.py --dtypes fp32 bf16   # bf16 even where it is emulated (slow)
    python benchmarks/throughput.py --batch-sizes 32 --rounds 20 --json out.json
    python benchmarks/throughput.py --batch-sizes 32 --dtypes fp32 --cpu-time   # one thread, its CPU time

``--cpu-time`` runs one thread and times the CPU time it spends: on a machine shared with other
work, wall time with 2 threads also measures how often the scheduler parks a thread at a barrier
(more parallel regions pay more), while CPU time measures the work each contender does.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from _environment import environment  # benchmarks/_environment.py, beside this script
from torch import nn

from alexnet_zoo import alexnet
from alexnet_zoo.ops.capabilities import cpu_capabilities
from alexnet_zoo.paths import write_json

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet_samples"


def plain_port() -> nn.Module:
    """The paper's net as most ports write it (torch's LRN divides alpha by n: pass 5 * 1e-4)."""
    lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, 4), nn.ReLU(inplace=True), lrn, nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), lrn, nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(4096, 1000),
    )


def contenders(batch: int, bf16: bool, compile: bool = False) -> dict[str, Callable[[], torch.Tensor]]:
    ours = alexnet().eval()
    no_lrn = alexnet(lrn=False).eval()
    no_lrn.load_state_dict(ours.state_dict())
    port = plain_port().eval()
    tv = torchvision.models.alexnet().eval()
    tv_cl = torchvision.models.alexnet().eval().to(memory_format=torch.channels_last)
    x227 = torch.randn(batch, 3, 227, 227) * 50
    x224 = torch.randn(batch, 3, 224, 224) * 50
    x224_cl = x224.contiguous(memory_format=torch.channels_last)

    def run(model: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                return model(x)
        return call

    calls = {"alexnet_zoo": run(ours, x227), "alexnet_zoo/no-lrn": run(no_lrn, x227),
             "plain port": run(port, x227), "torchvision": run(tv, x224),
             "torchvision/channels_last": run(tv_cl, x224_cl)}
    if compile:
        for name, model, x in (("plain port+compile", port, x227), ("torchvision/cl+compile", tv_cl, x224_cl)):
            call = run(torch.compile(model), x)
            start = time.perf_counter()
            call()
            print(f"batch {batch:>3} {'bf16' if bf16 else 'fp32':<5} {name}: first call (compile) "
                  f"{time.perf_counter() - start:.1f} s")
            calls[name] = call
    return calls


def measure(calls: dict[str, Callable[[], torch.Tensor]], rounds: int, warmup: int = 2,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call (of ``clock``), interleaved round by round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(warmup):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bf16_feature_agreement(limit: int = 64) -> float | None:
    """Lowest cosine between fp32 and bf16 fc7 vectors over real ImageNet pictures (None if the
    shared sample folder is absent). Random paper-initialised weights until pretrained ones exist."""
    files = sorted(SAMPLES.glob("*.JPEG"))[:limit]
    if not files:
        return None
    from PIL import Image
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    images = []
    for f in files:
        img = pil_to_tensor(Image.open(f).convert("RGB"))
        images.append(center_crop(resize(img, [256, 256], antialias=True), [227, 227]).float())
    x = torch.stack(images) - torch.tensor([123.68, 116.78, 103.94])[:, None, None]
    model = alexnet().eval()
    with torch.inference_mode():
        fp32 = model.extract(x, ("fc7",))["fc7"]
        with torch.autocast("cpu", torch.bfloat16):
            bf = model.extract(x, ("fc7",))["fc7"].float()
    return F.cosine_similarity(fp32, bf).min().item()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    native_bf16 = cpu_capabilities().native_bf16
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"] if native_bf16 else ["fp32"],
                        help="default: fp32, and bf16 where this CPU computes it natively "
                             f"({'it does' if native_bf16 else 'it does not'}: {cpu_capabilities().summary()})")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd references")
    parser.add_argument("--cpu-time", action="store_true", help="one thread, timed by its CPU time (not wall time)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1 if args.cpu_time else args.threads)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    env = environment("cpu", capabilities=cpu_capabilities().as_dict()) | {"clock": clock.__name__}
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    results = []
    for batch in args.batch_sizes:
        fp32_tv_best = None
        for dtype in args.dtypes:
            secs = measure(contenders(batch, dtype == "bf16", args.compile), args.rounds, clock=clock)
            if dtype == "fp32":
                fp32_tv_best = min(secs["torchvision"], secs["torchvision/channels_last"])
            lrn_share = 1 - secs["alexnet_zoo/no-lrn"] / secs["alexnet_zoo"]
            for name, s in secs.items():
                row = {"batch": batch, "dtype": dtype, "model": name, "ms": s * 1e3, "images_per_s": batch / s,
                       "vs_torchvision_fp32_best": fp32_tv_best / s if fp32_tv_best else None}
                results.append(row)
                ratio = f"{row['vs_torchvision_fp32_best']:.2f}x" if fp32_tv_best else "-"
                print(f"batch {batch:>3} {dtype:<5} {name:<27} {s * 1e3:8.1f} ms {batch / s:8.1f} img/s  {ratio}")
            print(f"batch {batch:>3} {dtype:<5} LRN share of alexnet_zoo forward: {lrn_share * 100:.1f}%")
            results.append({"batch": batch, "dtype": dtype, "lrn_share": lrn_share})
    for batch in args.batch_sizes:
        rows = {(r["dtype"], r["model"]): r for r in results if r.get("batch") == batch and "model" in r}
        if ("bf16", "alexnet_zoo") in rows and ("fp32", "alexnet_zoo") in rows:
            speedup = rows[("bf16", "alexnet_zoo")]["images_per_s"] / rows[("fp32", "alexnet_zoo")]["images_per_s"]
            print(f"batch {batch:>3} alexnet_zoo bf16 / fp32 throughput: {speedup:.2f}x")
    cosine = bf16_feature_agreement() if "bf16" in args.dtypes else None
    if cosine is not None:
        print(f"bf16 vs fp32 fc7 on real images: min cosine {cosine:.5f}")
    report = {"environment": env, "results": results, "bf16_fc7_min_cosine": cosine}
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
