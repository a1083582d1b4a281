"""Resize a picture folder once to the 256x256 squares training reads, as the paper did (section
2: "we down-sampled the images to a fixed resolution of 256 x 256").

Training then decodes a ~30 KB 256x256 JPEG instead of a 110 KB ~400x350 one and skips the
resize: about 4.5x fewer CPU cycles per picture (measured in docs/training.md), which is what lets
a handful of CPU cores feed a GPU at 16,000 pictures/s. The layout is kept (class folders, or a
flat folder with its val.txt / CSV of labels), so ``--data`` takes the packed folder unchanged.
Files already packed are skipped: an interrupted run continues where it stopped.

    python -m alexnet_zoo.train.pack /data/imagenet /data/imagenet256 --workers 32
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from alexnet_zoo.data.datasets import LABEL_FILES
from alexnet_zoo.data.images import IMAGE_SUFFIXES, read_image
from alexnet_zoo.data.transforms import ResizeMode, square_uint8
from alexnet_zoo.paths import atomic_write
from alexnet_zoo.train.data import WORKER_START

__all__ = ["main", "pack_folder"]


def _pack_one(job: tuple[Path, Path, int, ResizeMode, int]) -> None:
    source, target, size, mode, quality = job
    square = square_uint8(read_image(source), size, mode)
    target.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(square.permute(1, 2, 0).numpy())
    atomic_write(target, lambda tmp: picture.save(tmp, format="JPEG", quality=quality))


def pack_folder(source: str | Path, target: str | Path, *, size: int = 256, mode: ResizeMode = "short_side",
                quality: int = 95, workers: int = os.cpu_count() or 1, progress: bool = True) -> int:
    """Write every picture under ``source`` as a ``size`` x ``size`` JPEG at the same relative
    path under ``target`` (the name keeps its stem, so val.txt still matches when it lists .JPEG
    files), copy label files, and return the number of pictures written now."""
    source, target = Path(source), Path(target)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder to pack")
    jobs = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_file() and path.name in LABEL_FILES:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / relative)
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            out = target / relative
            if not out.is_file():
                jobs.append((path, out, size, mode, quality))
    if workers <= 1:
        for job in tqdm(jobs, desc="pack", disable=not progress):
            _pack_one(job)
    else:
        context = multiprocessing.get_context(WORKER_START)  # not fork: see data.make_loader
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for _ in tqdm(pool.map(_pack_one, jobs, chunksize=64), total=len(jobs), desc="pack",
                          disable=not progress):
                pass
    return len(jobs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alexnet_zoo.train.pack", description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="e.g. /data/imagenet (holding train/ and val/)")
    parser.add_argument("target", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--mode", choices=("short_side", "squash"), default="short_side",
                        help="short_side: the paper (short side, then the central square); squash: BVLC")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the packed pictures")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    count = pack_folder(args.source, args.target, size=args.size, mode=args.mode, quality=args.quality,
                        workers=args.workers)
    print(f"{count} pictures packed into {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
