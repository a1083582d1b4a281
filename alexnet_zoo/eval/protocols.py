"""The three test protocols: which crops of which square images a batch is scored on, and how
their softmax outputs are combined into one class distribution per image.

* ``center``: the centre crop (227 or 224) of the 256x256 image: how BVLC and torchvision report.
* ``ten``: the paper's test (section 4.1): the four corner crops and the centre crop of the
  256x256 image and their horizontal mirrors, in torchvision's ``TenCrop`` order; the softmax
  outputs of the ten are averaged.
* ``dense``: beyond the paper (OverFeat, VGG): the fully convolutional net over the whole
  square image at one or more sides and over its mirror; the class-score map is averaged over
  space, and the softmax outputs of all scales and mirrors are averaged.

Every crop is cut from whole batches of uint8 tensors (no per-image Python), normalised once per
image rather than once per crop, laid out channels-last as the network wants, and sent through one
forward pass per batch. :func:`predict` is the one per-batch entry point: evaluation, throughput,
``classify --crops 10`` and the training recipe's ten-crop validation all score through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from alexnet_zoo.data.transforms import ImagePreprocess, Preprocessing, center_crop

__all__ = ["MAX_SCALE", "PROTOCOLS", "average_softmax", "dense_probs", "image_sizes", "predict", "score_maps",
           "ten_crops"]

PROTOCOLS = ("center", "ten", "dense")
MAX_SCALE = 2048  # dense sides: each image is held at side x side (x batch, x scales) in memory


def ten_crops(x: Tensor, size: int) -> Tensor:
    """Images (N, C, H, W) -> (N * 10, C, size, size), image by image in torchvision's
    ``TenCrop`` order: the five crops (corners, centre) of the image, then the five crops of its
    horizontal mirror. Values are exact copies; the result is channels-last, one copy in all."""
    if x.dim() != 4:
        raise ValueError(f"ten_crops expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"crop {size} is larger than the images ({h}x{w})")
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]  # torchvision's five_crop order
    views = [crop for img in (x, x.flip(-1))
             for crop in (*(img[..., t:t + size, l:l + size] for t, l in corners), center_crop(img, size))]
    channels_last = [v.permute(0, 2, 3, 1) for v in views]
    return torch.stack(channels_last, dim=1).flatten(0, 1).permute(0, 3, 1, 2)  # (N*10, h, w, C) memory, NCHW view


def average_softmax(logits: Tensor, views: int) -> Tensor:
    """Logits of ``views`` consecutive views per image (N * views, C) -> the mean of their
    softmax outputs (N, C), as the paper averages its ten patches."""
    probs = torch.softmax(logits.float(), dim=-1)
    return probs.view(-1, views, probs.shape[-1]).mean(dim=1)


def score_maps(model: nn.Module) -> nn.Module:
    """The fully convolutional form of ``model``: images (N, 3, H, W) -> class scores (N, C, h, w)."""
    return model.to_dense()


def dense_probs(dense: nn.Module, x: Tensor, flip: bool = True) -> Tensor:
    """Normalised images (N, 3, H, W) -> class probabilities (N, C): the softmax of the class
    score map averaged over space, averaged with that of the mirrored images (VGG's dense test).
    Image and mirror go through one forward pass."""
    n = x.shape[0]
    scores = dense(torch.cat([x, x.flip(-1)]) if flip else x).float().mean(dim=(-2, -1))
    return torch.softmax(scores, dim=-1).view(2 if flip else 1, n, -1).mean(dim=0)


def image_sizes(protocol: str, preprocessing: Preprocessing, scales: Sequence[int] | None = None) -> tuple[int, ...]:
    """The square sides a protocol needs images at: the preprocessing's resize (256) for
    ``center`` and ``ten``; ``scales`` (default: the resize) for ``dense``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if scales and protocol != "dense":
        raise ValueError(f"scales are for the dense protocol; {protocol!r} cuts its crops from the "
                         f"{preprocessing.resize}x{preprocessing.resize} image")
    bad = [s for s in scales or () if not preprocessing.crop <= s <= MAX_SCALE]
    if bad:
        raise ValueError(f"dense scale {bad[0]}: expected a side from the weights' crop ({preprocessing.crop}) "
                         f"to {MAX_SCALE} pixels")
    return tuple(scales) if scales else (preprocessing.resize,)


def predict(model: nn.Module, images: Sequence[Tensor], protocol: str, preprocess: ImagePreprocess, *,
            dense: nn.Module | None = None, flip: bool = True) -> Tensor:
    """Class probabilities (N, C) of a batch: ``images`` holds uint8 (N, 3, s, s) square images,
    one tensor per side of :func:`image_sizes`. Call under ``torch.inference_mode()`` (the CPU
    fast path needs it)."""
    crop = preprocess.preprocessing.crop
    if protocol == "center":
        return torch.softmax(model(preprocess.normalize(center_crop(images[0], crop))).float(), dim=-1)
    if protocol == "ten":
        return average_softmax(model(ten_crops(preprocess.normalize(images[0]), crop)), 10)
    if protocol == "dense":
        dense = dense if dense is not None else score_maps(model)
        probs = [dense_probs(dense, preprocess.normalize(x), flip) for x in images]
        return probs[0] if len(probs) == 1 else torch.stack(probs).mean(dim=0)
    raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
