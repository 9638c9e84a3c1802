"""Depthwise convolution (one input channel per group, ``Cg == 1``) as compiled loops.

With one input channel per group there is no sum over channels, so im2col's matrix products
degenerate to (Og, KH·KW)·(KH·KW, P) — tiny, and dominated by the unfold. Here the index formulas
of ``conv_direct`` are written out as ``numba`` loops instead:

    y[n, o, i, j]   = Σ_{kh, kw} w[o, 0, kh, kw] · x[n, c(o), i·s_h + kh·d_h, j·s_w + kw·d_w]
    dx[n, c, i·s_h + kh·d_h, j·s_w + kw·d_w] += Σ_{o in group(c)} w[o, 0, kh, kw] · δ[n, o, i, j]
    dw[o, 0, kh, kw] = Σ_{n, i, j} δ[n, o, i, j] · x[n, c(o), i·s_h + kh·d_h, j·s_w + kw·d_w]

with c(o) = o // Og the input channel that output channel o reads (Og = O / groups output
channels per group, the "depth multiplier"). The innermost loop runs along one output row, over
a (possibly strided) view of the input row; the 3×3 stride-1 case is written out tap by tap so that
it vectorises. Sums may be reordered (``fastmath`` with "reassoc" only: NaN and inf still behave),
and grad_weight's sums accumulate in float64 across images. The kernels are
single-threaded: numba's parallel loops measured slower on the 2-core benchmark machine, where
their spinning OpenMP threads compete with BLAS and PyTorch. The kernels are compiled for 2-D
convolutions with one input channel per group; ``supports`` refuses anything else (with the reason),
and ``algorithm="auto"`` never picks them for it.
Letters as in ``conv_direct``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .conv_algorithm import ConvGeometry

# Only let sums be reordered (so they vectorise): no assumptions about NaN or inf, unlike fastmath=True.
REASSOCIATE = {"reassoc", "contract"}


def supports(geo: ConvGeometry) -> str | None:
    """2-D, one input channel per group (``weight.shape[1] == 1``): what these kernels compute."""
    if geo.ndim != 2:
        return f"the depthwise kernels are compiled for 2-D convolutions, this one has {geo.ndim} spatial axes"
    if geo.in_channels != geo.groups:
        return (
            f"the depthwise kernels need one input channel per group (groups == in_channels), "
            f"got in_channels={geo.in_channels}, groups={geo.groups}"
        )
    return None


@njit(cache=True, fastmath=REASSOCIATE)
def _forward(
    x: np.ndarray, w: np.ndarray, sh: int, sw: int, dh: int, dw: int, y: np.ndarray
) -> None:  # pragma: no cover - compiled
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


@njit(cache=True, fastmath=REASSOCIATE)
def _grad_input(
    dy: np.ndarray, w: np.ndarray, sh: int, sw: int, dh: int, dw: int, dx: np.ndarray
) -> None:  # pragma: no cover - compiled
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


@njit(cache=True, fastmath=REASSOCIATE)
def _grad_weight(
    dy: np.ndarray, x: np.ndarray, sh: int, sw: int, dh: int, dw: int, dwt: np.ndarray
) -> None:  # pragma: no cover - compiled
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


# --- 3×3, stride 1, no dilation: the common case, written out so the compiler vectorises along a row.
# About 10× faster than the general loops above, whose inner loop over one output row is too short to
# pay for its setup. Each output row reads three input rows at offsets 0, 1, 2.


def _is_3x3(geo: ConvGeometry) -> bool:
    return geo.kernel == (3, 3) and geo.stride == (1, 1) and geo.dilation == (1, 1)


@njit(cache=True)
def _correlate_3x3(
    src: np.ndarray, w: np.ndarray, dst: np.ndarray, flip: bool, src_of: int, accumulate: bool
) -> None:  # pragma: no cover - compiled
    """dst[n, k, i, j] (+)= Σ_{a, b} w'[o, a, b] · src[n, s, i + a, j + b] for each channel pair (k, s):
    forward: k = o (output channel), s = o // Og; input gradient: k = o // Og, s = o, w' = w flipped."""
    N, O = src.shape[0], w.shape[0]
    H, W = dst.shape[2], dst.shape[3]
    for n in range(N):
        for o in range(O):
            s = o // src_of if src_of > 0 else o
            k = o if src_of > 0 else o // (-src_of)
            if flip:
                w00, w01, w02 = w[o, 0, 2, 2], w[o, 0, 2, 1], w[o, 0, 2, 0]
                w10, w11, w12 = w[o, 0, 1, 2], w[o, 0, 1, 1], w[o, 0, 1, 0]
                w20, w21, w22 = w[o, 0, 0, 2], w[o, 0, 0, 1], w[o, 0, 0, 0]
            else:
                w00, w01, w02 = w[o, 0, 0, 0], w[o, 0, 0, 1], w[o, 0, 0, 2]
                w10, w11, w12 = w[o, 0, 1, 0], w[o, 0, 1, 1], w[o, 0, 1, 2]
                w20, w21, w22 = w[o, 0, 2, 0], w[o, 0, 2, 1], w[o, 0, 2, 2]
            for i in range(H):
                r0, r1, r2 = src[n, s, i], src[n, s, i + 1], src[n, s, i + 2]
                out = dst[n, k, i]
                if accumulate:
                    for j in range(W):
                        out[j] += (
                            w00 * r0[j]
                            + w01 * r0[j + 1]
                            + w02 * r0[j + 2]
                            + w10 * r1[j]
                            + w11 * r1[j + 1]
                            + w12 * r1[j + 2]
                            + w20 * r2[j]
                            + w21 * r2[j + 1]
                            + w22 * r2[j + 2]
                        )
                else:
                    for j in range(W):
                        out[j] = (
                            w00 * r0[j]
                            + w01 * r0[j + 1]
                            + w02 * r0[j + 2]
                            + w10 * r1[j]
                            + w11 * r1[j + 1]
                            + w12 * r1[j + 2]
                            + w20 * r2[j]
                            + w21 * r2[j + 1]
                            + w22 * r2[j + 2]
                        )


@njit(cache=True, fastmath=REASSOCIATE)
def _grad_weight_3x3(dy: np.ndarray, x: np.ndarray, dwt: np.ndarray) -> None:  # pragma: no cover - compiled
    """dw[o, 0, a, b] = Σ_{n, i, j} δ[n, o, i, j] · x[n, o // Og, i + a, j + b]: nine running sums per
    channel, each vectorised along the row, accumulated in float64 per image."""
    N, O, OH, OW = dy.shape
    Og = O // x.shape[1]
    acc = np.zeros((O, 3, 3), dtype=np.float64)
    for n in range(N):
        for o in range(O):
            c = o // Og
            s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = dy.dtype.type(0)
            for i in range(OH):
                d, r0, r1, r2 = dy[n, o, i], x[n, c, i], x[n, c, i + 1], x[n, c, i + 2]
                for j in range(OW):
                    s00 += d[j] * r0[j]
                    s01 += d[j] * r0[j + 1]
                    s02 += d[j] * r0[j + 2]
                    s10 += d[j] * r1[j]
                    s11 += d[j] * r1[j + 1]
                    s12 += d[j] * r1[j + 2]
                    s20 += d[j] * r2[j]
                    s21 += d[j] * r2[j + 1]
                    s22 += d[j] * r2[j + 2]
            acc[o, 0, 0] += s00
            acc[o, 0, 1] += s01
            acc[o, 0, 2] += s02
            acc[o, 1, 0] += s10
            acc[o, 1, 1] += s11
            acc[o, 1, 2] += s12
            acc[o, 2, 0] += s20
            acc[o, 2, 1] += s21
            acc[o, 2, 2] += s22
    for o in range(O):
        for a in range(3):
            for b in range(3):
                dwt[o, 0, a, b] = acc[o, a, b]


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """y[n, o] = Σ_{kh, kw} w[o, 0, kh, kw] · (shifted plane of x[n, c(o)])."""
    y = np.empty((x.shape[0], weight.shape[0], *geo.out_size), dtype=x.dtype)  # (N, O, OH, OW)
    if _is_3x3(geo):
        _correlate_3x3(x, weight, y, False, weight.shape[0] // x.shape[1], False)
    else:
        (sh, sw), (dh, dw) = geo.stride, geo.dilation  # 2-D (supports() checked)
        _forward(x, weight, sh, sw, dh, dw, y)
    return y


def grad_input(grad_output: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Each (n, c) plane gathers w-weighted δ planes of its Og output channels at every kernel offset."""
    in_size, groups = geo.padded_size, geo.groups
    dx = np.zeros((grad_output.shape[0], groups, *in_size), dtype=grad_output.dtype)  # (N, C, H, W)
    if _is_3x3(geo) and in_size == tuple(n + 2 for n in grad_output.shape[2:]):
        # stride 1: dx is the full correlation of δ with the kernel rotated by 180° (docs/convolution.md)
        dyp = np.pad(grad_output, [(0, 0), (0, 0), (2, 2), (2, 2)])  # (N, O, OH + 4, OW + 4)
        _correlate_3x3(dyp, weight, dx, True, -(weight.shape[0] // groups), True)
    else:
        (sh, sw), (dh, dw) = geo.stride, geo.dilation
        _grad_input(grad_output, weight, sh, sw, dh, dw, dx)
    return dx


def grad_weight(grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dw[o, 0, kh, kw] = Σ_{n, i, j} δ[n, o, i, j] · (shifted plane of x[n, c(o)])."""
    dw = np.empty((grad_output.shape[1], 1, *geo.kernel), dtype=grad_output.dtype)  # (O, 1, KH, KW)
    if _is_3x3(geo):
        _grad_weight_3x3(grad_output, x, dw)
    else:
        (sh, sw), (dil_h, dil_w) = geo.stride, geo.dilation  # (dw is the output here)
        _grad_weight(grad_output, x, sh, sw, dil_h, dil_w, dw)
    return dw
