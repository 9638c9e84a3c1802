"""The two passes of :func:`convprop.data.images.to_mnist` that read every pixel, compiled.

``convprop serve`` prepares every drawing of its page (280 × 280 pixels) with ``to_mnist``. In NumPy
its whole-picture steps were about ten passes over float64 copies of the picture (627 kB each, more
than this machine class's 512 kB L2): the luma as float32 and back, its minimum and maximum, the
inversion, the contrast stretch, the ink mask, the mask's rows and columns. Here they are two loops:

* :func:`gray_range` — luma of uint8 RGB or RGBA (composited on white) and its range, in one pass;
* :func:`ink_box` — the bounding box of the pixels whose stretched value exceeds a level, without
  writing the stretched picture (only the box's pixels are stretched afterwards, in NumPy).

Both compute value for value what the NumPy steps computed: the same float32 luma products and sums
(BLAS's dot product of three may order or fuse them differently: within one float32 rounding), and
the same float64 inversion, subtraction and division (no fast-math, so no reassociation or fused
multiply-add).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath={"nnan"})
def gray_range(  # pragma: no cover - compiled
    pixels: np.ndarray, channels: int, weights: np.ndarray, out: np.ndarray
) -> tuple[float, float]:
    """``pixels`` (H·W·channels,) uint8, RGB or RGBA interleaved → ``out`` (H·W,) float64 luma in [0, 1];
    returns its (minimum, maximum).

    ``weights`` (3,) float32 are the luma weights over 255. With a fourth channel a = alpha / 255,
    the pixel is composited on white after the weighted sum: ``luma·a + (1 − a)``, since the weights
    sum to 1. (Flat indices: the loops vectorise, which (H, W, C) indexing kept them from, 4× slower;
    ``nnan`` lets the minimum and maximum vectorise too: no value here can be NaN.)"""
    w0, w1, w2 = weights[0], weights[1], weights[2]
    scale = np.float32(1.0 / 255.0)
    one = np.float32(1.0)
    if channels == 4:
        for k in range(out.size):
            v = np.float32(pixels[4 * k]) * w0 + np.float32(pixels[4 * k + 1]) * w1
            v = v + np.float32(pixels[4 * k + 2]) * w2
            a = np.float32(pixels[4 * k + 3]) * scale
            out[k] = np.float64(v * a + (one - a))
    else:
        for k in range(out.size):
            v = np.float32(pixels[3 * k]) * w0 + np.float32(pixels[3 * k + 1]) * w1
            out[k] = np.float64(v + np.float32(pixels[3 * k + 2]) * w2)
    lo, hi = np.inf, -np.inf
    for k in range(out.size):
        g = out[k]
        lo = g if g < lo else lo
        hi = g if g > hi else hi
    return lo, hi


@njit(cache=True, nogil=True, error_model="numpy")
def ink_box(
    gray: np.ndarray, inverted: bool, background: float, span: float, level: float
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    """The rows [top, bottom) and columns [left, right) holding every pixel of (H, W) float64 ``gray``
    whose ink ``((1 − g) if inverted else g)`` stretched as ``(ink − background) / span`` exceeds
    ``level``; (0, 0, 0, 0) when none does."""
    H, W = gray.shape
    columns = np.zeros(W, dtype=np.uint8)  # 1 where a column has ink
    top, bottom = H, 0
    sign, offset = (-1.0, 1.0) if inverted else (1.0, 0.0)  # ink = offset + sign·g: 1 − g or g, exactly
    for i in range(H):
        hits = 0
        for j in range(W):
            hit = (offset + sign * gray[i, j] - background) / span > level
            columns[j] |= hit
            hits |= hit
        if hits:
            top = min(top, i)
            bottom = i + 1
    if bottom == 0:
        return 0, 0, 0, 0
    marked = np.flatnonzero(columns)
    return top, bottom, marked[0], marked[-1] + 1
