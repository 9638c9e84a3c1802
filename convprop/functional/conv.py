"""conv1d, conv2d, conv3d and their backward passes: validate the arguments, resolve the geometry, dispatch.

The arithmetic lives in the algorithm modules (``conv_direct``, the specification; ``conv_scipy``;
``conv_im2col``; ``conv_gemm``; ``conv_depthwise``), each a :class:`~.conv_algorithm.ConvAlgorithm`
computing forward/grad_input/grad_weight on an already padded input. This module owns what they share:
the padding modes and their adjoint, the bias, unbatched input and the context a layer keeps between
its forward and backward passes. Which forward a pass that keeps nothing runs is in ``conv_eval.py``
(``uses_rows``, ``uses_grid``, re-exported here). Argument
checking, the resolution of ``int | per axis | per side | "same" | "valid"`` into one
:class:`~.geometry.Window` and the choice for ``algorithm="auto"`` (and the refusal of an explicit
algorithm that cannot do a shape) are in ``conv_resolve.py``, re-exported here. The transposed convolutions
(``conv_transpose.py``) reuse the same geometry, checks and algorithms.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from . import conv_memory, conv_tiled, threads
from .conv_algorithm import ConvAlgorithm, ConvGeometry
from .conv_context import ConvContext as ConvContext  # (re-exported: layers and conv_transpose import them here)
from .conv_context import _column_saver, add_bias
from .conv_context import backward as _backward
from .conv_context import check_bias as check_bias
from .conv_context import check_grad_output as check_grad_output
from .conv_context import input_grad as _input_grad
from .conv_context import pads_itself as _pads_itself
from .conv_context import param_grads as _param_grads
from .conv_eval import eval_forward
from .conv_eval import (
    uses_grid as uses_grid,  # (re-exported, with uses_rows: which forward a pass keeping nothing runs)
)
from .conv_eval import uses_rows as uses_rows
from .conv_resolve import ALGORITHMS as ALGORITHMS  # (re-exported: callers and tests import them from here)
from .conv_resolve import _choose, _resolve
from .conv_resolve import check_algorithm as check_algorithm
from .conv_resolve import check_groups as check_groups
from .conv_resolve import check_weight as check_weight
from .conv_resolve import spatial_shapes as spatial_shapes
from .geometry import PadArg, SizeArg, pad
from .validation import check_same_dtype

KEEP_COLUMNS_BYTES = conv_memory.KEEP_COLUMNS_BYTES


def resolve_forward(
    ndim: int,
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None,
    stride: SizeArg,
    padding: PadArg | str,
    dilation: SizeArg,
    groups: int,
    padding_mode: str,
    algorithm: str,
    *,
    name: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, ConvGeometry, ConvAlgorithm, bool]:
    """A forward pass's checks: (x batched, not padded; weight; bias; geometry; algorithm; unbatched)."""
    x, weight, geo, algo, unbatched = _resolve(
        x, weight, ndim, stride, padding, dilation, groups, padding_mode, algorithm, name
    )
    bias = check_bias(bias, weight.shape[0])
    check_same_dtype(x=x, weight=weight, bias=bias)
    return x, weight, bias, geo, algo, unbatched


def forward_nd(
    ndim: int,
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None,
    stride: SizeArg,
    padding: PadArg | str,
    dilation: SizeArg,
    groups: int,
    padding_mode: str,
    algorithm: str,
    *,
    keep: bool,
    name: str,
) -> tuple[np.ndarray, ConvContext | None]:
    """The convolution with ``ndim`` spatial axes; returns (y, context or None)."""
    x, weight, bias, geo, algo, unbatched = resolve_forward(
        ndim, x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, name=name
    )
    if not keep:
        y = eval_forward(x, weight, geo, algo, algorithm)
        add_bias(y, bias)
        return (y[0] if unbatched else y), None
    if _pads_itself(algo, geo):  # conv_depthwise: pads each plane as it reads it, keeps x as it came
        y = algo.forward_unpadded(x, weight, geo, bias)  # type: ignore[attr-defined]
        return (y[0] if unbatched else y), ConvContext(geo, algo, weight, x, None, unbatched, padded=False)
    tiled = conv_tiled.for_training(algorithm, algo, geo)
    if tiled is not None:  # forward, input and weight gradients on tiles (conv_tiled): no columns kept
        y = conv_tiled.forward_unpadded(x, weight, geo, bias)  # the bias in the pass's epilogue
        # (the weight gradient pads each image as it copies it: x kept as it came)
        return (y[0] if unbatched else y), ConvContext(geo, tiled, weight, x, None, unbatched, padded=False)
    xp = pad(x, geo.pads, geo.padding_mode)  # (N, C, *padded_size)
    cols = None
    saver = _column_saver(algo)
    with threads.blas_released():  # the products on BLAS's own threads, even inside a model's scope
        if saver is not None:
            y, cols = saver.forward_saving(xp, weight, geo, KEEP_COLUMNS_BYTES)
        else:
            y = algo.forward(xp, weight, geo)  # (N, O, *out_size)
    add_bias(y, bias)
    return (y[0] if unbatched else y), ConvContext(geo, algo, weight, xp, cols, unbatched)


def backward_nd(
    ndim: int,
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: SizeArg,
    padding: PadArg | str,
    dilation: SizeArg,
    groups: int,
    padding_mode: str,
    algorithm: str,
    *,
    name: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, weight, geo, algo, unbatched = _resolve(
        x, weight, ndim, stride, padding, dilation, groups, padding_mode, algorithm, name
    )
    dy = check_grad_output(grad_output, (x.shape[0], weight.shape[0], *geo.out_size), unbatched)
    check_same_dtype(grad_output=dy, x=x, weight=weight)
    if _pads_itself(algo, geo):
        return _backward(dy, ConvContext(geo, algo, weight, x, None, unbatched, padded=False))
    # the weight's gradient first: then the padded copy of x is freed before dx's buffers exist (the
    # peak of conv2d_backward drops by the bytes of x; benchmarks/memory.py)
    dw, db = _param_grads(dy, ConvContext(geo, algo, weight, pad(x, geo.pads, geo.padding_mode), None, unbatched))
    return _input_grad(dy, algo, weight, geo, unbatched), dw, db


def conv_backward_from_context(
    grad_output: ArrayLike, context: ConvContext
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``conv{1,2,3}d_backward`` for the forward pass that ``conv{1,2,3}d_with_context`` recorded."""
    dy = _context_grad_output(grad_output, context)
    with threads.batch_scope(dy):  # (as conv_with_context)
        return _backward(dy, context)


def conv_param_grads_from_context(grad_output: ArrayLike, context: ConvContext) -> tuple[np.ndarray, np.ndarray]:
    """(grad_weight, grad_bias) of a recorded forward pass, without the input's gradient (for a
    first layer, whose input is data)."""
    dy = _context_grad_output(grad_output, context)
    with threads.batch_scope(dy):  # (as conv_with_context)
        return _param_grads(dy, context)


def _context_grad_output(grad_output: ArrayLike, context: ConvContext) -> np.ndarray:
    expected = (context.xp.shape[0], context.weight.shape[0], *context.geo.out_size)
    dy = check_grad_output(grad_output, expected, context.unbatched)
    check_same_dtype(grad_output=dy, x=context.xp)
    return dy


# ------------------------------------------------------------------------------------ the public functions


def conv2d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: SizeArg = 1,
    padding: PadArg | str = 0,
    dilation: SizeArg = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
) -> np.ndarray:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (plus PyTorch's padding modes).

    Forward, with x already padded (pads resolved from ``padding`` and filled per ``padding_mode``)::

        y[n, o, i, j] = b[o] + Σ_{c in group(o)} Σ_{kh, kw} w[o, c, kh, kw]
                                · x[n, g·Cg + c, i·s_h + kh·d_h, j·s_w + kw·d_w]

    See :func:`conv2d_backward` for the gradients and ``docs/convolution.md`` for the derivation.

    Shapes:
        x: (N, C, H, W) or unbatched (C, H, W)
        weight: (O, C/groups, KH, KW); bias: (O,) or None
        y: (N, O, OH, OW) (unbatched: (O, OH, OW)), with
        OH = floor((H + pad_top + pad_bottom - dilation_h·(KH-1) - 1) / stride_h) + 1, likewise OW

    Args:
        stride, dilation: int or (h, w) pair, >= 1.
        padding: int or (h, w) pair >= 0, per side ``((top, bottom), (left, right))``, ``"valid"``
            (no padding) or ``"same"`` (output size ceil(H / stride); with stride 1 exactly PyTorch's;
            with stride > 1 the Keras/TensorFlow rule, the odd extra pixel at the bottom/right).
        groups: divides both C and O; ``groups == C`` is a depthwise convolution.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (``nn.Conv2d``'s meaning).
        algorithm: ``"direct"`` (the reference loops), ``"scipy"`` (seed 000's per-channel correlations),
            ``"im2col"``, ``"gemm"`` (one large product per chunk of images), ``"depthwise"``
            (compiled loops for one input channel per group) or ``"auto"`` (see ``_choose``); an
            algorithm that cannot compute the shape is an ``ArgumentError`` saying why.
    """
    return forward_nd(2, x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, keep=False,
                      name="conv2d")[0]  # fmt: skip


def conv1d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: SizeArg = 1,
    padding: PadArg | str = 0,
    dilation: SizeArg = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
) -> np.ndarray:
    """1-D cross-correlation, as ``torch.nn.functional.conv1d``: :func:`conv2d` with one spatial axis::

        y[n, o, i] = b[o] + Σ_{c in group(o)} Σ_k w[o, c, k] · x[n, g·Cg + c, i·s + k·d]

    Shapes:
        x: (N, C, L) or unbatched (C, L); weight: (O, C/groups, K); bias: (O,) or None
        y: (N, O, OL), OL = floor((L + pad_before + pad_after - d·(K-1) - 1) / s) + 1

    Args: as :func:`conv2d`, one value per argument (per side: ``((before, after),)``).
    """
    return forward_nd(1, x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, keep=False,
                      name="conv1d")[0]  # fmt: skip


def conv3d(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: SizeArg = 1,
    padding: PadArg | str = 0,
    dilation: SizeArg = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
) -> np.ndarray:
    """3-D cross-correlation, as ``torch.nn.functional.conv3d``: :func:`conv2d` with three spatial axes::

        y[n, o, i, j, l] = b[o] + Σ_{c in group(o)} Σ_{t} w[o, c, t] · x[n, g·Cg + c, (i, j, l)·s + t·d]

    Shapes:
        x: (N, C, D, H, W) or unbatched (C, D, H, W); weight: (O, C/groups, KD, KH, KW); bias: (O,) or None
        y: (N, O, OD, OH, OW), each as in :func:`conv2d`

    Args: as :func:`conv2d`, a triple per argument (per side: three ``(before, after)`` pairs). The
        ``depthwise`` kernels are 1-D and 2-D only: ``algorithm="depthwise"`` is refused here.
    """
    return forward_nd(3, x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, keep=False,
                      name="conv3d")[0]  # fmt: skip


def conv2d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: SizeArg = 1,
    padding: PadArg | str = 0,
    dilation: SizeArg = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d` with respect to x, weight and bias.

    With δ = grad_output and x padded as in the forward pass::

        dx_padded[n, c, i·s_h + kh·d_h, j·s_w + kw·d_w] += Σ_{o in group(c)} w[o, c, kh, kw] · δ[n, o, i, j]
        dw[o, c, kh, kw] = Σ_{n, i, j} δ[n, o, i, j] · x[n, g·Cg + c, i·s_h + kh·d_h, j·s_w + kw·d_w]
        db[o] = Σ_{n, i, j} δ[n, o, i, j]

    For stride 1 and no dilation, dx is the *full* correlation of δ with the kernel rotated by 180°,
    and dw is the *valid* correlation of x with δ. dx_padded is folded back onto x by the adjoint of
    the padding (border copies add their gradient to the pixel they copied). Rows and columns that a
    stride leaves over get zero gradient.

    Shapes:
        grad_output: (N, O, OH, OW) (unbatched: (O, OH, OW)), the shape conv2d returned
        returns (grad_input like x, grad_weight like weight, grad_bias (O,))
    """
    return backward_nd(2, grad_output, x, weight, stride, padding, dilation, groups, padding_mode, algorithm,
                       name="conv2d_backward")  # fmt: skip


def conv1d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: SizeArg = 1,
    padding: PadArg | str = 0,
    dilation: SizeArg = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv1d`, :func:`conv2d_backward`'s formulas on one axis::

        dx_padded[n, c, i·s + k·d] += Σ_{o in group(c)} w[o, c, k] · δ[n, o, i]
        dw[o, c, k] = Σ_{n, i} δ[n, o, i] · x[n, g·Cg + c, i·s + k·d]          db[o] = Σ_{n, i} δ[n, o, i]

    Shapes:
        grad_output: (N, O, OL) (unbatched: (O, OL)); returns (grad_input like x, grad_weight, grad_bias (O,))
    """
    return backward_nd(1, grad_output, x, weight, stride, padding, dilation, groups, padding_mode, algorithm,
                       name="conv1d_backward")  # fmt: skip


def conv3d_backward(
    grad_output: ArrayLike,
    x: ArrayLike,
    weight: ArrayLike,
    stride: SizeArg = 1,
    padding: PadArg | str = 0,
    dilation: SizeArg = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv3d`, :func:`conv2d_backward`'s formulas on three axes.

    Shapes:
        grad_output: (N, O, OD, OH, OW) (unbatched: (O, OD, OH, OW));
        returns (grad_input like x, grad_weight like weight, grad_bias (O,))
    """
    return backward_nd(3, grad_output, x, weight, stride, padding, dilation, groups, padding_mode, algorithm,
                       name="conv3d_backward")  # fmt: skip


def conv2d_with_context(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: SizeArg = 1,
    padding: PadArg | str = 0,
    dilation: SizeArg = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
) -> tuple[np.ndarray, ConvContext]:
    """:func:`conv2d`, also returning a :class:`ConvContext` for :func:`conv2d_backward_from_context`.

    Same arguments, same output; for layers that run forward then backward on the same input. The
    context may hold x itself, not a copy (as PyTorch's autograd keeps a layer's input): an input
    changed in place between the two passes changes the gradients.
    """
    y, context = forward_nd(2, x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                            keep=True, name="conv2d")  # fmt: skip
    assert context is not None  # keep=True always records one
    return y, context


def conv_with_context(
    x: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    stride: SizeArg = 1,
    padding: PadArg | str = 0,
    dilation: SizeArg = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
    *,
    ndim: int,
) -> tuple[np.ndarray, ConvContext]:
    """:func:`conv2d_with_context` for ``ndim`` spatial axes (1, 2 or 3: conv1d, conv2d, conv3d).

    Runs inside ``threads.batch_scope``, as the backward from its context does: BLAS held to one
    thread, so the tile passes of a layer called on its own also take both threads (nested in a
    model's scope this costs a counter; alone, about 7 µs)."""
    with threads.batch_scope(x):
        y, context = forward_nd(ndim, x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                                keep=True, name=f"conv{ndim}d")  # fmt: skip
    assert context is not None  # keep=True always records one
    return y, context


choose_algorithm = _choose  # the one place that chooses, for the transposed convolutions too
conv2d_backward_from_context = conv_backward_from_context  # the 2-D names layers have always used
conv2d_param_grads_from_context = conv_param_grads_from_context
