"""Decoding awkward real pictures, and preprocessing as each set of weights expects; hostile
pictures (decompression bombs, forged headers, huge files) refused before they cost memory."""

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from alexnet_zoo.data import images
from alexnet_zoo.data.images import check_image_bytes, load_image, read_image
from alexnet_zoo.data.transforms import BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING
from alexnet_zoo.errors import UnreadableImage

IMAGES = Path(__file__).parent / "data" / "images"
EXAMPLE = Path(__file__).parents[1] / "examples" / "chelsea.png"
ROBUSTNESS = Path("/work/shared/data/robustness")


def test_cmyk_jpeg_matches_its_rgb_twin():
    cmyk = np.asarray(load_image(IMAGES / "pil_sample_cmyk.jpg"), dtype=np.float64)
    rgb = np.asarray(load_image(IMAGES / "pil_sample_rgb.jpg"), dtype=np.float64)
    assert cmyk.shape == rgb.shape == (100, 100, 3)
    assert np.abs(cmyk - rgb).mean() < 8  # same picture, different JPEG encodings


def test_exif_orientation_is_applied():
    upright = np.asarray(load_image(IMAGES / "hopper.jpg"), dtype=np.float64)
    rotated = np.asarray(load_image(IMAGES / "hopper_orientation_6.jpg"), dtype=np.float64)
    stored = np.asarray(Image.open(IMAGES / "hopper_orientation_6.jpg").convert("RGB"), dtype=np.float64)
    assert np.abs(rotated - upright).mean() < 10  # once turned, it is the upright picture
    assert np.abs(stored - upright).mean() > 30  # and it was not stored that way


@pytest.mark.parametrize("name", ["pil123p.png", "transparent.png", "hopper.gif"])
def test_palette_alpha_and_gif_become_rgb(name):
    img = load_image(IMAGES / name)
    assert img.mode == "RGB"


def test_transparent_pixels_are_white():
    src = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    src.putpixel((0, 0), (0, 0, 255, 255))
    from alexnet_zoo.data.images import to_rgb

    out = np.asarray(to_rgb(src))
    assert tuple(out[1, 1]) == (255, 255, 255) and tuple(out[0, 0]) == (0, 0, 255)


def test_16_bit_grey_is_rescaled_not_clipped(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_image(path))[:, :, 0].astype(np.int64)
    assert out.max() == round(63000 / 257) and out.min() == 0
    assert np.all(np.diff(out.ravel()) >= 0)  # still a ramp: nothing saturated at 255


@pytest.mark.parametrize("name", sorted(p.name for p in IMAGES.iterdir() if p.suffix in (".jpg", ".png", ".gif")
                                       and "truncated" not in p.name) + ["../../../examples/chelsea.png"])
def test_read_image_gives_load_images_pixels_as_a_tensor(name):
    """The pipelines' decoder (torchvision's libjpeg-turbo for JPEGs: CMYK, EXIF-rotated) and the
    Pillow path agree pixel for pixel."""
    tensor = read_image(IMAGES / name)
    assert tensor.dtype == torch.uint8 and tensor.shape[0] == 3
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), np.asarray(load_image(IMAGES / name)))


def test_read_image_of_a_cut_jpeg_is_an_error_not_a_grey_picture(tmp_path):
    data = (IMAGES / "hopper.jpg").read_bytes()
    for fraction in (0.3, 0.9):
        path = tmp_path / f"cut{fraction}.jpg"
        path.write_bytes(data[:int(len(data) * fraction)])
        with pytest.raises(UnreadableImage, match=path.name):
            read_image(path)


@pytest.mark.parametrize("decode", [load_image, read_image])
@pytest.mark.parametrize("make", ["truncated", "text", "missing", "empty"])
def test_unreadable_files_raise_a_typed_error_naming_the_file(tmp_path, make, decode):
    path = {"truncated": IMAGES / "truncated_jpeg.jpg", "text": tmp_path / "notes.jpg",
            "missing": tmp_path / "nope.png", "empty": tmp_path / "empty.png"}[make]
    if make == "text":
        path.write_text("not a picture")
    if make == "empty":
        path.write_bytes(b"")
    with pytest.raises(UnreadableImage, match=path.name):
        decode(path)


def test_bvlc_preprocessing_squashes_bgr_0_255_minus_mean():
    img = load_image(EXAMPLE)  # 451x300
    x = BVLC_PREPROCESSING.transforms()(img)
    assert x.shape == (3, 227, 227)
    resized = BVLC_PREPROCESSING.transforms().resized(img)
    assert tuple(resized.shape) == (3, 256, 256)  # squashed, not cropped to the short side
    crop = resized[:, 14:241, 14:241].float()
    expected = crop.flip(0) - torch.tensor(BVLC_PREPROCESSING.mean).view(3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-4)


def test_torchvision_preprocessing_equals_torchvisions_own():
    from torchvision.models import AlexNet_Weights

    img = load_image(EXAMPLE)
    ours = TORCHVISION_PREPROCESSING.transforms()(img)
    theirs = AlexNet_Weights.IMAGENET1K_V1.transforms()(img)
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert (ours - theirs).abs().max() < 0.02  # uint8 vs float resize rounding only


# ---- hostile pictures: every one is built here, none is committed ---------------------------------

def _jpeg(size: tuple[int, int] = (16, 16), **save) -> bytes:
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG", **save)
    return buf.getvalue()


def _sof(data: bytes, start: int = 2) -> int:
    """Offset of the first SOF0/SOF2 marker segment at or after ``start``."""
    i = start
    while data[i + 1] not in (0xC0, 0xC2):
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return i


def _with_sof(data: bytes, width: int, height: int, start: int = 2) -> bytes:
    out, i = bytearray(data), _sof(data, start)
    out[i + 5:i + 7], out[i + 7:i + 9] = height.to_bytes(2, "big"), width.to_bytes(2, "big")
    return bytes(out)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, depth: int = 8, color: int = 2, idat: bytes | None = None,
         extra: bytes = b"") -> bytes:
    """A PNG whose IHDR says ``width`` x ``height``, with ``idat`` (default: a few black rows)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    idat = zlib.compress(bytes(16 * (1 + 16 * 8))) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _deflated_zeros(size: int) -> bytes:
    """``size`` zero bytes deflated (about size / 1000 bytes), without holding them in memory."""
    z, step = zlib.compressobj(9), 1 << 22
    return b"".join([z.compress(bytes(step)) for _ in range(size // step)] + [z.flush()])


def _gif(screen: tuple[int, int] = (10, 10), frame: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    Image.new("P", (10, 10)).save(buf, "GIF")
    out = bytearray(buf.getvalue())
    out[6:10] = struct.pack("<HH", *screen)
    if frame is not None:
        k = out.index(b"\x2c", 13)  # the first image descriptor
        out[k + 5:k + 9] = struct.pack("<HH", *frame)
    return bytes(out)


def _webp_vp8l(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "WEBP", lossless=True)
    out = bytearray(buf.getvalue())
    assert out[12:16] == b"VP8L" and out[20] == 0x2F
    bits = int.from_bytes(out[21:25], "little") & ~((1 << 28) - 1)
    out[21:25] = (bits | (width - 1) | ((height - 1) << 14)).to_bytes(4, "little")
    return bytes(out)


def _tiff(width: int, height: int, second: tuple[int, int] | None = None) -> bytes:
    """A 16x16 TIFF whose first page's tags say ``width`` x ``height``; with ``second``, a second
    page whose tags say that size (its pixels stay 16x16)."""
    buf = io.BytesIO()
    pages = [Image.new("RGB", (16, 16), (9, 9, 9))] if second else []
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, "TIFF", save_all=True, append_images=pages)
    out = bytearray(buf.getvalue())
    assert out[:4] == b"II*\0"
    ifd = struct.unpack_from("<I", out, 4)[0]
    for size in [(width, height)] + ([second] if second else []):
        count = struct.unpack_from("<H", out, ifd)[0]
        for e in range(count):
            tag, kind = struct.unpack_from("<HH", out, ifd + 2 + 12 * e)
            if tag in (256, 257):
                fmt = "<H" if kind == 3 else "<I"
                struct.pack_into(fmt, out, ifd + 2 + 12 * e + 8, size[0] if tag == 256 else size[1])
        ifd = struct.unpack_from("<I", out, ifd + 2 + 12 * count)[0]
    return bytes(out)


def _second_sof(width: int, height: int) -> bytes:
    """A JPEG with its true SOF, then a second SOF (libjpeg refuses it; Pillow takes the last)."""
    data = _jpeg()
    i = _sof(data)
    length = 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return data[:i + length] + _with_sof(data, width, height)[i:]


def _junk_before_sof(width: int, height: int) -> bytes:
    """Junk between two segments, which libjpeg skips with a warning: the SOF after it counts."""
    data = _with_sof(_jpeg(), width, height)
    i = _sof(data)
    return data[:i] + b"junk\x00junk" + data[i:]


def _exif_rotated(width: int, height: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _with_sof(_jpeg(exif=exif.tobytes()), width, height)


def _mpo(second: tuple[int, int]) -> bytes:
    """A two-frame MPO whose second frame's SOF declares ``second``."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, "MPO", save_all=True,
                                                  append_images=[Image.new("RGB", (16, 16))])
    data = buf.getvalue()
    return _with_sof(data, *second, start=data.index(b"\xff\xd8", 4) + 2)


def _scan_bomb(scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has ``scans`` scans."""
    data = _jpeg(progressive=True)
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    have = data.count(b"\xff\xda")
    return data[:end] + data[last:end] * (scans - have) + data[end:]


def _ico_holding_png(width: int, height: int) -> bytes:
    """An ICO whose directory says 16x16 and whose embedded PNG says ``width`` x ``height``."""
    body = _png(width, height)
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(body), 22) + body


OVER = "over the limit of 89,478,485 pixels"
TOO_FEW = "fewer than any"
# name -> (the file's bytes, what the error says); a None message: a picture of that (H, W)
HOSTILE = {
    "sof_20000.jpg": (lambda: _with_sof(_jpeg(), 20000, 20000), "declares 20000x20000 = 400,000,000 pixels, " + OVER),
    "sof_30000.jpg": (lambda: _with_sof(_jpeg(), 30000, 30000), "declares 30000x30000 = 900,000,000 pixels, " + OVER),
    "sof_warning_band.jpg": (lambda: _with_sof(_jpeg(), 10000, 9000),
                             "declares 10000x9000 = 90,000,000 pixels, " + OVER),
    "progressive_20000.jpg": (lambda: _with_sof(_jpeg(progressive=True), 20000, 20000), "declares 20000x20000"),
    "exif_rotated_20000.jpg": (lambda: _exif_rotated(12000, 20000), "declares 12000x20000"),
    "second_sof.jpg": (lambda: _second_sof(30000, 30000), "declares 30000x30000"),
    "junk_then_sof.jpg": (lambda: _junk_before_sof(20000, 20000), "declares 20000x20000"),
    "sof_9000_in_600_bytes.jpg": (lambda: _with_sof(_jpeg(), 9000, 9000), "the JPEG header declares 9000x9000 but "),
    "progressive_9000.jpg": (lambda: _with_sof(_jpeg(progressive=True), 9000, 9000), TOO_FEW),
    "zero_height.jpg": (lambda: _with_sof(_jpeg(), 16, 0), "declares a 16x0 picture: zero-sized"),
    "scan_bomb.jpg": (lambda: _scan_bomb(600), "a progressive JPEG of more than 500 scans"),
    "ihdr_30000.png": (lambda: _png(30000, 30000), "declares 30000x30000 = 900,000,000 pixels, " + OVER),
    "ihdr_warning_band.png": (lambda: _png(10000, 9000), "declares 10000x9000 = 90,000,000 pixels, " + OVER),
    "ihdr_16bit_rgba_20000.png": (lambda: _png(20000, 20000, depth=16, color=6), "declares 20000x20000"),
    "ihdr_9000_in_100_bytes.png": (lambda: _png(9000, 9000), "the PNG header declares 9000x9000 "),
    "zero_width.png": (lambda: _png(0, 16), "declares a 0x16 picture: zero-sized"),
    "ztxt_128mb.png": (lambda: _png(16, 16, extra=_chunk(b"zTXt", b"k\0\0" + _deflated_zeros(1 << 27))),
                       "MAX_TEXT_CHUNK"),
    "iccp_128mb.png": (lambda: _png(16, 16, extra=_chunk(b"iCCP", b"p\0\0" + _deflated_zeros(1 << 27))),
                       "MAX_TEXT_CHUNK"),
    "idat_256mb_for_16x16.png": (lambda: _png(16, 16, idat=_deflated_zeros(1 << 28)), None),
    "screen_20000.gif": (lambda: _gif(screen=(20000, 20000)), "declares 20000x20000"),
    "frame_beyond_screen.gif": (lambda: _gif(frame=(20000, 20000)), "declares 400,000,000 pixels, " + OVER),
    "vp8l_16384.webp": (lambda: _webp_vp8l(16384, 16384), "declares 16384x16384 = 268,435,456 pixels"),
    "tags_30000.tiff": (lambda: _tiff(30000, 30000), "declares 900,000,000 pixels, " + OVER),
    "huge_second_page.tiff": (lambda: _tiff(16, 16, second=(30000, 30000)), None),
    "huge_second_frame.mpo": (lambda: _mpo((30000, 30000)), None),
    "ico_holding_9500_png.ico": (lambda: _ico_holding_png(9500, 9500), "declares 90,250,000 pixels, " + OVER),
}

_CHILD = r"""
import json, resource, sys
from alexnet_zoo.data.images import load_image, read_image
status = open("/proc/self/status").read()
address_space = int(status.split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (address_space + (1 << 30), resource.RLIM_INFINITY))
report = {}
for path in sys.argv[1:]:
    for decode in (read_image, load_image):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            out = decode(path)
            result = ["picture", list(out.shape[1:]) if hasattr(out, "shape") else [out.height, out.width]]
        except BaseException as err:
            result = [type(err).__name__, str(err)]
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        report[path + " " + decode.__name__] = result + [grew]
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> dict[str, list]:
    """Decode every hostile file with read_image and load_image in one child process whose
    address space is capped 1 GiB above what its imports took: a decoder that allocated the
    declared picture fails with MemoryError (or a torch error) there, not with our error."""
    folder = tmp_path_factory.mktemp("hostile")
    paths = []
    for name, (make, _) in HOSTILE.items():
        (folder / name).write_bytes(make())
        paths.append(str(folder / name))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALEXNET_ZOO_MAX")}
    done = subprocess.run([sys.executable, "-c", _CHILD, *paths], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {key.split("/")[-1]: value for key, value in json.loads(done.stdout.splitlines()[-1]).items()}


@pytest.mark.parametrize("decode", ["read_image", "load_image"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pictures_are_refused_before_they_cost_memory(hostile_report, name, decode):
    """A typed error naming the file and the declared size (or, for a huge frame nobody decodes and
    an inflating IDAT, the 16x16 picture), and under 64 MB more memory than before."""
    kind, detail, grew = hostile_report[f"{name} {decode}"]
    expected = HOSTILE[name][1]
    if expected is None:
        assert (kind, detail) == ("picture", [16, 16])
    else:
        assert kind == "UnreadableImage", detail
        assert name in detail and expected in detail, detail
    assert grew < 64, f"{name}: peak memory grew by {grew:.0f} MB"


def test_the_pixel_limit_is_one_setting_users_can_lower_or_raise(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(path)
    jpeg = tmp_path / "small.jpg"
    Image.new("RGB", (40, 30)).save(jpeg)
    assert images.max_pixels() == images.DEFAULT_MAX_PIXELS == 89_478_485
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "1199")
    for decode in (read_image, load_image):
        for p in (path, jpeg):
            with pytest.raises(UnreadableImage, match=rf"{p.name}: declares 40x30 = 1,200 pixels, over the "
                                                      r"limit of 1,199"):
                decode(p)
    with pytest.raises(UnreadableImage, match="over the limit of 1,199"):
        check_image_bytes(path.read_bytes(), "upload")
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "1_200")
    assert tuple(read_image(path).shape) == tuple(read_image(jpeg).shape) == (3, 30, 40)
    assert check_image_bytes(jpeg.read_bytes(), "upload") == (40, 30)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="ALEXNET_ZOO_MAX_PIXELS='lots': expected a positive whole number"):
        read_image(path)


def test_a_limit_raised_above_pillows_is_the_one_that_counts(tmp_path, monkeypatch):
    """Pillow's own checks (on open, on GIF frames, on ICO members) must not refuse what the user
    allowed: they are raised to our limit, never lowered."""
    path = tmp_path / "wide.gif"
    Image.new("P", (60, 50)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as if Pillow's limit were below ours
    assert load_image(path).size == (60, 50)
    assert Image.MAX_IMAGE_PIXELS == images.max_pixels()
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "2999")
    with pytest.raises(UnreadableImage, match="over the limit of 2,999"):
        load_image(path)
    assert Image.MAX_IMAGE_PIXELS == images.DEFAULT_MAX_PIXELS  # lowering ours leaves Pillow's alone


def test_a_huge_file_is_refused_unread(tmp_path):
    """A 10 GB file (sparse: no disk used) that starts as a JPEG is refused from its size alone."""
    path = tmp_path / "huge.jpg"
    path.write_bytes(_jpeg())
    os.truncate(path, 10 * 2**30)
    for decode in (read_image, load_image):
        with pytest.raises(UnreadableImage, match=r"huge.jpg: 10,737,418,240 bytes, over the image file limit "
                                                  r"of 536,870,912 bytes; raise it with ALEXNET_ZOO_MAX_IMAGE_BYTES"):
            decode(path)


def test_a_file_without_a_size_is_read_no_further_than_the_limit(monkeypatch):
    """/dev/zero says 0 bytes and never ends: reading stops at the limit."""
    monkeypatch.setenv(images.MAX_FILE_BYTES_ENV, str(2**20))
    for decode in (read_image, load_image):
        with pytest.raises(UnreadableImage, match="/dev/zero: more than the image file limit of 1,048,576 bytes"):
            decode("/dev/zero")
    assert len(images.read_image_bytes(EXAMPLE)) == EXAMPLE.stat().st_size


def test_header_checks_accept_what_the_decoders_decode(tmp_path):
    """The sizes read from headers (JPEG SOF, PNG IHDR, GIF, WebP) are the decoded sizes, for
    progressive, 16-bit, palette, lossy and lossless pictures: no real picture is refused."""
    rgb = np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    made = {"p.jpg": dict(progressive=True), "b.jpg": {}, "q.webp": dict(quality=80), "l.webp": dict(lossless=True),
            "a.png": {}, "g.gif": {}, "t.tiff": {}, "m.bmp": {}}
    for name, options in made.items():
        Image.fromarray(rgb).save(tmp_path / name, **options)
    deep = tmp_path / "deep.png"
    _png_16bit_rgb(deep, rgb.astype(np.uint16) * 257)
    paths = [tmp_path / n for n in made] + [deep]
    if ROBUSTNESS.is_dir():
        paths += sorted(p for p in ROBUSTNESS.rglob("*") if p.suffix in (".jpg", ".png", ".gif", ".webp")
                        and "truncated" not in p.name and p.name != "ultrahdr.jpg")
    for path in paths:
        tensor = read_image(path)
        assert np.array_equal(tensor.permute(1, 2, 0).numpy(), np.asarray(load_image(path))), path
        declared = check_image_bytes(path.read_bytes(), path.name)
        assert set(declared) == set(tensor.shape[1:]), path  # either way round: EXIF may rotate


@pytest.mark.skipif(not (ROBUSTNESS / "pillow" / "ultrahdr.jpg").is_file(), reason="needs /work/shared")
def test_a_real_jpeg_whose_scan_data_was_cut_is_refused_unread():
    """Pillow's ultrahdr.jpg declares 1512x2688 and keeps 14 bytes of scan data (a stub): both
    decoders refused it after allocating the picture; now its header alone gives it away."""
    path = ROBUSTNESS / "pillow" / "ultrahdr.jpg"
    for decode in (read_image, load_image):
        with pytest.raises(UnreadableImage, match="ultrahdr.jpg: the JPEG header declares 1512x2688 but only 14 bytes"):
            decode(path)


def _png_16bit_rgb(path: Path, pixels: np.ndarray) -> None:
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    path.write_bytes(_png(pixels.shape[1], pixels.shape[0], depth=16, color=2, idat=zlib.compress(rows)))


def test_16_bit_rgb_png_keeps_its_high_bytes(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 65535, (9, 7, 3), dtype=np.uint16)
    path = tmp_path / "deep_rgb.png"
    _png_16bit_rgb(path, pixels)
    out = read_image(path).permute(1, 2, 0).numpy().astype(np.int64)
    assert np.abs(out - pixels.astype(np.int64) / 257).max() <= 1


MAGICS = [b"\xff\xd8", b"\xff\xd8\xff\xc0\x00\x11\x08", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"GIF89a",
          b"RIFF\x00\x00\x00\x00WEBPVP8L", b"RIFF\x00\x00\x00\x00WEBPVP8X", b"II*\x00", b"BM", b""]


@settings(max_examples=300, deadline=None)
@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=200))
def test_any_bytes_give_a_size_or_a_typed_error(magic, tail):
    """The header parsers are ours: whatever bytes come in, a checked size or UnreadableImage."""
    try:
        width, height = check_image_bytes(magic + tail, "fuzzed")
    except UnreadableImage as err:
        assert "fuzzed" in str(err)
    else:
        assert 0 < width * height <= images.max_pixels()
