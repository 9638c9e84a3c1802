"""Bilinear sampling as one compiled pass (``sampling.sample_bilinear``'s inner loop).

NumPy's version gathers the four neighbours of every point as four (N, C, P) fancy-indexed copies and
blends them in six more passes; this reads each neighbour once and writes each output once, about
3× faster on a training batch of digits. The arithmetic is the same, step for step (the tests hold it
to ``sampling._sample_bilinear_numpy`` bit for bit, in float32 and float64).
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
                r = min(max(rows[n, i, j], -1.0), float(h))  # onto the padding ring
                q = min(max(cols[n, i, j], -1.0), float(w))
                r0 = min(max(np.floor(r), -1.0), h - 1.0)  # the top-left neighbour; r0 + 1 stays inside
                q0 = min(max(np.floor(q), -1.0), w - 1.0)
                a = out.dtype.type(r - r0)  # fractional parts, in the images' dtype
                b = out.dtype.type(q - q0)
                y, x = int(r0) + 1, int(q0) + 1  # in the padded frame
                for c in range(C):
                    p = padded[n, c]
                    top = p[y, x] * (one - b) + p[y, x + 1] * b
                    bottom = p[y + 1, x] * (one - b) + p[y + 1, x + 1] * b
                    out[n, c, i, j] = top * (one - a) + bottom * a
