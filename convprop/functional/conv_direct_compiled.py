"""The direct convolution compiled: ``conv_direct``'s index formulas as ``numba`` loops, for small channels.

When C·KH·KW is small (LeNet-5's second layer: 6 input channels, 5×5 kernel, 14×14 images → 16
channels, 10×10), an unfolding algorithm spends its time copying columns and transposing products
rather than multiplying. These loops do no unfolding: every tap (c, kh, kw) of every output
position is one multiply-add, with the *output channel* innermost so the compiler vectorises over O
(weights held as (C, KH, KW, O), outputs and output gradients as (N, OH, OW, O) — one transposed
copy of the output, which is small here). The images are split between ``threads.THREADS`` Python threads,
each running a compiled loop that releases the GIL (``nogil``): no OpenMP pool to fight BLAS's.

Forward, with x already padded::

    y[n, o, i, j] = Σ_{c, kh, kw} w[o, c, kh, kw] · x[n, c, i·s_h + kh·d_h, j·s_w + kw·d_w]

and the gradients from the same index sets (``conv_direct``)::

    dx[n, c, i·s_h + kh·d_h, j·s_w + kw·d_w] += Σ_o w[o, c, kh, kw] · δ[n, o, i, j]
    dw[o, c, kh, kw] = Σ_{n, i, j} δ[n, o, i, j] · x[n, c, i·s_h + kh·d_h, j·s_w + kw·d_w]

Any 2-D kernel, stride and dilation; groups 1. Shapes: x (N, C, H, W) padded, weight
(O, C, KH, KW), y and δ (N, O, OH, OW).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from numba import njit

from .conv_algorithm import ConvGeometry
from .threads import parallel, ranges

_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}  # vectorised sums; NaN and inf still propagate


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _forward(
    x: np.ndarray, wT: np.ndarray, sh: int, sw: int, dh: int, dw: int, n0: int, n1: int, yT: np.ndarray
) -> None:  # pragma: no cover - compiled
    """yT[n, i, j, o] = Σ_{c, kh, kw} wT[c, kh, kw, o] · x[n, c, i·sh + kh·dh, j·sw + kw·dw], n in [n0, n1)."""
    C, KH, KW, O = wT.shape
    OH, OW = yT.shape[1], yT.shape[2]
    for n in range(n0, n1):
        yT[n] = 0.0
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    taps = wT[c, kh, kw]
                    for i in range(OH):
                        row = x[n, c, i * sh + kh * dh]
                        for j in range(OW):
                            value = row[j * sw + kw * dw]
                            out = yT[n, i, j]
                            for o in range(O):
                                out[o] += taps[o] * value


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _grad_input(
    dyT: np.ndarray, wT: np.ndarray, sh: int, sw: int, dh: int, dw: int, n0: int, n1: int, dx: np.ndarray
) -> None:  # pragma: no cover - compiled
    """dx[n, c, i·sh + kh·dh, j·sw + kw·dw] += Σ_o wT[c, kh, kw, o] · dyT[n, i, j, o], n in [n0, n1)."""
    C, KH, KW, O = wT.shape
    OH, OW = dyT.shape[1], dyT.shape[2]
    for n in range(n0, n1):
        dx[n] = 0.0
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    taps = wT[c, kh, kw]
                    for i in range(OH):
                        row = dx[n, c, i * sh + kh * dh]
                        for j in range(OW):
                            grads = dyT[n, i, j]
                            s = 0.0
                            for o in range(O):
                                s += taps[o] * grads[o]
                            row[j * sw + kw * dw] += s


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _grad_weight(
    dyT: np.ndarray, x: np.ndarray, sh: int, sw: int, dh: int, dw: int, n0: int, n1: int, dwT: np.ndarray
) -> None:  # pragma: no cover - compiled
    """dwT[c, kh, kw, o] = Σ_{n in [n0, n1), i, j} x[n, c, i·sh + kh·dh, j·sw + kw·dw] · dyT[n, i, j, o]."""
    C, KH, KW, O = dwT.shape
    OH, OW = dyT.shape[1], dyT.shape[2]
    dwT[...] = 0.0
    for n in range(n0, n1):
        for c in range(C):
            for kh in range(KH):
                for kw in range(KW):
                    acc = dwT[c, kh, kw]
                    for i in range(OH):
                        row = x[n, c, i * sh + kh * dh]
                        for j in range(OW):
                            value = row[j * sw + kw * dw]
                            grads = dyT[n, i, j]
                            for o in range(O):
                                acc[o] += value * grads[o]


def _run(kernel: Callable[..., None], parts: list[tuple[int, int]], *args: object) -> None:
    """kernel(*args[:-1], n0, n1, args[-1]) for each range of images, on the thread pool when there are several."""
    *inputs, out = args
    parallel([partial(kernel, *inputs, n0, n1, out) for n0, n1 in parts])


def supports(geo: ConvGeometry) -> str | None:
    """2-D, groups 1 (any kernel, stride, dilation)."""
    if geo.ndim != 2:
        return f"the compiled direct kernels are 2-D only, this convolution has {geo.ndim} spatial axes"
    if geo.groups != 1:
        return f"the compiled direct kernels compute dense convolutions (groups=1), got groups={geo.groups}"
    return None


def _taps(weight: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(weight.transpose(1, 2, 3, 0))  # (O, C, KH, KW) → (C, KH, KW, O)


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """y (N, O, OH, OW) from the padded x, output channels innermost, one transposed copy at the end."""
    x = np.ascontiguousarray(x)
    N, O = x.shape[0], weight.shape[0]
    yT = np.empty((N, *geo.out_size, O), dtype=x.dtype)  # (N, OH, OW, O)
    _run(_forward, ranges(N), x, _taps(weight), *geo.stride, *geo.dilation, yT)
    return np.ascontiguousarray(yT.transpose(0, 3, 1, 2))  # (N, O, OH, OW)


def grad_input(grad_output: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dx_padded (N, C, H, W): each tap scatters Σ_o w·δ back to the input position it read."""
    dyT = np.ascontiguousarray(grad_output.transpose(0, 2, 3, 1))  # (N, OH, OW, O)
    N, C = dyT.shape[0], weight.shape[1]
    dx = np.empty((N, C, *geo.padded_size), dtype=grad_output.dtype)
    _run(_grad_input, ranges(N), dyT, _taps(weight), *geo.stride, *geo.dilation, dx)
    return dx


def grad_weight(grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dw (O, C, KH, KW): one partial sum per thread's images, added at the end."""
    x = np.ascontiguousarray(x)
    dyT = np.ascontiguousarray(grad_output.transpose(0, 2, 3, 1))  # (N, OH, OW, O)
    parts = ranges(x.shape[0])
    C, O = x.shape[1], dyT.shape[-1]
    partials = np.empty((len(parts), C, *geo.kernel, O), dtype=x.dtype)  # (parts, C, KH, KW, O)
    kernel: Callable[..., None] = _grad_weight  # one partial sum per range of images
    parallel([partial(kernel, dyT, x, *geo.stride, *geo.dilation, n0, n1, partials[k])
              for k, (n0, n1) in enumerate(parts)])  # fmt: skip
    return np.ascontiguousarray(partials.sum(axis=0).transpose(3, 0, 1, 2))  # (C, KH, KW, O) → (O, C, KH, KW)
