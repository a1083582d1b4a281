"""Decoding awkward real pictures, and preprocessing as each set of weights expects."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_zoo.errors import UnreadableImage
from alexnet_zoo.images import load_image, read_image
from alexnet_zoo.transforms import BVLC_PREPROCESSING, TORCHVISION_PREPROCESSING

IMAGES = Path(__file__).parent / "data" / "images"
EXAMPLE = Path(__file__).parents[1] / "examples" / "chelsea.png"


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
    from alexnet_zoo.images import to_rgb

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
