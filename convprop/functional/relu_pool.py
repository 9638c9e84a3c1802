"""The training pass's ReLU → 2×2, stride-2 max-pool as one compiled pass (``nn.Sequential`` runs a
ReLU directly followed by such a MaxPool2d this way, ``nn/fused.py``).

The two layers' own passes would write the ReLU'd map, keep an int64 arg-max array the size of the
pooled map, and mask the scattered gradient with ReLU's; here the forward keeps, per window, only
which of its four taps won (int8, −1 where ReLU zeroed the window) and the backward scatters each δ
to that tap. Outputs and gradients equal the layers' own bit for bit (``tests/test_fused.py``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..errors import ArgumentError


@njit(cache=True)
def _relu_max_pool_2x2_train(y: np.ndarray, out: np.ndarray, arg: np.ndarray) -> bool:  # pragma: no cover
    """The training form of ``fused._relu_max_pool_2x2``: also ``arg``, which tap of each 2×2 window won
    (0–3, row-major, the first of equal maxima, as ``max_pool2d``), or −1 where the maximum is ≤ 0 and
    ReLU zeroes it (no gradient flows there). Returns whether it saw a NaN (then nothing is valid)."""
    N, C, PH, PW = out.shape
    saw_nan = False
    for n in range(N):
        for c in range(C):
            plane = y[n, c]
            for i in range(PH):
                top, bottom = plane[2 * i], plane[2 * i + 1]
                for j in range(PW):
                    a, b, d, e = top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]
                    saw_nan |= (a != a) | (b != b) | (d != d) | (e != e)
                    best, k = a, 0
                    if b > best:
                        best, k = b, 1
                    if d > best:
                        best, k = d, 2
                    if e > best:
                        best, k = e, 3
                    if best > 0.0:
                        out[n, c, i, j] = best
                        arg[n, c, i, j] = k
                    else:
                        out[n, c, i, j] = 0.0
                        arg[n, c, i, j] = -1
    return saw_nan


@njit(cache=True)
def _relu_max_pool_2x2_scatter(dy: np.ndarray, arg: np.ndarray, dx: np.ndarray) -> None:  # pragma: no cover
    """dx (zeros) at each window's winning tap ← that window's δ; nothing where ``arg`` is −1."""
    N, C, PH, PW = dy.shape
    for n in range(N):
        for c in range(C):
            for i in range(PH):
                for j in range(PW):
                    k = arg[n, c, i, j]
                    if k >= 0:
                        dx[n, c, 2 * i + k // 2, 2 * j + k % 2] = dy[n, c, i, j]


def relu_max_pool_2x2_with_taps(y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """ReLU then a 2×2, stride-2 max-pool in one pass, for training: (pooled, winning taps as int8).

    Equal to ``relu`` then ``max_pool2d_with_indices(·, 2)`` bit for bit, with the gradient to the same
    input positions (:func:`relu_max_pool_2x2_backward`); ``y`` is only read. None when ``y`` holds a
    NaN: the caller then runs the two layers as they are, which propagate it as they always do.

    Shapes: y (N, C, H, W), H and W >= 2 → (N, C, H // 2, W // 2) twice.
    """
    N, C, H, W = y.shape
    out = np.empty((N, C, H // 2, W // 2), dtype=y.dtype)
    taps = np.empty(out.shape, dtype=np.int8)
    if _relu_max_pool_2x2_train(y, out, taps):
        return None
    return out, taps


def relu_max_pool_2x2_backward(grad_output: np.ndarray, taps: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """The input gradient of :func:`relu_max_pool_2x2_with_taps`: each δ at its window's winning tap.

    Shapes: grad_output and taps (N, C, PH, PW); returns (N, C, H, W) = ``input_shape``.
    """
    grad_output = np.ascontiguousarray(grad_output)
    if grad_output.shape != taps.shape:
        raise ArgumentError(f"grad_output must have the pooled shape {taps.shape}, got {grad_output.shape}")
    dx = np.zeros(input_shape, dtype=grad_output.dtype)
    _relu_max_pool_2x2_scatter(grad_output, taps, dx)
    return dx
