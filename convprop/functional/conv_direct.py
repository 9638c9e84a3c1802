"""The direct convolution: plain loops over output positions, written from the index formulas.

This module is the *specification*. It is deliberately not optimised: every other algorithm is
tested against it, forward and every gradient. It generalises seed 002's single-channel loops
(``H[h, w] = sum(X[h:h+f, w:w+f] * W)``, ``dX[window] += W * dH[h, w]``, ``dW += X[window] * dH[h, w]``)
to batches, channels, stride, dilation and groups.

All three functions work on an input that is *already padded* (padding is resolved and applied by
``conv.py``). Letters: N batch, C input channels, H/W padded input size, O output channels,
KH/KW kernel size, OH/OW output size, G groups, Cg = C/G and Og = O/G channels per group.
"""

from __future__ import annotations

import numpy as np

from .geometry import Pair


def _window(oh: int, ow: int, kernel: Pair, stride: Pair, dilation: Pair) -> tuple[slice, slice]:
    """Rows and columns of the input that output pixel (oh, ow) reads: taps h0, h0+d, ..."""
    h0, w0 = oh * stride[0], ow * stride[1]
    return (
        slice(h0, h0 + dilation[0] * (kernel[0] - 1) + 1, dilation[0]),
        slice(w0, w0 + dilation[1] * (kernel[1] - 1) + 1, dilation[1]),
    )


def forward(x: np.ndarray, weight: np.ndarray, stride: Pair, dilation: Pair, groups: int, out_size: Pair) -> np.ndarray:
    """y[n, o, oh, ow] = Σ_{c in group(o)} Σ_{kh, kw} w[o, c, kh, kw] · x[n, c, oh·s_h + kh·d_h, ow·s_w + kw·d_w]."""
    N, _C = x.shape[:2]
    O, Cg, KH, KW = weight.shape
    Og = O // groups
    y = np.zeros((N, O, *out_size), dtype=x.dtype)
    for g in range(groups):
        xg = x[:, g * Cg : (g + 1) * Cg]  # (N, Cg, H, W)
        wg = weight[g * Og : (g + 1) * Og]  # (Og, Cg, KH, KW)
        for oh in range(out_size[0]):
            for ow in range(out_size[1]):
                rows, cols = _window(oh, ow, (KH, KW), stride, dilation)
                patch = xg[:, :, rows, cols]  # (N, Cg, KH, KW)
                y[:, g * Og : (g + 1) * Og, oh, ow] = np.einsum(
                    "nckl,ockl->no", patch, wg
                )  # (N, Cg, KH, KW)·(Og, Cg, KH, KW) → (N, Og)
    return y


def grad_input(
    grad_output: np.ndarray, weight: np.ndarray, in_size: Pair, stride: Pair, dilation: Pair, groups: int
) -> np.ndarray:
    """dx[n, c, oh·s_h + kh·d_h, ow·s_w + kw·d_w] += Σ_{o in group(c)} w[o, c, kh, kw] · dy[n, o, oh, ow].

    Every output pixel scatters its gradient back over the window it read (seed 002's
    ``dX[h:h+f, w:w+f] += W * dH[h, w]``). Input pixels that no window reads — the remainder
    rows/columns a stride leaves — keep a zero gradient.
    """
    N, O, OH, OW = grad_output.shape
    _, Cg, KH, KW = weight.shape
    Og = O // groups
    dx = np.zeros((N, Cg * groups, *in_size), dtype=grad_output.dtype)
    for g in range(groups):
        wg = weight[g * Og : (g + 1) * Og]  # (Og, Cg, KH, KW)
        for oh in range(OH):
            for ow in range(OW):
                rows, cols = _window(oh, ow, (KH, KW), stride, dilation)
                dy = grad_output[:, g * Og : (g + 1) * Og, oh, ow]  # (N, Og)
                dx[:, g * Cg : (g + 1) * Cg, rows, cols] += np.einsum(
                    "no,ockl->nckl", dy, wg
                )  # (N, Og)·(Og, Cg, KH, KW) → (N, Cg, KH, KW)
    return dx


def grad_weight(
    grad_output: np.ndarray, x: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, groups: int
) -> np.ndarray:
    """dw[o, c, kh, kw] = Σ_{n, oh, ow} dy[n, o, oh, ow] · x[n, g·Cg + c, oh·s_h + kh·d_h, ow·s_w + kw·d_w].

    Seed 002's ``dW += X[window] * dH[h, w]``, summed over the batch as well.
    """
    _N, O, OH, OW = grad_output.shape
    Cg = x.shape[1] // groups
    Og = O // groups
    dw = np.zeros((O, Cg, *kernel), dtype=grad_output.dtype)
    for g in range(groups):
        xg = x[:, g * Cg : (g + 1) * Cg]  # (N, Cg, H, W)
        for oh in range(OH):
            for ow in range(OW):
                rows, cols = _window(oh, ow, kernel, stride, dilation)
                dy = grad_output[:, g * Og : (g + 1) * Og, oh, ow]  # (N, Og)
                dw[g * Og : (g + 1) * Og] += np.einsum("no,nckl->ockl", dy, xg[:, :, rows, cols])  # → (Og, Cg, KH, KW)
    return dw
