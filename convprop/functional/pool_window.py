"""The argument checks and window geometry every pooling function shares, for 1, 2 or 3 spatial axes.

A pooling's geometry is a :class:`~.geometry.Window` whose trailing pads include the overhang of a
``ceil_mode`` last window (``geometry.ceil_mode_pads``), plus the pads the caller asked for (average
pooling's divisor counts only those). PyTorch's limits are kept: padding at most half the kernel,
and no window entirely in the padding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError, ArgumentTypeError
from .geometry import (
    AXIS_NAMES,
    PadArg,
    Pads,
    SizeArg,
    Sizes,
    Window,
    ceil_mode_pads,
    crop,
    is_per_side,
    ntuple,
    per_side_pads,
    plain_arguments,
    pool_output_size,
)
from .validation import as_float_array, check_same_dtype


@dataclass(frozen=True)
class PoolGeometry:
    """A pooling's shape, resolved once and shared by forward and backward."""

    window: Window  # pads include the ceil-mode overhang
    padding: Pads  # the pads asked for, ((before, after), ...)

    @property
    def ndim(self) -> int:
        return self.window.ndim

    @property
    def in_size(self) -> Sizes:
        return self.window.in_size

    @property
    def kernel(self) -> Sizes:
        return self.window.kernel

    @property
    def stride(self) -> Sizes:
        return self.window.stride

    @property
    def dilation(self) -> Sizes:
        return self.window.dilation

    @property
    def out_size(self) -> Sizes:
        return self.window.out_size

    @property
    def padded_size(self) -> Sizes:
        """Every window fits, including a ceil-mode window hanging over the trailing pad."""
        return self.window.padded_size

    def crop(self, padded: np.ndarray) -> np.ndarray:
        """The input region of a padded (N, C, *padded_size) array → (N, C, *in_size) view."""
        return crop(padded, self.in_size, self.window.pads)


def as_batched(x: ArrayLike, ndim: int, name: str = "x") -> tuple[np.ndarray, bool]:
    """x as (N, C, *spatial) and whether it was unbatched; every axis but N non-empty."""
    x = as_float_array(x, name)
    letters = ", ".join(AXIS_NAMES[ndim])
    if x.ndim not in (ndim + 1, ndim + 2) or min(x.shape[-ndim - 1 :]) < 1:
        raise ArgumentError(
            f"{name} must be (N, C, {letters}) or unbatched (C, {letters}) with non-empty C, {letters}, "
            f"got shape {x.shape}"
        )
    return (x[None], True) if x.ndim == ndim + 1 else (x, False)


def _pool_pads(padding: object, ndim: int) -> Pads:
    if is_per_side(padding):
        return per_side_pads(padding, ndim)
    return tuple((p, p) for p in ntuple(padding, ndim, "padding", minimum=0))


def resolve(
    x: ArrayLike,
    ndim: int,
    kernel_size: SizeArg,
    stride: SizeArg | None,
    padding: PadArg,
    dilation: SizeArg,
    ceil_mode: bool,
) -> tuple[np.ndarray, PoolGeometry, bool]:
    """Validate the arguments of a pooling call; return (x batched, geometry, unbatched).

    The geometry of arguments given as plain ints and tuples of ints is remembered per input size
    (:func:`_remembered_geometry`): a layer pools the same shapes every step, and resolving them
    took ~0.2 ms a call, more than a 2×2 pool of a small batch itself.
    """
    x, unbatched = as_batched(x, ndim)
    args = (x.shape[2:], ndim, kernel_size, stride, padding, dilation, ceil_mode)
    if type(ceil_mode) is bool and plain_arguments(kernel_size, stride, padding, dilation):
        return x, _remembered_geometry(*args), unbatched
    return x, _geometry(*args), unbatched


def _geometry(
    in_size: tuple[int, ...],
    ndim: int,
    kernel_size: SizeArg,
    stride: SizeArg | None,
    padding: PadArg,
    dilation: SizeArg,
    ceil_mode: bool,
) -> PoolGeometry:
    """The checks and geometry of :func:`resolve` for an input of spatial size ``in_size``."""
    kernel = ntuple(kernel_size, ndim, "kernel_size")
    stride = kernel if stride is None else ntuple(stride, ndim, "stride")
    pads = _pool_pads(padding, ndim)
    dilation = ntuple(dilation, ndim, "dilation")
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise ArgumentTypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    if any(p > k // 2 for pp, k in zip(pads, kernel, strict=True) for p in pp):
        shown = padding if is_per_side(padding) else tuple(p for p, _ in pads)
        raise ArgumentError(
            f"padding should be at most half of kernel_size, got padding={shown} for kernel_size={kernel}"
        )
    out_size = tuple(
        pool_output_size(n, p, k, s, d, bool(ceil_mode))
        for n, p, k, s, d in zip(in_size, pads, kernel, stride, dilation, strict=True)
    )
    shown_pads = padding if is_per_side(padding) else tuple(p for p, _ in pads)
    if min(out_size) < 1:
        raise ArgumentError(
            f"input of spatial size {in_size} is too small for kernel_size={kernel}, stride={stride}, "
            f"padding={shown_pads}, dilation={dilation}: calculated output size {out_size}"
        )
    for a in range(ndim):
        starts = np.arange(out_size[a]) * stride[a] - pads[a][0]  # (O,) first tap of each window
        taps = starts[:, None] + np.arange(kernel[a]) * dilation[a]  # (O, K)
        if not ((taps >= 0) & (taps < in_size[a])).any(axis=1).all():
            axis = AXIS_NAMES[ndim][a]
            raise ArgumentError(
                f"a pooling window lies entirely in the padding along {axis} (input size {in_size}, "
                f"kernel_size={kernel}, stride={stride}, padding={shown_pads}, dilation={dilation}); "
                f"use less padding or dilation"
            )
    window_pads = tuple(
        ceil_mode_pads(p, n, k, s, d, o)
        for p, n, k, s, d, o in zip(pads, in_size, kernel, stride, dilation, out_size, strict=True)
    )
    return PoolGeometry(Window(in_size, kernel, stride, dilation, window_pads, out_size), pads)


# errors are raised again, never remembered; typed: ceil_mode True and 1 are different arguments
_remembered_geometry = functools.lru_cache(maxsize=256, typed=True)(_geometry)


def check_grad_output(
    grad_output: ArrayLike, expected: tuple[int, ...], unbatched: bool, **others: np.ndarray
) -> np.ndarray:
    """grad_output as a float array of the forward output's (batched) ``expected`` shape → batched."""
    grad_output = as_float_array(grad_output, "grad_output")
    shown = expected[1:] if unbatched else expected
    if grad_output.shape != shown:
        raise ArgumentError(f"grad_output must have the output's shape {shown}, got {grad_output.shape}")
    check_same_dtype(grad_output=grad_output, **others)
    return grad_output[None] if unbatched else grad_output
