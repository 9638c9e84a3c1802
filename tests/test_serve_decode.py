"""What ``convprop serve`` makes of an uploaded picture (serve_input.decode_image): RGB or RGBA, rotated."""

from __future__ import annotations

import base64
import io

import numpy as np
from digit_images import render_digit
from PIL import Image

from convprop.data.images import to_mnist
from convprop.serve import decode_image


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return base64.b64encode(buf.getvalue()).decode()


def test_opaque_images_decode_as_rgb_and_transparent_ones_as_rgba():
    """An image without transparency skips the RGBA copy and the compositing; its input is the same bits."""
    rgb = render_digit(4, size=(280, 280), background="black", ink="white")  # mode RGB, as the canvas draws
    opaque_rgba = rgb.convert("RGBA")  # alpha 255 everywhere
    transparent = render_digit(4, size=(280, 280), background=None)  # black ink, transparent paper
    assert decode_image(encoded(rgb)).shape == (280, 280, 3)
    assert decode_image(encoded(rgb.convert("L"))).shape == (280, 280, 3)
    assert decode_image(encoded(opaque_rgba)).shape == (280, 280, 4)
    assert decode_image(encoded(transparent)).shape == (280, 280, 4)
    np.testing.assert_array_equal(to_mnist(decode_image(encoded(opaque_rgba))), to_mnist(decode_image(encoded(rgb))))
    # the transparent paper is white: the same digit as black ink on white
    white = render_digit(4, size=(280, 280))
    np.testing.assert_allclose(to_mnist(decode_image(encoded(transparent))), to_mnist(np.asarray(white)), atol=0.01)


def test_exif_rotation_is_applied_to_uploads():
    """A phone photo stores its rotation in EXIF (orientation 6: turn 90° clockwise to view it)."""
    picture = Image.new("RGB", (40, 20), "white")  # 40 wide, 20 high as stored
    picture.paste((0, 0, 0), (0, 0, 10, 20))  # the left quarter black
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("JPEG", "PNG"):
        shown = decode_image(encoded(picture, fmt, exif=exif))
        assert shown.shape == (40, 20, 3), fmt  # viewed upright: 20 wide, 40 high
        assert shown[:8, :, 0].max() < 60 and shown[-8:, :, 0].min() > 200, fmt  # the black quarter on top
    assert decode_image(encoded(picture)).shape == (20, 40, 3)  # no EXIF: as stored
