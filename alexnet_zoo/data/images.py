"""Decoding any picture a user may have into 8-bit RGB, or a clear error naming the file.

Camera JPEGs carry their rotation in EXIF; scanners write CMYK; PNGs come as palettes, with
alpha, or with 16 bits per channel; GIFs and MPOs have several frames. Each of these becomes the
RGB image a person would see. Truncated or non-image files raise :class:`UnreadableImage`
instead of returning a half-grey picture.

:func:`read_image` is what the pipelines (evaluation, extraction, training) use: the same pixels
as :func:`load_image` as a uint8 tensor, with JPEGs decoded by torchvision's libjpeg-turbo binding
straight into a tensor (1.25 ms per ImageNet JPEG against 1.9 ms through Pillow and the tensor
conversion, measured on this project's 2-core machine).

Hostile files: every path reads at most :func:`max_file_bytes` of a file and checks the size its
header declares against one pixel limit, :func:`max_pixels`, before any pixel is decoded
(:func:`check_image_bytes`). torchvision's decoder has no limit of its own, and Pillow's only
warns between its ``MAX_IMAGE_PIXELS`` and twice that; here the limit is the limit. Raise it
deliberately with the environment variables ``ALEXNET_ZOO_MAX_PIXELS`` and
``ALEXNET_ZOO_MAX_IMAGE_BYTES`` (read at each call, so DataLoader workers see them too).
"""

from __future__ import annotations

import functools
import io
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from alexnet_zoo.errors import UnreadableImage

__all__ = ["DEFAULT_MAX_FILE_BYTES", "DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "MAX_FILE_BYTES_ENV", "MAX_PIXELS_ENV",
           "check_image_bytes", "check_pixels", "decode_image_bytes", "load_image", "max_file_bytes",
           "max_pixels", "pil_to_uint8", "read_image", "read_image_bytes", "to_rgb"]

# The file suffixes every folder walk takes for pictures (evaluation, extraction, training, packing):
# the formats read_image decodes (Pillow's JPEG/JFIF/MPO, PNG, BMP, GIF, WebP, TIFF, PNM).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".mpo", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                            ".ppm", ".pgm"})
_BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as image viewers do

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default MAX_IMAGE_PIXELS: about 0.25 GB of 8-bit RGB
MAX_PIXELS_ENV = "ALEXNET_ZOO_MAX_PIXELS"
DEFAULT_MAX_FILE_BYTES = 512 * 2**20  # above an uncompressed 8-bit RGB picture at the pixel limit
MAX_FILE_BYTES_ENV = "ALEXNET_ZOO_MAX_IMAGE_BYTES"
_MAX_JPEG_SCANS = 500  # libjpeg-turbo's advice against scan bombs; real progressive JPEGs have ~10



@functools.cache
def _torchvision_jpeg() -> Callable[[Tensor], Tensor] | None:
    """torchvision's libjpeg-turbo decoder, imported on first use (importing torchvision costs 1.3 s,
    which a one-picture ``classify`` through Pillow need not pay); None where a future torchvision
    dropped its decoders (deprecated in 0.29): Pillow then decodes all."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # pragma: no cover - depends on the installed torchvision
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB, apply_exif_orientation=True)


def _positive_int_env(name: str, default: int) -> int:
    """The positive integer in environment variable ``name`` (``_`` separators allowed), else ``default``."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={text!r}: expected a positive whole number")
    return value


def max_pixels() -> int:
    """The one pixel limit (width x height) of every decoding path: ``ALEXNET_ZOO_MAX_PIXELS`` or
    :data:`DEFAULT_MAX_PIXELS`. A picture that declares more is refused before it is decoded."""
    return _positive_int_env(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)


def max_file_bytes() -> int:
    """The most bytes read from one image file: ``ALEXNET_ZOO_MAX_IMAGE_BYTES`` or
    :data:`DEFAULT_MAX_FILE_BYTES`, so memory stays bounded whatever a file (or /dev/zero) holds."""
    return _positive_int_env(MAX_FILE_BYTES_ENV, DEFAULT_MAX_FILE_BYTES)


def check_pixels(width: int, height: int, name: str | os.PathLike) -> None:
    """Raise :class:`UnreadableImage` naming ``name`` unless a ``width`` x ``height`` picture is
    non-empty and within :func:`max_pixels`."""
    if width <= 0 or height <= 0:
        raise UnreadableImage(f"{name}: declares a {width}x{height} picture: zero-sized, nothing to decode")
    limit = max_pixels()
    if width * height > limit:
        raise UnreadableImage(f"{name}: declares {width}x{height} = {width * height:,} pixels, over the "
                              f"limit of {limit:,} pixels (a decompression bomb?); raise it with "
                              f"{MAX_PIXELS_ENV} if the picture is wanted")


def _check_length(size: int, name: str | os.PathLike) -> None:
    """Raise :class:`UnreadableImage` when ``size`` bytes are over :func:`max_file_bytes`."""
    limit = max_file_bytes()
    if size > limit:
        raise UnreadableImage(f"{name}: {size:,} bytes, over the image file limit of {limit:,} bytes; "
                              f"raise it with {MAX_FILE_BYTES_ENV} if the file is wanted")


def read_image_bytes(path: str | os.PathLike) -> bytearray:
    """The bytes of the file at ``path``, or :class:`UnreadableImage` when it holds more than
    :func:`max_file_bytes` (checked before reading, and again while reading: a file that grows, a
    pipe or a device never gets past the limit)."""
    limit = max_file_bytes()
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            _check_length(size, path)
            data = bytearray(size)
            got = f.readinto(data) if size else 0
            if got < size:
                del data[got:]  # shrank since fstat
            while len(data) <= limit:  # more than fstat said: special files, or still growing
                chunk = f.read(min(1 << 20, limit + 1 - len(data)))
                if not chunk:
                    return data
                data += chunk
            raise UnreadableImage(f"{path}: more than the image file limit of {limit:,} bytes; raise it "
                                  f"with {MAX_FILE_BYTES_ENV} if the file is wanted")
    except FileNotFoundError as err:
        raise UnreadableImage(f"{path}: no such file") from err
    except OSError as err:
        raise UnreadableImage(f"{path}: cannot read ({err})") from err


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3})  # at least one bit per 8x8 block (libjpeg's Huffman modes)
_PROGRESSIVE_SOF = frozenset({0xC2, 0xCA})
_NO_LENGTH = frozenset({0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8})
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEFLATE_MAX_RATIO = 1100  # deflate inflates at most 1032:1 (a 258-byte match per two bits)


def _jpeg_size(data: bytes | bytearray, name: str | os.PathLike) -> tuple[int, int] | None:
    """The (width, height) the SOF markers of a JPEG declare, checked, or None when no SOF comes
    before the first scan (then Pillow decides). Walks the marker segments as libjpeg does (junk
    between segments skipped), so a second SOF or a forged one further on is seen too."""
    n, pos, found, sof, sos = len(data), 2, None, 0, -1
    while pos + 1 < n:
        if data[pos] != 0xFF:
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF or marker == 0x00:
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if marker == 0xDA or marker == 0xD9:
            sos = pos
            break
        if marker in _SOF and pos + 9 <= n:
            height, width = int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")
            check_pixels(width, height, name)
            if found is None or width * height > found[0] * found[1]:
                found, sof = (width, height), marker
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    if found is None:
        return None
    width, height = found
    if sof in _HUFFMAN_SOF:
        needed = ((width + 7) // 8) * ((height + 7) // 8) // 8  # >= 1 bit per block of the full-size component
        held = n - sos if sos >= 0 else 0
        if held < needed:
            raise UnreadableImage(f"{name}: the JPEG header declares {width}x{height} but only {held:,} bytes "
                                  f"of image data follow, fewer than any JPEG of that size needs "
                                  f"({needed:,}): truncated, or a forged header")
    if sof in _PROGRESSIVE_SOF and sos >= 0 and data.count(b"\xff\xda", sos) > _MAX_JPEG_SCANS:
        raise UnreadableImage(f"{name}: a progressive JPEG of more than {_MAX_JPEG_SCANS} scans (each one "
                              f"decodes the whole picture again: a CPU bomb?)")
    return found


def _header_size(data: bytes | bytearray, name: str | os.PathLike) -> tuple[int, int] | None:
    """The checked (width, height) that a JPEG, PNG, GIF or WebP header declares, read from the
    bytes in microseconds; None for other formats (Pillow's lazy open reads their header)."""
    head = bytes(data[:32])
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(data, name)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 26:
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        check_pixels(width, height, name)
        bits = head[24] * _PNG_CHANNELS.get(head[25], 1)
        raw = height * (1 + (width * bits + 7) // 8)
        if len(data) * _DEFLATE_MAX_RATIO < raw:
            raise UnreadableImage(f"{name}: the PNG header declares {width}x{height} ({raw:,} bytes of pixel "
                                  f"data) but the file holds {len(data):,} bytes, fewer than any PNG of that "
                                  f"size needs: truncated, or a forged header")
        return width, height
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        size = int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8X":
            size = 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        elif chunk == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            size = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        elif chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            size = int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
        else:
            return None
    else:
        return None
    check_pixels(size[0], size[1], name)
    return size


def _pillow_limit_for(limit: int) -> None:
    """Let Pillow's own checks (on open, on later frames, on ICO/ICNS members) fire no earlier than
    our limit: raise its ``MAX_IMAGE_PIXELS`` if a user raised ours above it, never lower it."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit


def _open_checked(data: bytes | bytearray, name: str | os.PathLike) -> Image.Image:
    """Pillow's lazy open of ``data`` (the header only), with the declared size checked; Pillow's
    decompression-bomb warnings are errors (its warning band is over our limit too)."""
    _header_size(data, name)
    _pillow_limit_for(max_pixels())
    img = Image.open(io.BytesIO(data))
    check_pixels(img.width, img.height, name)
    return img


def check_image_bytes(data: bytes | bytearray, name: str | os.PathLike) -> tuple[int, int]:
    """The (width, height) an encoded picture declares, or :class:`UnreadableImage` naming ``name``
    when that is over :func:`max_pixels`, zero, implausible for the bytes given, or not an image.
    Decodes nothing: the one check every decoder of this project (and a service) runs first."""
    _check_length(len(data), name)
    size = _header_size(data, name)
    if size is not None:
        return size
    with _pillow_errors(name), _open_checked(data, name) as img:
        return img.size


@contextmanager
def _pillow_errors(name: str | os.PathLike) -> Iterator[None]:
    """Turn what Pillow raises on bad data into :class:`UnreadableImage` naming the file; inside,
    Pillow's :class:`~PIL.Image.DecompressionBombWarning` is raised, not printed and ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except UnreadableImage:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            found = re.search(r"\((\d+) pixels\)", str(err))
            declared = f"{int(found.group(1)):,} pixels" if found else "more pixels"
            raise UnreadableImage(f"{name}: declares {declared}, over the limit of {max_pixels():,} pixels (a "
                                  f"decompression bomb?); raise it with {MAX_PIXELS_ENV} if the picture "
                                  f"is wanted") from err
        except UnidentifiedImageError as err:
            raise UnreadableImage(f"{name}: not an image format Pillow can read") from err
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
            raise UnreadableImage(f"{name}: cannot decode ({err})") from err


def _decode_pillow(data: bytes | bytearray, name: str | os.PathLike) -> Image.Image:
    """Pillow's upright 8-bit RGB first frame of ``data``, every size checked before decoding."""
    with _pillow_errors(name), _open_checked(data, name) as img:
        img.seek(0)
        img.load()  # decode now: truncated data raises here, not later in a worker
        check_pixels(img.width, img.height, name)  # a plugin may resize on load (ICO, ICNS)
        return to_rgb(_upright(img))


def load_image(path: str | os.PathLike) -> Image.Image:
    """The image at ``path`` as an upright 8-bit RGB picture (first frame of animations), read
    within :func:`max_file_bytes` and checked against :func:`max_pixels` before decoding."""
    return _decode_pillow(read_image_bytes(path), path)


def decode_image_bytes(data: bytes | bytearray, name: str | os.PathLike) -> Tensor:
    """An encoded picture as :func:`read_image` returns it; ``name`` is what errors call it.

    JPEGs (CMYK and EXIF-rotated ones included) go through ``torchvision.io.decode_jpeg``, whose
    pixels equal Pillow's (both are libjpeg-turbo with the same IDCT and upsampling; tested), once
    their SOF header passed :func:`check_image_bytes`; a JPEG it refuses (truncated, odd markers)
    and every other format go through Pillow, which decides between a picture and a typed error."""
    _check_length(len(data), name)
    decode_jpeg = _torchvision_jpeg() if data[:2] == b"\xff\xd8" else None
    if decode_jpeg is not None and _jpeg_size(data, name) is not None:
        buffer = data if isinstance(data, bytearray) else bytearray(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torchvision 0.29 announces a move to torchcodec
                return decode_jpeg(torch.frombuffer(buffer, dtype=torch.uint8))
        except RuntimeError:
            pass
    return pil_to_uint8(_decode_pillow(data, name))


def read_image(path: str | os.PathLike) -> Tensor:
    """The image at ``path`` as an upright uint8 RGB (3, H, W) tensor, or :class:`UnreadableImage`.

    The file is read within :func:`max_file_bytes`, its header checked against :func:`max_pixels`
    (microseconds: the JPEG SOF is parsed from the bytes read), then decoded by
    :func:`decode_image_bytes`. The memory is (H, W, 3) (:func:`pil_to_uint8`)."""
    return decode_image_bytes(read_image_bytes(path), path)


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
