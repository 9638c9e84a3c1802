"""Average pooling for 1, 2 and 3 spatial axes, with backward passes (adaptive and global: ``pool_adaptive``).

Semantics are PyTorch's (``torch.nn.functional``), including ``ceil_mode``, ``count_include_pad``,
``divisor_override`` and the ``padding <= kernel_size // 2`` limit; ``padding`` may also be one
``(before, after)`` pair per axis. Windows are read through ``geometry.windows`` (a strided view)
and gradients are scattered back with one strided slice-add per tap (``geometry.scatter_windows``);
nothing loops over pixels. Letters as in ``pool.py``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ..errors import ArgumentError, ArgumentTypeError
from .geometry import PadArg, SizeArg, pad, scatter_windows, windows
from .pool_window import PoolGeometry, check_grad_output, resolve
from .validation import check_divisor_override


def _avg_counts(
    in_size: int, pads: tuple[int, int], kernel: int, stride: int, out: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per output position along one axis: (window clipped to the padded input, window clipped to the input)."""
    start = np.arange(out) * stride - pads[0]  # (Q,)
    end = np.minimum(start + kernel, in_size + pads[1])
    padded = end - start
    inside = np.minimum(end, in_size) - np.maximum(start, 0)
    return padded, inside


def _avg_divisor(
    geo: PoolGeometry, count_include_pad: bool, divisor_override: int | None, dtype: DTypeLike
) -> np.ndarray:
    """The (*Q) divisors, PyTorch's rule (see :func:`avg_pool2d`): a product of per-axis counts."""
    if divisor_override is not None:
        return np.full(geo.out_size, divisor_override, dtype=dtype)
    counts = np.ones((1,) * geo.ndim, dtype=np.int64)
    for a in range(geo.ndim):
        padded, inside = _avg_counts(geo.in_size[a], geo.padding[a], geo.kernel[a], geo.stride[a], geo.out_size[a])
        shape = [1] * geo.ndim
        shape[a] = -1
        counts = counts * (padded if count_include_pad else inside).reshape(shape)  # outer product → (*Q)
    return np.maximum(counts, 1).astype(dtype)


def _resolve_avg(
    x: ArrayLike,
    ndim: int,
    kernel_size: SizeArg,
    stride: SizeArg | None,
    padding: PadArg,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> tuple[np.ndarray, PoolGeometry, bool, np.ndarray]:
    x, geo, unbatched = resolve(x, ndim, kernel_size, stride, padding, 1, ceil_mode)
    if ndim == 3 and any(n < k for n, k in zip(geo.in_size, geo.kernel, strict=True)):
        raise ArgumentError(  # PyTorch's avg_pool3d (only) checks the unpadded input against the kernel
            f"input of spatial size {geo.in_size} is too small for kernel_size={geo.kernel}: avg_pool3d needs "
            f"every input axis at least as long as the kernel, padding not counted (PyTorch's rule)"
        )
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise ArgumentTypeError(f"count_include_pad must be a bool, got {count_include_pad!r}")
    divisor_override = check_divisor_override(divisor_override)
    return x, geo, unbatched, _avg_divisor(geo, bool(count_include_pad), divisor_override, x.dtype)


def _avg_pool(
    x: ArrayLike,
    ndim: int,
    kernel_size: SizeArg,
    stride: SizeArg | None,
    padding: PadArg,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> np.ndarray:
    x, geo, unbatched, divisor = _resolve_avg(
        x, ndim, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    xp = pad(x, geo.window.pads)  # (N, C, *padded_size), zeros
    view = windows(xp, geo.kernel, geo.stride, geo.dilation, geo.out_size)  # (N, C, *K, *Q) view
    y = view.sum(axis=tuple(range(2, 2 + ndim))) / divisor  # (N, C, *Q)
    return y[0] if unbatched else y


def _avg_pool_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    ndim: int,
    kernel_size: SizeArg,
    stride: SizeArg | None,
    padding: PadArg,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> np.ndarray:
    x, geo, unbatched, divisor = _resolve_avg(
        x, ndim, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    dy = check_grad_output(grad_output, (*x.shape[:2], *geo.out_size), unbatched, x=x)
    share = dy / divisor  # (N, C, *Q)
    dxp = np.zeros((*x.shape[:2], *geo.padded_size), dtype=x.dtype)  # (N, C, *padded_size)
    columns = np.broadcast_to(share[(slice(None), slice(None), *(None,) * ndim)], (*share.shape[:2], *geo.kernel,
                              *geo.out_size))  # (N, C, *K, *Q): every tap gets the window's share  # fmt: skip
    scatter_windows(columns, dxp, geo.stride, geo.dilation)
    dx = np.ascontiguousarray(geo.crop(dxp))  # (N, C, *S)
    return dx[0] if unbatched else dx


def avg_pool2d(
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Average pooling, as ``torch.nn.functional.avg_pool2d``.

    Forward, with x zero-padded::

        y[n, c, i, j] = (1 / D[i, j]) · Σ_{kh, kw} x[n, c, i·s_h - p_h + kh, j·s_w - p_w + kw]

    The divisor is PyTorch's: clip the window to the *padded* input (a ceil-mode window hanging
    past the trailing padding is cut there); with ``count_include_pad`` D is that clipped window's
    area, otherwise the area of its part inside the unpadded input; ``divisor_override`` replaces
    D everywhere. See :func:`avg_pool2d_backward`.

    Shapes:
        x: (N, C, H, W) or unbatched (C, H, W)
        y: (N, C, OH, OW) (unbatched: (C, OH, OW)), OH as in :func:`max_pool2d` with dilation 1

    Args:
        kernel_size, stride (``None`` = kernel_size), padding (<= kernel_size // 2; or per side),
            ceil_mode: as max pooling.
        count_include_pad: count zero padding in the divisor. divisor_override: a fixed non-zero divisor.
    """
    return _avg_pool(x, 2, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool2d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` with respect to x.

    Every input in window (i, j) receives an equal share::

        dx[n, c, i·s_h - p_h + kh, j·s_w - p_w + kw] += δ[n, c, i, j] / D[i, j]

    summed over overlapping windows (one strided slice-add per tap); shares that land on the
    padding are dropped.

    Shapes:
        grad_output: (N, C, OH, OW) (unbatched: (C, OH, OW)); returns dx like x
    """
    return _avg_pool_backward(grad_output, x, 2, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override)  # fmt: skip


def avg_pool1d(
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """1-D average pooling, as ``torch.nn.functional.avg_pool1d`` (plus 2-D's ``divisor_override``)::

        y[n, c, i] = (1 / D[i]) · Σ_k x[n, c, i·s - p + k]

    Shapes:
        x: (N, C, L) or (C, L); y: (N, C, OL)
    """
    return _avg_pool(x, 1, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool1d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Gradient of :func:`avg_pool1d`: ``dx[n, c, i·s - p + k] += δ[n, c, i] / D[i]``.

    Shapes:
        grad_output: (N, C, OL) (unbatched: (C, OL)); returns dx like x
    """
    return _avg_pool_backward(grad_output, x, 1, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override)  # fmt: skip


def avg_pool3d(
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """3-D average pooling, as ``torch.nn.functional.avg_pool3d``; the divisor is a product of per-axis counts.

    Shapes:
        x: (N, C, D, H, W) or (C, D, H, W); y: (N, C, OD, OH, OW)
    """
    return _avg_pool(x, 3, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool3d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    kernel_size: SizeArg,
    stride: SizeArg | None = None,
    padding: PadArg = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Gradient of :func:`avg_pool3d`: every input of a window gets δ / D, overlaps summed.

    Shapes:
        grad_output: (N, C, OD, OH, OW) (unbatched: (C, OD, OH, OW)); returns dx like x
    """
    return _avg_pool_backward(grad_output, x, 3, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override)  # fmt: skip
