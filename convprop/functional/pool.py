"""Pooling: max, average, adaptive average and global average, each with its backward pass.

Semantics are PyTorch's (``torch.nn.functional``), including ``ceil_mode``, ``count_include_pad``,
``divisor_override``, dilation for max pooling, the ``padding <= kernel_size // 2`` limit and which
element wins a tie. Windows are read through ``geometry.windows`` (a strided view, one vectorised
operation per kernel tap) and gradients are scattered back with one strided slice-add per tap
(``geometry.tap_slices``); nothing loops over pixels.

Letters: N batch, C channels, H/W input size, KH/KW kernel size, OH/OW output size,
Hp/Wp the padded size (input + padding, plus the overhang that ceil mode's last window needs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import pool_compiled
from .geometry import Pair, dilated_size, pair, pool_output_size, tap_slices, windows
from .validation import as_float_array, check_divisor_override, check_same_dtype


@dataclass(frozen=True)
class PoolGeometry:
    """A pooling's shape, resolved once and shared by forward and backward."""

    in_size: Pair  # (H, W)
    kernel: Pair  # (KH, KW)
    stride: Pair
    padding: Pair  # symmetric (pad_h, pad_w)
    dilation: Pair
    out_size: Pair  # (OH, OW)

    @property
    def padded_size(self) -> Pair:
        """(Hp, Wp): every window fits, including a ceil-mode window hanging over the right pad."""
        last_window_end = [
            (self.out_size[a] - 1) * self.stride[a] + dilated_size(self.kernel[a], self.dilation[a]) for a in range(2)
        ]
        return tuple(max(self.in_size[a] + 2 * self.padding[a], last_window_end[a]) for a in range(2))  # type: ignore[return-value]

    def pad_widths(self, ndim: int) -> list[Pair]:
        """``np.pad`` widths for an (N, C, H, W) array: (pad, Hp - H - pad) on each spatial axis."""
        spatial = [(self.padding[a], self.padded_size[a] - self.in_size[a] - self.padding[a]) for a in range(2)]
        return [(0, 0)] * (ndim - 2) + spatial

    def crop(self, padded: np.ndarray) -> np.ndarray:
        """The input region of a padded (N, C, Hp, Wp) array → (N, C, H, W)."""
        (ph, pw), (H, W) = self.padding, self.in_size
        return padded[:, :, ph : ph + H, pw : pw + W]


def _as_batched(x, name: str = "x") -> tuple[np.ndarray, bool]:
    x = as_float_array(x, name)
    if x.ndim not in (3, 4) or min(x.shape[-3:]) < 1:
        raise ValueError(
            f"{name} must be (N, C, H, W) or unbatched (C, H, W) with non-empty C, H, W, got shape {x.shape}"
        )
    return (x[None], True) if x.ndim == 3 else (x, False)  # (N, C, H, W)


def _resolve(x, kernel_size, stride, padding, dilation, ceil_mode) -> tuple[np.ndarray, PoolGeometry, bool]:
    """Validate the arguments of a pooling call; return (x as 4-D, geometry, unbatched)."""
    x4, unbatched = _as_batched(x)
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding", minimum=0)
    dilation = pair(dilation, "dilation")
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(
            f"padding should be at most half of kernel_size, got padding={padding} for kernel_size={kernel}"
        )
    in_size = x4.shape[2:]
    out_size = tuple(
        pool_output_size(in_size[a], padding[a], kernel[a], stride[a], dilation[a], bool(ceil_mode)) for a in range(2)
    )
    if min(out_size) < 1:
        raise ValueError(
            f"input of spatial size {in_size} is too small for kernel_size={kernel}, stride={stride}, "
            f"padding={padding}, "
            f"dilation={dilation}: calculated output size {out_size}"
        )
    for a, axis in enumerate("HW"):
        starts = np.arange(out_size[a]) * stride[a] - padding[a]  # (OH,) first tap of each window
        taps = starts[:, None] + np.arange(kernel[a]) * dilation[a]  # (OH, KH)
        if not ((taps >= 0) & (taps < in_size[a])).any(axis=1).all():
            raise ValueError(
                f"a pooling window lies entirely in the padding along {axis} (input size {in_size}, "
                f"kernel_size={kernel}, "
                f"stride={stride}, padding={padding}, dilation={dilation}); use less padding or dilation"
            )
    return x4, PoolGeometry(in_size, kernel, stride, padding, dilation, out_size), unbatched  # type: ignore[arg-type]


def _check_grad_output(grad_output, expected: tuple, unbatched: bool, **others: np.ndarray) -> np.ndarray:
    """grad_output as a float array of the forward output's shape → (N, C, OH, OW)."""
    grad_output = as_float_array(grad_output, "grad_output")
    shown = expected[1:] if unbatched else expected
    if grad_output.shape != shown:
        raise ValueError(f"grad_output must have the output's shape {shown}, got {grad_output.shape}")
    check_same_dtype(grad_output=grad_output, **others)
    return grad_output[None] if unbatched else grad_output  # (N, C, OH, OW)


# ----------------------------------------------------------------------------------------- max pooling


def _tap_index(geo: PoolGeometry, kh: int, kw: int) -> np.ndarray:
    """Flat input index ``h·W + w`` that tap (kh, kw) reads at every output position → (OH, OW).

    Positions in the padding get meaningless values; they are never selected (padding is -inf).
    """
    rows = np.arange(geo.out_size[0]) * geo.stride[0] - geo.padding[0] + kh * geo.dilation[0]  # (OH,)
    cols = np.arange(geo.out_size[1]) * geo.stride[1] - geo.padding[1] + kw * geo.dilation[1]  # (OW,)
    return rows[:, None] * geo.in_size[1] + cols[None, :]  # (OH, OW)


def _first_valid_index(geo: PoolGeometry) -> np.ndarray:
    """Flat index of each window's first in-bounds tap → (OH, OW): PyTorch's initial arg-max."""
    starts = []
    for a in range(2):
        s = np.arange(geo.out_size[a]) * geo.stride[a] - geo.padding[a]  # (O,)
        d = geo.dilation[a]
        starts.append(s + (-(s // d)) * d * (s < 0))  # step up by the dilation until >= 0
    return starts[0][:, None] * geo.in_size[1] + starts[1][None, :]  # (OH, OW)


def max_pool2d_with_indices(
    x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False
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
        OH = floor((H + 2·p_h - d_h·(KH-1) - 1) / s_h) + 1 (ceil in ceil mode, dropping a last
        window that would start in the right padding), likewise OW

    Args:
        kernel_size: int or (h, w) pair. stride: likewise; ``None`` means kernel_size.
        padding: int or pair, at most kernel_size // 2 on each axis (implicit -inf padding).
        dilation: spacing between taps. ceil_mode: round the output size up instead of down.
    """
    x4, geo, unbatched = _resolve(x, kernel_size, stride, padding, dilation, ceil_mode)
    shape = (*x4.shape[:2], *geo.out_size)
    y, indices = np.empty(shape, dtype=x4.dtype), np.empty(shape, dtype=np.int64)  # (N, C, OH, OW)
    x4 = np.ascontiguousarray(x4)
    plain_2x2 = geo.kernel == geo.stride == (2, 2) and geo.padding == (0, 0) and geo.dilation == (1, 1)
    fast = plain_2x2 and geo.out_size == (geo.in_size[0] // 2, geo.in_size[1] // 2)
    if not fast or pool_compiled.max_pool_2x2(x4, y, indices):  # (returns True if it met a NaN)
        pool_compiled.max_pool_forward(x4, *geo.kernel, *geo.stride, *geo.padding, *geo.dilation, y, indices)
    return (y[0], indices[0]) if unbatched else (y, indices)


def _max_pool_taps(x4: np.ndarray, geo: PoolGeometry) -> tuple[np.ndarray, np.ndarray]:
    """The reference: one vectorised pass per kernel tap over a -inf padded copy (tests hold the
    compiled kernel that :func:`max_pool2d_with_indices` runs to this: same values and indices, bit
    for bit)."""
    xp = np.pad(x4, geo.pad_widths(4), mode="constant", constant_values=-np.inf)  # (N, C, Hp, Wp)
    view = windows(xp, geo.kernel, geo.stride, geo.dilation, geo.out_size)  # (N, C, KH, KW, OH, OW) view
    shape = (*x4.shape[:2], *geo.out_size)
    y = np.full(shape, -np.inf, dtype=x4.dtype)  # (N, C, OH, OW)
    indices = np.empty(shape, dtype=np.int64)
    indices[...] = _first_valid_index(geo)  # the answer when every tap is -inf
    for kh in range(geo.kernel[0]):
        for kw in range(geo.kernel[1]):
            tap = view[:, :, kh, kw]  # (N, C, OH, OW)
            wins = (tap > y) | np.isnan(tap)
            np.copyto(y, tap, where=wins)
            np.copyto(indices, _tap_index(geo, kh, kw), where=wins)
    return y, indices


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> np.ndarray:
    """Max pooling, as ``torch.nn.functional.max_pool2d``; see :func:`max_pool2d_with_indices`."""
    return max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)[0]


def max_pool2d_backward(
    grad_output, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, indices=None
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
    x4, geo, unbatched = _resolve(x, kernel_size, stride, padding, dilation, ceil_mode)
    dy = _check_grad_output(grad_output, (*x4.shape[:2], *geo.out_size), unbatched, x=x4)
    if indices is None:
        indices = max_pool2d_with_indices(x4, geo.kernel, geo.stride, geo.padding, geo.dilation, ceil_mode)[1]
    else:
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu" or indices.shape != np.shape(grad_output):
            raise ValueError(
                f"indices must be an integer array of grad_output's shape {np.shape(grad_output)}, "
                f"got {indices.dtype} array of shape {indices.shape}"
            )
        plane = geo.in_size[0] * geo.in_size[1]
        if indices.size and (indices.min() < 0 or indices.max() >= plane):
            raise ValueError(
                f"indices must lie in [0, H·W) = [0, {plane}) for input of shape {x4.shape[-2:]}, "
                f"got values from {indices.min()} to {indices.max()}"
            )
        indices = indices[None] if unbatched else indices  # (N, C, OH, OW)
    N, C = x4.shape[:2]
    dx = np.zeros((N, C, geo.in_size[0] * geo.in_size[1]), dtype=x4.dtype)  # (N, C, H·W)
    pool_compiled.max_pool_backward(np.ascontiguousarray(dy), np.ascontiguousarray(indices, dtype=np.int64), dx)
    dx = dx.reshape(x4.shape)  # (N, C, H, W)
    return dx[0] if unbatched else dx


def _max_pool_backward_taps(dy: np.ndarray, indices: np.ndarray, x4: np.ndarray, geo: PoolGeometry) -> np.ndarray:
    """The reference backward: one strided slice-add per tap, where that tap was the arg-max."""
    dxp = np.zeros((*x4.shape[:2], *geo.padded_size), dtype=x4.dtype)  # (N, C, Hp, Wp)
    for (kh, kw), (rows, cols) in tap_slices(geo.kernel, geo.stride, geo.dilation, geo.out_size):
        dxp[:, :, rows, cols] += np.where(indices == _tap_index(geo, kh, kw), dy, 0)  # (N, C, OH, OW)
    return geo.crop(dxp)  # (N, C, H, W); gradient that landed on padding aliases is dropped


# ------------------------------------------------------------------------------------- average pooling


def _avg_counts(in_size: int, pad: int, kernel: int, stride: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output position along one axis: (window clipped to the padded input, window clipped to the input)."""
    start = np.arange(out_size) * stride - pad  # (O,)
    end = np.minimum(start + kernel, in_size + pad)
    padded = end - start
    inside = np.minimum(end, in_size) - np.maximum(start, 0)
    return padded, inside


def _avg_divisor(geo: PoolGeometry, count_include_pad: bool, divisor_override, dtype) -> np.ndarray:
    """The (OH, OW) divisors, PyTorch's rule (see :func:`avg_pool2d`)."""
    if divisor_override is not None:
        return np.full(geo.out_size, divisor_override, dtype=dtype)
    (ph, ih), (pw, iw) = (
        _avg_counts(geo.in_size[a], geo.padding[a], geo.kernel[a], geo.stride[a], geo.out_size[a]) for a in range(2)
    )
    counts = ph[:, None] * pw[None, :] if count_include_pad else ih[:, None] * iw[None, :]  # (OH, OW)
    return np.maximum(counts, 1).astype(dtype)


def _resolve_avg(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    x4, geo, unbatched = _resolve(x, kernel_size, stride, padding, 1, ceil_mode)
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"count_include_pad must be a bool, got {count_include_pad!r}")
    divisor_override = check_divisor_override(divisor_override)
    return x4, geo, unbatched, _avg_divisor(geo, bool(count_include_pad), divisor_override, x4.dtype)


def avg_pool2d(
    x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
) -> np.ndarray:
    """Average pooling, as ``torch.nn.functional.avg_pool2d``.

    Forward, with x zero-padded::

        y[n, c, i, j] = (1 / D[i, j]) · Σ_{kh, kw} x[n, c, i·s_h - p_h + kh, j·s_w - p_w + kw]

    The divisor is PyTorch's: clip the window to the *padded* input (a ceil-mode window hanging
    past the right padding is cut there); with ``count_include_pad`` D is that clipped window's
    area, otherwise the area of its part inside the unpadded input; ``divisor_override`` replaces
    D everywhere. See :func:`avg_pool2d_backward`.

    Shapes:
        x: (N, C, H, W) or unbatched (C, H, W)
        y: (N, C, OH, OW) (unbatched: (C, OH, OW)), OH as in :func:`max_pool2d` with dilation 1

    Args:
        kernel_size, stride (``None`` = kernel_size), padding (<= kernel_size // 2), ceil_mode: as max pooling.
        count_include_pad: count zero padding in the divisor. divisor_override: a fixed non-zero divisor.
    """
    x4, geo, unbatched, divisor = _resolve_avg(
        x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    xp = np.pad(x4, geo.pad_widths(4))  # (N, C, Hp, Wp), zeros
    view = windows(xp, geo.kernel, geo.stride, geo.dilation, geo.out_size)  # (N, C, KH, KW, OH, OW) view
    y = view.sum(axis=(2, 3)) / divisor  # (N, C, OH, OW)
    return y[0] if unbatched else y


def avg_pool2d_backward(
    grad_output, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` with respect to x.

    Every input in window (i, j) receives an equal share::

        dx[n, c, i·s_h - p_h + kh, j·s_w - p_w + kw] += δ[n, c, i, j] / D[i, j]

    summed over overlapping windows (one strided slice-add per tap); shares that land on the
    padding are dropped.

    Shapes:
        grad_output: (N, C, OH, OW) (unbatched: (C, OH, OW)); returns dx like x
    """
    x4, geo, unbatched, divisor = _resolve_avg(
        x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    dy = _check_grad_output(grad_output, (*x4.shape[:2], *geo.out_size), unbatched, x=x4)
    share = dy / divisor  # (N, C, OH, OW)
    dxp = np.zeros((*x4.shape[:2], *geo.padded_size), dtype=x4.dtype)  # (N, C, Hp, Wp)
    for _, (rows, cols) in tap_slices(geo.kernel, geo.stride, geo.dilation, geo.out_size):
        dxp[:, :, rows, cols] += share
    dx = geo.crop(dxp)  # (N, C, H, W)
    return dx[0] if unbatched else dx


# ---------------------------------------------------------------------------- adaptive average pooling


def _adaptive_size(output_size, in_size: Pair) -> Pair:
    """``int | (int | None, int | None)`` → (OH, OW); ``None`` keeps the input's size on that axis."""
    items = (output_size, output_size) if not isinstance(output_size, (tuple, list)) else tuple(output_size)
    if len(items) != 2 or not all(
        v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) for v in items
    ):
        raise TypeError(f"output_size must be an int or a pair of ints (or None), got {output_size!r}")
    size = tuple(in_size[a] if v is None else int(v) for a, v in enumerate(items))
    if min(size) < 1:
        raise ValueError(f"output_size must be >= 1, got {output_size!r}")
    return size  # type: ignore[return-value]


def _bin_matrix(in_size: int, out_size: int, dtype) -> np.ndarray:
    """A[i, h] = 1 / (end_i - start_i) if start_i <= h < end_i, with PyTorch's bins
    start_i = floor(i·H / O), end_i = ceil((i+1)·H / O). Shape (O, H)."""
    i = np.arange(out_size)
    start = (i * in_size) // out_size  # (O,)
    end = -((-(i + 1) * in_size) // out_size)  # (O,)
    h = np.arange(in_size)
    inside = (h[None, :] >= start[:, None]) & (h[None, :] < end[:, None])  # (O, H)
    return (inside / (end - start)[:, None]).astype(dtype)


def _resolve_adaptive(x, output_size):
    x4, unbatched = _as_batched(x)
    out = _adaptive_size(output_size, x4.shape[2:])
    a_h = _bin_matrix(x4.shape[2], out[0], x4.dtype)  # (OH, H)
    a_w = _bin_matrix(x4.shape[3], out[1], x4.dtype)  # (OW, W)
    return x4, a_h, a_w, unbatched


def adaptive_avg_pool2d(x, output_size) -> np.ndarray:
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
    x4, a_h, a_w, unbatched = _resolve_adaptive(x, output_size)
    y = a_h @ x4 @ a_w.T  # (OH, H) @ (N, C, H, W) @ (W, OW) → (N, C, OH, OW)
    return y[0] if unbatched else y


def adaptive_avg_pool2d_backward(grad_output, x, output_size) -> np.ndarray:
    """Gradient of :func:`adaptive_avg_pool2d`: ``dx[n, c] = A_hᵀ · δ[n, c] · A_w``.

    Shapes:
        grad_output: (N, C, OH, OW) (unbatched: (C, OH, OW)); returns dx like x
    """
    x4, a_h, a_w, unbatched = _resolve_adaptive(x, output_size)
    dy = _check_grad_output(grad_output, (*x4.shape[:2], a_h.shape[0], a_w.shape[0]), unbatched, x=x4)
    dx = a_h.T @ dy @ a_w  # (H, OH) @ (N, C, OH, OW) @ (OW, W) → (N, C, H, W)
    return dx[0] if unbatched else dx


def global_avg_pool2d(x) -> np.ndarray:
    """Mean over each whole channel, kept as a 1×1 map: ``adaptive_avg_pool2d(x, 1)``.

    Shapes:
        x: (N, C, H, W) or unbatched (C, H, W); y: (N, C, 1, 1) (unbatched: (C, 1, 1))
    """
    return adaptive_avg_pool2d(x, 1)


def global_avg_pool2d_backward(grad_output, x) -> np.ndarray:
    """Gradient of :func:`global_avg_pool2d`: every pixel gets δ[n, c] / (H·W).

    Shapes:
        grad_output: (N, C, 1, 1) (unbatched: (C, 1, 1)); returns dx like x
    """
    return adaptive_avg_pool2d_backward(grad_output, x, 1)
