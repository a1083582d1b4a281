"""int8 inference speed: our fp32, our int8, ONNX Runtime fp32 and ONNX Runtime int8 on one batch.

All contenders run the same network and weights on the same preprocessed pictures with the same thread
count, interleaved round by round (a noisy neighbour hits all alike); the median round is
reported with each contender's ratio to our fp32. ONNX Runtime's graph is our own export
(``export_onnx``); its int8 graph is ``onnxruntime.quantization.quantize_static`` of it (QDQ,
per-channel int8 weights, uint8 activations), calibrated on the same pictures as ours; a fifth
contender is ORT on our own int8 model exported in QDQ form (``export_onnx`` of it). The ORT
sessions use ``ORT_ENABLE_ALL`` graph optimisation, ORT's best, and the int8 graph is made from
ORT's own pre-processed copy (``quant_pre_process``), as its documentation advises.

    python benchmarks/int8.py                                  # BVLC layout, Caffe init, batch 32
    python benchmarks/int8.py --pretrained W --int8 Q --batch-size 32 --rounds 15 --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from _environment import environment  # benchmarks/_environment.py, beside this script
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from alexnet_zoo import alexnet
from alexnet_zoo.data.transforms import ImagePreprocess
from alexnet_zoo.deploy.onnx_graph import export_onnx
from alexnet_zoo.deploy.quantize import calibration_batches, calibration_files, quantize
from alexnet_zoo.errors import AlexNetZooError
from alexnet_zoo.factory import model_for_weights
from alexnet_zoo.ops.capabilities import cpu_capabilities
from alexnet_zoo.paths import write_json

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "imagenet_samples"


class _Batches(CalibrationDataReader):
    """ORT's calibration reader over the same batches our calibration saw."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._it = iter([{"images": b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def models(args: argparse.Namespace, calibration: list[torch.Tensor]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(fp32, int8): the named weights or the BVLC layout with Caffe's initialisation, and their int8
    form (loaded from --int8, else quantised on the calibration batches)."""
    if args.pretrained:
        fp32 = model_for_weights(args.pretrained).eval()
    else:
        torch.manual_seed(0)
        fp32 = alexnet(lrn_convention="caffe", lrn_k=1.0, init="caffe").eval()
    int8 = model_for_weights(str(args.int8)) if args.int8 else quantize(fp32, calibration, progress=False)
    return fp32, int8


def ort_sessions(fp32: torch.nn.Module, int8: torch.nn.Module, calibration: list[torch.Tensor], folder: Path,
                 threads: int) -> dict[str, ort.InferenceSession]:
    fp32_path = export_onnx(fp32, folder / "alexnet.onnx", input_size=fp32.preprocessing.crop)
    ours_qdq = export_onnx(int8, folder / "ours_qdq.onnx")
    int8_path, prepared = folder / "alexnet_int8.onnx", folder / "alexnet_prepared.onnx"
    start = time.perf_counter()
    quant_pre_process(str(fp32_path), str(prepared))  # ORT's advice: shape inference + graph clean-up first
    quantize_static(str(prepared), str(int8_path), _Batches([b.numpy() for b in calibration]),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    print(f"ORT quantize_static: {time.perf_counter() - start:.1f} s")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for name, path in (("ORT fp32", fp32_path), ("ORT int8", int8_path), ("ORT our QDQ", ours_qdq))}


def add_arguments(parser: argparse.ArgumentParser, rounds: int) -> None:
    """The weights, pictures and sizes every int8 timing script takes (this one, int8_layers.py)."""
    parser.add_argument("--pretrained", default=None, help="fp32 weights (default: BVLC layout, Caffe init, seed 0)")
    parser.add_argument("--int8", type=Path, default=None, help="int8 weights from alexnet-zoo quantize")
    parser.add_argument("--pictures", type=Path, default=SAMPLES if SAMPLES.is_dir() else ROOT / "tests" / "data",
                        help="real pictures: the timed batch and the calibration set")
    parser.add_argument("--calibration-count", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--json", type=Path, default=None)


def parse_counts(parser: argparse.ArgumentParser, argv: list[str] | None, *counts: str) -> argparse.Namespace:
    """The parsed arguments, every one of ``counts`` (and the shared sizes) refused below 1 in one line."""
    args = parser.parse_args(argv)
    for name in ("calibration_count", "batch_size", "rounds", *counts):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    return args


def prepared(parser: argparse.ArgumentParser,
             args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module, list[torch.Tensor], torch.Tensor]:
    """(fp32, int8, calibration batches, the timed batch of --batch-size pictures, repeated as needed),
    the pictures read with the fp32 weights' preprocessing. Weights or pictures that cannot be
    used end the script in one line (exit 2), as a bad argument does."""
    try:
        probe = model_for_weights(args.pretrained) if args.pretrained else alexnet()
        files = calibration_files(args.pictures, args.calibration_count)
        calibration = list(calibration_batches(files, ImagePreprocess(probe.preprocessing), 16))
        fp32, int8 = models(args, calibration)
    except (AlexNetZooError, OSError, ValueError) as error:  # damaged weights, no readable picture, ...
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    x = torch.cat(calibration)[: args.batch_size]
    x = torch.cat([x] * -(-args.batch_size // len(x)))[: args.batch_size].contiguous()
    return fp32, int8, calibration, x


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, rounds=10)
    parser.add_argument("--calls", type=int, default=3, help="timed calls a contender a round, after one untimed")
    args = parse_counts(parser, argv, "calls")

    threads = torch.get_num_threads()
    fp32, int8, calibration, x = prepared(parser, args)
    with tempfile.TemporaryDirectory() as tmp:
        sessions = ort_sessions(fp32, int8, calibration, Path(tmp), threads)
        feed = {"images": x.numpy()}
        runs: dict[str, Callable[[], object]] = {"ours fp32": lambda: fp32(x), "ours int8": lambda: int8(x),
                                                 **{n: (lambda s=s: s.run(None, feed)) for n, s in sessions.items()}}
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        with torch.inference_mode():
            for name, run in runs.items():  # warm-up: weight packing, ORT's first-run allocations
                run()
            for _ in range(args.rounds):
                for name, run in runs.items():
                    run()  # untimed: the previous contender's threads (OpenMP, ORT) stop spinning meanwhile
                    start = time.perf_counter()
                    for _ in range(args.calls):
                        run()
                    seconds[name].append((time.perf_counter() - start) / args.calls)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    base = median["ours fp32"]
    print(f"batch {args.batch_size}, {threads} threads, {cpu_capabilities().summary()}, median of {args.rounds} rounds")
    print(f"{'contender':<13} {'ms/batch':>10} {'img/s':>8} {'vs ours fp32':>13}")
    for name, s in median.items():
        print(f"{name:<13} {s * 1e3:10.1f} {args.batch_size / s:8.1f} {base / s:12.2f}x")
    print(f"ours int8 vs ORT int8: {median['ORT int8'] / median['ours int8']:.2f}x, vs ORT fp32: "
          f"{median['ORT fp32'] / median['ours int8']:.2f}x")
    report = {"median_seconds": median, "speedup_vs_ours_fp32": {n: base / s for n, s in median.items()},
              "environment": environment("cpu", batch_size=args.batch_size, rounds=args.rounds, calls=args.calls,
                                         onnxruntime=ort.__version__, pretrained=args.pretrained or "bvlc-layout caffe "
                                         "init seed 0", int8=str(args.int8) if args.int8 else "calibrated here")}
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
