"""conv2d and its backward pass: validate the arguments, resolve the geometry, dispatch.

The arithmetic lives in the algorithm modules (``conv_direct``, the specification; ``conv_scipy``;
``conv_im2col``; ``conv_gemm``; ``conv_depthwise``), each a forward/grad_input/grad_weight triple on
an already padded input. This module owns what they share: argument checking,
``int | pair | "same" | "valid"`` resolution, the padding modes and their adjoint, the bias,
unbatched input, the choice for ``algorithm="auto"``, and the context a layer keeps between its
forward and backward passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from . import conv_depthwise, conv_direct, conv_gemm, conv_im2col, conv_scipy
from .geometry import (
    Pads,
    Pair,
    check_padding_mode,
    check_pads_for_mode,
    dilated_size,
    output_size,
    pad,
    pad_backward,
    pair,
    resolve_padding,
)
from .validation import as_float_array, check_positive_int, check_same_dtype

ALGORITHMS: dict[str, ModuleType] = {
    "direct": conv_direct,
    "scipy": conv_scipy,
    "im2col": conv_im2col,
    "gemm": conv_gemm,
    "depthwise": conv_depthwise,
}


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about a convolution's shape, resolved once and shared by forward and backward."""

    in_size: Pair  # (H, W) before padding
    kernel: Pair  # (KH, KW)
    stride: Pair
    dilation: Pair
    pads: Pads  # ((top, bottom), (left, right))
    groups: int
    padding_mode: str

    @property
    def padded_size(self) -> Pair:
        return tuple(self.in_size[a] + sum(self.pads[a]) for a in range(2))  # type: ignore[return-value]

    @property
    def out_size(self) -> Pair:
        return tuple(
            output_size(self.in_size[a], self.pads[a], self.kernel[a], self.stride[a], self.dilation[a])
            for a in range(2)
        )  # type: ignore[return-value]


def _resolve(x, weight, stride, padding, dilation, groups, padding_mode, algorithm):
    """Validate every argument; return (x as 4-D, weight, geometry, algorithm module, unbatched)."""
    x = as_float_array(x, "x")
    weight = as_float_array(weight, "weight")
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be (N, C_in, H, W) or unbatched (C_in, H, W), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"weight must be (C_out, C_in/groups, kH, kW), got shape {weight.shape}")
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]  # (1, C, H, W)
    groups = check_positive_int(groups, "groups")
    C, O = x.shape[1], weight.shape[0]
    if C % groups:
        raise ValueError(f"in_channels (={C}) must be divisible by groups (={groups})")
    if O % groups:
        raise ValueError(f"out_channels (=weight.shape[0]={O}) must be divisible by groups (={groups})")
    if weight.shape[1] * groups != C:
        raise ValueError(
            f"weight.shape[1] (={weight.shape[1]}) must be in_channels/groups (={C}/{groups}={C // groups}); "
            f"got x of shape {x.shape} and weight of shape {weight.shape}"
        )
    if min(weight.shape) < 1 or min(x.shape[1:]) < 1:
        raise ValueError(f"x and weight must have no empty axes (other than N), got x {x.shape}, weight {weight.shape}")
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    check_padding_mode(padding_mode)
    if algorithm != "auto" and algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be 'auto' or one of {tuple(ALGORITHMS)}, got {algorithm!r}")
    kernel = weight.shape[2:]
    in_size = x.shape[2:]
    pads = resolve_padding(padding, in_size, kernel, stride, dilation)
    check_pads_for_mode(pads, in_size, padding_mode)
    geo = ConvGeometry(in_size, kernel, stride, dilation, pads, groups, padding_mode)
    for a, axis in enumerate("HW"):
        if geo.padded_size[a] < dilated_size(kernel[a], dilation[a]):
            raise ValueError(
                f"kernel (dilated size {dilated_size(kernel[a], dilation[a])} along {axis}) is larger than the "
                f"padded input ({geo.padded_size[a]} = {in_size[a]} + pads {pads[a]}); "
                f"got x {x.shape}, weight {weight.shape}, dilation {dilation}, padding {padding!r}"
            )
    return x, weight, geo, _choose(algorithm, geo, weight.shape), unbatched


def _choose(algorithm: str, geo: ConvGeometry, weight_shape) -> ModuleType:
    """The algorithm module to use; ``"auto"`` picks the fastest correct one for the shape.

    Rules for ``"auto"`` (measured with ``benchmarks/conv.py``, fp32, 2 threads, ratios to PyTorch):

    1. depthwise — one input channel per group and more than one group (``weight_shape[1] == 1``,
       ``groups > 1``) → ``conv_depthwise``: compiled loops; im2col's products degenerate to
       (Og, KH·KW)·(KH·KW, P) and its time goes into unfolding (about 2× slower measured);
    2. a single input channel, dense (``C == 1``, ``groups == 1``) → ``conv_im2col``: with
       K = KH·KW tiny, NumPy's unfold is cheap and per-image products beat both the depthwise
       loops (8×) and ``conv_gemm``'s one large product, whose transposed copies dominate;
    3. everything else → ``conv_gemm``: compiled unfold/col2im, one large product per chunk of
       images; 1×1 stride-1 kernels as a plain matrix product with no unfolding.
    """
    if algorithm != "auto":
        return ALGORITHMS[algorithm]
    if geo.groups > 1 and conv_depthwise.supports(weight_shape):
        return conv_depthwise
    if geo.groups == 1 and weight_shape[1] == 1:
        return conv_im2col
    return conv_gemm


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", algorithm="auto"):
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
        padding: int or (h, w) pair >= 0, ``"valid"`` (no padding) or ``"same"`` (output size
            ceil(H / stride); with stride 1 exactly PyTorch's; with stride > 1 the Keras/TensorFlow
            rule, the odd extra pixel at the bottom/right).
        groups: divides both C and O; ``groups == C`` is a depthwise convolution.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (``nn.Conv2d``'s meaning).
        algorithm: ``"direct"`` (the reference loops), ``"scipy"`` (seed 000's per-channel correlations),
            ``"im2col"``, ``"gemm"`` (one large product per chunk of images), ``"depthwise"``
            (compiled loops for one input channel per group) or ``"auto"`` (see ``_choose``).
    """
    return _forward(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, keep=False)[0]


@dataclass
class ConvContext:
    """What the backward pass needs from a forward pass, kept by ``nn.Conv2d`` between the two:
    the padded input (no second padding) and, when the algorithm can reuse them, the unfolded
    columns (no second unfold)."""

    geo: ConvGeometry
    algo: ModuleType
    weight: np.ndarray
    xp: np.ndarray  # (N, C, H + pads, W + pads)
    cols: np.ndarray | None  # the algorithm's saved columns, or None
    unbatched: bool


KEEP_COLUMNS_BYTES = 256 << 20  # a layer keeps its unfolded input up to this size, else unfolds again


def conv2d_with_context(
    x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", algorithm="auto"
) -> tuple[np.ndarray, ConvContext]:
    """:func:`conv2d`, also returning a :class:`ConvContext` for :func:`conv2d_backward_from_context`.

    Same arguments, same output; for layers that run forward then backward on the same input.
    """
    return _forward(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, keep=True)


def _forward(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm, keep: bool):
    x4, weight, geo, algo, unbatched = _resolve(x, weight, stride, padding, dilation, groups, padding_mode, algorithm)
    if bias is not None:
        bias = as_float_array(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape (C_out,) = ({weight.shape[0]},), got {bias.shape}")
    check_same_dtype(x=x4, weight=weight, bias=bias)
    xp = pad(x4, geo.pads, geo.padding_mode)  # (N, C, H + pads, W + pads)
    cols = None
    if keep and hasattr(algo, "forward_saving"):
        y, cols = algo.forward_saving(
            xp, weight, geo.stride, geo.dilation, geo.groups, geo.out_size, KEEP_COLUMNS_BYTES
        )
    else:
        y = algo.forward(xp, weight, geo.stride, geo.dilation, geo.groups, geo.out_size)  # (N, O, OH, OW)
    if bias is not None:
        y += bias[:, None, None]  # one bias per output channel, broadcast over positions
    context = ConvContext(geo, algo, weight, xp, cols, unbatched) if keep else None
    return (y[0] if unbatched else y), context


def _check_grad_output(grad_output, N: int, weight: np.ndarray, geo: ConvGeometry, unbatched: bool) -> np.ndarray:
    grad_output = as_float_array(grad_output, "grad_output")
    expected = (N, weight.shape[0], *geo.out_size)
    shown = expected[1:] if unbatched else expected
    if grad_output.shape != shown:
        raise ValueError(f"grad_output must have the output's shape {shown}, got {grad_output.shape}")
    return grad_output[None] if unbatched else grad_output  # (N, O, OH, OW)


def conv2d_backward(
    grad_output, x, weight, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros", algorithm="auto"
):
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
    x4, weight, geo, algo, unbatched = _resolve(x, weight, stride, padding, dilation, groups, padding_mode, algorithm)
    dy = _check_grad_output(grad_output, x4.shape[0], weight, geo, unbatched)
    check_same_dtype(grad_output=dy, x=x4, weight=weight)
    xp = pad(x4, geo.pads, geo.padding_mode)  # (N, C, H + pads, W + pads)
    return _backward(dy, ConvContext(geo, algo, weight, xp, None, unbatched))


def conv2d_backward_from_context(grad_output, context: ConvContext):
    """:func:`conv2d_backward` for the forward pass that :func:`conv2d_with_context` recorded."""
    dy = _check_grad_output(grad_output, context.xp.shape[0], context.weight, context.geo, context.unbatched)
    check_same_dtype(grad_output=dy, x=context.xp)
    return _backward(dy, context)


def conv2d_param_grads_from_context(grad_output, context: ConvContext) -> tuple[np.ndarray, np.ndarray]:
    """(grad_weight, grad_bias) of a recorded forward pass, without the input's gradient (for a
    first layer, whose input is data)."""
    dy = _check_grad_output(grad_output, context.xp.shape[0], context.weight, context.geo, context.unbatched)
    check_same_dtype(grad_output=dy, x=context.xp)
    return _param_grads(dy, context)


def _backward(dy: np.ndarray, ctx: ConvContext):
    geo, algo = ctx.geo, ctx.algo
    dxp = algo.grad_input(dy, ctx.weight, geo.padded_size, geo.stride, geo.dilation, geo.groups)
    dx = pad_backward(dxp, geo.in_size, geo.pads, geo.padding_mode)  # (N, C, H, W)
    dw, db = _param_grads(dy, ctx)
    return (dx[0] if ctx.unbatched else dx), dw, db


def _param_grads(dy: np.ndarray, ctx: ConvContext) -> tuple[np.ndarray, np.ndarray]:
    geo, algo = ctx.geo, ctx.algo
    if ctx.cols is not None:
        dw = algo.grad_weight_saved(dy, ctx.cols, geo.kernel, geo.groups)
    else:
        dw = algo.grad_weight(dy, ctx.xp, geo.kernel, geo.stride, geo.dilation, geo.groups)
    return dw, dy.sum(axis=(0, 2, 3))  # (O, C/G, KH, KW), (O,)
