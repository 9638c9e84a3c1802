"""Distortions for training on few digits: random affine maps and elastic deformation, on whole batches.

Simard, Steinkraus & Platt (2003, "Best practices for convolutional neural networks applied to visual
document analysis") showed that on MNIST, training on distorted copies of the digits was worth more
than any change of architecture. Two families of distortion:

* **affine**: rotate by θ, slant (shear) by φ, scale by s and translate by t. The forward map, in
  (row, col) pixel coordinates about the image centre c = ((H − 1)/2, (W − 1)/2), is

      o = R(θ) · K(φ) · s · (p − c) + c + t,   R(θ) = [[cos θ, −sin θ], [sin θ, cos θ]],
                                                K(φ) = [[1, 0], [−tan φ, 1]],

  so a positive θ turns the digit counter-clockwise as displayed (like ``np.rot90``) and a positive φ
  leans its top to the right (italic). Output pixel o is read from the source point
  p = (1/s) · K(−φ) · R(−θ) · (o − c − t) + c.
* **elastic**: every pixel moves by its own displacement (Δrow, Δcol) = α · (G_σ * U), where U is
  uniform noise in [−1, 1] per pixel and G_σ * U is that noise smoothed by a Gaussian of standard
  deviation σ pixels. Simard's values for 28 × 28 digits are α = 34, σ = 4 (about ±1.5 px of
  wobble that varies smoothly over the digit, like a hand's tremor).

A third, for the width of the pen: **stroke** thickens or thins a digit by one pixel, a grey-scale
dilation or erosion with the disk of radius one pixel (the centre and its four neighbours).

The first two build one sampling grid per image (all at once, (N, H, W) arrays) and read the images with one
batched bilinear interpolation (:func:`sample_bilinear`, one compiled pass over the batch). Points
that fall outside the image read ``fill`` (the background). :func:`random_distortion` composes both
and interpolates once, which blurs less than interpolating twice; for float32 and float64 it computes
each source point where it reads it (``augment_compiled.warp``: the same arithmetic, bit for bit).

Randomness is explicit: every random function takes ``rng`` (a Generator or int seed); the same seed
gives the same distortions. At zero strength every function returns an exact copy of its input: the
grid is then the integer pixel grid and bilinear weights are exactly 0 and 1.

The bilinear sampler is in :mod:`convprop.data.sampling` and the stroke change in :mod:`convprop.data.stroke`;
their names are imported from here as before.
"""

from __future__ import annotations

import functools
import math
from functools import partial
from typing import Any

import numpy as np

from ..errors import ArgumentError
from ..functional.threads import parallel, ranges
from ..init import RngLike, as_generator
from .augment_compiled import warp
from .sampling import _check_images, _real, sample_bilinear
from .sampling import _sample_bilinear_numpy as _sample_bilinear_numpy  # re-exported (`name as name`)
from .stroke import CROSS, cross_extremes, random_stroke

__all__ = [
    "CROSS",
    "affine_grid",
    "cross_extremes",
    "elastic_distortion",
    "gaussian_matrix",
    "random_affine",
    "random_distortion",
    "random_stroke",
    "sample_bilinear",
    "warp_affine",
]


def _per_image(name: str, value: Any, n: int, width: int | None = None) -> np.ndarray:
    """A scalar or per-image array of parameters as float64 (N,) or (N, width), else ArgumentError."""
    array = np.asarray(value, dtype=np.float64)
    shape = (n,) if width is None else (n, width)
    if array.ndim == 0 or (width is not None and array.shape == (width,)):
        array = np.broadcast_to(array, shape)
    if array.shape != shape:
        raise ArgumentError(f"{name} must be a number or an array of shape {shape} (one per image), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ArgumentError(f"{name} must be finite, got {value!r}")
    return array


def _inverse_matrix(n: int, rotation: Any, scale: Any, shear: Any) -> np.ndarray:
    """(1/s) K(−φ) R(−θ) per image, (N, 2, 2): R(−θ) = [[cos, sin], [−sin, cos]], K(−φ) = [[1, 0], [tan φ, 1]]."""
    theta = np.deg2rad(_per_image("rotation", rotation, n))  # (N,)
    s = _per_image("scale", scale, n)  # (N,)
    if np.any(s <= 0):
        raise ArgumentError(f"scale must be positive, got {scale!r}")
    slant = np.tan(np.deg2rad(_per_image("shear", shear, n)))  # (N,)
    cos, sin = np.cos(theta), np.sin(theta)
    rows = [np.stack([cos, sin], -1), np.stack([slant * cos - sin, slant * sin + cos], -1)]  # 2 × (N, 2)
    return np.stack(rows, axis=1) / s[:, None, None]  # (N, 2, 2)


def affine_grid(
    n: int, h: int, w: int, rotation: Any = 0.0, scale: Any = 1.0, shear: Any = 0.0, translation: Any = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The source points (rows, cols), each (N, H, W), of the affine map in the module docstring.

    Angles in degrees; ``scale`` > 0; ``translation`` in pixels as (down, right). Each may be one
    number for every image or an array with one value per image.
    """
    inverse = _inverse_matrix(n, rotation, scale, shear)  # (N, 2, 2)
    return _grid(inverse, _per_image("translation", translation, n, 2), h, w)


def _grid(inverse: np.ndarray, t: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`affine_grid` from the inverse matrices (N, 2, 2) and translations (N, 2)."""
    centre = np.array([(h - 1) / 2, (w - 1) / 2])  # (2,)
    d_row = np.arange(h, dtype=np.float64)[None, :, None] - centre[0] - t[:, 0, None, None]  # (N, H, 1): o - c - t
    d_col = np.arange(w, dtype=np.float64)[None, None, :] - centre[1] - t[:, 1, None, None]  # (N, 1, W)
    m = inverse[:, :, :, None, None]  # (N, 2, 2, 1, 1): broadcast over H, W
    return m[:, 0, 0] * d_row + m[:, 0, 1] * d_col + centre[0], m[:, 1, 0] * d_row + m[:, 1, 1] * d_col + centre[1]


def warp_affine(
    images: np.ndarray,
    rotation: Any = 0.0,
    scale: Any = 1.0,
    shear: Any = 0.0,
    translation: Any = 0.0,
    *,
    fill: float = 0.0,
) -> np.ndarray:
    """Apply a given affine map to each image (see the module docstring), bilinear, ``fill`` outside.

    Shapes:
        images: (N, C, H, W) -> (N, C, H, W), same dtype.

    Args:
        rotation: degrees counter-clockwise, a number or (N,).
        scale: > 0, a number or (N,); 2 doubles the digit's size.
        shear: slant in degrees (top to the right), a number or (N,).
        translation: pixels (down, right), a number, (2,) or (N, 2).
        fill: the value read outside the image (the background, 0 for raw digits).
    """
    images = _check_images(images)
    n, _, h, w = images.shape
    rows, cols = affine_grid(n, h, w, rotation, scale, shear, translation)
    return sample_bilinear(images, rows, cols, fill=_real("fill", fill, -math.inf))


def _draw_affine(
    generator: np.random.Generator, n: int, rotation: float, scale: float, shear: float, translation: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rotation = _real("rotation", rotation, 0.0, 180.0)
    scale = _real("scale", scale, 0.0, 0.9)
    shear = _real("shear", shear, 0.0, 60.0)
    translation = _real("translation", translation, 0.0)
    angles = generator.uniform(-rotation, rotation, size=n)  # (N,) degrees
    scales = 1.0 + generator.uniform(-scale, scale, size=n)  # (N,)
    shears = generator.uniform(-shear, shear, size=n)  # (N,) degrees
    shifts = generator.uniform(-translation, translation, size=(n, 2))  # (N, 2) pixels
    return angles, scales, shears, shifts


def _elastic_field(
    generator: np.random.Generator, n: int, h: int, w: int, alpha: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    alpha = _real("alpha", alpha, 0.0)
    smooth = _smoothed_noise(generator, n, h, w, sigma)  # (2N, W, H)
    fields = alpha * smooth.transpose(0, 2, 1).astype(np.float64)  # (2N, H, W)
    return fields[:n], fields[n:]


def _smoothed_noise(generator: np.random.Generator, n: int, h: int, w: int, sigma: float) -> np.ndarray:
    """G_σ * U for the 2N fields (Δrow of each image, then Δcol), float32, stored (2N, W, H): transposed,
    as the second smoothing product leaves it (``augment_compiled.warp`` reads it so, with no copy)."""
    sigma = _real("sigma", sigma, 0.0, strict=True)
    noise = 2 * generator.random(size=(2 * n, h, w), dtype=np.float32) - 1  # (2N, H, W): Δrow, Δcol, in [-1, 1)
    # separable smoothing as two matrix products, G_H · U · G_Wᵀ for every field, each one BLAS call
    along_w = noise.reshape(2 * n * h, w) @ _smoothing(w, sigma)  # (2N*H, W)
    along_w = along_w.reshape(2 * n, h, w).transpose(0, 2, 1).reshape(2 * n * w, h)  # (2N*W, H)
    return (along_w @ _smoothing(h, sigma)).reshape(2 * n, w, h)  # (2N, W, H)


@functools.lru_cache(maxsize=32)
def _smoothing(size: int, sigma: float) -> np.ndarray:
    """``gaussian_matrix(size, sigma).T`` in float32, read-only: the same for every batch of a run, so
    built once (it had been rebuilt twice per training batch)."""
    matrix = gaussian_matrix(size, sigma).T.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def gaussian_matrix(size: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The (size, size) matrix G with G @ u = a 1-D Gaussian blur of u, zeros beyond the ends.

    ``G[i, k] = g(i − k)`` for ``|i − k| <= round(truncate · σ)``, g the normalised sampled Gaussian:
    exactly ``scipy.ndimage.gaussian_filter1d(u, σ, mode="constant", truncate=truncate)``, as a
    matrix so that a whole batch of fields is smoothed by one BLAS call instead of a loop of filters.
    """
    radius = int(truncate * sigma + 0.5)  # scipy's radius
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)  # (2r+1,)
    taps /= taps.sum()
    lag = np.arange(size)[:, None] - np.arange(size)[None, :]  # (size, size): i - k
    return np.where(np.abs(lag) <= radius, taps[np.clip(lag + radius, 0, 2 * radius)], 0.0)  # (size, size)


def random_affine(
    images: np.ndarray,
    rng: RngLike,
    *,
    rotation: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    translation: float = 0.0,
    fill: float = 0.0,
) -> np.ndarray:
    """A random affine map per image: each parameter uniform in its range, independently per image.

    θ ∈ [−rotation, rotation] degrees, s ∈ [1 − scale, 1 + scale], φ ∈ [−shear, shear] degrees,
    t ∈ [−translation, translation]² pixels. All zero: an exact copy.

    Shapes:
        images: (N, C, H, W) -> (N, C, H, W), same dtype.

    Args:
        rng: Generator or int seed; the same seed gives the same maps.
        rotation: in [0, 180]. scale: in [0, 0.9]. shear: in [0, 60]. translation: >= 0.
        fill: the value read outside the image.
    """
    images = _check_images(images)
    angles, scales, shears, shifts = _draw_affine(as_generator(rng), len(images), rotation, scale, shear, translation)
    return warp_affine(images, angles, scales, shears, shifts, fill=fill)


def elastic_distortion(
    images: np.ndarray, rng: RngLike, *, alpha: float = 34.0, sigma: float = 4.0, fill: float = 0.0
) -> np.ndarray:
    """Simard's elastic distortion: move each pixel by α · (Gaussian-smoothed uniform noise), per image.

    Shapes:
        images: (N, C, H, W) -> (N, C, H, W), same dtype.

    Args:
        rng: Generator or int seed; the same seed gives the same fields.
        alpha: the displacement scale α >= 0 in pixels per unit of smoothed noise (0: an exact copy).
        sigma: the smoothing σ > 0 in pixels: small σ is noise, large σ is a gentle bend.
        fill: the value read outside the image.
    """
    images = _check_images(images)
    n, _, h, w = images.shape
    d_row, d_col = _elastic_field(as_generator(rng), n, h, w, alpha, sigma)  # (N, H, W) each
    grid_rows, grid_cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    return sample_bilinear(images, grid_rows + d_row, grid_cols + d_col, fill=_real("fill", fill, -math.inf))


def random_distortion(
    images: np.ndarray,
    rng: RngLike,
    *,
    rotation: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    translation: float = 0.0,
    alpha: float = 0.0,
    sigma: float = 4.0,
    fill: float = 0.0,
) -> np.ndarray:
    """:func:`random_affine` then :func:`elastic_distortion`, composed into one grid, interpolated once.

    The elastic field displaces the output grid before the affine map reads the source:
    p = A⁻¹(o + Δ(o) − c − t) + c. All strengths zero: an exact copy.

    Shapes:
        images: (N, C, H, W) -> (N, C, H, W), same dtype.
    """
    images = _check_images(images)
    n, _, h, w = images.shape
    generator = as_generator(rng)
    angles, scales, shears, shifts = _draw_affine(generator, n, rotation, scale, shear, translation)
    fill = _real("fill", fill, -math.inf)
    if alpha == 0:  # validate sigma anyway, but skip the (pointless) smoothing of zero displacements
        _real("sigma", sigma, 0.0, strict=True)
        return warp_affine(images, angles, scales, shears, shifts, fill=fill)
    alpha = _real("alpha", alpha, 0.0)
    inv = _inverse_matrix(n, angles, scales, shears)  # (N, 2, 2)
    t = _per_image("translation", shifts, n, 2)
    if images.dtype in (np.float32, np.float64):  # grid and read in one compiled pass, images split between threads
        smooth = _smoothed_noise(generator, n, h, w, sigma)  # (2N, W, H)
        out = np.empty_like(images, order="C")
        source = np.ascontiguousarray(images)
        parallel([partial(warp, source, fill, inv, t, smooth, alpha, n0, n1, out) for n0, n1 in ranges(n)])
        return out
    d_row, d_col = _elastic_field(generator, n, h, w, alpha, sigma)  # (N, H, W) each
    # o + Δ(o) - t is the same as translating by t - Δ(o): fold the field into the translation per pixel
    rows, cols = _grid(inv, t, h, w)  # affine_grid's (N, H, W) each
    rows = rows + inv[:, 0, 0, None, None] * d_row + inv[:, 0, 1, None, None] * d_col  # A⁻¹ is linear: add A⁻¹Δ
    cols = cols + inv[:, 1, 0, None, None] * d_row + inv[:, 1, 1, None, None] * d_col
    return sample_bilinear(images, rows, cols, fill=fill)
