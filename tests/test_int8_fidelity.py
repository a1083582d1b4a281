"""benchmarks/int8_fidelity.py end to end: calibrate on half a folder, score fc7 cosine and top-1
agreement on the other half, and top-1 accuracy through the model's own classes (a model trained on
WNID folders has its own class order, not ImageNet's)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import torch
from test_features import generated

from alexnet_zoo import alexnet
from alexnet_zoo.data.categories import imagenet_categories
from alexnet_zoo.data.images import read_image
from alexnet_zoo.data.transforms import ImagePreprocess
from alexnet_zoo.factory import model_for_weights
from alexnet_zoo.weights.store import save_pretrained

ROOT = Path(__file__).resolve().parents[1]


def test_fidelity_and_accuracy_through_the_models_wnid_classes(tmp_path):
    pictures = generated(tmp_path / "pictures", n=8)
    wnids = [imagenet_categories()[i].wnid for i in (5, 7, 9)]  # ImageNet indices unlike the model's 0..2
    torch.manual_seed(0)
    model = alexnet(num_classes=3, lrn_convention="caffe", lrn_k=1.0, init="caffe").eval()
    weights = save_pretrained(model, tmp_path / "w", meta={"classes": wnids})
    loaded = model_for_weights(str(weights)).eval()
    preprocess = ImagePreprocess(loaded.preprocessing)
    with torch.inference_mode():  # every picture labelled with the class fp32 predicts: accuracy is 1 when mapped
        top = loaded(torch.stack([preprocess(read_image(p)) for p in pictures])).argmax(1).tolist()
    with open(tmp_path / "pictures" / "labels.csv", "w", newline="", encoding="utf-8") as f:
        rows = csv.writer(f)
        rows.writerow(["filename", "wnid", "class_index", "synset_words"])
        for path, t in zip(pictures, top):
            rows.writerow([path.name, wnids[t], (5, 7, 9)[t], "-"])
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "int8_fidelity.py"), "--pretrained", str(weights),
                           "--pictures", str(tmp_path / "pictures"), "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["pictures"] == 4 and report["skipped"] == 0 and report["top1_fp32"] == 1.0
    assert report["fc7_cosine_min"] >= 0.99 and 0 <= report["top1_agreement"] <= 1
    assert report["top1_int8"] == report["top1_agreement"]  # every label is fp32's answer
    assert "top-1 accuracy against labels.csv: fp32 100.00%" in done.stdout
