"""im2col: unfold every window into a column, then one matrix product per group (seed 003).

Seed 003 writes the convolution as ``Y = W̃ · X̃ + b`` with ``W̃`` the kernel flattened to
(O, C·KH·KW) and ``X̃`` the unfolded input, (C·KH·KW, OH·OW). Its gradients are two more products,
``dW̃ = δ · X̃ᵀ`` and ``dX̃ = W̃ᵀ · δ``, and ``dX`` is ``dX̃`` folded back onto the image (col2im):
every window adds its column back where it came from.

The unfolding starts as a strided *view* (``geometry.windows``); the copy that feeds the matrix
product is made a few images at a time (``batch_chunks``), so the unfolded matrix never holds more
than about ``CHUNK_BYTES`` and stays in cache while the product reads it. The layout (N, K, P) is
the one the product consumes without a transposed copy: for each image, ``W̃ (Og, K) · X̃ (K, P)``
lands directly in the (Og, OH·OW) block of the NCHW output. A 1×1 kernel with stride 1 needs no
unfolding at all: ``X̃`` is the input itself, reshaped. col2im loops over the KH·KW kernel
offsets (not over pixels): for each offset, one strided slice-add of a (n, Cg, OH, OW) plane.
Letters as in ``conv_direct``; K = Cg·KH·KW, P = OH·OW.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .geometry import Pair, windows

CHUNK_BYTES = 8 << 20  # unfolded-matrix budget per chunk of images: bounds memory, stays cache-sized


def batch_chunks(N: int, bytes_per_image: int, budget: int | None = None) -> Iterator[slice]:
    """Slices n0:n1 over the batch, each holding at most ``budget`` (default ``CHUNK_BYTES``) bytes, >= 1 image."""
    step = max(1, (CHUNK_BYTES if budget is None else budget) // max(1, bytes_per_image))
    for n0 in range(0, N, step):
        yield slice(n0, min(N, n0 + step))


def is_pointwise(kernel: Pair, stride: Pair) -> bool:
    """1×1 kernel, stride 1: the unfolded matrix is the input itself (dilation is irrelevant)."""
    return kernel == (1, 1) and stride == (1, 1)


def forward(x: np.ndarray, weight: np.ndarray, stride: Pair, dilation: Pair, groups: int, out_size: Pair) -> np.ndarray:
    """Y[n] = W̃ · X̃[n] per group, the columns unfolded a chunk of images at a time."""
    N, C = x.shape[:2]
    O, Cg, KH, KW = weight.shape
    Og, K, P = O // groups, Cg * KH * KW, out_size[0] * out_size[1]
    y = np.empty((N, O, P), dtype=x.dtype)
    w = weight.reshape(groups, Og, K)  # (G, Og, K)
    if is_pointwise((KH, KW), stride):
        xg = x.reshape(N, groups, Cg, P)  # (N, G, Cg, P): no copy, H·W == P
        for g in range(groups):
            np.matmul(w[g], xg[:, g], out=y[:, g * Og : (g + 1) * Og])  # (N, Og, P)
        return y.reshape(N, O, *out_size)  # (N, O, OH, OW)
    view = windows(x, (KH, KW), stride, dilation, out_size)  # (N, C, KH, KW, OH, OW) view
    for chunk in batch_chunks(N, C * KH * KW * P * x.itemsize):
        cols = np.ascontiguousarray(view[chunk]).reshape(-1, groups, K, P)  # (n, G, K, P) copy
        for g in range(groups):
            np.matmul(w[g], cols[:, g], out=y[chunk, g * Og : (g + 1) * Og])  # (n, Og, P)
    return y.reshape(N, O, *out_size)  # (N, O, OH, OW)


def col2im(cols: np.ndarray, out: np.ndarray, stride: Pair, dilation: Pair) -> None:
    """Adjoint of ``windows``: add (n, C, KH, KW, OH, OW) into ``out`` (n, C, H, W), overlaps summed."""
    _, _, KH, KW, OH, OW = cols.shape
    for kh in range(KH):
        h0 = kh * dilation[0]
        rows = slice(h0, h0 + stride[0] * (OH - 1) + 1, stride[0])
        for kw in range(KW):
            w0 = kw * dilation[1]
            out[:, :, rows, w0 : w0 + stride[1] * (OW - 1) + 1 : stride[1]] += cols[:, :, kh, kw]


def grad_input(
    grad_output: np.ndarray, weight: np.ndarray, in_size: Pair, stride: Pair, dilation: Pair, groups: int
) -> np.ndarray:
    """dX̃[n] = W̃ᵀ · δ[n] per group, then col2im, a chunk of images at a time."""
    N, O, OH, OW = grad_output.shape
    _, Cg, KH, KW = weight.shape
    Og, K, P = O // groups, Cg * KH * KW, OH * OW
    C = Cg * groups
    wT = weight.reshape(groups, Og, K).transpose(0, 2, 1)  # (G, K, Og) view; BLAS reads it transposed
    dy = grad_output.reshape(N, groups, Og, P)  # (N, G, Og, P)
    if is_pointwise((KH, KW), stride) and in_size == (OH, OW):
        dx = np.empty((N, groups, Cg, P), dtype=grad_output.dtype)
        for g in range(groups):
            np.matmul(wT[g], dy[:, g], out=dx[:, g])  # (N, Cg, P)
        return dx.reshape(N, C, *in_size)  # (N, C, H, W)
    dx = np.zeros((N, C, *in_size), dtype=grad_output.dtype)
    for chunk in batch_chunks(N, C * KH * KW * P * grad_output.itemsize):
        n = chunk.stop - chunk.start
        dcols = np.empty((n, groups, K, P), dtype=grad_output.dtype)
        for g in range(groups):
            np.matmul(wT[g], dy[chunk, g], out=dcols[:, g])  # (n, K, P)
        col2im(dcols.reshape(n, C, KH, KW, OH, OW), dx[chunk], stride, dilation)  # (n, G·K, P) → 6-D
    return dx


def grad_weight(
    grad_output: np.ndarray, x: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, groups: int
) -> np.ndarray:
    """dW̃ = Σ_n δ[n] · X̃[n]ᵀ per group, one (Og, P)·(P, K) product per image."""
    N, O, OH, OW = grad_output.shape
    C = x.shape[1]
    Cg, (KH, KW) = C // groups, kernel
    Og, K, P = O // groups, Cg * KH * KW, OH * OW
    dw = np.zeros((groups, Og, K), dtype=grad_output.dtype)
    dy = grad_output.reshape(N, groups, Og, P)  # (N, G, Og, P)
    if is_pointwise(kernel, stride) and x.shape[2:] == (OH, OW):
        xg = x.reshape(N, groups, Cg, P)  # (N, G, Cg, P)
        for g in range(groups):
            for i in range(N):
                dw[g] += dy[i, g] @ xg[i, g].T  # (Og, Cg)
        return dw.reshape(O, Cg, KH, KW)  # (O, Cg, 1, 1)
    view = windows(x, kernel, stride, dilation, (OH, OW))  # (N, C, KH, KW, OH, OW) view
    for chunk in batch_chunks(N, C * KH * KW * P * x.itemsize):
        cols = np.ascontiguousarray(view[chunk]).reshape(-1, groups, K, P)  # (n, G, K, P) copy
        for g in range(groups):
            for i, n in enumerate(range(chunk.start, chunk.stop)):
                dw[g] += dy[n, g] @ cols[i, g].T  # (Og, P)·(P, K) → (Og, K)
    return dw.reshape(O, Cg, KH, KW)  # (O, Cg, KH, KW)
