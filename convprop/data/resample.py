"""Resampling for :func:`convprop.data.images.to_mnist`: Pillow's anti-aliased Lanczos-3 as matrix products.

``to_mnist`` shrinks the ink's bounding box (about 200 × 200 pixels for the page's canvas) so that its
longer side is 20 pixels. Pillow's ``resize(..., LANCZOS)`` of a float image took 0.33 ms for that;
the same weights as two small matrices, ``Wv @ crop @ Wh.T``, take 0.05–0.08 ms. The weights are
Pillow's (its support, bounds, truncation and normalisation), so the results agree to ~1e-7
(``tests/test_image_passes.py``).
"""

from __future__ import annotations

import functools

import numpy as np

RESAMPLE_ELEMENTS = 1 << 22  # a Lanczos weight matrix up to this size (32 MB) is built; Pillow resamples beyond


def lanczos_resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resample a float (H, W) array with an anti-aliased Lanczos-3 filter: ``Wv @ arr @ Wh.T``.

    The weights are Pillow's (:func:`lanczos_weights`), so this is Pillow's ``resize(..., LANCZOS)``
    of a mode-"F" image computed in float64 rather than through its float32 intermediate (the two
    agree to ~1e-7; tested). Two small matrix products take a sixth of Pillow's time for the page's
    ~200 × 200 crop to 20 × 20; an enlargement to thousands of pixels, where the dense matrices would
    outgrow their use, goes to Pillow itself.
    """
    (h0, w0) = arr.shape
    if max(height * h0, width * w0) > RESAMPLE_ELEMENTS:
        from PIL import Image

        img = Image.fromarray(arr.astype(np.float32))  # mode "F"
        return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)
    out = arr if height == h0 else lanczos_weights(h0, height) @ arr  # (height, w0)
    return out if width == w0 else out @ lanczos_weights(w0, width).T  # (height, width)


def lanczos_weights(size: int, new_size: int) -> np.ndarray:
    """(new_size, size): row i holds the weights of output sample i over the inputs, Pillow's Lanczos-3.

    Output sample i sits at ``c = (i + 1/2)·s`` in input coordinates, ``s = size / new_size``. When
    shrinking, the kernel ``L(t) = sinc(t)·sinc(t/3)`` (``|t| < 3``) is stretched by ``f = max(s, 1)``
    to low-pass at the new sampling rate: input j gets ``L((j + 1/2 − c) / f)`` for j in
    ``[trunc(c − 3f + 1/2), trunc(c + 3f + 1/2))``, clamped to the image, and each row is divided by
    its sum (a flat image stays flat). These are the bounds and the normalisation of Pillow's
    ``precompute_coeffs``; an unchanged size is the identity. Read-only: small ones are cached.
    """
    if size * new_size <= CACHED_WEIGHTS:
        return _cached_lanczos_weights(size, new_size)
    return _lanczos_weights(size, new_size)


CACHED_WEIGHTS = 1 << 16  # weight matrices of up to this many entries (512 kB) are kept, 64 of them at most


@functools.lru_cache(maxsize=64)
def _cached_lanczos_weights(size: int, new_size: int) -> np.ndarray:
    return _lanczos_weights(size, new_size)


def _lanczos_weights(size: int, new_size: int) -> np.ndarray:
    if size == new_size:
        w = np.eye(size)
    else:
        scale = size / new_size
        stretch = max(scale, 1.0)
        support = 3.0 * stretch
        centre = (np.arange(new_size) + 0.5) * scale  # (new_size,)
        first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C's (int): toward zero
        stop = np.minimum((centre + support + 0.5).astype(np.int64), size)
        taps = int((stop - first).max())  # the band: no row has more inputs than this
        j = first[:, None] + np.arange(taps)  # (new_size, taps) input indices
        t = (j - centre[:, None] + 0.5) * (1.0 / stretch)
        band = np.where((j < stop[:, None]) & (t >= -3.0) & (t < 3.0), np.sinc(t) * np.sinc(t / 3.0), 0.0)
        total = band.sum(axis=1, keepdims=True)
        band = np.divide(band, total, out=band, where=total != 0)
        w = np.zeros((new_size, size))
        rows = np.broadcast_to(np.arange(new_size)[:, None], j.shape)
        inside = j < size
        w[rows[inside], j[inside]] = band[inside]
    w.flags.writeable = False
    return w
