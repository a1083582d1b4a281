"""Image features from any AlexNet layer, as numpy vectors ready for an index.

The paper's Figure 4 retrieves images by the Euclidean distance of their fc7 vectors (the 4096-d
last hidden layer); conv layers, pooled over space, are the usual alternative when near-duplicates
matter more than semantics. The extractor carries the model's own preprocessing, runs batched on
the best device, and describes itself (:meth:`FeatureExtractor.info`) so an index can later refuse
vectors from another model, weights or layer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from alexnet_zoo.data.images import read_image
from alexnet_zoo.data.transforms import DEFAULT_PREPROCESSING, ImagePreprocess
from alexnet_zoo.devices import best_device, resolve_device
from alexnet_zoo.eval.precision import autocast, model_precision
from alexnet_zoo.models.alexnet import LAYERS, AlexNet

__all__ = ["FLOAT16_MAX", "FeatureExtractor", "ImageInput", "best_device", "weights_label", "weights_spec_name"]

ImageInput = str | os.PathLike | Image.Image | Tensor
Pooling = Literal["avg", "max"] | None
_CONV = ("conv1", "conv2", "conv3", "conv4", "conv5")


FLOAT16_MAX = 65504.0  # the largest finite float16: stored vectors beyond it would become inf


def weights_spec_name(model: AlexNet) -> str | None:
    """The spec name the model's config names for its weights (what a folder's or hub repo's
    config.json claims), or None."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    weights = cfg.get("weights")
    name = weights.get("name") if isinstance(weights, dict) else None
    return str(name) if name else None


def weights_label(model: AlexNet, pretrained: str | None = None) -> str:
    """A name for the model's weights, for records: the spec name its config names; else, given
    the ``pretrained`` it was loaded from, "random" for "none" and ``pretrained`` as given; else
    the file they were converted from, their source, or "random" for an untrained model."""
    name = weights_spec_name(model)
    if name:
        return name
    if pretrained is not None:
        return "random" if pretrained == "none" else str(pretrained)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("converted_from") or cfg.get("source") or ("random" if not cfg else "local"))


class FeatureExtractor:
    """``model`` -> vectors of ``layer`` (fc7 by default) for paths, PIL images or tensors.

    ``pool``: for conv layers, "avg" / "max" over space gives one value per channel (None keeps the
    flattened map; pool5 is always flattened, 9216-d). ``normalize`` makes each vector unit length
    (cosine = inner product); ``dtype="float16"`` halves storage (what ``alexnet-zoo extract``
    stores by default: unit vectors keep a cosine > 0.9999 to float32's) and refuses values beyond
    float16's range instead of storing inf. ``precision`` is the arithmetic
    (:mod:`alexnet_zoo.eval.precision`: ``bf16`` is the fast choice on CPUs with bfloat16 units).
    ``device``: None is the best one here; a device this machine lacks is a ValueError saying what
    it has (:func:`alexnet_zoo.devices.resolve_device`). ``weights`` names the weights in
    :meth:`info` (default: from ``model.pretrained_cfg``); ``weights_spec`` is the spec a local
    folder's config claims, recorded as information only."""

    def __init__(self, model: AlexNet, layer: str = "fc7", *, pool: Pooling = "avg", normalize: bool = True,
                 dtype: Literal["float32", "float16"] = "float32", device: str | torch.device | None = None,
                 batch_size: int = 32, weights: str | None = None, precision: str = "auto",
                 weights_spec: str | None = None) -> None:
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(LAYERS)}")
        if pool not in ("avg", "max", None):
            raise ValueError(f"pool must be 'avg', 'max' or None, got {pool!r}")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.device = resolve_device(device)
        self.precision = model_precision(model, precision, self.device)
        self.model = model.eval().to(self.device)
        self.layer, self.normalize, self.dtype, self.batch_size = layer, normalize, dtype, batch_size
        self.pool = pool if layer in _CONV else None
        if model.preprocessing is None and model.arch is None:
            raise ValueError("a custom AlexNet variant has no default preprocessing: set model.preprocessing")
        self.preprocessing = model.preprocessing or DEFAULT_PREPROCESSING[model.arch]
        self.preprocess = ImagePreprocess(self.preprocessing)
        self.weights = weights or weights_label(model)
        self.weights_spec = weights_spec
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        """Length of one vector (found by running one blank image the first time)."""
        if self._dim is None:
            side = self.preprocessing.crop
            self._dim = int(self.embed_batch(torch.zeros(1, 3, side, side)).shape[1])
        return self._dim

    def info(self) -> dict[str, Any]:
        """What an index needs to know to accept or refuse these vectors."""
        return {"model": self.model.arch or "custom", "weights": self.weights, "weights_spec": self.weights_spec,
                "layer": self.layer, "pool": self.pool,
                "normalized": self.normalize, "dtype": self.dtype, "precision": self.precision, "dim": self.dim,
                "preprocessing": self.preprocessing.to_dict()}

    def prepare(self, item: ImageInput) -> Tensor:
        """One input -> the float (3, crop, crop) network input. Float tensors are taken as
        already preprocessed; uint8 tensors and PIL images go through the model's preprocessing."""
        if isinstance(item, Tensor):
            if item.dtype == torch.uint8:
                return self.preprocess(item)
            if item.dim() != 3:
                raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(item.shape)}")
            return item.float()
        if isinstance(item, Image.Image):
            return self.preprocess(item)
        return self.preprocess(read_image(item))

    def embed_batch(self, batch: Tensor) -> np.ndarray:
        """Preprocessed images (N, 3, H, W) -> vectors (N, dim) as numpy in the storage dtype."""
        with torch.inference_mode(), autocast(self.device, self.precision):  # inference mode: the CPU fast path
            x = self.model.extract(batch.to(self.device), (self.layer,))[self.layer]
            if x.dim() == 4 and self.pool == "avg":
                x = x.mean(dim=(2, 3))
            elif x.dim() == 4 and self.pool == "max":
                x = x.amax(dim=(2, 3))
            x = torch.flatten(x.float(), 1)
            if self.normalize:
                x = F.normalize(x, dim=1)
            out = x.cpu().numpy()
        if self.dtype == "float16":
            peak = float(np.abs(out).max(initial=0))
            if peak > FLOAT16_MAX:
                raise ValueError(f"{self.layer} values reach {peak:.4g}, beyond float16's {FLOAT16_MAX:.0f}: they "
                                 "cannot be stored as float16; use dtype='float32' (--dtype float32) or normalised "
                                 "vectors")
            return out.astype(np.float16)
        return out.astype(np.float32, copy=False)

    def __call__(self, items: ImageInput | Sequence[ImageInput] | Tensor) -> np.ndarray:
        """Vectors (N, dim) for a list of inputs, one input, or a batch tensor (N, 3, H, W)."""
        if isinstance(items, Tensor) and items.dim() == 4:
            parts: Iterable[Tensor] = items.split(self.batch_size)
            return np.concatenate([self.embed_batch(p.float() if p.dtype != torch.uint8
                                                    else torch.stack([self.preprocess(i) for i in p]))
                                   for p in parts])
        if isinstance(items, (str, os.PathLike, Image.Image, Tensor)):
            items = [items]
        items = list(items)
        if not items:
            return np.zeros((0, self.dim), np.float16 if self.dtype == "float16" else np.float32)
        chunks = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        return np.concatenate([self.embed_batch(torch.stack([self.prepare(i) for i in chunk])) for chunk in chunks])
