"""What a convolution's forward pass hands its backward, and the small checks and steps both share.

:class:`ConvContext` is what a layer keeps between its forward and backward passes; ``check_bias``
and ``check_grad_output`` the argument checks with their messages; ``add_bias`` the tied bias. Split
out of ``conv.py`` (which re-exports them) so that module stays the dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError
from .conv_algorithm import ConvAlgorithm, ConvGeometry, SavesColumns
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
