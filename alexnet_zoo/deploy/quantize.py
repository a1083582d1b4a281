"""Post-training static int8 quantization of a model, calibrated once on real pictures.

Weights: per output channel, symmetric int8 (torch's ``PerChannelMinMaxObserver``). Activations:
one quint8 (scale, zero point) per tensor, from a ``HistogramObserver`` (the range that minimises
the quantisation error of the histogram, torch's default for the x86 engine) over the
calibration pictures, each prepared as the weights' own preprocessing says. The result is a
:class:`~alexnet_zoo.models.quantized.QuantizedAlexNet`; ``save_pretrained`` writes it in our
format, so the calibration runs once (``alexnet-zoo quantize``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.ao.quantization.observer import HistogramObserver, PerChannelMinMaxObserver
from tqdm import tqdm

from alexnet_zoo.data.images import IMAGE_SUFFIXES, read_image
from alexnet_zoo.data.transforms import DEFAULT_PREPROCESSING, ImagePreprocess
from alexnet_zoo.errors import UnreadableImage, failure_message
from alexnet_zoo.models.alexnet import AlexNet
from alexnet_zoo.models.quantized import QuantizedAlexNet, activation_points, pick_qengine
from alexnet_zoo.ops.pooling import max_pool

__all__ = ["DEFAULT_CALIBRATION_COUNT", "calibration_batches", "calibration_files", "quantize"]

DEFAULT_CALIBRATION_COUNT = 256  # pictures; fc7 agreement no longer improves beyond a few hundred
_OBSERVED = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def calibration_files(folder: str | os.PathLike, count: int = DEFAULT_CALIBRATION_COUNT) -> list[Path]:
    """Up to ``count`` picture files under ``folder`` (recursively, by suffix), evenly spread over
    their sorted list so a folder sorted by class gives every class a share. Raises
    FileNotFoundError / ValueError naming the folder when there is nothing to calibrate on."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of calibration pictures")
    if count < 1:
        raise ValueError(f"the calibration needs at least 1 picture, got count={count}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{folder}: no pictures ({', '.join(sorted(IMAGE_SUFFIXES))}) to calibrate on")
    if len(files) <= count:
        return files
    return [files[i * len(files) // count] for i in range(count)]


def calibration_batches(files: Iterable[str | os.PathLike], preprocess: ImagePreprocess, batch_size: int = 32,
                        skipped: list[str] | None = None) -> Iterator[Tensor]:
    """Preprocessed (N, 3, crop, crop) batches of the readable files; each unreadable one is
    appended to ``skipped`` (as a one-line message) instead of stopping the calibration."""
    batch: list[Tensor] = []
    for path in files:
        try:
            batch.append(preprocess(read_image(path)))
        except UnreadableImage as err:
            if skipped is not None:
                skipped.append(failure_message(str(path), err))
            continue
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def quantize(model: AlexNet, calibration: str | os.PathLike | Iterable[Tensor], *,
             count: int = DEFAULT_CALIBRATION_COUNT, batch_size: int = 32, qengine: str | None = None,
             progress: bool = True) -> QuantizedAlexNet:
    """``model`` as int8, its activation ranges observed on ``calibration``: a folder of pictures
    (``count`` of them, :func:`calibration_files`, preprocessed as the model's weights say) or
    preprocessed batches (N, 3, H, W). ``qengine``: torch's quantized engine (default x86 where
    this torch has it). Raises ValueError when no picture could be read."""
    if not isinstance(model, AlexNet):
        raise ValueError(f"quantize takes fp32 AlexNet weights, got {type(model).__name__}"
                         + (" (these are already int8)" if isinstance(model, QuantizedAlexNet) else ""))
    engine = pick_qengine(qengine)
    preprocessing = model.preprocessing or DEFAULT_PREPROCESSING.get(model.arch or "")
    skipped: list[str] = []
    described: dict[str, Any] = {}
    if isinstance(calibration, (str, os.PathLike)):
        if preprocessing is None:
            raise ValueError("a custom AlexNet variant has no default preprocessing: set model.preprocessing")
        files = calibration_files(calibration, count)
        batches: Iterable[Tensor] = calibration_batches(files, ImagePreprocess(preprocessing), batch_size, skipped)
        described = {"folder": os.path.abspath(calibration), "files": len(files)}
    else:
        batches = calibration
    model = model.eval()
    observers = {p: HistogramObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine,
                                       quant_min=0, quant_max=127)  # 7 bits: torch's reduce_range
                 for p in activation_points(model.config)}
    seen = 0
    with torch.inference_mode(), tqdm(total=described.get("files"), desc="calibrating", unit="picture",
                                      disable=not progress) as bar:
        for x in batches:
            _observe(model, x.float(), observers)
            seen += x.shape[0]
            bar.update(x.shape[0])
    if seen == 0:
        where = f" in {calibration}" if described else ""
        raise ValueError(f"no calibration picture could be read{where}" + (f": {skipped[0]}" if skipped else ""))
    quantization = {"qengine": engine, "scheme": "static, per-channel symmetric int8 weights, per-tensor quint8 "
                    "activations (7-bit range)", "observer": "HistogramObserver",
                    "calibration": {**described, "pictures": seen, "skipped": len(skipped)}}
    q = QuantizedAlexNet(model.config, _tensors(model, observers), arch=model.arch, quantization=quantization,
                         where="the calibration")
    q.preprocessing = model.preprocessing
    q.pretrained_cfg = model.pretrained_cfg
    return q


def _observe(model: AlexNet, x: Tensor, observers: dict[str, HistogramObserver]) -> None:
    """Feed one batch's activations at every quantisation point to its observer."""
    out = model.extract(x, _OBSERVED)
    c = model.config
    observers["input"](x)
    for name in _OBSERVED:
        observers[name](out[name])
    if c.lrn:
        lrn = (c.lrn_size, c.lrn_alpha, c.lrn_beta, c.lrn_k, c.lrn_convention)
        observers["norm1"](max_pool(out["conv1"].float(), c.pool_ceil, lrn))
        observers["norm2"](max_pool(out["conv2"].float(), c.pool_ceil, lrn))


def _tensors(model: AlexNet, observers: dict[str, HistogramObserver]) -> dict[str, Tensor]:
    """The stored int8 format: quantised weights with their per-channel scales, biases, and the
    observed activation (scale, zero point) pairs."""
    tensors: dict[str, Tensor] = {}
    for point, observer in observers.items():
        scale, zero_point = observer.calculate_qparams()
        tensors[f"{point}.scale"] = scale.reshape(()).float()
        tensors[f"{point}.zero_point"] = zero_point.reshape(()).long()
    for name, layer in model.named_children():
        if not hasattr(layer, "weight"):
            continue  # fc8 removed (num_classes=0)
        w = layer.weight.detach().float()
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        observer(w)
        scales, _ = observer.calculate_qparams()  # symmetric: zero points 0
        dims = (-1,) + (1,) * (w.dim() - 1)
        tensors[f"{name}.weight"] = torch.round(w / scales.view(dims)).clamp_(-128, 127).to(torch.int8)
        tensors[f"{name}.weight_scale"] = scales.float()
        tensors[f"{name}.bias"] = layer.bias.detach().float().clone()
    return tensors
