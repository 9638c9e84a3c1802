"""The inference path's fused block: convolution + bias (+ folded batch norm) + ReLU (+ max-pool), nothing kept.

A training forward keeps what backward needs (the padded input, columns, each pool window's arg-max).
Inference needs none of it, and the unfused eval path still pays for some: ``max_pool2d`` computes an
int64 arg-max array as large as its output (twice the output's bytes in float32) and a batch norm
after a convolution is one more pass over the feature map. Here:

- the bias is added in place into the convolution's output (``conv.forward_nd``, ``keep=False``);
- an eval-mode batch norm is folded into the convolution: with s = γ / √(σ² + ε),
  ``BN(conv(x, w) + b) = conv(x, s·w) + s·(b − μ) + β`` (per output channel), so it costs nothing;
- ReLU and a max-pool with windows that tile the map (kernel = stride, no padding or dilation) are
  one compiled pass: ``max(0, max_window y) = max_window max(0, y)`` because ReLU is monotone, so the
  pool reads the convolution's output once and writes only the pooled map; other pools run after an
  in-place ReLU through ``max_pool2d``.

Results equal the unfused eval path's up to rounding of the folded batch norm (exactly, without one):
ReLU and max commute exactly in floating point, and NaN propagates as in ``max_pool2d`` (a NaN tap
wins its window).

Shapes: x (N, C, H, W) or (C, H, W); weight (O, C/groups, KH, KW); bias (O,) or None;
returns (N, O, OH, OW), pooled (N, O, PH, PW) when a pool is given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .conv import forward_nd
from .pool import max_pool2d


@njit(cache=True)
def _relu_max_pool(y: np.ndarray, kh: int, kw: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """out[n, c, i, j] = max(0, max of y[n, c, i·kh : (i+1)·kh, j·kw : (j+1)·kw]); a NaN wins."""
    N, C, PH, PW = out.shape
    for n in range(N):
        for c in range(C):
            plane = y[n, c]
            for i in range(PH):
                for j in range(PW):
                    best = -np.inf
                    for a in range(i * kh, i * kh + kh):
                        row = plane[a]
                        for b in range(j * kw, j * kw + kw):
                            value = row[b]
                            if value > best or value != value:
                                best = value
                                if value != value:
                                    break
                        if best != best:
                            break
                    out[n, c, i, j] = best if (best > 0.0 or best != best) else 0.0


def fold_batch_norm(
    weight: np.ndarray,
    bias: np.ndarray | None,
    mean: np.ndarray,
    var: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(w', b') with conv(x, w') + b' = BN_eval(conv(x, w) + b): s = γ / √(σ² + ε), w' = s·w, b' = s·(b − μ) + β.

    Shapes: weight (O, C/groups, *K); bias, mean, var, gamma, beta (O,); returns like weight, (O,).
    """
    scale = 1.0 / np.sqrt(var + eps)
    if gamma is not None:
        scale = gamma * scale
    shift = -mean * scale if bias is None else (bias - mean) * scale
    if beta is not None:
        shift = shift + beta
    folded = weight * scale.reshape(-1, *(1,) * (weight.ndim - 1))  # (O, 1, ..., 1) broadcast over the kernel
    return folded.astype(weight.dtype, copy=False), shift.astype(weight.dtype, copy=False)


def _tiles(pool: dict[str, Any], size: tuple[int, ...]) -> bool:
    """Whether the pool's windows tile the map: kernel = stride, no padding, no dilation, nothing left
    for ceil mode to add."""
    kernel, stride = tuple(pool["kernel_size"]), tuple(pool["stride"])
    padding = pool["padding"]
    flat_padding = padding if isinstance(padding, (int, np.integer)) else tuple(np.ravel(padding))
    no_padding = not np.any(np.asarray(flat_padding))
    undilated = all(d == 1 for d in np.ravel(pool["dilation"]))
    exact = not pool["ceil_mode"] or all(s % k == 0 for s, k in zip(size, kernel, strict=True))
    return len(kernel) == 2 and kernel == stride and no_padding and undilated and exact


def conv2d_relu_pool(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    conv: dict[str, Any],
    *,
    relu: bool,
    pool: dict[str, Any] | None = None,
) -> np.ndarray:
    """conv2d(x, weight, bias, **conv), then ReLU if ``relu``, then ``max_pool2d(**pool)`` if given.

    ``conv`` holds ``conv2d``'s keyword arguments (stride, padding, dilation, groups, padding_mode,
    algorithm); ``pool`` ``max_pool2d``'s (kernel_size, stride, padding, dilation, ceil_mode).
    """
    y, _ = forward_nd(2, x, weight, bias, **conv, keep=False, name="conv2d")  # bias added in place
    if pool is None:
        if relu:
            np.maximum(y, 0, out=y)
        return y
    unbatched = y.ndim == 3
    y4 = y[None] if unbatched else y  # (N, O, OH, OW)
    if relu and _tiles(pool, y4.shape[2:]):
        kh, kw = pool["kernel_size"]
        out = np.empty((*y4.shape[:2], y4.shape[2] // kh, y4.shape[3] // kw), dtype=y.dtype)  # (N, O, PH, PW)
        _relu_max_pool(y4, kh, kw, out)
        return out[0] if unbatched else out
    if relu:
        np.maximum(y, 0, out=y)
    return max_pool2d(y, **pool)
