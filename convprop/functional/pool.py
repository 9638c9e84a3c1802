"""Max pooling for 1, 2 and 3 spatial axes, with its backward pass (average: ``pool_avg``, adaptive: ``pool_adaptive``).

Semantics are PyTorch's (``torch.nn.functional``), including ``ceil_mode``, dilation, the
``padding <= kernel_size // 2`` limit and which element wins a tie; ``padding`` may also be one
``(before, after)`` pair per axis (ONNX's ``pads``). The geometry is ``pool_window``'s, one
:class:`~.geometry.Window` for every dimension.

The 2-D (and, through a unit height, 1-D) forward runs ``pool_compiled``'s kernels; 3-D runs the
NumPy reference (one vectorised pass per kernel tap over a -inf padded copy, ``geometry.windows``),
which the tests hold the compiled kernels to exactly. The gradient is a compiled scatter over the
arg-max indices in every dimension. The average-pooling names are re-exported here, so
``functional.pool`` keeps offering every pooling function. Letters: N batch, C channels, S input
size, K kernel size, Q output size per axis (2-D: H, W, KH, KW, OH, OW).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError
from . import pool_compiled
from .geometry import AXIS_NAMES, PadArg, SizeArg, pad, windows
from .pool_adaptive import (
    adaptive_avg_pool1d,
    adaptive_avg_pool1d_backward,
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_avg_pool3d,
    adaptive_avg_pool3d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
)
from .pool_avg import (
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool3d,
    avg_pool3d_backward,
)
from .pool_window import PoolGeometry, check_grad_output, resolve

__all__ = [
    "PoolGeometry",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool1d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_avg_pool3d",
    "adaptive_avg_pool3d_backward",
    "avg_pool1d",
    "avg_pool1d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "avg_pool3d",
    "avg_pool3d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "max_pool1d",
    "max_pool1d_backward",
    "max_pool1d_with_indices",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool2d_with_indices",
    "max_pool3d",
    "max_pool3d_backward",
    "max_pool3d_with_indices",
]


def _resolve(
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None,
    padding: PadArg,
    dilation: SizeArg,
    ceil_mode: bool,
    ndim: int = 2,
) -> tuple[np.ndarray, PoolGeometry, bool]:
    """Validate a max-pooling call; return (x batched, geometry, unbatched)."""
    return resolve(x, ndim, kernel_size, stride, padding, dilation, ceil_mode)


def _flat(positions: list[np.ndarray], in_size: tuple[int, ...]) -> np.ndarray:
    """Row-major flat index into one input plane from per-axis positions (each (Q_a,)) → (*Q)."""
    flat = np.zeros((1,) * len(positions), dtype=np.int64)
    for a, p in enumerate(positions):
        shape = [1] * len(positions)
        shape[a] = -1
        flat = flat * in_size[a] + p.reshape(shape)  # Horner: ((p_0·S_1 + p_1)·S_2 + p_2) ...
    return flat


def _tap_index(geo: PoolGeometry, tap: tuple[int, ...]) -> np.ndarray:
    """Flat input index that ``tap`` reads at every output position → (*Q).

    Positions in the padding get meaningless values; they are never selected (padding is -inf).
    """
    positions = [
        np.arange(q) * s - p + t * d
        for q, s, (p, _), t, d in zip(geo.out_size, geo.stride, geo.padding, tap, geo.dilation, strict=True)
    ]
    return _flat(positions, geo.in_size)


def _first_valid_index(geo: PoolGeometry) -> np.ndarray:
    """Flat index of each window's first in-bounds tap → (*Q): PyTorch's initial arg-max."""
    positions = []
    for q, s, (p, _), d in zip(geo.out_size, geo.stride, geo.padding, geo.dilation, strict=True):
        start = np.arange(q) * s - p  # (Q,)
        positions.append(start + (-(start // d)) * d * (start < 0))  # step up by the dilation until >= 0
    return _flat(positions, geo.in_size)


def _max_pool_taps(x: np.ndarray, geo: PoolGeometry) -> tuple[np.ndarray, np.ndarray]:
    """The reference: one vectorised pass per kernel tap over a -inf padded copy (the compiled 2-D
    kernel is held to this by the tests: same values and indices, bit for bit)."""
    xp = pad(x, geo.window.pads, value=-np.inf)  # (N, C, *padded_size)
    view = windows(xp, geo.kernel, geo.stride, geo.dilation, geo.out_size)  # (N, C, *K, *Q) view
    shape = (*x.shape[:2], *geo.out_size)
    y = np.full(shape, -np.inf, dtype=x.dtype)  # (N, C, *Q)
    indices = np.empty(shape, dtype=np.int64)
    indices[...] = _first_valid_index(geo)  # the answer when every tap is -inf
    for tap, _ in geo.window.taps():
        index: tuple[Any, ...] = (slice(None), slice(None), *tap)
        values = view[index]  # (N, C, *Q)
        wins = (values > y) | np.isnan(values)
        np.copyto(y, values, where=wins)
        np.copyto(indices, _tap_index(geo, tap), where=wins)
    return y, indices


def _max_pool_compiled_2d(x: np.ndarray, geo: PoolGeometry, y: np.ndarray, indices: np.ndarray) -> None:
    """The compiled 2-D kernels; x, y, indices (N, C, H, W) / (N, C, OH, OW), filled in place."""
    before = tuple(p for p, _ in geo.padding)
    plain_2x2 = geo.kernel == geo.stride == (2, 2) and geo.padding == ((0, 0), (0, 0)) and geo.dilation == (1, 1)
    fast = plain_2x2 and geo.out_size == (geo.in_size[0] // 2, geo.in_size[1] // 2)
    if not fast or pool_compiled.max_pool_2x2(x, y, indices):  # (returns True if it met a NaN)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geo.kernel, geo.stride, before, geo.dilation  # 2-D
        pool_compiled.max_pool_forward(x, kh, kw, sh, sw, ph, pw, dh, dw, y, indices)


def _unit_height(geo: PoolGeometry) -> PoolGeometry:
    """A 1-D geometry as 2-D with a unit first axis (height 1, one tap, no padding)."""
    from .geometry import Window

    w = geo.window
    window = Window((1, *w.in_size), (1, *w.kernel), (1, *w.stride), (1, *w.dilation), ((0, 0), *w.pads),
                    (1, *w.out_size))  # fmt: skip
    return PoolGeometry(window, ((0, 0), *geo.padding))


def _max_pool(
    x: ArrayLike,
    ndim: int,
    kernel_size: SizeArg,
    stride: SizeArg | None,
    padding: PadArg,
    dilation: SizeArg,
    ceil_mode: bool,
) -> tuple[np.ndarray, np.ndarray]:
    x, geo, unbatched = _resolve(x, kernel_size, stride, padding, dilation, ceil_mode, ndim)
    x = np.ascontiguousarray(x)
    if ndim == 3:
        y, indices = _max_pool_taps(x, geo)
    else:
        geo2 = geo if ndim == 2 else _unit_height(geo)
        shape = (*x.shape[:2], *geo2.out_size)
        y, indices = np.empty(shape, dtype=x.dtype), np.empty(shape, dtype=np.int64)  # (N, C, OH, OW)
        _max_pool_compiled_2d(x.reshape(*x.shape[:2], *geo2.in_size), geo2, y, indices)
        y, indices = y.reshape(*x.shape[:2], *geo.out_size), indices.reshape(*x.shape[:2], *geo.out_size)
    return (y[0], indices[0]) if unbatched else (y, indices)


def _max_pool_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    ndim: int,
    kernel_size: SizeArg,
    stride: SizeArg | None,
    padding: PadArg,
    dilation: SizeArg,
    ceil_mode: bool,
    indices: ArrayLike | None,
) -> np.ndarray:
    x, geo, unbatched = _resolve(x, kernel_size, stride, padding, dilation, ceil_mode, ndim)
    dy = check_grad_output(grad_output, (*x.shape[:2], *geo.out_size), unbatched, x=x)
    if indices is None:
        indices = _max_pool(x, ndim, geo.kernel, geo.stride, geo.padding, geo.dilation, ceil_mode)[1]
    else:
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu" or indices.shape != np.shape(grad_output):
            raise ArgumentError(
                f"indices must be an integer array of grad_output's shape {np.shape(grad_output)}, "
                f"got {indices.dtype} array of shape {indices.shape}"
            )
        plane = math.prod(geo.in_size)
        if indices.size and (indices.min() < 0 or indices.max() >= plane):
            raise ArgumentError(
                f"indices must lie in [0, {'·'.join(AXIS_NAMES[ndim])}) = [0, {plane}) (one input plane, flat) "
                f"for input of spatial size {geo.in_size}, "
                f"got values from {indices.min()} to {indices.max()}"
            )
        indices = indices[None] if unbatched else indices  # (N, C, *Q)
    N, C = x.shape[:2]
    dx = np.zeros((N, C, math.prod(geo.in_size)), dtype=x.dtype)  # (N, C, S_1···S_n)
    flat_dy = np.ascontiguousarray(dy).reshape(N, C, 1, -1)  # (N, C, 1, Q_1···Q_n)
    flat_indices = np.ascontiguousarray(indices, dtype=np.int64).reshape(N, C, 1, -1)
    pool_compiled.max_pool_backward(flat_dy, flat_indices, dx)
    dx = dx.reshape(x.shape)  # (N, C, *S)
    return dx[0] if unbatched else dx


def _max_pool_backward_taps(dy: np.ndarray, indices: np.ndarray, x: np.ndarray, geo: PoolGeometry) -> np.ndarray:
    """The reference backward: one strided slice-add per tap, where that tap was the arg-max."""
    dxp = np.zeros((*x.shape[:2], *geo.padded_size), dtype=x.dtype)  # (N, C, *padded_size)
    for tap, slices in geo.window.taps():
        dxp[(slice(None), slice(None), *slices)] += np.where(indices == _tap_index(geo, tap), dy, 0)  # (N, C, *Q)
    return geo.crop(dxp)  # (N, C, *S); gradient that landed on padding aliases is dropped


def max_pool2d_with_indices(
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    dilation: SizeArg = 1,
    ceil_mode: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling that also returns where each maximum came from, as ``F.max_pool2d(..., return_indices=True)``.

    Forward, with x padded by -inf (so padding never wins)::

        y[n, c, i, j] = max_{kh, kw} x[n, c, i·s_h - p_h + kh·d_h, j·s_w - p_w + kw·d_w]
        indices[n, c, i, j] = h·W + w of that maximum (flat index into one input plane)

    Taps are scanned row by row and a later tap wins only if strictly greater (or NaN), so a tie goes
    to the first maximum in the window, exactly as PyTorch. See :func:`max_pool2d_backward`.

    Shapes:
        x: (N, C, H, W) or unbatched (C, H, W)
        y, indices: (N, C, OH, OW) (unbatched: (C, OH, OW)); indices are int64, with
        OH = floor((H + p_top + p_bottom - d_h·(KH-1) - 1) / s_h) + 1 (ceil in ceil mode, dropping a last
        window that would start in the trailing padding), likewise OW

    Args:
        kernel_size: int or (h, w) pair. stride: likewise; ``None`` means kernel_size.
        padding: int, pair, or per side ((top, bottom), (left, right)); each at most kernel_size // 2
            (implicit -inf padding).
        dilation: spacing between taps. ceil_mode: round the output size up instead of down.
    """
    return _max_pool(x, 2, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d(
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    dilation: SizeArg = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """Max pooling, as ``torch.nn.functional.max_pool2d``; see :func:`max_pool2d_with_indices`."""
    return _max_pool(x, 2, kernel_size, stride, padding, dilation, ceil_mode)[0]


def max_pool2d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    dilation: SizeArg = 1,
    ceil_mode: bool = False,
    *,
    indices: ArrayLike | None = None,
) -> np.ndarray:
    """Gradient of :func:`max_pool2d` with respect to x.

    Each output's gradient goes to the one input it copied, summed where windows overlap::

        dx[n, c, h, w] = Σ_{i, j : indices[n, c, i, j] = h·W + w} δ[n, c, i, j]

    Computed by a compiled scatter over the indices (``pool_compiled``); the reference
    (``_max_pool_backward_taps``) does one strided slice-add per tap, where that tap was the arg-max.

    Shapes:
        grad_output, indices: (N, C, OH, OW) (unbatched: (C, OH, OW)); returns dx like x

    Args:
        indices: keyword-only, the ``indices`` returned by :func:`max_pool2d_with_indices` with the
            same arguments; recomputed from x when omitted.
    """
    return _max_pool_backward(grad_output, x, 2, kernel_size, stride, padding, dilation, ceil_mode, indices)


def max_pool1d_with_indices(
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    dilation: SizeArg = 1,
    ceil_mode: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """1-D max pooling with arg-max indices, as ``F.max_pool1d(..., return_indices=True)``::

        y[n, c, i] = max_k x[n, c, i·s - p + k·d]        indices[n, c, i] = that position

    Shapes:
        x: (N, C, L) or (C, L); y, indices: (N, C, OL), OL as :func:`max_pool2d_with_indices`'s OH

    Args: as :func:`max_pool2d_with_indices`, one value per argument (per side: ``((before, after),)``).
    """
    return _max_pool(x, 1, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool1d(
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    dilation: SizeArg = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """1-D max pooling, as ``torch.nn.functional.max_pool1d``; see :func:`max_pool1d_with_indices`."""
    return _max_pool(x, 1, kernel_size, stride, padding, dilation, ceil_mode)[0]


def max_pool1d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    dilation: SizeArg = 1,
    ceil_mode: bool = False,
    *,
    indices: ArrayLike | None = None,
) -> np.ndarray:
    """Gradient of :func:`max_pool1d`: ``dx[n, c, l] = Σ_{i : indices[n, c, i] = l} δ[n, c, i]``.

    Shapes:
        grad_output, indices: (N, C, OL) (unbatched: (C, OL)); returns dx like x
    """
    return _max_pool_backward(grad_output, x, 1, kernel_size, stride, padding, dilation, ceil_mode, indices)


def max_pool3d_with_indices(
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    dilation: SizeArg = 1,
    ceil_mode: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """3-D max pooling with arg-max indices, as ``F.max_pool3d(..., return_indices=True)``::

        y[n, c, i, j, l] = max_t x[n, c, (i, j, l)·s - p + t·d]     indices = (d·H + h)·W + w of that maximum

    Shapes:
        x: (N, C, D, H, W) or (C, D, H, W); y, indices: (N, C, OD, OH, OW)

    Args: as :func:`max_pool2d_with_indices`, a triple per argument (per side: three pairs).
    """
    return _max_pool(x, 3, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool3d(
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    dilation: SizeArg = 1,
    ceil_mode: bool = False,
) -> np.ndarray:
    """3-D max pooling, as ``torch.nn.functional.max_pool3d``; see :func:`max_pool3d_with_indices`."""
    return _max_pool(x, 3, kernel_size, stride, padding, dilation, ceil_mode)[0]


def max_pool3d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    dilation: SizeArg = 1,
    ceil_mode: bool = False,
    *,
    indices: ArrayLike | None = None,
) -> np.ndarray:
    """Gradient of :func:`max_pool3d`: each output's gradient goes to its window's arg-max.

    Shapes:
        grad_output, indices: (N, C, OD, OH, OW) (unbatched: (C, OD, OH, OW)); returns dx like x
    """
    return _max_pool_backward(grad_output, x, 3, kernel_size, stride, padding, dilation, ceil_mode, indices)
