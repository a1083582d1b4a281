"""How closely int8 follows fp32 on real pictures: fc7 cosine (min, mean) and top-1 agreement.

The fp32 model and its int8 form see the same preprocessed pictures. The calibration pictures and
the measured ones are disjoint (every other file of the sorted folder goes to calibration), so the
figures are not flattered by having observed the very activations they are scored on. With
labelled ImageNet pictures (a ``labels.csv`` beside them, as in shared/data/imagenet_samples) it
also prints both models' top-1 accuracy; the ILSVRC-2012 figure is the evaluation recipe's
(docs/deploy.md gives the command).

    python benchmarks/int8_fidelity.py                         # BVLC layout, Caffe init, seed 0
    python benchmarks/int8_fidelity.py --pretrained W --int8 Q --pictures DIR --json out.json
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from _environment import environment  # benchmarks/_environment.py, beside this script

from alexnet_zoo import alexnet
from alexnet_zoo.data.images import read_image
from alexnet_zoo.data.transforms import ImagePreprocess
from alexnet_zoo.deploy.quantize import calibration_batches, calibration_files, quantize
from alexnet_zoo.errors import UnreadableImage
from alexnet_zoo.eval.loop import onto_model_classes
from alexnet_zoo.factory import model_for_weights
from alexnet_zoo.paths import write_json

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "imagenet_samples"


def _labels(folder: Path) -> dict[str, int]:
    path = folder / "labels.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {row["filename"]: int(row["class_index"]) for row in csv.DictReader(f)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", default=None, help="fp32 weights (default: BVLC layout, Caffe init, seed 0)")
    parser.add_argument("--int8", type=Path, default=None,
                        help="int8 weights from alexnet-zoo quantize (default: calibrate on half the pictures)")
    parser.add_argument("--pictures", type=Path, default=SAMPLES if SAMPLES.is_dir() else ROOT / "tests" / "data")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.pretrained:
        fp32 = model_for_weights(args.pretrained).eval()
    else:
        torch.manual_seed(0)
        fp32 = alexnet(lrn_convention="caffe", lrn_k=1.0, init="caffe").eval()
    files = calibration_files(args.pictures, 100_000)
    calibrate, measure = files[0::2], files[1::2]
    if args.int8 is not None:
        int8, measure = model_for_weights(str(args.int8)), files
    else:
        int8 = quantize(fp32, calibration_batches(calibrate, ImagePreprocess(fp32.preprocessing)), progress=False)
    preprocess, readable, skipped = ImagePreprocess(fp32.preprocessing), [], []
    for path in measure:
        try:
            readable.append((path.name, preprocess(read_image(path))))
        except UnreadableImage:
            skipped.append(path.name)
    # ImageNet class indices -> the model's own (a model trained on 200 WNID folders has 200 outputs)
    labels = dict(onto_model_classes(list(_labels(args.pictures).items()), fp32)[0])
    cos, agree, right = [], 0, {"fp32": 0, "int8": 0}
    with torch.inference_mode():
        for i in range(0, len(readable), 16):
            names, x = [n for n, _ in readable[i:i + 16]], torch.stack([t for _, t in readable[i:i + 16]])
            a, b = fp32.extract(x, ("fc7", "fc8")), int8.extract(x, ("fc7", "fc8"))
            cos.append(F.cosine_similarity(a["fc7"], b["fc7"]))
            ta, tb = a["fc8"].argmax(1), b["fc8"].argmax(1)
            agree += int((ta == tb).sum())
            for name, top in (("fp32", ta), ("int8", tb)):
                right[name] += sum(t == labels.get(n, -1) for n, t in zip(names, top.tolist()))
    cosines = torch.cat(cos)
    n = len(cosines)
    report = {"pictures": n, "skipped": len(skipped), "fc7_cosine_min": float(cosines.min()),
              "fc7_cosine_mean": float(cosines.mean()), "top1_agreement": agree / n,
              "environment": environment("cpu", pictures=str(args.pictures),
                                         pretrained=args.pretrained or "bvlc-layout caffe init seed 0",
                                         int8=str(args.int8) if args.int8 else f"calibrated on {len(calibrate)}")}
    print(f"{n} pictures ({len(skipped)} unreadable): fc7 cosine min {report['fc7_cosine_min']:.5f} mean "
          f"{report['fc7_cosine_mean']:.5f}; top-1 agreement {report['top1_agreement']:.2%}")
    if labels and args.pretrained:  # accuracy means something for trained weights only
        report["top1_fp32"], report["top1_int8"] = right["fp32"] / n, right["int8"] / n
        print(f"top-1 accuracy against labels.csv: fp32 {report['top1_fp32']:.2%}, int8 {report['top1_int8']:.2%}")
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
