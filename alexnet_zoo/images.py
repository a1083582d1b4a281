"""Decoding any picture a user may have into 8-bit RGB, or a clear error naming the file.

Camera JPEGs carry their rotation in EXIF; scanners write CMYK; PNGs come as palettes, with
alpha, or with 16 bits per channel; GIFs and MPOs have several frames. Each of these becomes the
RGB image a person would see. Truncated or non-image files raise :class:`UnreadableImage`
instead of returning a half-grey picture.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from alexnet_zoo.errors import UnreadableImage

__all__ = ["load_image", "to_rgb"]

_BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as image viewers do


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
