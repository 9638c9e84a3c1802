"""The compiled loop of ``linear_tiles``: a range of a batch's rows through the register tiles.

A leaf module (``conv_tile`` alone beneath it), so that ``compiled_jobs`` can hand the loop to a
worker as a compiled job, as it does ``conv_rows_kernels.images``; ``linear_tiles``' docstring says
what the loop computes and why.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .conv_tile import CHANNELS, VECTOR_BYTES, VECTORS, accumulate


@njit(cache=True, nogil=True)
def rows(x: np.ndarray, w: np.ndarray, n0: int, n1: int, out: np.ndarray) -> bool:  # pragma: no cover
    """out[n0:n1] = x[n0:n1] @ wᵀ, a chunk of P images at a time: one tile's width, or the range rounded
    up to a vector if it is narrower (``linear_tiles``). Returns False (``threads.split_compiled``'s
    result: nothing to report)."""
    F, O = x.shape[1], w.shape[0]
    lanes = VECTOR_BYTES // x.itemsize
    P = min(VECTORS * lanes, (n1 - n0 + lanes - 1) // lanes * lanes)
    buf = np.zeros(F * P, dtype=x.dtype)
    acc = np.empty(((O + CHANNELS - 1) // CHANNELS * CHANNELS, P), dtype=x.dtype)
    offs = np.arange(F) * P  # tap t reads row t of the transposed chunk
    for c0 in range(n0, n1, P):
        m = min(P, n1 - c0)
        if m < P:  # a short last chunk: no image of the one before may remain
            buf[:] = 0.0
        for j in range(m):
            row = x[c0 + j]
            for t in range(F):
                buf[t * P + j] = row[t]
        accumulate(buf, w, offs, acc)
        for j in range(m):
            dst = out[c0 + j]
            for o in range(O):
                dst[o] = acc[o, j]
    return False
