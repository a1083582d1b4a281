"""Training throughput (forward + backward + optimizer step) of the recipe's step against the
plain torchvision-style loop, on the same model, batch, device and thread count.

Contenders, all on ``alexnet()`` (the paper's network, 227x227, 1000 classes, dropout on):

* ``plain loop``  - torchvision's references/classification/train.py inner loop: a float NCHW
                    batch prepared beforehand (by DataLoader workers, untimed), ``model(x)``,
                    cross-entropy, ``zero_grad()``, ``backward()``, ``torch.optim.SGD.step()``.
* ``recipe ...``  - ``alexnet_zoo.train.loop.train_step``: takes the uint8 256x256 batch and
                    does the random crop, flip, mean subtraction and PCA lighting itself (timed),
                    then the step with the paper's update rule (multi-tensor), in fp32 or bf16
                    autocast, NCHW or channels-last, and (``--compile``) torch.compile'd.

Rounds are interleaved (a noisy neighbour hits every contender alike); the median round is
reported, and the ratio is against the plain loop in the same run.

    python benchmarks/train_throughput.py --batch-size 32 --rounds 7          # this CPU
    python benchmarks/train_throughput.py --batch-size 256 --compile           # a GPU
    python benchmarks/train_throughput.py --decode-dir ../shared/data/imagenet_samples   # + loader
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from alexnet_zoo import alexnet
from alexnet_zoo.paths import write_json
from alexnet_zoo.train.args import POSITIVE_INT
from alexnet_zoo.train.augment import PAPER_PREPROCESSING, BatchAugment
from alexnet_zoo.train.data import ImageFiles
from alexnet_zoo.train.loop import Trainer, train_step
from alexnet_zoo.train.optim import PaperSGD
from alexnet_zoo.train.placement import check_device
from alexnet_zoo.train.schedule import LRSchedule


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timing covers it (CUDA and MPS run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def plain_loop(batch: int, device: torch.device) -> Callable[[], None]:
    model = alexnet().to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()
    x = torch.randn(batch, 3, 227, 227, device=device) * 50
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def recipe_trainer(device: torch.device, *, amp: torch.dtype | None, channels_last: bool, compile: bool) -> Trainer:
    """The recipe's step state for a fresh ``alexnet()``: the paper's SGD at a constant rate, the
    training augmentation, ``amp`` autocast (None: fp32); benchmarks/gpu_check.py feeds it real batches."""
    model = alexnet().to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    trained = torch.compile(model) if compile else model
    optimizer = PaperSGD(model.parameters(), lr=0.01)
    schedule = LRSchedule("constant", 0.01, steps_per_epoch=1, total_steps=1)
    augment = BatchAugment(PAPER_PREPROCESSING, 227, train=True, channels_last=channels_last)
    return Trainer(trained, model, nn.CrossEntropyLoss(), optimizer, schedule, augment, device, amp_dtype=amp)


def recipe_step(batch: int, device: torch.device, *, amp: torch.dtype | None, channels_last: bool,
                compile: bool) -> Callable[[], None]:
    t = recipe_trainer(device, amp=amp, channels_last=channels_last, compile=compile)
    images = torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    return lambda: train_step(t, images, labels)


def measure(calls: dict[str, Callable[[], None]], rounds: int, device: torch.device, warmup: int = 2,
            steps: int = 2) -> dict[str, float]:
    """Median seconds per step of each contender, rounds interleaved."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                call()
            _sync(device)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def loader_rate(folder: Path, limit: int, size: int = 256, rounds: int = 3) -> dict[str, float]:
    """Pictures per second one worker process (one thread) turns into the stored uint8 square:
    the recipe's worker (``alexnet_zoo.data.images.read_image``: libjpeg-turbo through torchvision, then
    resize), Pillow's decoder with the same resize, and the recipe's worker on the same pictures packed to 256x256 JPEGs."""
    import tempfile

    from torchvision.transforms.v2 import functional as TF

    from alexnet_zoo.data.images import load_image
    from alexnet_zoo.data.transforms import square_uint8
    from alexnet_zoo.train.pack import pack_folder

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))[:limit]

    def once(read: Callable[[int], torch.Tensor], indices: list[int]) -> float:
        start = time.perf_counter()
        for i in indices:
            read(i)
        return len(indices) / (time.perf_counter() - start)

    recipe = ImageFiles([(p, 0) for p in paths], size, "short_side")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "source"
        source.mkdir()
        for p in paths:
            (source / p.name).symlink_to(p.resolve())
        pack_folder(source, Path(tmp) / "packed", size=size, workers=1, progress=False)
        packed = sorted((Path(tmp) / "packed").iterdir())
        packed_files = ImageFiles([(p, 0) for p in packed], size, "short_side")
        result = {"pictures": len(paths), "mean_kb": sum(p.stat().st_size for p in paths) / len(paths) / 1e3,
                  "packed_mean_kb": sum(p.stat().st_size for p in packed) / len(packed) / 1e3,
                  "rounds": rounds}
        readers = {"recipe_worker": (lambda i: recipe[i][0], len(paths)),
                   "pillow": (lambda i: square_uint8(TF.pil_to_tensor(load_image(paths[i])), size, "short_side"),
                              len(paths)),
                   "recipe_worker_packed": (lambda i: packed_files[i][0], len(packed))}
        rates: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(rounds):  # interleaved, like the training contenders
            for name, (read, count) in readers.items():
                rates[name].append(once(read, list(range(count))))
        result.update({name: statistics.median(values) for name, values in rates.items()})
    torch.set_num_threads(threads)
    return result


def _train_rows(args: argparse.Namespace, device: torch.device, name: str) -> list[dict]:
    b = args.batch_size
    calls = {"plain loop (fp32, NCHW)": plain_loop(b, device),
             "recipe fp32 NCHW": recipe_step(b, device, amp=None, channels_last=False, compile=False),
             "recipe fp32 channels-last": recipe_step(b, device, amp=None, channels_last=True, compile=False),
             "recipe bf16 channels-last": recipe_step(b, device, amp=torch.bfloat16, channels_last=True,
                                                      compile=False)}
    if args.compile:
        calls["recipe bf16 channels-last compiled"] = recipe_step(b, device, amp=torch.bfloat16,
                                                                  channels_last=True, compile=True)
    seconds = measure(calls, args.rounds, device)
    base = seconds["plain loop (fp32, NCHW)"]
    print(f"device {device} ({name}), {args.threads} threads, torch {torch.__version__}, batch {b}, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'contender':<38} {'ms/step':>9} {'images/s':>9} {'vs plain':>9}")
    rows = []
    for contender, s in seconds.items():
        rows.append({"contender": contender, "ms_per_step": 1e3 * s, "images_per_s": b / s, "ratio": base / s})
        print(f"{contender:<38} {1e3 * s:>9.1f} {b / s:>9.1f} {base / s:>8.2f}x")
    return rows


def _device_option(text: str) -> str:
    """--device: one this machine has (an ``error:`` line naming what it has, not a traceback)."""
    try:
        check_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))  # the first paragraph
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=32)
    parser.add_argument("--rounds", type=POSITIVE_INT, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else
                        "mps" if torch.backends.mps.is_available() else "cpu", type=_device_option,
                        help="cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=POSITIVE_INT, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile'd recipe step")
    parser.add_argument("--decode-dir", type=Path, default=None, help="also time the loader on these pictures")
    parser.add_argument("--loader-only", action="store_true", help="time only the loader (needs --decode-dir)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    b = args.batch_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    result: dict = {"device": str(device), "device_name": name, "threads": args.threads, "torch": torch.__version__,
                    "batch_size": b, "rounds": args.rounds}
    if not args.loader_only:
        result["rows"] = _train_rows(args, device, name)
    if args.decode_dir:
        result["loader"] = loader_rate(args.decode_dir, limit=200)
        r = result["loader"]
        print(f"loader, pictures/s per worker (one thread), {r['pictures']} JPEGs of {r['mean_kb']:.0f} KB -> "
              f"uint8 {256}x{256}: recipe worker {r['recipe_worker']:.0f}, Pillow {r['pillow']:.0f}, "
              f"recipe worker on packed {r['packed_mean_kb']:.0f} KB squares {r['recipe_worker_packed']:.0f}")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
