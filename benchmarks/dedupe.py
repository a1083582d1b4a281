"""Near-duplicate detection on real pictures: pair precision / recall / F1 by layer, and the
threshold calibrated for a target precision.

A labelled duplicate set is made from a folder of real pictures (default
``../shared/data/imagenet_samples``, the 200 ImageNet samples): each of the first ``--count``
pictures is one group with its altered copies (centre and corner crops, a half-size rescale, JPEG
at quality 20, +40% brightness, a 5 degree rotation, a text-and-box overlay). pool5 (flattened),
fc6 and fc7 vectors of all of them come from one forward pass, L2-normalised, into an exact cosine
index each; the pairs down to ``--low`` are scored against the groups
(:mod:`alexnet_zoo.retrieval.dedupe_eval`): P / R / F1 at ``--threshold``, and the lowest
threshold whose precision reaches ``--target-precision``. ``--pca D`` scores each layer again
after PCA whitening to D dimensions learned on ``--pca-count`` *other* pictures of the folder (not
in the duplicate set; Babenko et al. 2014 learn it on separate data), by the index's own
:func:`~alexnet_zoo.retrieval.index_pca.learn_projection`. The pictures and their
``labels.csv`` stay in ``--work`` when one is named, for ``alexnet-zoo index dedupe --labels``.

    PYTHONPATH=. python benchmarks/dedupe.py --count 50 --pca 64 --json docs/dedupe_benchmark.json
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _environment import environment  # benchmarks/_environment.py, beside this script
from PIL import Image, ImageDraw, ImageEnhance
from tqdm import tqdm

from alexnet_zoo.data.images import load_image
from alexnet_zoo.factory import model_for_weights
from alexnet_zoo.paths import write_json
from alexnet_zoo.retrieval.dedupe_eval import pair_curve
from alexnet_zoo.retrieval.extraction import list_images
from alexnet_zoo.retrieval.features import FeatureExtractor
from alexnet_zoo.retrieval.index import VectorIndex
from alexnet_zoo.retrieval.index_pca import learn_projection, project

__all__ = ["ALTERATIONS", "altered", "main"]

LAYERS = ("pool5", "fc6", "fc7")
ALTERATIONS = ("crop_centre", "crop_corner", "rescale", "jpeg", "brighter", "rotate", "overlay")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet_samples"


def altered(img: Image.Image, kind: str) -> Image.Image:
    """One altered copy of ``img``, as collections hold them (see the module docstring)."""
    w, h = img.size
    if kind == "crop_centre":
        return img.crop((w // 10, h // 10, w - w // 10, h - h // 10))
    if kind == "crop_corner":
        return img.crop((0, 0, w * 3 // 4, h * 3 // 4))
    if kind == "rescale":
        return img.resize((max(1, w // 2), max(1, h // 2)), Image.BICUBIC)
    if kind == "jpeg":  # the JPEG damage kept, losslessly, in the PNG the copy is saved as
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=20)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "brighter":
        return ImageEnhance.Brightness(img).enhance(1.4)
    if kind == "rotate":
        return img.rotate(5, resample=Image.BICUBIC, expand=False, fillcolor=(0, 0, 0))
    if kind == "overlay":
        out = img.copy()
        draw = ImageDraw.Draw(out)
        draw.rectangle((w // 20, h * 3 // 4, w // 2, h * 9 // 10), fill=(255, 255, 255))
        draw.text((w // 20 + 4, h * 3 // 4 + 4), "(c) duplicate test", fill=(200, 0, 0))
        return out
    raise ValueError(f"unknown alteration {kind!r}; choose from {', '.join(ALTERATIONS)}")


def build_set(source: Path, count: int, work: Path) -> tuple[list[str], np.ndarray]:
    """The pictures (originals and their copies, written under ``work``) and a group number each;
    ``work/labels.csv`` names them for ``index dedupe --labels``."""
    originals = list_images(str(source))[:count]
    if len(originals) < 2:
        raise ValueError(f"{source}: {len(originals)} pictures; a duplicate set needs at least 2")
    paths, groups = [], []
    for g, src in enumerate(tqdm(originals, desc="altered copies", unit="picture")):
        img = load_image(src).convert("RGB")
        stem = f"{g:04d}-{Path(src).stem}"
        for kind in ("original", *ALTERATIONS):
            out = work / f"{stem}-{kind}.png"
            (img if kind == "original" else altered(img, kind)).save(out)
            paths.append(str(out))
            groups.append(g)
    with (work / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("path", "group"), *zip(paths, groups)])
    return paths, np.array(groups, np.int64)


def layer_vectors(pretrained: str, paths: list[str], batch_size: int) -> dict[str, np.ndarray]:
    """Unit pool5 (flattened), fc6 and fc7 vectors of ``paths``, all three from one forward pass."""
    model = model_for_weights(pretrained).eval()
    prep = FeatureExtractor(model, "fc7", device="cpu")  # its preprocessing: the model's own
    out: dict[str, list[np.ndarray]] = {layer: [] for layer in LAYERS}
    for lo in tqdm(range(0, len(paths), batch_size), desc="pool5/fc6/fc7", unit="batch"):
        batch = torch.stack([prep.prepare(p) for p in paths[lo:lo + batch_size]])
        with torch.inference_mode():
            found = model.extract(batch, LAYERS)
        for layer in LAYERS:
            out[layer].append(torch.flatten(found[layer].float(), 1).numpy())
    vectors = {layer: np.concatenate(parts) for layer, parts in out.items()}
    return {layer: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for layer, x in vectors.items()}


def score_layer(x: np.ndarray, paths: list[str], groups: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """P / R / F1 at the chosen threshold and at the calibrated one, for one layer's vectors."""
    index = VectorIndex.build(x.astype(np.float32), paths, kind="exact")
    curve = pair_curve(index.duplicates(args.low), groups)
    calibrated = curve.lowest_threshold(args.target_precision)
    return {"dim": int(x.shape[1]), "at_threshold": curve.at(args.threshold), "calibrated_threshold": calibrated,
            "at_calibrated": None if calibrated is None else curve.at(calibrated),
            "best_f1": max((r for r in curve.table(sorted(set(curve.scores.tolist()))) if r["f1"] is not None),
                           key=lambda r: r["f1"], default=None)}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help=f"a folder of real pictures (default {DEFAULT_DATA}, where present)")
    parser.add_argument("--count", type=int, default=200, help="pictures taken from it (each a group)")
    parser.add_argument("--pretrained", default="default", help="weights; 'none' for random ones")
    parser.add_argument("--seed", type=int, default=0, help="of the random weights, so a run can be repeated")
    parser.add_argument("--threshold", type=float, default=0.9, help="the chosen threshold to report")
    parser.add_argument("--low", type=float, default=0.5, help="the lowest threshold searched")
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--pca", type=int, default=0, help="also with PCA whitening to this many dimensions")
    parser.add_argument("--pca-count", type=int, default=100,
                        help="--pca: learned on this many other pictures of --data (after the --count)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", type=Path, default=None, help="keep the pictures and labels.csv here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 0 < args.low <= args.threshold <= 1 or args.count < 2 or args.pca < 0:
        parser.error("expected 0 < --low <= --threshold <= 1, --count >= 2 and --pca >= 0")
    if args.data is None and not DEFAULT_DATA.is_dir():
        parser.error(f"no --data folder named and no {DEFAULT_DATA} here")
    args.data = args.data or DEFAULT_DATA
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    train = list_images(str(args.data))[args.count:args.count + args.pca_count] if args.pca else []
    if args.pca and len(train) <= args.pca:
        raise SystemExit(f"--pca {args.pca}: {args.data} has {len(train)} pictures after the first {args.count}; "
                         f"PCA to {args.pca} dimensions needs more")
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        paths, groups = build_set(args.data, args.count, work)
        torch.manual_seed(args.seed)
        vectors = layer_vectors(args.pretrained, paths + train, args.batch_size)
        layers = {}
        for layer in LAYERS:
            x = vectors[layer][:len(paths)]
            layers[layer] = score_layer(x, paths, groups, args)
            if args.pca:
                pca = learn_projection(vectors[layer][len(paths):], args.pca, whiten=True,
                                       what=f"{len(train)} other pictures of {args.data}")
                w = project(x, pca, "cosine")
                layers[f"{layer}+pcaw{args.pca}"] = score_layer(w, paths, groups, args)
    report = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]) if argv is None else argv,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "environment": environment("cpu", pretrained=args.pretrained, seed=args.seed, data=str(args.data),
                                         count=args.count, threshold=args.threshold, low=args.low,
                                         target_precision=args.target_precision, pca=args.pca,
                                         pca_trained_on=len(train)),
              "pictures": len(paths), "groups": int(groups.max() + 1), "alterations": list(ALTERATIONS),
              "true_pairs": int(pair_curve([], groups).positives), "layers": layers}
    for layer, r in layers.items():
        at, cal = r["at_threshold"], r["at_calibrated"]
        print(f"{layer:12s} ({r['dim']:>5}-d)  at {args.threshold}: P {_fmt(at['precision'])} "
              f"R {_fmt(at['recall'])} F1 {_fmt(at['f1'])}  |  precision >= {args.target_precision} from "
              + ("no threshold" if cal is None else f"{r['calibrated_threshold']:.4f}: R {_fmt(cal['recall'])}"))
    if args.json:
        write_json(args.json, report)
    return report


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
