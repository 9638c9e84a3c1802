"""The direct convolution: plain loops over output positions, written from the index formulas.

This module is the *specification*. It is deliberately not optimised: every other algorithm is
tested against it, forward and every gradient. It generalises seed 002's single-channel loops
(``H[h, w] = sum(X[h:h+f, w:w+f] * W)``, ``dX[window] += W * dH[h, w]``, ``dW += X[window] * dH[h, w]``)
to batches, channels, stride, dilation, groups and any number of spatial axes.

All three functions work on an input that is *already padded* (padding is resolved and applied by
``conv.py``). Letters: N batch, C input channels, S = (S_1, .., S_n) padded input size, O output
channels, K = (K_1, .., K_n) kernel size, Q = (Q_1, .., Q_n) output size, G groups, Cg = C/G and
Og = O/G channels per group; q, t are multi-indices over Q and K.
"""

from __future__ import annotations

import numpy as np

from .conv_algorithm import ConvGeometry


def supports(geo: ConvGeometry) -> str | None:
    """The specification computes every geometry."""
    return None


def _window(q: tuple[int, ...], geo: ConvGeometry) -> tuple[slice, ...]:
    """The padded input positions output position q reads, per axis: q·s, q·s + d, ..., q·s + (K-1)·d."""
    return tuple(
        slice(i * s, i * s + d * (k - 1) + 1, d)
        for i, k, s, d in zip(q, geo.kernel, geo.stride, geo.dilation, strict=True)
    )


def _channel_axes(n: int) -> tuple[list[int], list[int]]:
    """tensordot axes pairing (Cg, *K) of a (N, Cg, *K) patch with (Cg, *K) of an (Og, Cg, *K) kernel."""
    return list(range(1, n + 2)), list(range(1, n + 2))


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """y[n, o, q] = Σ_{c in group(o)} Σ_t w[o, c, t] · x[n, c, q·s + t·d]."""
    N, G = x.shape[0], geo.groups
    O, Cg = weight.shape[:2]
    Og = O // G
    y = np.zeros((N, O, *geo.out_size), dtype=x.dtype)
    for g in range(G):
        xg = x[:, g * Cg : (g + 1) * Cg]  # (N, Cg, *S)
        wg = weight[g * Og : (g + 1) * Og]  # (Og, Cg, *K)
        for q in np.ndindex(*geo.out_size):
            patch = xg[(slice(None), slice(None), *_window(q, geo))]  # (N, Cg, *K)
            y[(slice(None), slice(g * Og, (g + 1) * Og), *q)] = np.tensordot(
                patch, wg, axes=_channel_axes(geo.ndim)
            )  # (N, Cg, *K)·(Og, Cg, *K) → (N, Og)
    return y


def grad_input(grad_output: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dx[n, c, q·s + t·d] += Σ_{o in group(c)} w[o, c, t] · dy[n, o, q].

    Every output position scatters its gradient back over the window it read (seed 002's
    ``dX[h:h+f, w:w+f] += W * dH[h, w]``). Input positions that no window reads — the remainder
    a stride leaves — keep a zero gradient.
    """
    N, G = grad_output.shape[0], geo.groups
    O, Cg = weight.shape[:2]
    Og = O // G
    dx = np.zeros((N, Cg * G, *geo.padded_size), dtype=grad_output.dtype)
    for g in range(G):
        wg = weight[g * Og : (g + 1) * Og]  # (Og, Cg, *K)
        for q in np.ndindex(*geo.out_size):
            dy = grad_output[(slice(None), slice(g * Og, (g + 1) * Og), *q)]  # (N, Og)
            dx[(slice(None), slice(g * Cg, (g + 1) * Cg), *_window(q, geo))] += np.tensordot(
                dy, wg, axes=([1], [0])
            )  # (N, Og)·(Og, Cg, *K) → (N, Cg, *K)
    return dx


def grad_weight(grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dw[o, c, t] = Σ_{n, q} dy[n, o, q] · x[n, g·Cg + c, q·s + t·d].

    Seed 002's ``dW += X[window] * dH[h, w]``, summed over the batch as well.
    """
    G, O = geo.groups, grad_output.shape[1]
    Cg, Og = x.shape[1] // G, O // G
    dw = np.zeros((O, Cg, *geo.kernel), dtype=grad_output.dtype)
    for g in range(G):
        xg = x[:, g * Cg : (g + 1) * Cg]  # (N, Cg, *S)
        for q in np.ndindex(*geo.out_size):
            dy = grad_output[(slice(None), slice(g * Og, (g + 1) * Og), *q)]  # (N, Og)
            patch = xg[(slice(None), slice(None), *_window(q, geo))]  # (N, Cg, *K)
            dw[g * Og : (g + 1) * Og] += np.tensordot(dy, patch, axes=([0], [0]))  # → (Og, Cg, *K)
    return dw
