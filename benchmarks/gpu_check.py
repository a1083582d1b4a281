"""Every GPU path of the project, measured in one run made to fit 8 minutes on one H200 (issue 15).

Sections, in this order, each under a time budget (seconds on an H200; a row that no longer fits is
recorded as skipped, so the run ends on time and still says what it left out):

1. ``tests``     - ``pytest -m cuda``: the tests that need a GPU (they skip themselves elsewhere).
2. ``fidelity``  - fc7 cosine of fp16 / bf16 autocast against fp32 on the pictures; the CUDA fp32
                   forward against the CPU's within 1e-4 (TF32 off).
3. ``inference`` - images/s at batch 256 and 1: ``alexnet`` (227) against ``torchvision.models.alexnet``
                   (224), fp32 / TF32 / fp16 / bf16 autocast, NCHW and channels-last, eager, then
                   CUDA graphs and torch.compile; LRN's share (against the same net without LRN).
4. ``training``  - the recipe's step (forward + backward + SGD, augmentation included) on synthetic
                   batches on the GPU, bf16 channels-last, batch 128 / 256 / 512, eager and compiled;
                   the plain fp32 loop for reference; the 90-epoch time each rate implies.
5. ``pipeline``  - the recipe's loader on the pictures, CPU workers and ``decode="device"`` (nvJPEG),
                   alone and feeding the bf16 step.
6. ``decoding``  - nvJPEG against libjpeg-turbo on the pictures and on them packed to 256x256.
7. ``faiss``     - exact, IVF-PQ and IVF-Flat on 10M random 64-d vectors, GPU against CPU (needs faiss-gpu).
8. ``lrn``       - the Triton LRN kernels (alexnet_zoo/ops/lrn_triton.py: LRN, and LRN fused with the max
                   pool) against what CUDA computes now (the torch expression, F.max_pool2d), on the
                   conv1 / conv2 maps, forward and forward + backward: this run
                   decides whether they become the default. Last, because they have never run on a GPU
                   (the tests section has compiled them already, in its own process).

Writes ``--out`` (JSON, rewritten atomically after every row) and a ``.log`` beside it. ``--dry-run``
uses tiny sizes and no compiling, skips what needs CUDA with the reason, and takes seconds on a CPU:
it shows the script starts before GPU time is spent on it (tests/test_gpu_check.py runs it).

    python benchmarks/gpu_check.py --images ../shared/data/imagenet_samples --out gpu_check.json
    python benchmarks/gpu_check.py --dry-run --images tests/data/retrieval --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from _environment import environment  # benchmarks/_environment.py, beside this script
from _gpu_faiss import faiss_gpu
from _gpu_report import Report
from _gpu_sections import Plan, fidelity, inference, lrn_kernels, run_tests
from _gpu_training import decoding, pipeline, training

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = {"tests": 75, "fidelity": 15, "inference": 85, "training": 90, "pipeline": 40, "decoding": 20,
           "faiss": 45, "lrn": 35}  # 405 s of sections (tests: collecting, and compiling the Triton kernels)
DEADLINE_S = 420  # 7 minutes, and about 10 s of start-up: under the 8
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _default_images() -> Path | None:
    """The shared ImageNet samples, beside the checkout or inside it (where a GPU machine gets them)."""
    for base in (ROOT / "shared", ROOT.parent / "shared"):
        if (base / "data" / "imagenet_samples").is_dir():
            return base / "data" / "imagenet_samples"
    return None


def _pictures(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {folder}: no such folder (expected a folder of JPEG or PNG pictures)")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON (the log goes beside it)")
    parser.add_argument("--images", type=Path, default=_default_images(),
                        help="pictures for fidelity, the pipeline and decoding (default: the shared ImageNet samples)")
    parser.add_argument("--weights", default=None, help="a local weights folder for the fidelity section "
                        "(default: random weights, seed 0; the machine has no network)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, no compiling, CUDA parts skipped: "
                        "seconds on a CPU")
    parser.add_argument("--only", nargs="+", choices=sorted(BUDGETS), default=None, help="run only these sections")
    parser.add_argument("--deadline", type=float, default=DEADLINE_S, help="seconds the whole run may take")
    return parser


def _plan(args: argparse.Namespace, device: torch.device) -> Plan:
    pictures = _pictures(args.images)
    cores = os.cpu_count() or 1
    if args.dry_run:
        return Plan(ROOT, device, True, pictures, args.weights, batch=2, train_batches=(2,), vectors=10_000,
                    dim=16, workers=0, rounds=1, steps=1, inference_batches=(2,))
    return Plan(ROOT, device, False, pictures, args.weights, batch=256, train_batches=(128, 256, 512),
                vectors=10_000_000, dim=64, workers=max(1, min(cores - 2, 14)), rounds=5, steps=5,
                inference_batches=(256, 1))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        print("error: no CUDA GPU here: this check measures one (use --dry-run to see that it starts)",
              file=sys.stderr)
        return 2
    try:
        plan = _plan(args, device)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    header = {"command": " ".join(["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
              "dry_run": args.dry_run, "images": str(args.images) if args.images else None,
              "environment": environment(str(device), triton=_triton_version(), cudnn=torch.backends.cudnn.version()),
              "plan": {"batch": plan.batch, "train_batches": list(plan.train_batches), "vectors": plan.vectors,
                       "dim": plan.dim, "workers": plan.workers, "rounds": plan.rounds, "steps": plan.steps,
                       "pictures": len(plan.pictures)},
              "budgets_s": BUDGETS, "deadline_s": args.deadline}
    report = Report(args.out, header, args.deadline)
    report.log(f"gpu_check on {header['environment'].get('gpu', device)}, {len(plan.pictures)} pictures, "
               f"dry run: {args.dry_run}; JSON {args.out}")
    sections = {"tests": run_tests, "fidelity": fidelity, "inference": inference, "training": training,
                "pipeline": pipeline, "decoding": lambda s, p: decoding(s, p, args.images), "faiss": faiss_gpu,
                "lrn": lrn_kernels}  # last: a kernel never run on a GPU could break the CUDA context for the rest
    for name, run in sections.items():
        if args.only and name not in args.only:
            continue
        with report.section(name, BUDGETS[name]) as s:
            run(s, plan)
    report.finish()
    states = {name: data["status"] for name, data in report.data["sections"].items()}
    report.log(f"done: {states}")
    return 0


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


if __name__ == "__main__":
    sys.exit(main())
