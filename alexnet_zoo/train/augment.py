"""Training-time augmentation as the paper describes it (section 4.1), applied to whole batches.

Workers only decode and resize pictures to uint8 256x256; the random crop, the horizontal flip,
the mean subtraction and the PCA colour shift run here, on the batch and on the training device,
so a GPU is fed 196 KB of uint8 per image instead of 600 KB of float, and the CPU does not
limit throughput. Every random draw comes from a generator seeded by (seed, rank, step): a run
resumed at step k draws exactly what the uninterrupted run drew, whatever the number of workers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from alexnet_zoo.data.transforms import ImagePreprocess, Preprocessing
from alexnet_zoo.devices import non_blocking

__all__ = ["IMAGENET_EIGVAL", "IMAGENET_EIGVEC", "PAPER_PREPROCESSING", "BatchAugment", "lighting_offsets",
           "step_generator"]

# PCA of ImageNet's RGB pixel values (scale 0..1): the values every public re-implementation of
# the paper's "fancy PCA" uses, first published in fb.resnet.torch (datasets/imagenet.lua,
# `pca = {eigval = ..., eigvec = ...}`, "computed from random subset of ImageNet training
# images") and copied by Caffe2's and many PyTorch ports. Rows are R, G, B; column j is the
# eigenvector p_j; the shift added to every pixel is  sum_j p_j * alpha_j * eigval_j, with
# alpha_j ~ N(0, 0.1), as in fb.resnet.torch's Lighting(0.1, eigval, eigvec).
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))

# The paper's input (section 2): raw RGB 0..255 minus the mean pixel of the training set, no
# scaling by a standard deviation; images rescaled to a short side of 256 and centre-cropped to
# 256x256 (resize_mode="short_side"; the 227 crop at test time is the centre of that square).
# The mean pixel is BVLC's ImageNet mean (ilsvrc_2012_mean.npy averaged over its 256x256 image),
# in RGB order.
PAPER_PREPROCESSING = Preprocessing(resize=256, resize_mode="short_side", crop=227, channel_order="RGB",
                                    scale=255.0, mean=(122.67891434, 116.66876762, 104.00698793),
                                    std=(1.0, 1.0, 1.0))


def _to(x: Tensor, device: torch.device) -> Tensor:
    """A small CPU tensor (crop offsets, colour shifts) to ``device`` without stalling the GPU: a
    blocking copy from pageable memory waits for every kernel already queued (the previous step),
    so the CPU could not run ahead; a copy from pinned memory is queued like a kernel."""
    if non_blocking(device):
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, rank, step): the same draws after a resume."""
    state = np.random.SeedSequence((seed, rank, step)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def lighting_offsets(n: int, std: float, generator: torch.Generator | None = None,
                     eigval: tuple[float, ...] = IMAGENET_EIGVAL,
                     eigvec: tuple[tuple[float, ...], ...] = IMAGENET_EIGVEC) -> Tensor:
    """(n, 3) RGB shifts in the 0..1 pixel scale, one per image: P @ (alpha * lambda) with a
    fresh alpha ~ N(0, std) for every image (the paper's "once per image each time it is used")."""
    alpha = torch.randn(n, 3, generator=generator) * std
    return (alpha * torch.tensor(eigval)) @ torch.tensor(eigvec).T


class BatchAugment:
    """uint8 (N, 3, S, S) batch -> float network input: random (or centre) crop, random flip,
    the preprocessing's scale / channel order / mean / std, and PCA lighting.

    ``train=False`` gives the evaluation input: the centre crop, nothing random. ``crop`` may be
    227 (Caffe, and the size the arithmetic of conv1 needs) or 224 (the paper's text)."""

    def __init__(self, preprocessing: Preprocessing, crop: int, *, train: bool, flip: bool = True,
                 random_crop: bool = True, pca_std: float = 0.1, channels_last: bool = False) -> None:
        self.p, self.crop, self.train = preprocessing, crop, train
        self.flip, self.random_crop, self.pca_std = flip and train, random_crop and train, pca_std if train else 0.0
        self.channels_last = channels_last
        self._preprocess: dict[torch.device, ImagePreprocess] = {}  # its mean and std on each device

    def describe(self) -> dict:
        return {"crop": self.crop, "random_crop": self.random_crop, "flip": self.flip, "pca_std": self.pca_std,
                "preprocessing": self.p.to_dict()}

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"BatchAugment expects a uint8 (N, 3, H, W) batch, got {images.dtype} "
                             f"{tuple(images.shape)}")
        n, _, h, w = images.shape
        c = self.crop
        if h < c or w < c:
            raise ValueError(f"cannot crop {c}x{c} from {h}x{w} images; resize them to at least {c} first")
        device = images.device
        if self.random_crop:
            top = torch.randint(0, h - c + 1, (n,), generator=generator)
            left = torch.randint(0, w - c + 1, (n,), generator=generator)
        else:
            top = torch.full((n,), (h - c) // 2)
            left = torch.full((n,), (w - c) // 2)
        flipped = torch.rand(n, generator=generator) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        ramp = torch.arange(c)
        rows = top[:, None] + ramp  # (n, c)
        cols = left[:, None] + torch.where(flipped[:, None], c - 1 - ramp, ramp)  # a flip reverses the columns
        if self.random_crop or self.flip:
            index = (torch.arange(n, device=device)[:, None, None, None],
                     torch.arange(3, device=device)[None, :, None, None],
                     _to(rows, device)[:, None, :, None], _to(cols, device)[:, None, None, :])
            x = images[index]  # one gather does every image's crop and flip
        else:
            x = images[:, :, (h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
        x = self.normalize(x)
        if self.pca_std > 0:
            x = x + _to(self.lighting(n, generator), device)[:, :, None, None]
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 RGB -> float in the preprocessing's scale, channel order, mean and std: the
        evaluation's own arithmetic (:meth:`ImagePreprocess.normalize`), moved to the batch's
        device once."""
        if x.device not in self._preprocess:
            self._preprocess[x.device] = ImagePreprocess(self.p).to(x.device)
        return self._preprocess[x.device].normalize(x)

    def lighting(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 3) shifts to add to the normalised input: the RGB 0..1 PCA shifts brought into the
        preprocessing's scale and channel order and divided by its std."""
        rgb = lighting_offsets(n, self.pca_std, generator) * self.p.scale
        if self.p.channel_order == "BGR":
            rgb = rgb.flip(1)
        return rgb / torch.tensor(self.p.std)
