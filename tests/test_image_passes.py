"""to_mnist's fast parts against what they replace: Lanczos weights against Pillow's resize, the
compiled whole-picture passes against the NumPy steps (convprop.data.resample, convprop.data.image_passes)."""

from __future__ import annotations

import numpy as np
import pytest
from digit_images import render_digit
from PIL import Image

from convprop.data import resample
from convprop.data.image_passes import gray_range, ink_box
from convprop.data.images import LUMA, to_mnist
from convprop.data.resample import lanczos_weights


def as_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


# ---------------------------------------------------------------------------------------------------
# resampling: Pillow's Lanczos weights as two matrix products


def pillow_lanczos(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    img = Image.fromarray(arr.astype(np.float32))  # mode "F"
    return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)


def test_lanczos_weights_are_pillows():
    """Row by row, the weights resample as Pillow does, shrinking and enlarging, odd ratios included."""
    rng = np.random.default_rng(0)
    for size, new_size in [(200, 20), (7, 3), (3, 7), (1, 5), (5, 1), (513, 20), (28, 28), (29, 28), (20, 280)]:
        rows = rng.random((3, size))  # (3, size)
        got = rows @ lanczos_weights(size, new_size).T  # (3, new_size)
        np.testing.assert_allclose(got, pillow_lanczos(rows, 3, new_size), atol=1e-6, err_msg=f"{size} -> {new_size}")
        w = lanczos_weights(size, new_size)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)  # a flat image stays flat
        assert not w.flags.writeable  # cached: nobody may change them


def test_resize_matches_pillow_and_falls_back_to_it_for_huge_matrices(monkeypatch):
    rng = np.random.default_rng(1)
    crop = rng.random((183, 97))
    for h, w in [(20, 11), (11, 20), (183, 20), (20, 97), (1, 1), (300, 160)]:
        expected = pillow_lanczos(crop, h, w)
        np.testing.assert_allclose(resample.lanczos_resize(crop, h, w), expected, atol=1e-6, err_msg=f"{h} x {w}")
        monkeypatch.setattr(resample, "RESAMPLE_ELEMENTS", 100)  # Pillow's own resize, the same numbers
        np.testing.assert_allclose(resample.lanczos_resize(crop, h, w), expected, atol=1e-6)
        monkeypatch.undo()


def test_to_mnist_with_the_matrices_is_pillows_recipe(monkeypatch):
    """The whole recipe gives the same digit as with Pillow's resize, to float32 rounding."""
    for digit, canvas in [(7, {}), (2, {"size": (280, 280), "background": "black", "ink": "white"})]:
        arr = as_array(render_digit(digit, **canvas))
        ours = to_mnist(arr)
        monkeypatch.setattr(resample, "RESAMPLE_ELEMENTS", 0)
        np.testing.assert_allclose(to_mnist(arr), ours, atol=1e-6)
        monkeypatch.undo()


# ---------------------------------------------------------------------------------------------------
# the compiled whole-picture passes against the NumPy steps they replace


@pytest.mark.parametrize("channels", [3, 4])
def test_gray_range_is_the_float32_luma_and_its_range(channels):
    rng = np.random.default_rng(10 + channels)
    pixels = rng.integers(0, 256, size=(53, 71, channels), dtype=np.uint8)
    weights = (LUMA / 255).astype(np.float32)
    c = pixels.reshape(-1, channels).astype(np.float32)
    expected = c[:, 0] * weights[0] + c[:, 1] * weights[1] + c[:, 2] * weights[2]  # float32, in this order
    if channels == 4:
        a = c[:, 3] * np.float32(1 / 255)
        expected = expected * a + (np.float32(1) - a)
    out = np.empty(53 * 71)
    lo, hi = gray_range(pixels.ravel(), channels, weights, out)
    np.testing.assert_array_equal(out, expected.astype(np.float64))  # bit for bit
    assert (lo, hi) == (out.min(), out.max())


def test_ink_box_is_the_box_of_the_stretched_mask():
    rng = np.random.default_rng(3)
    for trial in range(40):
        gray = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40))))
        gray[rng.random(gray.shape) < 0.7] = 0.5 if trial % 2 else 0.0  # most pixels paper
        inverted = bool(trial % 3 == 0)
        background, span, level = float(rng.random() * 0.3), float(0.2 + rng.random()), 0.1
        ink = 1.0 - gray if inverted else gray
        mask = (ink - background) / span > level
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        expected = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) if mask.any() else (0, 0, 0, 0)
        assert ink_box(gray, inverted, background, span, level) == expected, trial


def test_non_contiguous_and_transparent_uint8_pictures():
    """A view (every other column, a flipped copy) and an RGBA picture give what their copies give."""
    rgba = np.asarray(render_digit(8, size=(160, 120), background=None))  # (120, 160, 4), transparent paper
    assert rgba.shape[2] == 4
    np.testing.assert_array_equal(to_mnist(rgba[:, ::2]), to_mnist(np.ascontiguousarray(rgba[:, ::2])))
    np.testing.assert_array_equal(to_mnist(rgba[::-1]), to_mnist(rgba[::-1].copy()))
    gray = np.asarray(render_digit(8, size=(160, 120)).convert("L")).astype(np.float64) / 255  # (120, 160)
    np.testing.assert_array_equal(to_mnist(gray.T), to_mnist(gray.T.copy()))
