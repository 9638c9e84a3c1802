"""1×…×1 kernels with stride 1: a convolution that is a plain matrix product, no unfolding.

With a single tap the unfolded matrix X̃ is the input itself, reshaped to (C, P): per image and
group, ``Y = W̃ · X``, ``dX = W̃ᵀ · δ`` and ``dW̃ = Σ_n δ · Xᵀ``. Dilation is irrelevant. Used by
``conv_im2col`` and ``conv_gemm`` (it is the same arithmetic for both). Letters as in ``conv_direct``;
P = the number of positions.
"""

from __future__ import annotations

import math

import numpy as np

from .conv_algorithm import ConvGeometry


def applies(geo: ConvGeometry) -> bool:
    """One tap, stride 1, and (for the gradients) output the size of the padded input."""
    return all(k == 1 for k in geo.kernel) and all(s == 1 for s in geo.stride) and geo.out_size == geo.padded_size


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Y[n, g] = W̃[g] · X[n, g]."""
    N, G = x.shape[0], geo.groups
    O, Cg = weight.shape[:2]
    Og, P = O // G, math.prod(geo.out_size)
    w = weight.reshape(G, Og, Cg)  # (G, Og, Cg)
    xg = x.reshape(N, G, Cg, P)  # (N, G, Cg, P): no copy
    y = np.empty((N, O, P), dtype=x.dtype)
    for g in range(G):
        np.matmul(w[g], xg[:, g], out=y[:, g * Og : (g + 1) * Og])  # (N, Og, P)
    return y.reshape(N, O, *geo.out_size)  # (N, O, *out)


def grad_input(grad_output: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dX[n, g] = W̃[g]ᵀ · δ[n, g]."""
    N, O = grad_output.shape[:2]
    G, Cg = geo.groups, weight.shape[1]
    Og, P = O // G, math.prod(geo.out_size)
    wT = weight.reshape(G, Og, Cg).transpose(0, 2, 1)  # (G, Cg, Og) view; BLAS reads it transposed
    dy = grad_output.reshape(N, G, Og, P)  # (N, G, Og, P)
    dx = np.empty((N, G, Cg, P), dtype=grad_output.dtype)
    for g in range(G):
        np.matmul(wT[g], dy[:, g], out=dx[:, g])  # (N, Cg, P)
    return dx.reshape(N, G * Cg, *geo.padded_size)  # (N, C, *S)


def grad_weight(grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dW̃[g] = Σ_n δ[n, g] · X[n, g]ᵀ."""
    N, O = grad_output.shape[:2]
    G = geo.groups
    Cg, Og, P = x.shape[1] // G, O // G, math.prod(geo.out_size)
    dy = grad_output.reshape(N, G, Og, P)  # (N, G, Og, P)
    xg = x.reshape(N, G, Cg, P)  # (N, G, Cg, P)
    dw = np.zeros((G, Og, Cg), dtype=grad_output.dtype)
    for g in range(G):
        for i in range(N):
            dw[g] += dy[i, g] @ xg[i, g].T  # (Og, Cg)
    return dw.reshape(O, Cg, *geo.kernel)  # (O, Cg, 1, ..., 1)
