"""Reading user images and MNIST-style preprocessing (convprop.data.images)."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from digit_images import render_digit
from PIL import Image

from convprop.data import DataFileNotFoundError, load_dataset
from convprop.data.images import MAX_FILE_BYTES, MAX_SIDE, decode_image, load_image, preprocess_image, to_mnist
from convprop.errors import ArgumentError, DataError


def as_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    """In 0-based pixel-index coordinates, as MNIST's centring uses them."""
    idx = np.arange(x.shape[0])
    return float((x.sum(axis=1) * idx).sum() / x.sum()), float((x.sum(axis=0) * idx).sum() / x.sum())


def ink_box(x: np.ndarray, level: float = 0.1) -> tuple[int, int]:
    rows, cols = np.flatnonzero((x > level).any(axis=1)), np.flatnonzero((x > level).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def distance_up_to_one_pixel(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| after the best shift by at most one pixel (centring rounds to whole pixels)."""
    return min(float(np.abs(np.roll(a, (dy, dx), axis=(0, 1)) - b).mean()) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


# ---------------------------------------------------------------------------------------------------
# to_mnist: the recipe
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("digit", range(10))
def test_output_looks_like_mnist(digit):
    out = to_mnist(as_array(render_digit(digit)))  # black ink on white paper
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() == pytest.approx(1.0)
    assert out[0].max() == out[-1].max() == out[:, 0].max() == out[:, -1].max() == 0.0  # black border
    assert out.mean() < 0.35  # mostly background: ink is bright on dark, not the other way round
    h, w = ink_box(out)
    assert max(h, w) <= 20 and max(h, w) >= 19
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1


def test_dark_on_light_and_light_on_dark_give_the_same_digit():
    dark_on_light = to_mnist(as_array(render_digit(3)))
    light_on_dark = to_mnist(as_array(render_digit(3, background="black", ink="white")))
    np.testing.assert_allclose(dark_on_light, light_on_dark, atol=1e-6)


def test_dim_photo_of_grey_paper_is_inverted_too():
    grey = to_mnist(as_array(render_digit(4, background=(115, 115, 115), ink=(25, 25, 25))))
    clean = to_mnist(as_array(render_digit(4)))
    np.testing.assert_allclose(grey, clean, atol=0.01)


@pytest.mark.parametrize(
    "canvas",
    [
        dict(size=(300, 200), offset=(-60, 30), font_size=90, thickness=2),  # wide, off to the lower left
        dict(size=(60, 80), offset=(3, -2), font_size=45, thickness=1),  # small
        dict(size=(400, 400), offset=(100, 100), font_size=150, thickness=5),  # large, in a corner
    ],
    ids=["wide-offset", "small", "large-corner"],
)
@pytest.mark.parametrize("digit", [0, 3, 7, 9])
def test_position_and_size_in_the_picture_do_not_matter(digit, canvas):
    reference = to_mnist(as_array(render_digit(digit)))
    moved = to_mnist(as_array(render_digit(digit, **canvas)))
    same = distance_up_to_one_pixel(moved, reference)
    assert same < 0.06
    # and that is small: any other digit is further away
    for other in {1, 4, 8} - {digit}:
        assert same < distance_up_to_one_pixel(moved, to_mnist(as_array(render_digit(other))))


def test_real_mnist_digits_are_left_unchanged():
    """MNIST digits already follow the recipe, so applying it again changes almost nothing."""
    images = load_dataset().test_images[:50, 0]  # (50, 28, 28)
    for x in images:
        assert np.abs(to_mnist(x) - x).mean() < 0.005


def test_uint8_float_and_rgb_arrays_agree():
    rgb = as_array(render_digit(5))  # (H, W, 3) uint8
    gray_u8 = as_array(render_digit(5).convert("L"))  # (H, W) uint8
    expected = to_mnist(gray_u8)
    np.testing.assert_allclose(to_mnist(gray_u8.astype(np.float32) / 255), expected, atol=1e-6)
    np.testing.assert_allclose(to_mnist(rgb), expected, atol=0.01)  # luma weights vs Pillow's rounding


def test_rgba_transparent_background_counts_as_white(tmp_path):
    rgba = render_digit(2, background=None)  # black ink on a transparent canvas
    assert rgba.mode == "RGBA"
    expected = to_mnist(as_array(render_digit(2)))
    np.testing.assert_allclose(to_mnist(as_array(rgba)), expected, atol=0.01)
    rgba.save(tmp_path / "two.png")
    np.testing.assert_allclose(preprocess_image(tmp_path / "two.png")[0], expected, atol=0.01)


def test_size_and_box_can_be_changed():
    out = to_mnist(as_array(render_digit(6)), size=32, box=24)
    assert out.shape == (32, 32)
    assert max(ink_box(out)) <= 24


# ---------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------


def test_load_image_returns_grayscale_in_unit_range(tmp_path):
    img = render_digit(8, tmp_path / "eight.png", size=(90, 110))
    gray = load_image(tmp_path / "eight.png")
    assert img.size == (90, 110)
    assert gray.shape == (110, 90) and gray.dtype == np.float32
    assert gray.min() == 0.0 and gray.max() == 1.0
    assert gray[0, 0] == 1.0  # white paper stays white: inversion is to_mnist's job


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".gif"])
def test_preprocess_image_reads_common_formats(tmp_path, suffix):
    render_digit(7, tmp_path / f"seven{suffix}")
    x = preprocess_image(tmp_path / f"seven{suffix}")
    assert x.shape == (1, 28, 28) and x.dtype == np.float32
    expected = to_mnist(as_array(render_digit(7)))
    assert distance_up_to_one_pixel(x[0], expected) < 0.02  # JPEG artefacts are small


def test_preprocess_image_accepts_paths_pillow_images_and_arrays(tmp_path):
    img = render_digit(1)
    img.save(tmp_path / "one.png")
    from_path = preprocess_image(str(tmp_path / "one.png"))
    np.testing.assert_array_equal(preprocess_image(img), from_path)
    np.testing.assert_allclose(preprocess_image(as_array(img)), from_path, atol=0.01)


# ---------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataFileNotFoundError, match=r"nope\.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        preprocess_image(tmp_path / "nope.png")


def test_text_file_renamed_png(tmp_path):
    path = tmp_path / "digit.png"
    path.write_text("this is not an image\n")
    with pytest.raises(DataError, match=r"cannot read image .*digit\.png: not an image Pillow can read, expected one"):
        load_image(path)


def test_truncated_png(tmp_path):
    render_digit(3, tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read image .*cut\.png: OSError: image file is truncated"):
        load_image(tmp_path / "cut.png")


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)


def test_huge_image_is_refused(tmp_path):
    Image.new("L", (MAX_SIDE + 1, 4), 255).save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match=f"{MAX_SIDE + 1} x 4"):
        load_image(tmp_path / "wide.png")
    with pytest.raises(ValueError, match="at most"):
        to_mnist(np.ones((4, MAX_SIDE + 1)))


@pytest.mark.parametrize(
    "image",
    [
        np.ones((50, 40)),  # white paper
        np.zeros((50, 40), dtype=np.uint8),  # black
        np.full((50, 40), 0.5) + np.random.default_rng(0).uniform(-0.02, 0.02, (50, 40)),  # sensor noise
    ],
    ids=["white", "black", "noise"],
)
def test_blank_image(image):
    with pytest.raises(ValueError, match="image is blank"):
        to_mnist(image)


def test_blank_file(tmp_path):
    Image.new("RGB", (64, 64), "white").save(tmp_path / "blank.jpg")
    with pytest.raises(ValueError, match="image is blank"):
        preprocess_image(tmp_path / "blank.jpg")


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((2, 3, 4, 5)), r"shape \(H, W\).*got \(2, 3, 4, 5\)"),
        (np.zeros((8, 8, 2)), r"got \(8, 8, 2\)"),
        (np.full((8, 8), 1.5), r"\[0, 1\].*1\.5"),
        (np.full((8, 8), 300, dtype=np.int32), r"0\.\.255.*300"),
        (np.full((8, 8), np.nan), "NaN"),
        (np.zeros((0, 8)), "empty"),
        (np.array([["a", "b"]]), "dtype"),
    ],
    ids=["4d", "2-channel", "float>1", "int>255", "nan", "empty", "strings"],
)
def test_bad_arrays(image, message):
    with pytest.raises(ValueError, match=message):
        to_mnist(image)


@pytest.mark.parametrize(("size", "box"), [(28, 29), (28, 0), (28, 20.0), (True, True), (MAX_SIDE + 1, 20)])
def test_bad_size_or_box(size, box):
    with pytest.raises(ArgumentError, match="box <= size"):
        to_mnist(np.eye(10), size=size, box=box)
    with pytest.raises(ArgumentError, match="box <= size"):
        preprocess_image(np.eye(10), size=size, box=box)


# ---------------------------------------------------------------------------------------------------
# hostile and broken image bytes: a DataError naming the file, never a Pillow traceback
# ---------------------------------------------------------------------------------------------------


def png_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 0, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (with whatever image data follows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(idat)) + chunk(b"IEND", b"")


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data, match",
    [
        (png_header(100_000, 100_000), r"DecompressionBombError: Image size \(10000000000 pixels\) exceeds limit"),
        (png_header(5000, 5000), r"is 5000 x 5000 pixels; at most 4096 x 4096 is accepted"),
        (png_header(0, 10), r"not an image Pillow can read, expected one of PNG, JPEG"),
        (encoded(Image.new("RGB", (64, 64), "red"), "PNG")[:60], r"OSError: image file is truncated"),
        (b"", r"it is empty \(0 bytes\)"),
        (b"GIF89a" + bytes(7), r"not an image Pillow can read"),
        (png_header(64, 64, idat=bytes(10)), r"cannot read .*: (OSError|ValueError|SyntaxError): "),
        (encoded(Image.new("RGB", (16, 16)), "ICO"), r"not an image Pillow can read, expected one of PNG"),
        (encoded(Image.fromarray(np.full((8, 8), np.nan, np.float32)), "TIFF"), r"NaN or infinite pixel values"),
    ],
    ids=["bomb", "over-max-side", "zero-width", "truncated", "empty", "broken-gif", "short-data", "ico", "nan-tiff"],
)
def test_hostile_image_bytes_are_data_errors_naming_the_file(tmp_path, data, match):
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    with pytest.raises(DataError, match=match) as info:
        load_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError, match=match):
        decode_image(data, source="the upload")


def test_declared_dimensions_are_refused_before_pillow_allocates(monkeypatch):
    """A 5000 x 5000 header with 25 MB of real pixel data behind it: no image buffer is ever made."""
    sizes = []
    new = Image.core.new
    monkeypatch.setattr(Image.core, "new", lambda mode, size: sizes.append(size) or new(mode, size))
    with pytest.raises(DataError, match="at most 4096 x 4096"):
        decode_image(png_header(5000, 5000, idat=bytes(5001 * 5000)))
    assert sizes == []
    decode_image(png_header(300, 200, idat=bytes(301 * 200)))  # and a fine one does allocate, once, its size
    assert sizes == [(300, 200)]


def big_16_bit() -> Image.Image:
    ramp = np.tile(np.linspace(0, 65535, 700), (600, 1)).astype(np.uint16)  # (600, 700): 0 .. 65535 left to right
    return Image.fromarray(ramp)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: Image.fromarray(np.full((20, 20), 30000, np.uint16)), 30000 / 65535),  # 16-bit, kept exact
        (big_16_bit, None),  # 16-bit and larger than the working size: Pillow cannot resample I;16 itself
        (lambda: Image.new("P", (30, 30), 0), 1.0),  # palette, index 0 transparent: white paper
        (lambda: Image.new("LA", (600, 30), (0, 255)), 0.0),  # grey + alpha, shrunk
        (lambda: Image.new("CMYK", (8, 8), (0, 0, 0, 0)), 1.0),
        (lambda: Image.new("I", (8, 8), 128), 128 / 255),
    ],
    ids=["16-bit", "16-bit-large", "palette-transparent", "LA", "CMYK", "32-bit-int"],
)
def test_unusual_modes_decode(make, expected):
    img = make()
    fmt = "TIFF" if img.mode in ("CMYK", "I") else "PNG"
    gray = decode_image(encoded(img, fmt, **({"transparency": 0} if img.mode == "P" else {})))
    assert gray.dtype == np.float32 and gray.ndim == 2 and max(gray.shape) <= 512
    if expected is None:
        assert gray[:, 0].max() < 0.01 and gray[:, -1].min() > 0.99  # the ramp survived the shrink
    else:
        np.testing.assert_allclose(gray, expected, atol=1e-3)


def test_animated_images_read_their_first_frame():
    frames = [Image.new("L", (20, 20), 0), Image.new("L", (20, 20), 255)]
    for fmt in ("GIF", "PNG"):
        data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:])
        assert decode_image(data).max() == 0.0


def test_files_that_are_not_regular_or_too_large(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"pipe\.png: not a regular file"):
        load_image(fifo)  # would block forever if opened
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(DataError, match=rf"big\.png is {MAX_FILE_BYTES + 1} bytes; at most {MAX_FILE_BYTES}"):
        load_image(big)


def test_preprocess_errors_name_the_file(tmp_path):
    Image.new("L", (40, 40), 255).save(tmp_path / "white.png")
    with pytest.raises(DataError, match=r"image .*white\.png: image is blank"):
        preprocess_image(tmp_path / "white.png")


@pytest.mark.parametrize("channels", [3, 4])
def test_uint8_colour_images_take_the_float32_path_to_the_same_gray(channels):
    """Decoded PNGs (uint8 RGB/RGBA, every request of `convprop serve`) are converted in float32: the
    same gray as the general path, which reads them as floats in [0, 1], to float32 rounding."""
    from convprop.data.images import _as_gray

    image = np.random.default_rng(channels).integers(0, 256, size=(37, 41, channels), dtype=np.uint8)
    fast = _as_gray(image)
    assert fast.dtype == np.float64 and fast.shape == (37, 41)
    np.testing.assert_allclose(fast, _as_gray(image.astype(np.float64) / 255), rtol=0, atol=1e-6)
