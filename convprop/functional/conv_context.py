"""What a convolution's forward pass hands its backward, and the small checks and steps both share.

:class:`ConvContext` is what a layer keeps between its forward and backward passes, and
:func:`backward` / :func:`param_grads` the backward from one (padded contexts through the algorithm's
protocol, unpadded ones through its ``backward_unpadded``); ``check_bias`` and ``check_grad_output``
the argument checks with their messages; ``add_bias`` the tied bias. Split out of ``conv.py`` (which
re-exports them) so that module stays the dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError
from . import threads
from .conv_algorithm import ConvAlgorithm, ConvGeometry, SavesColumns
from .geometry import pad_backward
from .validation import as_float_array


@dataclass
class ConvContext:
    """What the backward pass needs from a forward pass, kept by a convolution layer between the two:
    the padded input (no second padding) and, when the algorithm can reuse them, the unfolded
    columns (no second unfold). An algorithm that pads as it reads (``conv_depthwise``, the tiles of
    ``conv_tiled``) keeps the input as it came (``padded`` False) and computes the backward with its
    ``backward_unpadded``."""

    geo: ConvGeometry
    algo: ConvAlgorithm
    weight: np.ndarray
    xp: np.ndarray  # (N, C, *padded_size), or (N, C, *in_size) if not ``padded``
    cols: np.ndarray | None  # the algorithm's saved columns, or None
    unbatched: bool
    padded: bool = True


def check_bias(bias: ArrayLike | None, channels: int) -> np.ndarray | None:
    if bias is None:
        return None
    bias = as_float_array(bias, "bias")
    if bias.shape != (channels,):
        raise ArgumentError(f"bias must have shape (C_out,) = ({channels},), got {bias.shape}")
    return bias


def _column_saver(algo: ConvAlgorithm) -> SavesColumns | None:
    """``algo`` if it can keep its columns, else None. (An attribute test: ``isinstance`` against the
    runtime-checkable protocol inspects every member, about 20 µs a call, twice per training step.)"""
    return cast(SavesColumns, algo) if hasattr(algo, "forward_saving") else None


def add_bias(y: np.ndarray, bias: np.ndarray | None) -> None:
    """y[:, o] += bias[o] in place: one bias per output channel, broadcast over positions."""
    if bias is not None:
        y += bias.reshape(-1, *(1,) * (y.ndim - 2))  # (O, 1, ..., 1)


def check_grad_output(grad_output: ArrayLike, expected: tuple[int, ...], unbatched: bool) -> np.ndarray:
    """grad_output as a float array of the forward output's ``expected`` (batched) shape → batched."""
    grad_output = as_float_array(grad_output, "grad_output")
    shown = expected[1:] if unbatched else expected
    if grad_output.shape != shown:
        raise ArgumentError(f"grad_output must have the output's shape {shown}, got {grad_output.shape}")
    return grad_output[None] if unbatched else grad_output


def pads_itself(algo: ConvAlgorithm, geo: ConvGeometry) -> bool:
    """Whether ``algo`` reads the input before zero padding and computes all three gradients in one
    call (``conv_depthwise``; ``conv_tiled.Tiled`` likewise, chosen in ``conv.forward_nd``): the
    context then keeps x itself."""
    return hasattr(algo, "backward_unpadded") and (geo.padding_mode == "zeros" or all(p == (0, 0) for p in geo.pads))


def backward(dy: np.ndarray, ctx: ConvContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dw, db) of the forward pass ``ctx`` recorded, δ batched and checked."""
    if not ctx.padded:  # one call for dx, dw and db
        dx, dw, db = ctx.algo.backward_unpadded(dy, ctx.xp, ctx.weight, ctx.geo)  # type: ignore[attr-defined]
        return (dx[0] if ctx.unbatched else dx), dw, db
    dw, db = param_grads(dy, ctx)
    return input_grad(dy, ctx.algo, ctx.weight, ctx.geo, ctx.unbatched), dw, db


def input_grad(
    dy: np.ndarray, algo: ConvAlgorithm, weight: np.ndarray, geo: ConvGeometry, unbatched: bool
) -> np.ndarray:
    """dx: the algorithm's gradient of the padded input, folded back onto x (N, C, *in_size); its
    products on BLAS's own threads even inside a model's scope (``threads.blas_released``)."""
    with threads.blas_released():
        dxp = algo.grad_input(dy, weight, geo)
    dx = pad_backward(dxp, geo.in_size, geo.pads, geo.padding_mode)
    return dx[0] if unbatched else dx


def param_grads(dy: np.ndarray, ctx: ConvContext) -> tuple[np.ndarray, np.ndarray]:
    """(dw, db) of the forward pass ``ctx`` recorded: from the saved columns where there are any."""
    if not ctx.padded:
        _, dw, db = ctx.algo.backward_unpadded(dy, ctx.xp, ctx.weight, ctx.geo, want_input=False)  # type: ignore[attr-defined]
        return dw, db
    saver = _column_saver(ctx.algo)
    with threads.blas_released():  # (as input_grad)
        if saver is not None and ctx.cols is not None:
            dw = saver.grad_weight_saved(dy, ctx.cols, ctx.geo)
        else:
            dw = ctx.algo.grad_weight(dy, ctx.xp, ctx.geo)
    return dw, dy.sum(axis=(0, *range(2, dy.ndim)))  # (O, C/G, *K), (O,)
