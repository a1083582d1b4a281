"""Preprocessing exactly as each set of weights was trained and measured with.

BVLC's Caffe AlexNet saw images squashed to 256x256, BGR, 0-255, minus the mean pixel, cropped
to 227; torchvision's saw the short side resized to 256, RGB, 0-1, normalised by mean/std,
cropped to 224. Using one with the other's preprocessing costs several points of accuracy, so
weights carry their :class:`Preprocessing` and ``spec.transforms()`` returns it.

The antialiased bilinear uint8 resize and the centre crop are torchvision v2's, computed here with
the same ``F.interpolate`` call, size rule and crop anchor (equal pixel for pixel: tested against
torchvision): any torchvision import runs its package ``__init__``, which pulls in ``torch._dynamo``
(1.2 s), and a one-picture ``classify`` must not pay for it (benchmarks/startup.py). Other
interpolations go through torchvision itself, imported on first use.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

__all__ = ["BVLC_PREPROCESSING", "DEFAULT_PREPROCESSING", "TORCHVISION_PREPROCESSING", "ImagePreprocess",
           "Preprocessing", "ResizeMode", "center_crop", "resize_uint8", "square_uint8"]

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
    if mode == "squash":
        return resize_uint8(image, [size, size], interpolation)
    if min(image.shape[-2:]) != size:
        image = resize_uint8(image, [size], interpolation)
    return center_crop(image, size)


def resize_uint8(image: Tensor, size: list[int], interpolation: str = "bilinear") -> Tensor:
    """torchvision v2's ``resize(image, size, interpolation, antialias=True)`` of a uint8 (..., C, H, W)
    tensor: ``[h, w]``, or ``[short]`` for the short side (the long one truncated, as torchvision does)."""
    if interpolation != "bilinear" or image.device.type != "cpu" or image.dtype != torch.uint8:
        from torchvision.transforms.v2 import functional as TF

        return TF.resize(image, size, interpolation=TF.InterpolationMode(interpolation), antialias=True)
    shape = image.shape
    channels, height, width = shape[-3:]
    if len(size) == 1:
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size[0], int(size[0] * long / short)
        new_h, new_w = (new_long, new_short) if width <= height else (new_short, new_long)
    else:
        new_h, new_w = size
    if (new_h, new_w) == (height, width):
        return image
    if image.numel() == 0:
        return image.reshape(shape[:-2] + (new_h, new_w))
    x = image.reshape(-1, channels, height, width)
    strides = x.stride()
    if x.is_contiguous(memory_format=torch.channels_last) and x.shape[0] == 1 and image.numel() != strides[0]:
        # a (3, H, W) view of (H, W, 3) memory: restrided so interpolate keeps channels-last (no repack)
        x = x.as_strided((1, channels, height, width), [image.numel(), *strides[1:]])
    if _native_uint8_bilinear():
        out = F.interpolate(x, size=[new_h, new_w], mode="bilinear", align_corners=False, antialias=True)
    else:  # torch has no uint8 kernel for this CPU: torchvision computes in float and rounds
        out = F.interpolate(x.float(), size=[new_h, new_w], mode="bilinear", align_corners=False, antialias=True)
        out = out.round_().to(torch.uint8)
    return out.reshape(shape[:-2] + (new_h, new_w))


def center_crop(image: Tensor, crop: int) -> Tensor:
    """torchvision's ``center_crop(image, [crop, crop])`` of a picture or a batch (..., H, W), as a
    view: the same anchor rounding (Python's ``round``, halves to even; 256 - 227 = 29 -> 14), for
    single pictures and the evaluation protocols alike; a picture smaller than the crop goes through
    torchvision (it pads)."""
    height, width = image.shape[-2:]
    if crop > height or crop > width:
        from torchvision.transforms.v2 import functional as TF

        return TF.center_crop(image, [crop, crop])
    top, left = round((height - crop) / 2.0), round((width - crop) / 2.0)  # round() of a float is an int
    return image[..., top:top + crop, left:left + crop]


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
        return resize_uint8(x, size, p.interpolation)

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
        return self.normalize(center_crop(self.resized(img), self.preprocessing.crop))

    def extra_repr(self) -> str:
        return repr(self.preprocessing)


def _native_uint8_bilinear() -> bool:
    """Where torchvision resizes uint8 without a float round trip (its ``_do_native_uint8_resize_on_cpu``)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


def _uint8_rgb(img: Image.Image | Tensor) -> Tensor:
    # startup: the decoding module (PIL.ImageOps, its limits) loads with the first picture, not with every model
    from alexnet_zoo.data.images import pil_to_uint8

    x = pil_to_uint8(img) if isinstance(img, Image.Image) else img
    if x.dtype != torch.uint8 or x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a PIL image or a uint8 (3, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    return x
