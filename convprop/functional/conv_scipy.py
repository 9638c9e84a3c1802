"""Seed 000's algorithm: one ``scipy.signal`` correlation per (image, output, input channel), in n-D.

Seed 000 computed ``output[n] += correlate2d(x[m], k[n, m], "valid")`` and, for the input gradient,
``grad_input[m] = convolve2d(grad_output[n], k[n, m], "full")``. Here it is generalised to batches,
stride, dilation, groups and any number of spatial axes (``scipy.signal.correlate``/``convolve``,
``method="direct"``), with the seed's two bugs fixed: the bias is added once per output channel (by
``conv.py``, not once per input channel), and the input gradient is *summed* over output channels
(``+=``), not overwritten.

Stride and dilation reduce to the stride-1, dilation-1 case:
- dilation: correlate with the *dilated* kernel, the taps spread out with zeros between them;
- stride: the strided output is every s-th sample of the stride-1 output, so for the gradients we
  scatter ``grad_output`` into a zero array of the stride-1 output's size ("upsampling") first.
Letters as in ``conv_direct``.
"""

from __future__ import annotations

import numpy as np

from .conv_algorithm import ConvGeometry
from .geometry import dilated_size


def supports(geo: ConvGeometry) -> str | None:
    """``scipy.signal`` correlates in any number of dimensions."""
    return None


def _dilate(kernel: np.ndarray, dilation: tuple[int, ...]) -> np.ndarray:
    """(*K) → (d·(K-1)+1, ...) with zeros between the taps."""
    out = np.zeros(tuple(dilated_size(k, d) for k, d in zip(kernel.shape, dilation, strict=True)), dtype=kernel.dtype)
    out[tuple(slice(None, None, d) for d in dilation)] = kernel
    return out


def _taken(geo: ConvGeometry) -> tuple[slice, ...]:
    """The stride-1 output positions the strided output keeps: 0, s, .., (Q-1)·s on each axis."""
    return tuple(slice(0, (q - 1) * s + 1, s) for q, s in zip(geo.out_size, geo.stride, strict=True))


def _upsample(grad_output: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """(N, O, *Q) → (N, O, *stride-1 output size): dy at every stride-th position, zeros between."""
    full = tuple(
        size - dilated_size(k, d) + 1 for size, k, d in zip(geo.padded_size, geo.kernel, geo.dilation, strict=True)
    )
    up = np.zeros((*grad_output.shape[:2], *full), dtype=grad_output.dtype)
    up[(slice(None), slice(None), *_taken(geo))] = grad_output
    return up


def forward(x: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """y[n, o] = Σ_c correlate(x[n, c], dilate(w[o, c]), "valid")[::s]."""
    from scipy import signal  # here, not at import: scipy.signal takes about 1 s to import

    N, (O, Cg) = x.shape[0], weight.shape[:2]
    Og = O // geo.groups
    y = np.zeros((N, O, *geo.out_size), dtype=x.dtype)
    for n in range(N):
        for o in range(O):
            g = o // Og
            for c in range(Cg):
                k = _dilate(weight[o, c], geo.dilation)
                full = signal.correlate(x[n, g * Cg + c], k, mode="valid", method="direct")
                y[n, o] += full[_taken(geo)]
    return y


def grad_input(grad_output: np.ndarray, weight: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dx[n, c] = Σ_o convolve(upsample(dy[n, o]), dilate(w[o, c]), "full") — summed, not overwritten."""
    from scipy import signal  # (imported here, as in forward)

    N, O = grad_output.shape[:2]
    Cg, Og = weight.shape[1], O // geo.groups
    up = _upsample(grad_output, geo)
    dx = np.zeros((N, Cg * geo.groups, *geo.padded_size), dtype=grad_output.dtype)
    for n in range(N):
        for o in range(O):
            g = o // Og
            for c in range(Cg):
                k = _dilate(weight[o, c], geo.dilation)
                dx[n, g * Cg + c] += signal.convolve(up[n, o], k, mode="full", method="direct")
    return dx


def grad_weight(grad_output: np.ndarray, x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """dw[o, c] = Σ_n correlate(x[n, c], upsample(dy[n, o]), "valid")[::d]."""
    from scipy import signal  # (imported here, as in forward)

    N, O = grad_output.shape[:2]
    Cg, Og = x.shape[1] // geo.groups, O // geo.groups
    up = _upsample(grad_output, geo)
    dw = np.zeros((O, Cg, *geo.kernel), dtype=grad_output.dtype)
    taps = tuple(slice(None, None, d) for d in geo.dilation)
    for n in range(N):
        for o in range(O):
            g = o // Og
            for c in range(Cg):
                full = signal.correlate(x[n, g * Cg + c], up[n, o], mode="valid", method="direct")
                dw[o, c] += full[taps]
    return dw
