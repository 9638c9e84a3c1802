"""Seed 000's algorithm: one ``scipy.signal`` 2-D correlation per (image, output, input channel).

Seed 000 computed ``output[n] += correlate2d(x[m], k[n, m], "valid")`` and, for the input gradient,
``grad_input[m] = convolve2d(grad_output[n], k[n, m], "full")``. Here it is generalised to batches,
stride, dilation and groups, with the seed's two bugs fixed: the bias is added once per output
channel (by ``conv.py``, not once per input channel), and the input gradient is *summed* over
output channels (``+=``), not overwritten.

Stride and dilation reduce to the stride-1, dilation-1 case:
- dilation: correlate with the *dilated* kernel, the taps spread out with zeros between them;
- stride: the strided output is every s-th sample of the stride-1 output, so for the gradients we
  scatter ``grad_output`` into a zero array of the stride-1 output's size ("upsampling") first.
Letters as in ``conv_direct``.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from .geometry import Pair, dilated_size


def _dilate(kernel2d: np.ndarray, dilation: Pair) -> np.ndarray:
    """(KH, KW) → (d_h·(KH-1)+1, d_w·(KW-1)+1) with zeros between the taps."""
    KH, KW = kernel2d.shape
    out = np.zeros((dilated_size(KH, dilation[0]), dilated_size(KW, dilation[1])), dtype=kernel2d.dtype)
    out[:: dilation[0], :: dilation[1]] = kernel2d
    return out


def _upsample(grad_output: np.ndarray, stride: Pair, full_size: Pair) -> np.ndarray:
    """(N, O, OH, OW) → (N, O, *full_size): dy at every stride-th pixel, zeros between."""
    up = np.zeros((*grad_output.shape[:2], *full_size), dtype=grad_output.dtype)
    up[:, :, :: stride[0], :: stride[1]] = grad_output
    return up


def _stride1_size(in_size: Pair, kernel: Pair, dilation: Pair) -> Pair:
    return tuple(in_size[a] - dilated_size(kernel[a], dilation[a]) + 1 for a in range(2))  # type: ignore[return-value]


def forward(x: np.ndarray, weight: np.ndarray, stride: Pair, dilation: Pair, groups: int, out_size: Pair) -> np.ndarray:
    """y[n, o] = Σ_c correlate2d(x[n, c], dilate(w[o, c]), "valid")[::s_h, ::s_w]."""
    N = x.shape[0]
    O, Cg = weight.shape[:2]
    Og = O // groups
    y = np.zeros((N, O, *out_size), dtype=x.dtype)
    for n in range(N):
        for o in range(O):
            g = o // Og
            for c in range(Cg):
                k = _dilate(weight[o, c], dilation)
                full = signal.correlate2d(x[n, g * Cg + c], k, mode="valid")
                y[n, o] += full[:: stride[0], :: stride[1]]
    return y


def grad_input(
    grad_output: np.ndarray, weight: np.ndarray, in_size: Pair, stride: Pair, dilation: Pair, groups: int
) -> np.ndarray:
    """dx[n, c] = Σ_o convolve2d(upsample(dy[n, o]), dilate(w[o, c]), "full") — summed, not overwritten."""
    N, O = grad_output.shape[:2]
    _, Cg, KH, KW = weight.shape
    Og = O // groups
    up = _upsample(grad_output, stride, _stride1_size(in_size, (KH, KW), dilation))
    dx = np.zeros((N, Cg * groups, *in_size), dtype=grad_output.dtype)
    for n in range(N):
        for o in range(O):
            g = o // Og
            for c in range(Cg):
                dx[n, g * Cg + c] += signal.convolve2d(up[n, o], _dilate(weight[o, c], dilation), mode="full")
    return dx


def grad_weight(
    grad_output: np.ndarray, x: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, groups: int
) -> np.ndarray:
    """dw[o, c] = Σ_n correlate2d(x[n, c], upsample(dy[n, o]), "valid")[::d_h, ::d_w]."""
    N, O = grad_output.shape[:2]
    Cg = x.shape[1] // groups
    Og = O // groups
    up = _upsample(grad_output, stride, _stride1_size(x.shape[2:], kernel, dilation))
    dw = np.zeros((O, Cg, *kernel), dtype=grad_output.dtype)
    for n in range(N):
        for o in range(O):
            g = o // Og
            for c in range(Cg):
                full = signal.correlate2d(x[n, g * Cg + c], up[n, o], mode="valid")
                dw[o, c] += full[:: dilation[0], :: dilation[1]]
    return dw
