"""conv1d, conv2d, conv3d and their backward passes: validate the arguments, resolve the geometry, dispatch.

The arithmetic lives in the algorithm modules (``conv_direct``, the specification; ``conv_scipy``;
``conv_im2col``; ``conv_gemm``; ``conv_depthwise``), each a :class:`~.conv_algorithm.ConvAlgorithm`
computing forward/grad_input/grad_weight on an already padded input. This module owns what they share:
argument checking, ``int | per axis | per side | "same" | "valid"`` resolution into one
:class:`~.geometry.Window`, the padding modes and their adjoint, the bias, unbatched input, the
choice for ``algorithm="auto"`` (and the refusal of an explicit algorithm that cannot do a shape),
and the context a layer keeps between its forward and backward passes. The transposed convolutions
(``conv_transpose.py``) reuse the same geometry, checks and algorithms.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError
from . import (
    conv_depthwise,
    conv_direct,
    conv_direct_compiled,
    conv_flat,
    conv_gemm,
    conv_im2col,
    conv_memory,
    conv_pointwise,
    conv_scipy,
)
from .conv_algorithm import ConvAlgorithm, ConvGeometry, SavesColumns
from .conv_winograd import F2 as WINOGRAD_F2
from .conv_winograd import F4 as WINOGRAD_F4
from .geometry import (
    AXIS_NAMES,
    PadArg,
    SizeArg,
    Window,
    check_padding_mode,
    check_pads_for_mode,
    dilated_size,
    ntuple,
    pad,
    pad_backward,
    plain_arguments,
    resolve_padding,
)
from .validation import as_float_array, check_positive_int, check_same_dtype

ALGORITHMS: dict[str, ConvAlgorithm] = {
    "direct": conv_direct,
    "scipy": conv_scipy,
    "im2col": conv_im2col,
    "gemm": conv_gemm,
    "depthwise": conv_depthwise,
    "direct_compiled": conv_direct_compiled,  # issue 15: compiled loops, 2-D dense (not chosen by auto: unmeasured)
    "winograd2": WINOGRAD_F2,  # issue 15: F(2x2, 3x3), 3x3 stride 1 dense (not chosen by auto: unmeasured)
    "winograd4": WINOGRAD_F4,  # issue 15: F(4x4, 3x3)
}
KEEP_COLUMNS_BYTES = conv_memory.KEEP_COLUMNS_BYTES
_KERNEL_LETTERS = {1: "kL", 2: "kH, kW", 3: "kD, kH, kW"}


def check_algorithm(algorithm: object) -> str:
    if algorithm != "auto" and algorithm not in ALGORITHMS:
        raise ArgumentError(f"algorithm must be 'auto' or one of {tuple(ALGORITHMS)}, got {algorithm!r}")
    return str(algorithm)


def spatial_shapes(x: np.ndarray, ndim: int, name: str) -> tuple[np.ndarray, bool]:
    """x as (N, C, *spatial) with ``ndim`` spatial axes, and whether it was unbatched (C, *spatial)."""
    letters = ", ".join(AXIS_NAMES[ndim]) if ndim in AXIS_NAMES else f"{ndim} spatial axes"
    if x.ndim not in (ndim + 1, ndim + 2):
        raise ArgumentError(
            f"{name}: x must be (N, C_in, {letters}) or unbatched (C_in, {letters}), got shape {x.shape}"
        )
    return (x[None], True) if x.ndim == ndim + 1 else (x, False)


def check_weight(weight: np.ndarray, ndim: int, name: str, layout: str) -> None:
    """weight of rank ndim + 2, no empty axis; ``layout`` names its first two axes."""
    if weight.ndim != ndim + 2:
        raise ArgumentError(
            f"{name}: weight must be ({layout}, {_KERNEL_LETTERS.get(ndim, '*kernel')}), got shape {weight.shape} "
            f"({ndim + 2} axes expected)"
        )
    if min(weight.shape) < 1:
        raise ArgumentError(f"{name}: weight must have no empty axes, got shape {weight.shape}")


def check_groups(groups: object, counts: dict[str, int]) -> int:
    """groups as a positive int dividing every channel count; ``counts`` maps a label (quoting the
    value) to the count, e.g. ``{"in_channels (=4)": 4}``."""
    groups = check_positive_int(groups, "groups")
    for label, count in counts.items():
        if count % groups:
            raise ArgumentError(f"{label} must be divisible by groups (={groups})")
    return groups


def _resolve(
    x: ArrayLike,
    weight: ArrayLike,
    ndim: int,
    stride: SizeArg,
    padding: PadArg | str,
    dilation: SizeArg,
    groups: int,
    padding_mode: str,
    algorithm: str,
    name: str,
) -> tuple[np.ndarray, np.ndarray, ConvGeometry, ConvAlgorithm, bool]:
    """Validate every argument; return (x batched, weight, geometry, algorithm, unbatched)."""
    x = as_float_array(x, "x")
    weight = as_float_array(weight, "weight")
    check_weight(weight, ndim, name, "C_out, C_in/groups")
    x, unbatched = spatial_shapes(x, ndim, name)
    args = (x.shape, weight.shape, ndim, stride, padding, dilation, groups, padding_mode, algorithm, name)
    plain = plain_arguments(stride, padding, dilation, groups, padding_mode, algorithm)  # (shapes always are)
    geo, algo = (_remembered_geometry if plain else _geometry)(*args)
    return x, weight, geo, algo, unbatched


def _geometry(
    x_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    ndim: int,
    stride: SizeArg,
    padding: PadArg | str,
    dilation: SizeArg,
    groups: int,
    padding_mode: str,
    algorithm: str,
    name: str,
) -> tuple[ConvGeometry, ConvAlgorithm]:
    """The checks of :func:`_resolve` that depend on shapes and options only, and their geometry and algorithm."""
    C, O = x_shape[1], weight_shape[0]
    groups = check_groups(groups, {f"in_channels (={C})": C, f"out_channels (=weight.shape[0]={O})": O})
    if weight_shape[1] * groups != C:
        raise ArgumentError(
            f"weight.shape[1] (={weight_shape[1]}) must be in_channels/groups (={C}/{groups}={C // groups}); "
            f"got x of shape {x_shape} and weight of shape {weight_shape}"
        )
    if min(x_shape[1:]) < 1:
        raise ArgumentError(f"x must have no empty axes (other than N), got shape {x_shape}")
    stride, dilation = ntuple(stride, ndim, "stride"), ntuple(dilation, ndim, "dilation")
    check_padding_mode(padding_mode)
    check_algorithm(algorithm)
    kernel, in_size = weight_shape[2:], x_shape[2:]
    pads = resolve_padding(padding, in_size, kernel, stride, dilation)
    check_pads_for_mode(pads, in_size, padding_mode)
    geo = ConvGeometry(Window.fitted(in_size, kernel, stride, dilation, pads), groups, C, O, padding_mode)
    for a in range(ndim):
        if geo.padded_size[a] < dilated_size(kernel[a], dilation[a]):
            raise ArgumentError(
                f"kernel (dilated size {dilated_size(kernel[a], dilation[a])} along {AXIS_NAMES[ndim][a]}) is larger "
                f"than the padded input ({geo.padded_size[a]} = {in_size[a]} + pads {pads[a]}); "
                f"got x {x_shape}, weight {weight_shape}, dilation {dilation}, padding {padding!r}"
            )
    return geo, _choose(algorithm, geo)


# A layer convolves the same shapes every call: resolving them again took ~50 µs a call, a sixth of lenet's
# whole batch-1 inference. Errors are raised again, never remembered; typed, so 1 and 1.0 stay apart.
_remembered_geometry = functools.lru_cache(maxsize=512, typed=True)(_geometry)


def _choose(algorithm: str, geo: ConvGeometry) -> ConvAlgorithm:
    """The algorithm to use; ``"auto"`` picks the fastest correct one for the shape.

    An explicit ``algorithm`` that cannot compute the geometry is an error saying why (never a silent
    substitute). Rules for ``"auto"`` (measured with ``benchmarks/conv.py``, fp32, 2 threads, ratios
    to PyTorch):

    1. depthwise — 2-D, one input channel per group and more than one group → ``conv_depthwise``:
       compiled loops; im2col's products degenerate to (Og, KH·KW)·(KH·KW, P) and its time goes into
       unfolding (about 2× slower measured);
    2. a single input channel, dense (``C == 1``, ``groups == 1``) → ``conv_im2col``: with
       K = KH·KW tiny, NumPy's unfold is cheap and per-image products beat both the depthwise
       loops (8×) and ``conv_gemm``'s one large product, whose transposed copies dominate;
    3. everything else → ``conv_gemm``: one large product per chunk of images (compiled col2im in
       2-D); 1×…×1 stride-1 kernels as a plain matrix product with no unfolding.
    """
    if algorithm != "auto":
        chosen = ALGORITHMS[algorithm]
        reason = chosen.supports(geo)
        if reason is not None:
            raise ArgumentError(f"algorithm={algorithm!r} cannot compute this convolution: {reason}")
        return chosen
    if geo.groups > 1 and conv_depthwise.supports(geo) is None:
        return conv_depthwise
    if geo.groups == 1 and geo.in_channels == 1:
        return conv_im2col
    return conv_gemm


@dataclass
class ConvContext:
    """What the backward pass needs from a forward pass, kept by a convolution layer between the two:
    the padded input (no second padding) and, when the algorithm can reuse them, the unfolded
    columns (no second unfold)."""

    geo: ConvGeometry
    algo: ConvAlgorithm
    weight: np.ndarray
    xp: np.ndarray  # (N, C, *padded_size)
    cols: np.ndarray | None  # the algorithm's saved columns, or None
    unbatched: bool


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


def uses_grid(algorithm: str, algo: ConvAlgorithm, geo: ConvGeometry) -> bool:
    """Whether a forward pass that keeps nothing runs on ``conv_flat``'s grid: under ``"auto"``, the
    dense stride-1 2-D convolutions ``conv_gemm`` computes (more than one input channel), 1×1 aside.

    Measured forward alone (fp32, 2 threads, conv → output, 20 interleaved runs): 0.72–0.90 of
    ``conv_gemm``'s time on lenet's second layer (batch 1, 32 and 1,000), LeNet-5's 5×5 and CIFAR's
    3×3, but 1.07 on mnist-2 and 1.14 on 7×7 maps; for one input channel 2.7–5.5× *slower* than
    ``conv_im2col`` (the grid's (O, n, OH, Wp) product must be transposed into the output, which for
    K = 9 costs more than the product), so those stay with im2col. The training forward keeps
    ``conv_gemm``'s columns instead, which its weight gradient reads (the grid's backward was measured
    too, and was no faster: ``conv_flat``'s docstring).
    """
    return algorithm == "auto" and algo is conv_gemm and conv_flat.applies(geo) and not conv_pointwise.applies(geo)


def eval_forward(
    x: np.ndarray, weight: np.ndarray, geo: ConvGeometry, algo: ConvAlgorithm, algorithm: str
) -> np.ndarray:
    """The forward product of a pass that keeps nothing (no bias), of x before padding: (N, O, *out_size)."""
    if uses_grid(algorithm, algo, geo):
        return conv_flat.forward(x, weight, geo)  # pads a chunk at a time
    return algo.forward(pad(x, geo.pads, geo.padding_mode), weight, geo)


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
    xp = pad(x, geo.pads, geo.padding_mode)  # (N, C, *padded_size)
    cols = None
    saver = _column_saver(algo)
    if saver is not None:
        y, cols = saver.forward_saving(xp, weight, geo, KEEP_COLUMNS_BYTES)
    else:
        y = algo.forward(xp, weight, geo)  # (N, O, *out_size)
    add_bias(y, bias)
    return (y[0] if unbatched else y), ConvContext(geo, algo, weight, xp, cols, unbatched)


def check_grad_output(grad_output: ArrayLike, expected: tuple[int, ...], unbatched: bool) -> np.ndarray:
    """grad_output as a float array of the forward output's ``expected`` (batched) shape → batched."""
    grad_output = as_float_array(grad_output, "grad_output")
    shown = expected[1:] if unbatched else expected
    if grad_output.shape != shown:
        raise ArgumentError(f"grad_output must have the output's shape {shown}, got {grad_output.shape}")
    return grad_output[None] if unbatched else grad_output


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
    # the weight's gradient first: then the padded copy of x is freed before dx's buffers exist (the
    # peak of conv2d_backward drops by the bytes of x; benchmarks/memory.py)
    dw, db = _param_grads(dy, ConvContext(geo, algo, weight, pad(x, geo.pads, geo.padding_mode), None, unbatched))
    return _input_grad(dy, algo, weight, geo, unbatched), dw, db


def conv_backward_from_context(
    grad_output: ArrayLike, context: ConvContext
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``conv{1,2,3}d_backward`` for the forward pass that ``conv{1,2,3}d_with_context`` recorded."""
    dy = _context_grad_output(grad_output, context)
    return _backward(dy, context)


def conv_param_grads_from_context(grad_output: ArrayLike, context: ConvContext) -> tuple[np.ndarray, np.ndarray]:
    """(grad_weight, grad_bias) of a recorded forward pass, without the input's gradient (for a
    first layer, whose input is data)."""
    return _param_grads(_context_grad_output(grad_output, context), context)


def _context_grad_output(grad_output: ArrayLike, context: ConvContext) -> np.ndarray:
    expected = (context.xp.shape[0], context.weight.shape[0], *context.geo.out_size)
    dy = check_grad_output(grad_output, expected, context.unbatched)
    check_same_dtype(grad_output=dy, x=context.xp)
    return dy


def _backward(dy: np.ndarray, ctx: ConvContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dw, db = _param_grads(dy, ctx)
    return _input_grad(dy, ctx.algo, ctx.weight, ctx.geo, ctx.unbatched), dw, db


def _input_grad(
    dy: np.ndarray, algo: ConvAlgorithm, weight: np.ndarray, geo: ConvGeometry, unbatched: bool
) -> np.ndarray:
    """dx: the algorithm's gradient of the padded input, folded back onto x (N, C, *in_size)."""
    dx = pad_backward(algo.grad_input(dy, weight, geo), geo.in_size, geo.pads, geo.padding_mode)
    return dx[0] if unbatched else dx


def _param_grads(dy: np.ndarray, ctx: ConvContext) -> tuple[np.ndarray, np.ndarray]:
    saver = _column_saver(ctx.algo)
    if saver is not None and ctx.cols is not None:
        dw = saver.grad_weight_saved(dy, ctx.cols, ctx.geo)
    else:
        dw = ctx.algo.grad_weight(dy, ctx.xp, ctx.geo)
    return dw, dy.sum(axis=(0, *range(2, dy.ndim)))  # (O, C/G, *K), (O,)


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
        ``depthwise`` kernels are 2-D only: ``algorithm="depthwise"`` is refused here.
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

    Same arguments, same output; for layers that run forward then backward on the same input.
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
    """:func:`conv2d_with_context` for ``ndim`` spatial axes (1, 2 or 3: conv1d, conv2d, conv3d)."""
    y, context = forward_nd(ndim, x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                            keep=True, name=f"conv{ndim}d")  # fmt: skip
    assert context is not None  # keep=True always records one
    return y, context


choose_algorithm = _choose  # the one place that chooses, for the transposed convolutions too
conv2d_backward_from_context = conv_backward_from_context  # the 2-D names layers have always used
conv2d_param_grads_from_context = conv_param_grads_from_context
