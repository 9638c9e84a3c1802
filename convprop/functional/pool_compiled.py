"""Max pooling as compiled loops: PyTorch's CPU kernel, line for line, for speed.

The NumPy version in ``pool.py`` (one vectorised pass per kernel tap over a -inf padded copy) is the
readable reference; these loops compute the same thing without the padded copy or the per-tap
temporaries, and the tests hold them to the reference exactly. Per window, the taps are visited row
by row; a tap replaces the current maximum when it is greater or NaN, starting from the window's
first in-bounds tap (so ties go to the first maximum and a window of -inf points at its first tap).
Letters as in ``pool.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _tap_range(start: int, step: int, taps: int, size: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """(first, stop): the taps t with 0 <= start + t·step < size form the range first <= t < stop."""
    first = 0 if start >= 0 else (-start + step - 1) // step
    stop = taps if start + (taps - 1) * step < size else (size - 1 - start) // step + 1
    return first, max(first, stop)


@njit(cache=True)
def max_pool_forward(
    x: np.ndarray,
    kh_: int,
    kw_: int,
    sh: int,
    sw: int,
    ph: int,
    pw: int,
    dh: int,
    dw: int,
    y: np.ndarray,
    indices: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """y[n, c, i, j] = max over the window's in-bounds taps; indices = h·W + w of that tap."""
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for n in range(N):
        for c in range(C):
            plane = x[n, c]
            for i in range(OH):
                h0 = i * sh - ph
                kh_first, kh_stop = _tap_range(h0, dh, kh_, H)
                for j in range(OW):
                    w0 = j * sw - pw
                    kw_first, kw_stop = _tap_range(w0, dw, kw_, W)
                    best = -np.inf
                    best_index = (h0 + kh_first * dh) * W + w0 + kw_first * dw  # PyTorch's starting arg-max
                    for kh in range(kh_first, kh_stop):
                        h = h0 + kh * dh
                        for kw in range(kw_first, kw_stop):
                            v = plane[h, w0 + kw * dw]
                            if v > best or v != v:  # greater, or NaN
                                best = v
                                best_index = h * W + w0 + kw * dw
                    y[n, c, i, j] = best
                    indices[n, c, i, j] = best_index


@njit(cache=True)
def max_pool_2x2(x: np.ndarray, y: np.ndarray, indices: np.ndarray) -> bool:  # pragma: no cover - compiled
    """The common case written out — 2×2 windows, stride 2, no padding or dilation — which the
    compiler unrolls: several times faster than the general loop. Ties go to the first maximum.

    NaN is not handled here (testing every tap for NaN inside the comparisons costs 3×); instead
    the kernel reports whether it saw one, and the caller then reruns the general kernel.
    """
    N, C, _H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    saw_nan = False
    for n in range(N):
        for c in range(C):
            plane = x[n, c]
            for i in range(OH):
                h = 2 * i
                for j in range(OW):
                    w = 2 * j
                    a, b, d, e = plane[h, w], plane[h, w + 1], plane[h + 1, w], plane[h + 1, w + 1]
                    saw_nan |= (a != a) | (b != b) | (d != d) | (e != e)
                    best, k = a, h * W + w
                    if b > best:
                        best, k = b, h * W + w + 1
                    if d > best:
                        best, k = d, (h + 1) * W + w
                    if e > best:
                        best, k = e, (h + 1) * W + w + 1
                    y[n, c, i, j] = best
                    indices[n, c, i, j] = k
    return saw_nan


@njit(cache=True)
def max_pool_backward(
    grad_output: np.ndarray, indices: np.ndarray, dx: np.ndarray
) -> None:  # pragma: no cover - compiled
    """dx[n, c, indices[n, c, i, j]] += δ[n, c, i, j]; dx is (N, C, H·W), zeroed by the caller."""
    N, C, OH, OW = grad_output.shape
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    k = indices[n, c, i, j]
                    if k >= 0:
                        dx[n, c, k] += grad_output[n, c, i, j]
