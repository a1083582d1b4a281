"""Preprocessing exactly as each set of weights was trained and measured with.

BVLC's Caffe AlexNet saw images squashed to 256x256, BGR, 0-255, minus the mean pixel, cropped
to 227; torchvision's saw the short side resized to 256, RGB, 0-1, normalised by mean/std,
cropped to 224. Using one with the other's preprocessing costs several points of accuracy, so
weights carry their :class:`Preprocessing` and ``spec.transforms()`` returns it.

torchvision is imported on first use, not with this module: any torchvision import runs its package
``__init__``, which pulls in ``torch._dynamo`` (1.3 s), and ``import alexnet_zoo`` must stay as light
as ``import torch`` (benchmarks/startup.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor, nn

__all__ = ["BVLC_PREPROCESSING", "DEFAULT_PREPROCESSING", "ImagePreprocess", "Preprocessing", "ResizeMode",
           "TORCHVISION_PREPROCESSING", "square_uint8"]

ResizeMode = Literal["squash", "short_side"]


@dataclass(frozen=True)
class Preprocessing:
    """How pictures become the network's input."""

    resize: int = 256
    resize_mode: ResizeMode = "short_side"  # squash: whole image to resize x resize
    crop: int = 224
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = 1.0  # pixel values span 0..scale before normalising
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # per channel, in channel_order and scale
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.resize_mode not in ("squash", "short_side") or self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"unknown resize mode or channel order in {self}")
        if self.crop > self.resize:
            raise ValueError(f"crop {self.crop} is larger than the resized image ({self.resize})")

    def transforms(self) -> ImagePreprocess:
        return ImagePreprocess(self)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(**data)


BVLC_PREPROCESSING = Preprocessing(resize=256, resize_mode="squash", crop=227, channel_order="BGR", scale=255.0,
                                   mean=(104.00698793, 116.66876762, 122.67891434), std=(1.0, 1.0, 1.0))
TORCHVISION_PREPROCESSING = Preprocessing()
# what a model without weights of its own is fed: its arch's reference weights' preprocessing
DEFAULT_PREPROCESSING = {"alexnet": BVLC_PREPROCESSING, "alexnet_owt": TORCHVISION_PREPROCESSING}


def square_uint8(image: Tensor, size: int, mode: ResizeMode, interpolation: str = "bilinear") -> Tensor:
    """uint8 (..., 3, H, W) -> uint8 (..., 3, size, size), the picture every crop is cut from: the
    short side to ``size`` then the central square (the paper, torchvision), or the whole picture
    squashed (BVLC). ``Resize(256)`` + ``CenterCrop(224)`` equals ``CenterCrop(224)`` of this square
    exactly (tested). A picture already of that size is returned as is (packed training folders)."""
    if mode not in ("squash", "short_side"):
        raise ValueError(f"unknown resize mode {mode!r}; choose short_side or squash")
    if tuple(image.shape[-2:]) == (size, size):
        return image
    TF = _functional()
    interp = TF.InterpolationMode(interpolation)
    if mode == "squash":
        return TF.resize(image, [size, size], interpolation=interp, antialias=True)
    if min(image.shape[-2:]) != size:
        image = TF.resize(image, [size], interpolation=interp, antialias=True)
    return TF.center_crop(image, [size, size])


class ImagePreprocess(nn.Module):
    """PIL image or uint8 (3, H, W) tensor -> float (3, crop, crop) network input."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.preprocessing = p = preprocessing
        self.register_buffer("mean", torch.tensor(p.mean).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(p.std).view(3, 1, 1), persistent=False)

    def resized(self, img: Image.Image | Tensor) -> Tensor:
        """The uint8 RGB image resized as the weights expect, before cropping (in squash mode the
        square that centre and ten-crop protocols cut from)."""
        p = self.preprocessing
        x = _uint8_rgb(img)
        size = [p.resize, p.resize] if p.resize_mode == "squash" else [p.resize]
        TF = _functional()
        return TF.resize(x, size, interpolation=TF.InterpolationMode(p.interpolation), antialias=True)

    def square(self, img: Image.Image | Tensor, side: int | None = None) -> Tensor:
        """The uint8 (3, side, side) square every crop of the evaluation protocols is cut from
        (``side`` defaults to the preprocessing's resize, 256)."""
        p = self.preprocessing
        return square_uint8(_uint8_rgb(img), side or p.resize, p.resize_mode, p.interpolation)

    def normalize(self, x: Tensor) -> Tensor:
        """uint8 RGB crops (..., 3, h, w) -> float network input (channel order, scale, mean, std)."""
        p = self.preprocessing
        x = x.float() * (p.scale / 255.0)
        if p.channel_order == "BGR":
            x = x.flip(-3)
        return (x - self.mean) / self.std

    def forward(self, img: Image.Image | Tensor) -> Tensor:
        return self.normalize(_functional().center_crop(self.resized(img), [self.preprocessing.crop] * 2))

    def extra_repr(self) -> str:
        return repr(self.preprocessing)


def _functional() -> Any:
    """torchvision's v2 functional transforms (imported on first use, see the module docstring)."""
    from torchvision.transforms.v2 import functional

    return functional


def _uint8_rgb(img: Image.Image | Tensor) -> Tensor:
    from alexnet_zoo.images import pil_to_uint8  # images.py imports torchvision's decoders

    x = pil_to_uint8(img) if isinstance(img, Image.Image) else img
    if x.dtype != torch.uint8 or x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a PIL image or a uint8 (3, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    return x
