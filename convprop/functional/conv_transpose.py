"""Transposed convolutions: the adjoint of a convolution, computed by the convolution algorithms themselves.

A convolution with weight w (C_out', C_in'/G, *K) is a linear map A from its input x' to its output y'.
The transposed convolution with the *same* weight tensor, read as (C_in, C_out/G, *K), is Aᵀ: it maps
something shaped like y' back to something shaped like x'. So, with no second copy of any algorithm:

- its forward is the convolution's ``grad_input`` — the full correlation of its input with the
  180°-rotated kernel (seed 002's picture), scattered through the strided, dilated windows and
  cropped by ``padding`` (the convolution's padding, whose adjoint is a crop);
- its input gradient is the convolution's ``forward`` applied to the zero-padded output gradient;
- its weight gradient is the convolution's ``grad_weight`` with the roles exchanged: the transposed
  convolution's *input* plays the convolution's output gradient, and its padded output gradient
  plays the convolution's input.

Output size per axis: ``(L - 1)·s - pad_before - pad_after + d·(K - 1) + output_padding + 1``. Several
output sizes map to the same input size under a strided convolution; ``output_padding``
(< max(stride, dilation), torch's rule) picks one by adding positions at the end, which only the bias
reaches. Letters: N batch, C = C_in channels of x, O = C_out output channels, G groups.

Where the convolution trains on tiles (``conv_tiled``: dense, a kernel larger than 1, 1-D and 2-D
with any stride), so does its transpose: the forward is the tiles' input gradient (every stride phase
a stride-1 correlation, ``conv_phases``), cropped as it is made, the input gradient the tiles'
forward reading the output gradient unpadded, the weight gradient the tiles' with the roles exchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError
from . import conv_tiled, threads
from .conv import (
    ConvContext,
    add_bias,
    check_algorithm,
    check_bias,
    check_grad_output,
    check_groups,
    check_weight,
    choose_algorithm,
    spatial_shapes,
)
from .conv_algorithm import ConvAlgorithm, ConvGeometry
from .conv_transpose_geometry import conv_transpose_output_padding as conv_transpose_output_padding
from .conv_transpose_geometry import transposed_pads as transposed_pads
from .conv_transpose_geometry import transposed_size
from .geometry import PadArg, SizeArg, Window, crop, ntuple, pad
from .validation import as_float_array, check_same_dtype


@dataclass
class TransposeContext:
    """What a transposed convolution's backward pass needs: the geometry of the convolution it is the
    adjoint of, the chosen algorithm, the weight and the input (for the weight gradient)."""

    geo: ConvGeometry
    algo: ConvAlgorithm
    weight: np.ndarray
    x: np.ndarray  # (N, C, *in_size)
    unbatched: bool


def _resolve(
    x: ArrayLike,
    weight: ArrayLike,
    ndim: int,
    stride: SizeArg,
    padding: PadArg,
    output_padding: SizeArg,
    groups: int,
    dilation: SizeArg,
    algorithm: str,
    name: str,
) -> tuple[np.ndarray, np.ndarray, ConvGeometry, ConvAlgorithm, bool]:
    x = as_float_array(x, "x")
    weight = as_float_array(weight, "weight")
    check_weight(weight, ndim, name, "C_in, C_out/groups")
    x, unbatched = spatial_shapes(x, ndim, name)
    C = x.shape[1]
    if weight.shape[0] != C:
        raise ArgumentError(
            f"{name}: weight.shape[0] (={weight.shape[0]}) must be in_channels (={C}); "
            f"got x of shape {x.shape} and weight of shape {weight.shape}"
        )
    groups = check_groups(groups, {f"in_channels (={C})": C})
    if min(x.shape[1:]) < 1:
        raise ArgumentError(f"x must have no empty axes (other than N), got shape {x.shape}")
    stride, dilation = ntuple(stride, ndim, "stride"), ntuple(dilation, ndim, "dilation")
    output_padding = ntuple(output_padding, ndim, "output_padding", minimum=0)
    if any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation, strict=True)):
        raise ArgumentError(
            f"output_padding (={output_padding}) must be smaller than either stride (={stride}) "
            f"or dilation (={dilation}) on every axis"
        )
    pads = transposed_pads(padding, ndim)
    check_algorithm(algorithm)
    kernel, in_size = weight.shape[2:], x.shape[2:]
    out_size = transposed_size(in_size, kernel, stride, pads, dilation, output_padding)
    if min(out_size) < 1:
        raise ArgumentError(
            f"{name}: the output would have spatial size {out_size} (< 1) for input {in_size}, kernel {kernel}, "
            f"stride {stride}, padding {padding!r}, dilation {dilation}, output_padding {output_padding}"
        )
    # the convolution this is the adjoint of: input out_size, output in_size, O = C, C' = weight.shape[1]·G
    window = Window(out_size, kernel, stride, dilation, pads, in_size)
    geo = ConvGeometry(window, groups, weight.shape[1] * groups, C)
    algo = choose_algorithm(algorithm, geo)
    return x, weight, geo, conv_tiled.for_training(algorithm, algo, geo) or algo, unbatched  # (tiles where they apply)


def _forward(
    ndim: int,
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None,
    stride: SizeArg,
    padding: PadArg,
    output_padding: SizeArg,
    groups: int,
    dilation: SizeArg,
    algorithm: str,
    name: str,
) -> tuple[np.ndarray, TransposeContext]:
    x, weight, geo, algo, unbatched = _resolve(
        x, weight, ndim, stride, padding, output_padding, groups, dilation, algorithm, name
    )
    bias = check_bias(bias, geo.in_channels)
    check_same_dtype(x=x, weight=weight, bias=bias)
    if isinstance(algo, conv_tiled.Tiled):  # the convolution's input gradient on tiles, cropped as it is made
        y = algo.grad_input_unpadded(x, weight, geo, bias)  # (N, O, *out_size), the bias added as it is stored
    else:
        with threads.blas_released():  # its products on BLAS's own threads, even inside a model's scope
            y_padded = algo.grad_input(x, weight, geo)  # (N, O, *padded_size): the convolution's input gradient
        y = np.ascontiguousarray(crop(y_padded, geo.in_size, geo.pads))  # (N, O, *out_size): the padding's adjoint
        add_bias(y, bias)
    return (y[0] if unbatched else y), TransposeContext(geo, algo, weight, x, unbatched)


def _backward(
    dy: np.ndarray, ctx: TransposeContext, input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    geo, algo = ctx.geo, ctx.algo
    if isinstance(algo, conv_tiled.Tiled):  # the convolution's forward and weight gradient, padding as they read
        dx = conv_tiled.forward_unpadded(dy, ctx.weight, geo) if input_grad else None
        dw = algo.grad_weight_unpadded(ctx.x, dy, geo)
        db = dy.sum(axis=(0, *range(2, dy.ndim)))
        return (dx[0] if dx is not None and ctx.unbatched else dx), dw, db
    dy_padded = pad(dy, geo.pads)  # (N, O, *padded_size), zeros: the adjoint of the crop
    with threads.blas_released():  # (as _forward)
        dx = algo.forward(dy_padded, ctx.weight, geo) if input_grad else None  # (N, C, *in_size)
        dw = algo.grad_weight(ctx.x, dy_padded, geo)  # roles exchanged: x as the output gradient → (C, O/G, *K)
    db = dy.sum(axis=(0, *range(2, dy.ndim)))  # (O,)
    if dx is not None and ctx.unbatched:
        dx = dx[0]
    return dx, dw, db


def _context_grad_output(grad_output: ArrayLike, ctx: TransposeContext) -> np.ndarray:
    dy = check_grad_output(grad_output, (ctx.x.shape[0], ctx.geo.in_channels, *ctx.geo.in_size), ctx.unbatched)
    check_same_dtype(grad_output=dy, x=ctx.x)
    return dy


def conv_transpose_with_context(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: SizeArg = 1,
    padding: PadArg = 0,
    output_padding: SizeArg = 0,
    groups: int = 1,
    dilation: SizeArg = 1,
    algorithm: str = "auto",
    *,
    ndim: int,
) -> tuple[np.ndarray, TransposeContext]:
    """``conv_transpose{ndim}d``, also returning the context for :func:`conv_transpose_backward_from_context`;
    inside ``threads.batch_scope``, as ``conv.conv_with_context``."""
    with threads.batch_scope(x):
        return _forward(ndim, x, weight, bias, stride, padding, output_padding, groups, dilation, algorithm,
                        f"conv_transpose{ndim}d")  # fmt: skip


def conv_transpose_backward_from_context(
    grad_output: ArrayLike, context: TransposeContext, *, input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(grad_input or None, grad_weight, grad_bias) of a recorded transposed-convolution forward pass."""
    dy = _context_grad_output(grad_output, context)
    with threads.batch_scope(dy):  # (as conv_transpose_with_context)
        return _backward(dy, context, input_grad)


def _backward_call(
    ndim: int,
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: SizeArg,
    padding: PadArg,
    output_padding: SizeArg,
    groups: int,
    dilation: SizeArg,
    algorithm: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    name = f"conv_transpose{ndim}d_backward"
    x, weight, geo, algo, unbatched = _resolve(
        x, weight, ndim, stride, padding, output_padding, groups, dilation, algorithm, name
    )
    ctx = TransposeContext(geo, algo, weight, x, unbatched)
    dy = _context_grad_output(grad_output, ctx)
    check_same_dtype(grad_output=dy, x=x, weight=weight)
    dx, dw, db = _backward(dy, ctx)
    assert dx is not None  # input_grad=True
    return dx, dw, db


def conv_transpose2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: SizeArg = 1,
    padding: PadArg = 0,
    output_padding: SizeArg = 0,
    groups: int = 1,
    dilation: SizeArg = 1,
    algorithm: str = "auto",
) -> np.ndarray:
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``: the adjoint of ``conv2d``.

    With x_up the input scattered to every stride-th position (zeros between) and padded by
    d·(K-1) on each side, the output is the correlation of x_up with the kernel rotated by 180°
    (channels swapped per group), cropped by ``padding``; equivalently every input pixel adds its
    kernel-weighted copy into the output::

        y[n, g·Og + o, i·s_h + kh·d_h - p_top, j·s_w + kw·d_w - p_left] += w[g·Cg + c, o, kh, kw] · x[n, g·Cg + c, i, j]

    plus ``bias[o]`` everywhere. See ``docs/convolution.md`` ("The transposed convolution").

    Shapes:
        x: (N, C, H, W) or unbatched (C, H, W); weight: (C, O/groups, KH, KW); bias: (O,) or None
        y: (N, O, OH, OW) with OH = (H - 1)·s_h - p_top - p_bottom + d_h·(KH - 1) + output_padding_h + 1

    Args:
        stride, dilation: int or pair, >= 1. padding: int, pair, or per side ((top, bottom), (left, right)).
        output_padding: int or pair, each smaller than stride or dilation on that axis.
        groups: divides C and O. algorithm: as :func:`conv2d` (the convolution algorithm that runs).
    """
    return _forward(2, x, weight, bias, stride, padding, output_padding, groups, dilation, algorithm,
                    "conv_transpose2d")[0]  # fmt: skip


def conv_transpose1d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: SizeArg = 1,
    padding: PadArg = 0,
    output_padding: SizeArg = 0,
    groups: int = 1,
    dilation: SizeArg = 1,
    algorithm: str = "auto",
) -> np.ndarray:
    """1-D transposed convolution, as ``torch.nn.functional.conv_transpose1d``; see :func:`conv_transpose2d`::

        y[n, g·Og + o, i·s + k·d - p_before] += w[g·Cg + c, o, k] · x[n, g·Cg + c, i]

    Shapes:
        x: (N, C, L) or (C, L); weight: (C, O/groups, K); y: (N, O, (L-1)·s - pads + d·(K-1) + output_padding + 1)
    """
    return _forward(1, x, weight, bias, stride, padding, output_padding, groups, dilation, algorithm,
                    "conv_transpose1d")[0]  # fmt: skip


def conv_transpose3d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: SizeArg = 1,
    padding: PadArg = 0,
    output_padding: SizeArg = 0,
    groups: int = 1,
    dilation: SizeArg = 1,
    algorithm: str = "auto",
) -> np.ndarray:
    """3-D transposed convolution, as ``torch.nn.functional.conv_transpose3d``; see :func:`conv_transpose2d`.

    Shapes:
        x: (N, C, D, H, W) or (C, D, H, W); weight: (C, O/groups, KD, KH, KW); y: (N, O, OD, OH, OW)
    """
    return _forward(3, x, weight, bias, stride, padding, output_padding, groups, dilation, algorithm,
                    "conv_transpose3d")[0]  # fmt: skip


def conv_transpose2d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: SizeArg = 1,
    padding: PadArg = 0,
    output_padding: SizeArg = 0,
    groups: int = 1,
    dilation: SizeArg = 1,
    algorithm: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv_transpose2d` with respect to x, weight and bias.

    The transposed convolution is Aᵀ for the convolution A with the same weight, so (δ = grad_output,
    zero-padded by ``padding``)::

        dx = conv2d(δ_padded, w, stride, dilation, groups)                    (A applied to δ)
        dw[g·Cg + c, o, kh, kw] = Σ_{n, i, j} x[n, g·Cg + c, i, j]
                                   · δ_padded[n, g·Og + o, i·s_h + kh·d_h, j·s_w + kw·d_w]
        db[o] = Σ_{n, positions} δ[n, o, ...]

    Shapes:
        grad_output: (N, O, OH, OW) (unbatched: (O, OH, OW)); returns (grad_input like x, grad_weight, grad_bias (O,))
    """
    return _backward_call(2, grad_output, x, weight, stride, padding, output_padding, groups, dilation, algorithm)


def conv_transpose1d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: SizeArg = 1,
    padding: PadArg = 0,
    output_padding: SizeArg = 0,
    groups: int = 1,
    dilation: SizeArg = 1,
    algorithm: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv_transpose1d`: (grad_input, grad_weight, grad_bias).

    See :func:`conv_transpose2d_backward`; grad_output is (N, O, OL) (unbatched: (O, OL)).
    """
    return _backward_call(1, grad_output, x, weight, stride, padding, output_padding, groups, dilation, algorithm)


def conv_transpose3d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: SizeArg = 1,
    padding: PadArg = 0,
    output_padding: SizeArg = 0,
    groups: int = 1,
    dilation: SizeArg = 1,
    algorithm: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv_transpose3d`: (grad_input, grad_weight, grad_bias).

    See :func:`conv_transpose2d_backward`; grad_output is (N, O, OD, OH, OW) (unbatched: (O, OD, OH, OW)).
    """
    return _backward_call(3, grad_output, x, weight, stride, padding, output_padding, groups, dilation, algorithm)


__all__ = [
    "ConvContext",
    "TransposeContext",
    "conv_transpose1d",
    "conv_transpose1d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv_transpose3d",
    "conv_transpose3d_backward",
    "conv_transpose_backward_from_context",
    "conv_transpose_output_padding",
    "conv_transpose_with_context",
    "transposed_size",
]
