"""im2col: unfold every window into a column, then one matrix product per group (seed 003).

Seed 003 writes the convolution as ``Y = W̃ · X̃ + b`` with ``W̃`` the kernel flattened to
(O, C·KH·KW) and ``X̃`` the unfolded input, (C·KH·KW, OH·OW). Its gradients are two more products,
``dW̃ = δ · X̃ᵀ`` and ``dX̃ = W̃ᵀ · δ``, and ``dX`` is ``dX̃`` folded back onto the image (col2im):
every window adds its column back where it came from.

The unfolding is a strided *view* (``geometry.windows``); the only copy is the reshape that feeds
the matrix product. col2im loops over the KH·KW kernel offsets (not over pixels): for each offset,
one strided slice-add of a whole (N, Cg, OH, OW) plane.
Letters as in ``conv_direct``; K = Cg·KH·KW, P = OH·OW.
"""

from __future__ import annotations

import numpy as np

from .geometry import Pair, windows


def forward(x: np.ndarray, weight: np.ndarray, stride: Pair, dilation: Pair, groups: int, out_size: Pair) -> np.ndarray:
    """Y = W̃ · X̃ per group."""
    N = x.shape[0]
    O, Cg, KH, KW = weight.shape
    Og = O // groups
    P = out_size[0] * out_size[1]
    cols = windows(x, (KH, KW), stride, dilation, out_size)  # (N, C, KH, KW, OH, OW) view
    y = np.empty((N, O, P), dtype=x.dtype)
    for g in range(groups):
        xg = cols[:, g * Cg : (g + 1) * Cg].reshape(N, Cg * KH * KW, P)  # (N, K, P)
        wg = weight[g * Og : (g + 1) * Og].reshape(Og, Cg * KH * KW)  # (Og, K)
        np.matmul(wg, xg, out=y[:, g * Og : (g + 1) * Og])  # (N, Og, P)
    return y.reshape(N, O, *out_size)  # (N, O, OH, OW)


def col2im(cols: np.ndarray, in_size: Pair, stride: Pair, dilation: Pair) -> np.ndarray:
    """Adjoint of ``windows``: (N, C, KH, KW, OH, OW) → (N, C, H, W), overlapping windows summed."""
    N, C, KH, KW, OH, OW = cols.shape
    out = np.zeros((N, C, *in_size), dtype=cols.dtype)
    for kh in range(KH):
        h0 = kh * dilation[0]
        for kw in range(KW):
            w0 = kw * dilation[1]
            out[:, :, h0 : h0 + stride[0] * (OH - 1) + 1 : stride[0], w0 : w0 + stride[1] * (OW - 1) + 1 : stride[1]] += cols[:, :, kh, kw]
    return out


def grad_input(grad_output: np.ndarray, weight: np.ndarray, in_size: Pair, stride: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """dX̃ = W̃ᵀ · δ per group, then col2im."""
    N, O, OH, OW = grad_output.shape
    _, Cg, KH, KW = weight.shape
    Og = O // groups
    dcols = np.empty((N, Cg * groups, KH, KW, OH, OW), dtype=grad_output.dtype)
    for g in range(groups):
        dy = grad_output[:, g * Og : (g + 1) * Og].reshape(N, Og, OH * OW)  # (N, Og, P)
        wg = weight[g * Og : (g + 1) * Og].reshape(Og, Cg * KH * KW)  # (Og, K)
        dcols[:, g * Cg : (g + 1) * Cg] = np.matmul(wg.T, dy).reshape(N, Cg, KH, KW, OH, OW)  # (N, K, P) → 6-D
    return col2im(dcols, in_size, stride, dilation)


def grad_weight(grad_output: np.ndarray, x: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, groups: int) -> np.ndarray:
    """dW̃ = Σ_n δ[n] · X̃[n]ᵀ per group."""
    N, O, OH, OW = grad_output.shape
    Cg = x.shape[1] // groups
    Og = O // groups
    cols = windows(x, kernel, stride, dilation, (OH, OW))  # (N, C, KH, KW, OH, OW) view
    dw = np.empty((O, Cg, *kernel), dtype=grad_output.dtype)
    for g in range(groups):
        dy = grad_output[:, g * Og : (g + 1) * Og]  # (N, Og, OH, OW)
        xg = cols[:, g * Cg : (g + 1) * Cg]  # (N, Cg, KH, KW, OH, OW)
        dw[g * Og : (g + 1) * Og] = np.tensordot(dy, xg, axes=([0, 2, 3], [0, 4, 5]))  # (Og, Cg, KH, KW)
    return dw
