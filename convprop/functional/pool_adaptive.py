"""Adaptive and global average pooling for 1, 2 and 3 spatial axes, with backward passes (split out
of ``pool_avg``, which re-exports them).

The bins are PyTorch's (``torch.nn.functional.adaptive_avg_pool*d``) and separable: along each axis
an averaging matrix A (O, S) with A[i, h] = 1 / (end_i − start_i) for start_i <= h < end_i,
start_i = floor(i·S / O), end_i = ceil((i + 1)·S / O), so the pool is one product per axis and its
gradient the product with Aᵀ. Where the output is small, the axes' matrices are one: their Kronecker
product K (Π O_a, Π S_a), K[(i, j), (h, w)] = A_h[i, h]·A_w[j, w], and the pool is a single product
of the (N·C, Π S_a) batch with Kᵀ (see :func:`_whole_map`). Letters as in ``pool.py``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import cast

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ..errors import ArgumentError, ArgumentTypeError
from .pool_window import as_batched, check_grad_output


def _adaptive_size(output_size: int | Sequence[int | None] | None, in_size: tuple[int, ...]) -> tuple[int, ...]:
    """``int | (int | None, ...)`` → one size per axis; ``None`` keeps the input's size on that axis."""
    n = len(in_size)
    items = (output_size,) * n if not isinstance(output_size, (tuple, list)) else tuple(output_size)
    if len(items) != n or not all(
        v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) for v in items
    ):
        what = "an int" if n == 1 else f"an int or {n} ints (or None)"
        raise ArgumentTypeError(f"output_size must be {what}, got {output_size!r}")
    checked = cast(tuple[int | None, ...], items)  # the check above: each an int (maybe numpy's) or None
    size = tuple(in_size[a] if v is None else int(v) for a, v in enumerate(checked))
    if min(size) < 1:
        raise ArgumentError(f"output_size must be >= 1, got {output_size!r}")
    return size


def _bin_matrix(in_size: int, out_size: int, dtype: DTypeLike) -> np.ndarray:
    """A[i, h] = 1 / (end_i - start_i) if start_i <= h < end_i, with PyTorch's bins
    start_i = floor(i·H / O), end_i = ceil((i+1)·H / O). Shape (O, H), read-only: remembered per
    sizes and dtype (building them was half of resnet's global pooling at batch 1, profiled)."""
    return _remembered_bins(int(in_size), int(out_size), np.dtype(dtype))


@functools.lru_cache(maxsize=256)
def _remembered_bins(in_size: int, out_size: int, dtype: np.dtype) -> np.ndarray:
    i = np.arange(out_size)
    start = (i * in_size) // out_size  # (O,)
    end = -((-(i + 1) * in_size) // out_size)  # (O,)
    h = np.arange(in_size)
    inside = (h[None, :] >= start[:, None]) & (h[None, :] < end[:, None])  # (O, H)
    matrix = (inside / (end - start)[:, None]).astype(dtype)
    matrix.flags.writeable = False
    return matrix


# The pool is one product with the axes' Kronecker matrix (:func:`_whole_map`) up to this many entries
# of it. Measured (fp32, 2 threads, AMD EPYC Zen 3, 4 December), per-axis products against the one
# product: resnet's global pooling of 64 × 32 × 7² 138 → 12 µs (1,000 images 2.0 → 0.07 ms, one image
# 11 → 2 µs); 64 × 64 × 14² → 2² 934 → 126 µs; 28² → 7² (38,416 entries) 3.5 → 2.1 ms; 56² → 7²
# (153,664) 1.01 against 1.04 ms, even.
WHOLE_MAP_ENTRIES = 1 << 16


@functools.lru_cache(maxsize=256)
def _remembered_kron(in_size: tuple[int, ...], out_size: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    matrix = np.ones((1, 1))
    for s, o in zip(in_size, out_size, strict=True):  # in float64, rounded once: K = 1 / (bin's cells)
        matrix = np.kron(matrix, _remembered_bins(s, o, np.dtype(np.float64)))
    matrix = matrix.astype(dtype)
    matrix.flags.writeable = False
    return matrix


def _whole_map(in_size: tuple[int, ...], out_size: tuple[int, ...], dtype: DTypeLike) -> np.ndarray | None:
    """K (Π out, Π in), the Kronecker product of the axes' averaging matrices, when it has at most
    ``WHOLE_MAP_ENTRIES`` entries (read-only, remembered per sizes and dtype); else None.

    Per axis, NumPy runs one tiny product per (n, c) map — 2,048 of (1, 7)·(7, 7) for resnet's global
    pooling at batch 64, ~70 ns each — where one (N·C, H·W)·(H·W, 1) product does the work."""
    if math.prod(in_size) * math.prod(out_size) > WHOLE_MAP_ENTRIES:
        return None
    return _remembered_kron(tuple(map(int, in_size)), tuple(map(int, out_size)), np.dtype(dtype))


def _resolve_adaptive(
    x: ArrayLike, ndim: int, output_size: int | Sequence[int | None] | None
) -> tuple[np.ndarray, list[np.ndarray], bool]:
    x, unbatched = as_batched(x, ndim)
    out = _adaptive_size(output_size, x.shape[2:])
    bins = [_bin_matrix(x.shape[2 + a], out[a], x.dtype) for a in range(ndim)]  # (Q_a, S_a) each
    return x, bins, unbatched


def _apply_bins(x: np.ndarray, bins: list[np.ndarray], transpose: bool) -> np.ndarray:
    """Multiply axis 2 + a of x by A_a (or A_aᵀ) for every axis: separable averaging."""
    if len(bins) == 2:  # the 2-D case as two plain matrix products
        a_h, a_w = bins
        return a_h.T @ x @ a_w if transpose else a_h @ x @ a_w.T  # (N, C, OH, OW) or (N, C, H, W)
    for a, matrix in enumerate(bins):
        moved = np.moveaxis(x, 2 + a, -1)  # (..., S_a) view
        x = np.moveaxis(moved @ (matrix if transpose else matrix.T), -1, 2 + a)  # (..., Q_a) → back in place
    return np.ascontiguousarray(x)


def _adaptive(x: ArrayLike, ndim: int, output_size: int | Sequence[int | None] | None) -> np.ndarray:
    x, bins, unbatched = _resolve_adaptive(x, ndim, output_size)
    out_size = tuple(b.shape[0] for b in bins)
    whole = _whole_map(x.shape[2:], out_size, x.dtype)
    if whole is not None:  # y = X · Kᵀ, X the (N·C, Π S) maps
        N, C = x.shape[:2]
        y = (x.reshape(N * C, whole.shape[1]) @ whole.T).reshape(N, C, *out_size)
    else:
        y = _apply_bins(x, bins, transpose=False)  # (N, C, *Q)
    return y[0] if unbatched else y


def _adaptive_backward(
    grad_output: ArrayLike, x: ArrayLike, ndim: int, output_size: int | Sequence[int | None] | None
) -> np.ndarray:
    x, bins, unbatched = _resolve_adaptive(x, ndim, output_size)
    out_size = tuple(b.shape[0] for b in bins)
    dy = check_grad_output(grad_output, (*x.shape[:2], *out_size), unbatched, x=x)
    whole = _whole_map(x.shape[2:], out_size, dy.dtype)
    if whole is not None:  # dX = δ · K
        N, C = x.shape[:2]
        dx = (dy.reshape(N * C, whole.shape[0]) @ whole).reshape(x.shape)
    else:
        dx = _apply_bins(dy, bins, transpose=True)  # (N, C, *S)
    return dx[0] if unbatched else dx


def adaptive_avg_pool2d(x: ArrayLike, output_size: int | Sequence[int | None] | None) -> np.ndarray:
    """Adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Output cell (i, j) averages rows start_i ≤ h < end_i and columns start_j ≤ w < end_j with
    start_i = floor(i·H/OH), end_i = ceil((i+1)·H/OH) (bins may overlap). The bins are separable,
    so with averaging matrices A_h (OH, H) and A_w (OW, W)::

        y[n, c] = A_h · x[n, c] · A_wᵀ            dx[n, c] = A_hᵀ · δ[n, c] · A_w

    Shapes:
        x: (N, C, H, W) or unbatched (C, H, W)
        y: (N, C, OH, OW) (unbatched: (C, OH, OW))

    Args:
        output_size: int or (OH, OW); an entry of ``None`` keeps that input size.
    """
    return _adaptive(x, 2, output_size)


def adaptive_avg_pool2d_backward(
    grad_output: ArrayLike, x: ArrayLike, output_size: int | Sequence[int | None] | None
) -> np.ndarray:
    """Gradient of :func:`adaptive_avg_pool2d`: ``dx[n, c] = A_hᵀ · δ[n, c] · A_w``.

    Shapes:
        grad_output: (N, C, OH, OW) (unbatched: (C, OH, OW)); returns dx like x
    """
    return _adaptive_backward(grad_output, x, 2, output_size)


def adaptive_avg_pool1d(x: ArrayLike, output_size: int | Sequence[int | None] | None) -> np.ndarray:
    """1-D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool1d``: ``y[n, c] = A · x[n, c]``.

    Shapes:
        x: (N, C, L) or (C, L); y: (N, C, output_size)
    """
    return _adaptive(x, 1, output_size)


def adaptive_avg_pool1d_backward(
    grad_output: ArrayLike, x: ArrayLike, output_size: int | Sequence[int | None] | None
) -> np.ndarray:
    """Gradient of :func:`adaptive_avg_pool1d`: ``dx[n, c] = Aᵀ · δ[n, c]``.

    Shapes:
        grad_output: (N, C, OL) (unbatched: (C, OL)); returns dx like x
    """
    return _adaptive_backward(grad_output, x, 1, output_size)


def adaptive_avg_pool3d(x: ArrayLike, output_size: int | Sequence[int | None] | None) -> np.ndarray:
    """3-D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool3d``: A_d, A_h, A_w applied
    along their axes (the bins are separable).

    Shapes:
        x: (N, C, D, H, W) or (C, D, H, W); y: (N, C, OD, OH, OW)

    Args:
        output_size: int or (OD, OH, OW); an entry of ``None`` keeps that input size.
    """
    return _adaptive(x, 3, output_size)


def adaptive_avg_pool3d_backward(
    grad_output: ArrayLike, x: ArrayLike, output_size: int | Sequence[int | None] | None
) -> np.ndarray:
    """Gradient of :func:`adaptive_avg_pool3d`: A_dᵀ, A_hᵀ, A_wᵀ applied along their axes.

    Shapes:
        grad_output: (N, C, OD, OH, OW) (unbatched: (C, OD, OH, OW)); returns dx like x
    """
    return _adaptive_backward(grad_output, x, 3, output_size)


def global_avg_pool2d(x: ArrayLike) -> np.ndarray:
    """Mean over each whole channel, kept as a 1×1 map: ``adaptive_avg_pool2d(x, 1)``.

    Shapes:
        x: (N, C, H, W) or unbatched (C, H, W); y: (N, C, 1, 1) (unbatched: (C, 1, 1))
    """
    return adaptive_avg_pool2d(x, 1)


def global_avg_pool2d_backward(grad_output: ArrayLike, x: ArrayLike) -> np.ndarray:
    """Gradient of :func:`global_avg_pool2d`: every pixel gets δ[n, c] / (H·W).

    Shapes:
        grad_output: (N, C, 1, 1) (unbatched: (C, 1, 1)); returns dx like x
    """
    return adaptive_avg_pool2d_backward(grad_output, x, 1)
