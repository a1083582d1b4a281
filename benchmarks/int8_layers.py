"""Where int8 gains and loses: each stage of the network timed alone, our fp32 against our int8.

``benchmarks/int8.py`` times whole forward passes; this splits them into the stages both
precisions run (input conversion, conv1..conv5, LRN + pooling, pool5, fc6..fc8), so the ratio of
each layer shows which kernels decide the total: on a CPU without VNNI torch's int8 convolutions
multiply at about twice fp32's rate while our fp32 runs conv2..conv5 by Winograd with 4.6-6.25x
fewer multiplications. The stages are the models' own functions called in their forward order; the
script checks that the composed stages give the same logits as the models' forward before timing.
Interleaved round by round, medians reported. ``--gemms`` also times the matrix products an int8
Winograd conv3 would run, torch's int8 GEMM (fbgemm, as a dynamically quantised linear layer) against
the fp32 ``torch.bmm`` our Winograd uses, at each tile size: whether int8 could win there at all.

    python benchmarks/int8_layers.py --batch-size 32 --rounds 7 --gemms
    FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/int8_layers.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn.functional as F
from _environment import environment  # benchmarks/_environment.py, beside this script
from int8 import add_arguments, parse_counts, prepared  # benchmarks/int8.py: the same models and pictures

from alexnet_zoo.models.alexnet import _FEATURE_CHUNK, AlexNet, _conv, to_6x6
from alexnet_zoo.models.quantized import QuantizedAlexNet
from alexnet_zoo.ops import onednn
from alexnet_zoo.ops.capabilities import cpu_capabilities
from alexnet_zoo.ops.pooling import max_pool
from alexnet_zoo.paths import write_json

STAGES = ("input", "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")
Clock = Callable[[str, Callable[[], torch.Tensor]], torch.Tensor]


def fp32_stages(model: AlexNet, x: torch.Tensor, clock: Clock) -> torch.Tensor:
    """The fp32 forward stage by stage, as AlexNet._pool5 runs it: on the CPU fast path the batch
    converted to channels-last once and conv1..pool5 on chunks of _FEATURE_CHUNK images (a stage's
    time is its chunks' sum); without it (ALEXNET_ZOO_NATIVE=0) the whole batch as it is."""
    ceil, lrn = model.config.pool_ceil, model._lrn_args()
    fast = onednn.applies(x, model.conv1)
    a = clock("input", lambda: x.contiguous(memory_format=torch.channels_last) if fast else x)
    pooled = []
    for part in a.split(_FEATURE_CHUNK) if fast else (a,):
        for i in range(1, 6):
            part = clock(f"conv{i}", lambda i=i, p=part: _conv(getattr(model, f"conv{i}"), p, relu=True))
            if i in (1, 2):
                part = clock(f"pool{i}", lambda p=part: max_pool(p, ceil, lrn))
        pooled.append(clock("pool5", lambda p=part: to_6x6(max_pool(p, ceil))))
    a = torch.flatten(torch.cat(pooled), 1)
    for name in ("fc6", "fc7", "fc8"):
        a = clock(name, lambda n=name, v=a: onednn.linear(getattr(model, n), v, relu=n != "fc8"))
    return a


def int8_stages(model: QuantizedAlexNet, x: torch.Tensor, clock: Clock) -> torch.Tensor:
    """The int8 forward (QuantizedAlexNet._stages and _head), stage by stage, whole batch."""
    packed = model.packed_layers()
    a, conv1 = clock("input", lambda: model.conv1_input(x))
    for i in range(1, 6):
        a = clock(f"conv{i}", lambda i=i, v=a: (conv1 if i == 1 else packed[f"conv{i}"])(v))
        if i in (1, 2):
            a = clock(f"pool{i}", lambda i=i, v=a: model._norm_pool(v, i))
    a = clock("pool5", lambda v=a: to_6x6(F.max_pool2d(v, 3, 2, ceil_mode=model.config.pool_ceil)))
    a = torch.flatten(a.contiguous(), 1)
    for name in ("fc6", "fc7"):
        a = clock(name, lambda n=name, v=a: packed[n](v))
    return clock("fc8", lambda v=a: packed["fc8"](v.dequantize()))


def timed(stages: Callable[[Clock], torch.Tensor]) -> tuple[dict[str, float], torch.Tensor]:
    """Seconds per stage of one pass, and its output."""
    seconds = dict.fromkeys(STAGES, 0.0)

    def clock(name: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        start = time.perf_counter()
        out = fn()
        seconds[name] += time.perf_counter() - start
        return out

    return seconds, stages(clock)


def winograd_gemms(batch: int, rounds: int) -> dict[str, dict[str, float]]:
    """GMAC/s of conv3's Winograd-domain products (13x13 maps, 256 -> 384 channels) at output tiles
    2..5: one (tiles, 256) x (256, 384) product per tile position, int8 (per-channel weights, the
    input quantised per call) against fp32, interleaved, medians."""
    torch.manual_seed(0)
    rates: dict[str, dict[str, float]] = {}
    for m in (2, 3, 4, 5):
        a, tiles = m + 2, batch * (-(-13 // m)) ** 2
        v, u = torch.randn(a * a, tiles, 256), torch.randn(a * a, 256, 384) * 0.05
        layers = []
        for w in u.transpose(1, 2):
            layer = nnqd.Linear(256, 384, dtype=torch.qint8)
            scales = (w.abs().amax(1) / 127).double()
            layer.set_weight_bias(torch.quantize_per_channel(w, scales, torch.zeros(384, dtype=torch.long), 0,
                                                             torch.qint8), None)
            layers.append(layer)
        runs = {"int8": lambda v=v, layers=layers: [f(x) for f, x in zip(layers, v, strict=True)],
                "fp32": lambda v=v, u=u: torch.bmm(v, u)}
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds + 1):  # the first round warms up
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
        macs = a * a * tiles * 256 * 384
        rates[f"F({m}x{m},3x3)"] = {name: macs / statistics.median(s[1:]) / 1e9 for name, s in seconds.items()}
    return rates


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, rounds=7)
    parser.add_argument("--gemms", action="store_true", help="also time conv3's Winograd-domain products, int8 and fp32")
    args = parse_counts(parser, argv)

    fp32, int8, _, x = prepared(parser, args)
    runs = {"fp32": lambda clock: fp32_stages(fp32, x, clock), "int8": lambda clock: int8_stages(int8, x, clock)}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    with torch.inference_mode():
        for name, model in (("fp32", fp32), ("int8", int8)):  # the stages are the forward, or the figures mean nothing
            if not torch.equal(timed(runs[name])[1], model(x)):
                raise SystemExit(f"the {name} stages no longer compose to the model's forward: update this script")
        for _ in range(args.rounds):
            for name, run in runs.items():
                rounds[name].append(timed(run)[0])
    median = {name: {s: statistics.median(r[s] for r in rs) for s in STAGES} for name, rs in rounds.items()}
    print(f"batch {args.batch_size}, {torch.get_num_threads()} threads, {cpu_capabilities().summary()}, "
          f"median of {args.rounds} rounds")
    print(f"{'stage':<7} {'fp32 ms':>9} {'int8 ms':>9} {'fp32/int8':>10}")
    for stage in (*STAGES, "total"):
        f, q = ((sum(median[n].values()) if stage == "total" else median[n][stage]) for n in ("fp32", "int8"))
        print(f"{stage:<7} {f * 1e3:9.2f} {q * 1e3:9.2f} {f / q:9.2f}x")
    report: dict = {"median_seconds": median}
    if args.gemms:
        with torch.inference_mode():
            report["winograd_gemm_gmacs"] = winograd_gemms(args.batch_size, args.rounds)
        print("conv3's Winograd-domain products (GMAC/s):")
        print(f"{'tile':<11} {'int8':>7} {'fp32':>7} {'int8/fp32':>10}")
        for tile, rate in report["winograd_gemm_gmacs"].items():
            print(f"{tile:<11} {rate['int8']:7.1f} {rate['fp32']:7.1f} {rate['int8'] / rate['fp32']:9.2f}x")
    report["environment"] = environment("cpu", batch_size=args.batch_size, rounds=args.rounds,
                                        pretrained=args.pretrained or "bvlc-layout caffe init seed 0",
                                        int8=str(args.int8) if args.int8 else "calibrated here")
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
