"""A class-folder training set from a labelled picture folder: OUT/<wnid>/<picture>, one folder per
WNID of ``labels.csv`` (``alexnet_zoo.train --train-dir OUT`` then records the WNIDs as the model's
classes, so ImageNet-indexed labels map onto its outputs). Pictures are symbolic links to the
originals; ``--skip N`` leaves out the first N of the folder's sorted pictures, to hold them out
(``benchmarks/dedupe.py --count N`` makes its duplicate set of exactly those). ``--altered`` writes
each picture's seven altered copies instead (dedupe.py's crops, rescale, JPEG, brightness, rotation
and overlay, as PNG): labelled pictures a model trained on the originals has never seen, for the
evaluator (``python -m alexnet_zoo.benchmarks.imagenet --data OUT``).

    python benchmarks/sample_classes.py --out runs/samples200              # all 200 ImageNet samples
    python benchmarks/sample_classes.py --out runs/samples150 --skip 50     # all but dedupe.py's 50
    python benchmarks/sample_classes.py --out runs/altered200 --altered     # 1,400 altered copies
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from dedupe import ALTERATIONS, altered  # benchmarks/dedupe.py, beside this script
from tqdm import tqdm

from alexnet_zoo.data.categories import WNID
from alexnet_zoo.data.images import load_image
from alexnet_zoo.errors import UnreadableImage
from alexnet_zoo.paths import atomic_write
from alexnet_zoo.retrieval.extraction import list_images

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "imagenet_samples"


def class_folders(pictures: Path, out: Path, skip: int = 0, altered_copies: bool = False) -> int:
    """Link every labelled picture of ``pictures`` but the first ``skip`` (sorted) into
    ``out/<wnid>/`` (or write its altered copies there); returns how many files. A labels.csv row
    without a WNID, or naming a missing picture, is refused with its line number."""
    labels = pictures / "labels.csv"
    with open(labels, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    wnid_of = {}
    for line, row in enumerate(rows, start=2):
        name, wnid = row.get("filename") or "", row.get("wnid") or ""
        if not WNID.fullmatch(wnid) or not (pictures / name).is_file() or os.sep in name:
            raise ValueError(f"{labels}:{line}: expected filename,wnid of a picture beside it, got {name!r}, {wnid!r}")
        wnid_of[name] = wnid
    names = [Path(p).name for p in list_images(str(pictures)) if Path(p).name in wnid_of][skip:]
    written = 0
    for name in tqdm(names, desc="altered copies", unit="picture", disable=not altered_copies):
        folder = out / wnid_of[name]
        if not altered_copies:
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / name).exists():
                (folder / name).symlink_to((pictures / name).resolve())
            written += 1
            continue
        try:
            img = load_image(pictures / name).convert("RGB")
        except UnreadableImage as error:  # one bad picture is reported, the others still written
            tqdm.write(f"sample_classes.py: skipped {error}", file=sys.stderr)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for kind in ALTERATIONS:  # atomic: a rerun, or the evaluator, never finds half a picture
            copy = altered(img, kind)
            atomic_write(folder / f"{Path(name).stem}-{kind}.png", lambda tmp, copy=copy: copy.save(tmp, format="PNG"))
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pictures", type=Path, default=SAMPLES, help="a folder with labels.csv beside its pictures")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N sorted pictures")
    parser.add_argument("--altered", action="store_true", help="write each picture's 7 altered copies, not a link")
    args = parser.parse_args(argv)
    if args.skip < 0:
        parser.error(f"--skip must be at least 0, not {args.skip}")
    try:
        count = class_folders(args.pictures, args.out, args.skip, args.altered)
    except (OSError, ValueError) as error:
        sys.exit(f"sample_classes.py: {error}")
    print(f"{args.out}: {count} pictures in class folders")
    return 0


if __name__ == "__main__":
    main()
