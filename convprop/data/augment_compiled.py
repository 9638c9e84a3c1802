"""Bilinear sampling as one compiled pass (``sampling.sample_bilinear``'s inner loop).

NumPy's version gathers the four neighbours of every point as four (N, C, P) fancy-indexed copies and
blends them in six more passes; this reads each neighbour once and writes each output once, about
3× faster on a training batch of digits. The arithmetic is the same, step for step (the tests hold it
to ``sampling._sample_bilinear_numpy`` bit for bit, in float32 and float64).

:func:`warp` is ``random_distortion``'s whole grid and read in one pass, without the grid: the source
points are computed where they are read (no (N, H, W) arrays of rows and columns, no padded copy, no
transposed float64 copy of the elastic fields), without the GIL so the images split between threads.
On the default recipe's batch (32 digits, 28×28, AMD EPYC, 2 cores, 3 December) the distortion took
1.03 ms instead of 1.56, and a whole training step's distortions 1.54 instead of 1.9–2.4.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _cell(r: float, size: int) -> tuple[int, float]:  # pragma: no cover - compiled
    """Along an axis of ``size`` pixels: the top-left neighbour of source coordinate ``r`` (−1 on the
    ring of fill around the image; the neighbour after it stays on the ring or inside) and r's fraction
    past it. Points further out are first moved onto the ring, so they read the fill exactly."""
    r = min(max(r, -1.0), float(size))
    r0 = min(max(np.floor(r), -1.0), size - 1.0)
    return int(r0), r - r0


@njit(cache=True)
def sample_bilinear(
    padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """out[n, c, i, j] = the bilinear read of image n, channel c at (rows[n, i, j], cols[n, i, j]).

    padded: (N, C, H+2, W+2), the images with one ring of the fill value; rows, cols: (N, OH, OW)
    float64 source points in the unpadded frame; out: (N, C, OH, OW), padded's dtype.
    """
    N, C, hp, wp = padded.shape
    h, w = hp - 2, wp - 2
    OH, OW = rows.shape[1], rows.shape[2]
    one = out.dtype.type(1)
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                y, a = _cell(rows[n, i, j], h)
                x, b = _cell(cols[n, i, j], w)
                a, b = out.dtype.type(a), out.dtype.type(b)  # fractional parts, in the images' dtype
                y, x = y + 1, x + 1  # in the padded frame
                for c in range(C):
                    p = padded[n, c]
                    top = p[y, x] * (one - b) + p[y, x + 1] * b
                    bottom = p[y + 1, x] * (one - b) + p[y + 1, x + 1] * b
                    out[n, c, i, j] = top * (one - a) + bottom * a


@njit(cache=True, nogil=True)
def warp(
    images: np.ndarray,
    fill: float,
    inverse: np.ndarray,
    shifts: np.ndarray,
    smooth: np.ndarray,
    alpha: float,
    n0: int,
    n1: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``random_distortion``'s grid and read in one pass over images n0..n1−1, no grid stored.

    The source point of output pixel (i, j) of image n is the affine one, A⁻¹(o − c − t) + c, plus
    A⁻¹Δ(o), the elastic displacement Δ = α·(smooth[n, j, i], smooth[N + n, j, i]) (the smoothed noise
    as ``_smoothed_noise`` leaves it, (2N, W, H); N = 0 rows: no elastic part). Every step is the
    arithmetic of ``augment._grid``, ``random_distortion``'s additions and :func:`sample_bilinear`, in
    their order, so the result is theirs bit for bit; outside the image the read is ``fill`` (in the
    images' dtype), as the ring ``sample_bilinear`` pads with.

    images: (N, C, H, W) C-contiguous; inverse: (N, 2, 2) float64; shifts: (N, 2) float64 (t); out: as images.
    """
    N, C, h, w = images.shape
    elastic = smooth.shape[0] > 0
    c0, c1 = (h - 1) / 2, (w - 1) / 2
    one = out.dtype.type(1)
    background = out.dtype.type(fill)
    for n in range(n0, n1):
        m00, m01, m10, m11 = inverse[n, 0, 0], inverse[n, 0, 1], inverse[n, 1, 0], inverse[n, 1, 1]
        for i in range(h):
            d_row = i - c0 - shifts[n, 0]
            for j in range(w):
                d_col = j - c1 - shifts[n, 1]
                r = m00 * d_row + m01 * d_col + c0
                q = m10 * d_row + m11 * d_col + c1
                if elastic:
                    e_row = alpha * np.float64(smooth[n, j, i])
                    e_col = alpha * np.float64(smooth[N + n, j, i])
                    r = r + m00 * e_row + m01 * e_col
                    q = q + m10 * e_row + m11 * e_col
                y, a = _cell(r, h)  # the top-left neighbour in the image's frame, -1 on the ring
                x, b = _cell(q, w)
                a, b = out.dtype.type(a), out.dtype.type(b)
                for c in range(C):
                    p = images[n, c]
                    tl = p[y, x] if y >= 0 and x >= 0 else background
                    tr = p[y, x + 1] if y >= 0 and x + 1 < w else background
                    bl = p[y + 1, x] if y + 1 < h and x >= 0 else background
                    br = p[y + 1, x + 1] if y + 1 < h and x + 1 < w else background
                    top = tl * (one - b) + tr * b
                    bottom = bl * (one - b) + br * b
                    out[n, c, i, j] = top * (one - a) + bottom * a
