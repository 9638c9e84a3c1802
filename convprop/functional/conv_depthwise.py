"""Depthwise convolution (one input channel per group, ``Cg == 1``) as compiled loops.

With one input channel per group there is no sum over channels, so im2col's matrix products
degenerate to (Og, KH·KW)·(KH·KW, P) — tiny, and dominated by the unfold. Here the index formulas
of ``conv_direct`` are written out as ``numba`` loops instead, one thread per independent plane:

    y[n, o, i, j]   = Σ_{kh, kw} w[o, 0, kh, kw] · x[n, c(o), i·s_h + kh·d_h, j·s_w + kw·d_w]
    dx[n, c, i·s_h + kh·d_h, j·s_w + kw·d_w] += Σ_{o in group(c)} w[o, 0, kh, kw] · δ[n, o, i, j]
    dw[o, 0, kh, kw] = Σ_{n, i, j} δ[n, o, i, j] · x[n, c(o), i·s_h + kh·d_h, j·s_w + kw·d_w]

with c(o) = o // Og the input channel that output channel o reads (Og = O / groups output
channels per group, the "depth multiplier"). The innermost loop runs along one output row, over
a (possibly strided) view of the input row, so it compiles to vector instructions; ``fastmath``
lets grad_weight's row sums be reordered, and those sums accumulate in float64. The kernels are
single-threaded: numba's parallel loops measured slower on the 2-core benchmark machine, where
their spinning OpenMP threads compete with BLAS and PyTorch. Geometries with more than one input
channel per group fall back to ``conv_gemm``.
Letters as in ``conv_direct``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import conv_gemm
from .geometry import Pair


def supports(weight_shape) -> bool:
    """One input channel per group (``weight.shape[1] == 1``): what these kernels compute."""
    return weight_shape[1] == 1


@njit(cache=True, fastmath=True)
def _forward(x, w, sh, sw, dh, dw, y):  # pragma: no cover - compiled
    N, O, OH, OW = y.shape
    KH, KW = w.shape[2], w.shape[3]
    Og = O // x.shape[1]
    for n in range(N):
        for o in range(O):
            c = o // Og
            for i in range(OH):
                yrow = y[n, o, i]  # (OW,)
                yrow[:] = 0.0
                for kh in range(KH):
                    xrow = x[n, c, i * sh + kh * dh]  # (W,)
                    for kw in range(KW):
                        wk = w[o, 0, kh, kw]
                        xs = xrow[kw * dw : kw * dw + sw * (OW - 1) + 1 : sw]  # (OW,) the taps this offset reads
                        for j in range(OW):
                            yrow[j] += wk * xs[j]


@njit(cache=True, fastmath=True)
def _grad_input(dy, w, sh, sw, dh, dw, dx):  # pragma: no cover - compiled
    N, O, OH, OW = dy.shape
    C = dx.shape[1]
    KH, KW = w.shape[2], w.shape[3]
    Og = O // C
    for n in range(N):
        for o in range(O):
            c = o // Og
            for i in range(OH):
                dyrow = dy[n, o, i]  # (OW,)
                for kh in range(KH):
                    dxrow = dx[n, c, i * sh + kh * dh]  # (W,)
                    for kw in range(KW):
                        wk = w[o, 0, kh, kw]
                        dxs = dxrow[kw * dw : kw * dw + sw * (OW - 1) + 1 : sw]  # (OW,) view
                        for j in range(OW):
                            dxs[j] += wk * dyrow[j]


@njit(cache=True, fastmath=True)
def _grad_weight(dy, x, sh, sw, dh, dw, dwt):  # pragma: no cover - compiled
    N, O, OH, OW = dy.shape
    KH, KW = dwt.shape[2], dwt.shape[3]
    Og = O // x.shape[1]
    acc = np.zeros((O, KH, KW), dtype=np.float64)  # float64 sums over N·OH·OW terms
    for n in range(N):
        for o in range(O):
            c = o // Og
            for i in range(OH):
                dyrow = dy[n, o, i]  # (OW,)
                for kh in range(KH):
                    xrow = x[n, c, i * sh + kh * dh]  # (W,)
                    for kw in range(KW):
                        xs = xrow[kw * dw : kw * dw + sw * (OW - 1) + 1 : sw]  # (OW,)
                        total = 0.0
                        for j in range(OW):
                            total += dyrow[j] * xs[j]
                        acc[o, kh, kw] += total
    for o in range(O):
        for kh in range(KH):
            for kw in range(KW):
                dwt[o, 0, kh, kw] = acc[o, kh, kw]


def forward(x: np.ndarray, weight: np.ndarray, stride: Pair, dilation: Pair, groups: int, out_size: Pair) -> np.ndarray:
    """y[n, o] = Σ_{kh, kw} w[o, 0, kh, kw] · (shifted plane of x[n, c(o)])."""
    if not supports(weight.shape):
        return conv_gemm.forward(x, weight, stride, dilation, groups, out_size)
    y = np.empty((x.shape[0], weight.shape[0], *out_size), dtype=x.dtype)  # (N, O, OH, OW)
    _forward(x, weight, *stride, *dilation, y)
    return y


def grad_input(grad_output: np.ndarray, weight: np.ndarray, in_size: Pair, stride: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """Each (n, c) plane gathers w-weighted δ planes of its Og output channels at every kernel offset."""
    if not supports(weight.shape):
        return conv_gemm.grad_input(grad_output, weight, in_size, stride, dilation, groups)
    dx = np.zeros((grad_output.shape[0], groups, *in_size), dtype=grad_output.dtype)  # (N, C, H, W)
    _grad_input(grad_output, weight, *stride, *dilation, dx)
    return dx


def grad_weight(grad_output: np.ndarray, x: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """dw[o, 0, kh, kw] = Σ_{n, i, j} δ[n, o, i, j] · (shifted plane of x[n, c(o)])."""
    O = grad_output.shape[1]
    if x.shape[1] // groups != 1:  # more than one input channel per group
        return conv_gemm.grad_weight(grad_output, x, kernel, stride, dilation, groups)
    dw = np.empty((O, 1, *kernel), dtype=grad_output.dtype)  # (O, 1, KH, KW)
    _grad_weight(grad_output, x, *stride, *dilation, dw)
    return dw
