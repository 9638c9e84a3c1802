"""Bilinear sampling of whole batches at real-valued points: the one resampling step of the distortions in
:mod:`convprop.data.augment`, and the argument checks they share.

Every distortion builds a sampling grid per image and reads the images there with :func:`sample_bilinear`,
one compiled pass over the batch (:mod:`convprop.data.augment_compiled`); :func:`_sample_bilinear_numpy`
is the same arithmetic in NumPy, its reference. Points outside the image read ``fill``; at integer points
the result is exactly the pixel, so a zero-strength distortion returns an exact copy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from . import augment_compiled


def _check_images(images: Any) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise ArgumentTypeError(f"images must be a numpy array (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ArgumentError(f"images must have shape (N, C, H, W), got {images.ndim}-D shape {images.shape}")
    if images.dtype.kind != "f":
        raise ArgumentTypeError(f"images must have a float dtype, got {images.dtype}")
    return images


def _real(name: str, value: Any, low: float, high: float | None = None, *, strict: bool = False) -> float:
    """``value`` as a finite float in [low, high] (or (low, high] with ``strict``), else ArgumentError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    v = float(value)
    too_low = v <= low if strict else v < low
    if not math.isfinite(v) or too_low or (high is not None and v > high):
        bound = f"in {'(' if strict else '['}{low}, {high}]" if high is not None else f"{'>' if strict else '>='} {low}"
        raise ArgumentError(f"{name} must be {bound}, got {value!r}")
    return v


def sample_bilinear(images: np.ndarray, rows: np.ndarray, cols: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Read each image at real-valued points by bilinear interpolation; points outside read ``fill``.

    ``out[n, c, i, j] = Σ w · images[n, c, r, q]`` over the four pixels (r, q) around
    (rows[n, i, j], cols[n, i, j]), with the usual weights (1 − a)(1 − b), (1 − a)b, a(1 − b), ab for
    fractional parts a, b. The image is padded with one ring of ``fill``, so a point within one pixel
    outside fades into the background and anything further reads ``fill`` exactly. Every channel of an
    image shares its grid. At integer points the result is exactly the pixel (weights 1 and 0).

    Shapes:
        images: (N, C, H, W); rows, cols: (N, OH, OW) source coordinates in pixels (row i, column j)
        returns: (N, C, OH, OW), the dtype of ``images``.
    """
    images = _check_images(images)
    n, c = images.shape[:2]
    rows, cols = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
    if rows.ndim != 3 or rows.shape != cols.shape or rows.shape[0] != n:
        raise ArgumentError(
            f"rows and cols must both be ({n}, OH, OW) to match {n} images, got {rows.shape} and {cols.shape}"
        )
    if not (np.isfinite(rows).all() and np.isfinite(cols).all()):
        raise ArgumentError("rows and cols must be finite source coordinates, got NaN or infinity")
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=fill)  # (N, C, H+2, W+2)
    if images.dtype not in (np.float32, np.float64):  # (numba compiles no float16 arithmetic)
        return _sample_bilinear_numpy(padded, rows, cols)
    out = np.empty((n, c, *rows.shape[1:]), dtype=images.dtype)  # (N, C, OH, OW)
    augment_compiled.sample_bilinear(padded, np.ascontiguousarray(rows), np.ascontiguousarray(cols), out)
    return out


def _sample_bilinear_numpy(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The reference for the compiled sampler: the same arithmetic as whole-batch NumPy gathers.

    padded: (N, C, H+2, W+2) with the fill ring; rows, cols: (N, OH, OW) float64 → (N, C, OH, OW).
    """
    n, c, h, w = padded.shape[0], padded.shape[1], padded.shape[2] - 2, padded.shape[3] - 2
    oh, ow = rows.shape[1:]
    plane = (h + 2) * (w + 2)
    flat = padded.reshape(-1)  # (N*C*(H+2)*(W+2),): one gather per neighbour for the whole batch
    # clip to the padding ring: r in [-1, H] reads only pads beyond the image; r0 in [-1, H-1] keeps r0+1 inside
    r = np.clip(rows, -1.0, h).reshape(n, 1, oh * ow)  # (N, 1, OH*OW)
    q = np.clip(cols, -1.0, w).reshape(n, 1, oh * ow)
    r0 = np.clip(np.floor(r), -1, h - 1)
    q0 = np.clip(np.floor(q), -1, w - 1)
    a = (r - r0).astype(padded.dtype)  # (N, 1, OH*OW), fractional parts in [0, 1]
    b = (q - q0).astype(padded.dtype)
    planes = (np.arange(n * c).reshape(n, c, 1)) * plane  # (N, C, 1): where each image's channel starts
    index = ((r0 + 1) * (w + 2) + (q0 + 1)).astype(np.intp) + planes  # (N, C, OH*OW): top-left neighbour

    def at(step: int) -> np.ndarray:
        return flat[index + step]  # (N, C, OH*OW)

    one = padded.dtype.type(1)
    top = at(0) * (one - b) + at(1) * b
    bottom = at(w + 2) * (one - b) + at(w + 3) * b
    return (top * (one - a) + bottom * a).reshape(n, c, oh, ow).astype(padded.dtype, copy=False)  # (N, C, OH, OW)
