"""Decoding any picture a user may have into 8-bit RGB, or a clear error naming the file.

Camera JPEGs carry their rotation in EXIF; scanners write CMYK; PNGs come as palettes, with
alpha, or with 16 bits per channel; GIFs and MPOs have several frames. Each of these becomes the
RGB image a person would see. Truncated or non-image files raise :class:`UnreadableImage`
instead of returning a half-grey picture.

:func:`read_image` is what the pipelines (evaluation, extraction, training) use: the same pixels
as :func:`load_image` as a uint8 tensor, with JPEGs decoded by torchvision's libjpeg-turbo binding
straight into a tensor (1.25 ms per ImageNet JPEG against 1.9 ms through Pillow and the tensor
conversion, measured on this project's 2-core machine).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from alexnet_zoo.errors import UnreadableImage

__all__ = ["load_image", "pil_to_uint8", "read_image", "to_rgb"]

_BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as image viewers do

try:  # a future torchvision may drop its decoders (deprecated in 0.29): Pillow then decodes all
    from torchvision.io import ImageReadMode as _ReadMode
    from torchvision.io import decode_jpeg as _decode_jpeg
    _RGB = _ReadMode.RGB
except ImportError:  # pragma: no cover - depends on the installed torchvision
    _decode_jpeg = None


def load_image(path: str | os.PathLike) -> Image.Image:
    """The image at ``path`` as an upright 8-bit RGB picture (first frame of animations)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.seek(0)
            img.load()  # decode now: truncated data raises here, not later in a worker
            return to_rgb(_upright(img))
    except FileNotFoundError as err:
        raise UnreadableImage(f"{path}: no such file") from err
    except UnidentifiedImageError as err:
        raise UnreadableImage(f"{path}: not an image format Pillow can read") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"{path}: cannot decode ({err})") from err


def read_image(path: str | os.PathLike) -> Tensor:
    """The image at ``path`` as an upright uint8 RGB (3, H, W) tensor, or :class:`UnreadableImage`.

    JPEGs (CMYK and EXIF-rotated ones included) go through ``torchvision.io.decode_jpeg``, whose
    pixels equal Pillow's (both are libjpeg-turbo with the same IDCT and upsampling; tested); a JPEG
    it refuses (truncated, odd markers) and every other format go through :func:`load_image`, which
    decides between a picture and a typed error. The memory is (H, W, 3) (:func:`pil_to_uint8`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise UnreadableImage(f"{path}: no such file") from err
    except OSError as err:
        raise UnreadableImage(f"{path}: cannot read ({err})") from err
    if data[:2] == b"\xff\xd8" and _decode_jpeg is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchvision 0.29 announces a move to torchcodec
                return _decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=_RGB,
                                    apply_exif_orientation=True)
        except RuntimeError:
            pass
    return pil_to_uint8(load_image(path))


def pil_to_uint8(img: Image.Image) -> Tensor:
    """Any Pillow picture -> uint8 RGB (3, H, W), a view of (H, W, 3) memory as torchvision's
    decoder returns it: the antialiased uint8 resize runs 3x faster on that layout than on a
    contiguous (3, H, W) copy (0.27 against 0.9 ms for an ImageNet JPEG to 256x256)."""
    return torch.from_numpy(np.array(to_rgb(img))).permute(2, 0, 1)


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block leaves the image as stored."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - Pillow raises many types for malformed EXIF; pixels are fine
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: 16/32-bit grey is rescaled (not clipped), CMYK and
    palettes converted, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 65535 -> 255
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")
