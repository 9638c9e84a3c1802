"""Batch normalisation's passes compiled: statistics, normalisation and the backward's sums, per channel.

NumPy spends a training step of batch norm in about ten passes over the activations (the mean, the
variance's own mean and squared deviations, x − μ, the division, the scale, the shift; in the backward
the statistics again, x̂, δ·x̂ and two sums, then the input gradient's four operations). Here, with the
activations viewed as (N, C, S) (S the positions of one map):

- forward: two passes per channel for the statistics (the mean, then the squared deviations from
  it — the two-pass form, not Σx² − (Σx)²/M, which cancels), one for y = (x − μ)·(γ/σ) + β;
- backward: one pass for Σδ and Σδ·(x − μ), one for dx.

Sums accumulate in float64 whatever the data's type: a float32 running sum over the 50,000 values of a
channel at batch 64 would lose four digits, where NumPy's pairwise summation loses about one; float64
accumulation is better than either. Measured on resnet's training step at batch 64 (fp32): batch norm
took 17 of 58 ms with NumPy, about 7 with these passes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# The sums may be reassociated (and so vectorised): a float add waits for the previous one, so a plain
# running sum ran 2.2 G values/s, eight hand-kept partial sums 6.3, the compiler's vector lanes 16
# (one channel of resnet's first stage at batch 64). Reassociation only: no FMA contraction, no
# assumptions about NaN or inf, which propagate as in NumPy. The order then depends on the vector width
# the compiler picks for the CPU, like NumPy's own SIMD sums: the same bits on one machine, not across.
_SUM = {"reassoc"}


@njit(cache=True, fastmath=_SUM)
def _row_sum(row: np.ndarray) -> float:  # pragma: no cover - compiled
    """Σ row[s] in float64."""
    total = 0.0
    for s in range(row.size):
        total += row[s]
    return total


@njit(cache=True, fastmath=_SUM)
def _row_squares(row: np.ndarray, mean: float) -> float:  # pragma: no cover - compiled
    """Σ (row[s] − mean)² in float64."""
    total = 0.0
    for s in range(row.size):
        d = row[s] - mean
        total += d * d
    return total


@njit(cache=True)
def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """(mean, biased variance) per channel of x (N, C, S), each (C,) float64: the two-pass form."""
    N, C, S = x.shape
    M = N * S
    mean = np.zeros(C)
    var = np.zeros(C)
    for c in range(C):
        total = 0.0
        for n in range(N):
            total += _row_sum(x[n, c])
        mu = total / M
        squares = 0.0
        for n in range(N):
            squares += _row_squares(x[n, c], mu)
        mean[c] = mu
        var[c] = squares / M
    return mean, var


@njit(cache=True)
def normalise(
    x: np.ndarray, mean: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """out[n, c] = (x[n, c] − mean[c]) · scale[c] + shift[c] for x and out (N, C, S)."""
    N, C, S = x.shape
    for n in range(N):
        for c in range(C):
            mu, k, b = mean[c], scale[c], shift[c]
            src, dst = x[n, c], out[n, c]
            for s in range(S):
                dst[s] = (src[s] - mu) * k + b


@njit(cache=True, fastmath=_SUM)
def grad_sums(
    grad_output: np.ndarray, x: np.ndarray, mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """(Σ δ, Σ δ·(x − mean)) per channel, each (C,) float64; δ and x (N, C, S)."""
    N, C, S = x.shape
    sum_g = np.zeros(C)
    sum_gx = np.zeros(C)
    for n in range(N):
        for c in range(C):
            mu = mean[c]
            g, v = grad_output[n, c], x[n, c]
            a = 0.0
            b = 0.0
            for s in range(S):
                a += g[s]
                b += g[s] * (v[s] - mu)
            sum_g[c] += a
            sum_gx[c] += b
    return sum_g, sum_gx


@njit(cache=True)
def grad_input(
    grad_output: np.ndarray,
    x: np.ndarray,
    mean: np.ndarray,
    mean_g: np.ndarray,
    slope: np.ndarray,
    scale: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """out[n, c] = (δ − mean_g[c] − (x − mean[c])·slope[c]) · scale[c], the training-mode dx (see
    ``norm.batch_norm_backward``: slope = invstd · mean(δ·x̂))."""
    N, C, S = x.shape
    for n in range(N):
        for c in range(C):
            mu, m, k, f = mean[c], mean_g[c], slope[c], scale[c]
            g, v, dst = grad_output[n, c], x[n, c], out[n, c]
            for s in range(S):
                dst[s] = (g[s] - m - (v[s] - mu) * k) * f
