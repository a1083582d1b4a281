"""Each Winograd-capable layer of the paper's network alone: Winograd at each tile size against
oneDNN's direct convolution (what the layer runs otherwise), on the same input, in one process.

Layers are conv2 (5x5, groups 2, 27x27), conv3 (3x3, 13x13), conv4 and conv5 (3x3, groups 2),
with paper-initialised weights and ReLU'd inputs; each call includes the fused ReLU and bias.
Contenders run interleaved round by round and the median is reported with its ratio to oneDNN;
``*`` marks the tile size ``winograd.tile_size`` chooses for this input. ``--cpu-time`` times the
calling thread's CPU time with one thread instead of wall time: on a machine shared with other
work it measures the work done, not the scheduler's delays.

    python benchmarks/conv_layers.py --batch 32 --rounds 7
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/conv_layers.py --batch 32
    python benchmarks/conv_layers.py --batch 8 --cpu-time   # the model runs conv1..pool5 8 images at a time
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _environment import environment  # benchmarks/_environment.py, beside this script
from throughput import measure  # benchmarks/throughput.py: the same interleaved median timing

from alexnet_zoo.ops import onednn, winograd
from alexnet_zoo.ops.capabilities import cpu_capabilities
from alexnet_zoo.paths import write_json

# name: (in, out, kernel, groups, map side) as in the paper's network at 227
LAYERS = {"conv2": (96, 256, 5, 2, 27), "conv3": (256, 384, 3, 1, 13),
          "conv4": (384, 384, 3, 2, 13), "conv5": (384, 256, 3, 2, 13)}


def contenders(name: str, batch: int) -> tuple[dict[str, Callable[[], torch.Tensor]], int | None]:
    """The calls to time for one layer, and the tile size the library picks for it."""
    cin, cout, k, groups, side = LAYERS[name]
    conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups).eval()
    torch.nn.init.normal_(conv.weight, 0.0, 0.01)
    x = torch.randn(batch, cin, side, side).relu().contiguous(memory_format=torch.channels_last)
    calls: dict[str, Callable[[], torch.Tensor]] = {"oneDNN direct": lambda: onednn.conv2d(conv, x, relu=True)}
    with torch.inference_mode():  # as the calls run (autograd would keep the plain path)
        chosen = winograd.tile_size(conv, x)
    if chosen is not None:
        for m in (2, 3, 4, 5) if k == 3 else (2, 3, 4):
            calls[f"Winograd F({m}x{m},{k}x{k})"] = lambda m=m: winograd.conv2d(conv, x, relu=True, tile=m)
    return calls, chosen


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cpu-time", action="store_true", help="one thread, timed by its CPU time")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.cpu_time:
        torch.set_num_threads(1)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    env = environment("cpu", capabilities=cpu_capabilities().as_dict()) | {"clock": clock.__name__}
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    rows = []
    for name in LAYERS:
        calls, chosen = contenders(name, args.batch)
        with torch.inference_mode():
            secs = measure(calls, args.rounds, clock=clock)
        base = secs["oneDNN direct"]
        for contender, s in secs.items():
            mark = "*" if chosen is not None and contender.startswith(f"Winograd F({chosen}x") else " "
            rows.append({"layer": name, "batch": args.batch, "contender": contender, "ms": s * 1e3,
                         "vs_onednn": base / s, "chosen": mark == "*"})
            print(f"{name} batch {args.batch:>3} {contender:<24}{mark} {s * 1e3:8.2f} ms  {base / s:5.2f}x oneDNN")
    report = {"environment": env, "results": rows}
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
