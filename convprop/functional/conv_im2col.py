"""im2col: unfold every window into a column, then one matrix product per group (seed 003), in n-D.

Seed 003 writes the convolution as ``Y = W̃ · X̃ + b`` with ``W̃`` the kernel flattened to
(O, C·K_1···K_n) and ``X̃`` the unfolded input, (C·K_1···K_n, P) with P the number of output
positions. Its gradients are two more products, ``dW̃ = δ · X̃ᵀ`` and ``dX̃ = W̃ᵀ · δ``, and ``dX``
is ``dX̃`` folded back onto the input (col2im, ``geometry.scatter_windows``): every window adds its
column back where it came from.

The unfolding starts as a strided *view* (``geometry.windows``); the copy that feeds the matrix
product is made a few images at a time (``conv_memory.batch_chunks``), so the unfolded matrix never
holds more than about ``CHUNK_BYTES`` and stays in cache while the product reads it. The layout
(N, K, P) is the one the product consumes without a transposed copy: for each image,
``W̃ (Og, K) · X̃ (K, P)`` lands directly in the (Og, P) block of the output. A 1×…×1 kernel needs
no unfolding at all (``conv_pointwise``: with a stride, a copy of the sampled positions). col2im
loops over the kernel taps (not over pixels): for each tap, one strided slice-add of a (n, C, *Q) block.
Letters as in ``conv_direct``; K = Cg·K_1···K_n here, P = Q_1···Q_n.
"""

from __future__ import annotations

import math

import numpy as np

from . import conv_memory, conv_pointwise
from .conv_algorithm import ConvGeometry
from .geometry import scatter_windows, windows


def supports(geo: ConvGeometry) -> str | None:
    """The unfold and col2im are NumPy strided views and slices: any number of spatial axes."""
    return None


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Y[n] = W̃ · X̃[n] per group, the columns unfolded a chunk of images at a time."""
    if conv_pointwise.applies(geo):
        return conv_pointwise.forward(x, weight, geo)
    N, C, G = x.shape[0], x.shape[1], geo.groups
    O = weight.shape[0]
    Og, K, P = O // G, math.prod(weight.shape[1:]), math.prod(geo.out_size)
    y = np.empty((N, O, P), dtype=x.dtype)
    w = weight.reshape(G, Og, K)  # (G, Og, K)
    view = windows(x, geo.kernel, geo.stride, geo.dilation, geo.out_size)  # (N, C, *K, *Q) view
    for chunk in conv_memory.batch_chunks(N, C * math.prod(geo.kernel) * P * x.itemsize):
        cols = np.ascontiguousarray(view[chunk]).reshape(-1, G, K, P)  # (n, G, K, P) copy
        for g in range(G):
            np.matmul(w[g], cols[:, g], out=y[chunk, g * Og : (g + 1) * Og])  # (n, Og, P)
    return y.reshape(N, O, *geo.out_size)  # (N, O, *Q)


def grad_input(grad_output: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dX̃[n] = W̃ᵀ · δ[n] per group, then col2im, a chunk of images at a time."""
    if conv_pointwise.applies(geo):
        return conv_pointwise.grad_input(grad_output, weight, geo)
    N, O = grad_output.shape[:2]
    G, Cg = geo.groups, weight.shape[1]
    Og, K, P = O // G, math.prod(weight.shape[1:]), math.prod(geo.out_size)
    C = Cg * G
    wT = weight.reshape(G, Og, K).transpose(0, 2, 1)  # (G, K, Og) view; BLAS reads it transposed
    dy = grad_output.reshape(N, G, Og, P)  # (N, G, Og, P)
    dx = np.zeros((N, C, *geo.padded_size), dtype=grad_output.dtype)
    for chunk in conv_memory.batch_chunks(N, C * math.prod(geo.kernel) * P * grad_output.itemsize):
        n = chunk.stop - chunk.start
        dcols = np.empty((n, G, K, P), dtype=grad_output.dtype)
        for g in range(G):
            np.matmul(wT[g], dy[chunk, g], out=dcols[:, g])  # (n, K, P)
        columns = dcols.reshape(n, C, *geo.kernel, *geo.out_size)  # (n, G·K, P) → (n, C, *K, *Q)
        scatter_windows(columns, dx[chunk], geo.stride, geo.dilation)
    return dx


def grad_weight(grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dW̃ = Σ_n δ[n] · X̃[n]ᵀ per group, one (Og, P)·(P, K) product per image."""
    if conv_pointwise.applies(geo):
        return conv_pointwise.grad_weight(grad_output, x, geo)
    N, O = grad_output.shape[:2]
    C, G = x.shape[1], geo.groups
    Cg = C // G
    Og, K, P = O // G, Cg * math.prod(geo.kernel), math.prod(geo.out_size)
    dw = np.zeros((G, Og, K), dtype=grad_output.dtype)
    dy = grad_output.reshape(N, G, Og, P)  # (N, G, Og, P)
    view = windows(x, geo.kernel, geo.stride, geo.dilation, geo.out_size)  # (N, C, *K, *Q) view
    for chunk in conv_memory.batch_chunks(N, C * math.prod(geo.kernel) * P * x.itemsize):
        cols = np.ascontiguousarray(view[chunk]).reshape(-1, G, K, P)  # (n, G, K, P) copy
        for g in range(G):
            for i, n in enumerate(range(chunk.start, chunk.stop)):
                dw[g] += dy[n, g] @ cols[i, g].T  # (Og, P)·(P, K) → (Og, K)
    return dw.reshape(O, Cg, *geo.kernel)  # (O, Cg, *K)
