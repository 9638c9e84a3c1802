"""The first convolution of a model, forward and backward, one number at a time (the page's ``/learn``).

For one image and the target class's logit E, at the model's first convolution ``y = x ⋆ K + b``
(stride 1, no dilation, one group — the case the seeds draw; seed 002):

    forward    y[o, i, j] = b[o] + Σ_{c,kh,kw} x_padded[c, i + kh, j + kw] · K[o, c, kh, kw]
    dE/dx      the *full* correlation of dE/dy with the kernel rotated by 180°:
               dE/dx_padded[c, r, s] = Σ_o Σ_{kh,kw} dy_full[o, r + kh, s + kw] · rot180(K)[o, c, kh, kw],
               dy_full = dE/dy padded by KH − 1 rows and KW − 1 columns of zeros on every side
    dE/dK      the *valid* correlation of the input with dE/dy:
               dE/dK[o, c, kh, kw] = Σ_{i,j} x_padded[c, i + kh, j + kw] · dE/dy[o, i, j]

The windows and their sums are written out here, next to the library's own results — the forward
value from the layer's ``forward_with_context``, dE/dy from the model's backward pass
(:func:`convprop.explain.explain`), dE/dx and dE/dK from ``functional.conv2d_backward`` — so the page
can show that the rule and the library agree (and tests/test_explain_conv.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import functional as F
from .data import Normalization
from .errors import ArgumentError, ArgumentTypeError
from .explain import _run, conv_paths, module_paths
from .functional.geometry import pad, resolve_padding
from .nn import Conv2d, Module


@dataclass(frozen=True)
class ConvSteps:
    """One image's first convolution, step by step (float64 copies of the library's arrays).

    Shapes (for input channel c and output channel o):
        x_padded: (HP, WP), kernel, window, rotated, grad_window, grad_kernel, grad_kernel_rule: (KH, KW)
        grad_output: (OH, OW) = dE/dy[o]; grad_output_full: (OH + 2(KH−1), OW + 2(KW−1))
        grad_input: (H, W) = dE/dx[c] (every output channel); contributions: (O,), each channel's share
    """

    path: str
    target: int
    channel: int  # output channel o
    in_channel: int  # input channel c
    row: int  # forward: the output pixel (row, col)
    col: int
    input_row: int  # backward: the input pixel whose dE/dx is written out
    input_col: int
    pads: tuple[int, int]  # zero rows on top, zero columns on the left
    x_padded: np.ndarray
    kernel: np.ndarray
    bias: float
    window: np.ndarray
    value: float  # y[o, row, col] as the layer computed it
    window_sum: float  # Σ window · kernel + bias, written out
    grad_output: np.ndarray
    grad_output_full: np.ndarray
    rotated: np.ndarray
    grad_window: np.ndarray
    contributions: np.ndarray  # Σ grad_window_o' · rotated_o' for every output channel o'
    grad_input_value: float  # dE/dx[c, input_row, input_col] from conv2d_backward
    grad_input: np.ndarray
    grad_kernel: np.ndarray  # dE/dK[o, c] from conv2d_backward
    grad_kernel_rule: np.ndarray  # the valid correlation of x_padded with dE/dy[o], written out


def _index(value: Any, name: str, size: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"{name} must be an int, got {value!r:.40}")
    if not 0 <= int(value) < size:
        raise ArgumentError(f"{name} {int(value)} is out of range 0..{size - 1}")
    return int(value)


def first_convolution(model: Module) -> tuple[str, Conv2d]:
    """The path and layer of the model's first ``nn.Conv2d`` (registration order)."""
    paths = conv_paths(model)
    if not paths:
        raise ArgumentError(f"{type(model).__name__} has no convolution to show step by step")
    return paths[0], dict(module_paths(model))[paths[0]]  # type: ignore[return-value]  # a Conv2d by conv_paths


def conv_steps(
    model: Module,
    image: np.ndarray,
    target: Any = None,
    *,
    channel: int = 0,
    row: int = 0,
    col: int = 0,
    input_row: int | None = None,
    input_col: int | None = None,
    in_channel: int = 0,
    normalization: Normalization | None = None,
) -> ConvSteps:
    """The first convolution's forward value at (channel, row, col) and its backward at one input pixel.

    Args:
        model: any convprop model whose first convolution has stride 1, dilation 1, one group and
            zero padding (the case of the seeds' rule).
        image: one image (C, H, W), in the units ``normalization`` expects (or the model's, without).
        target: the class whose logit is E; None → the predicted class.
        channel, row, col: the output channel and pixel of the forward window.
        input_row, input_col: the input pixel of dE/dx (default: row, col, clipped to the input).
        in_channel: the input channel c of the windows.
    """
    path, conv = first_convolution(model)
    if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
        raise ArgumentError(
            f"the step-by-step view shows stride 1, dilation 1, one group and zero padding; the first convolution "
            f"({path!r}) has stride {conv.stride}, dilation {conv.dilation}, groups {conv.groups}, "
            f"padding_mode {conv.padding_mode!r}"
        )
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise ArgumentError(f"image must be one image (C, H, W), got {getattr(image, 'shape', type(image).__name__)}")
    result, recorder = _run(model, image, target, normalization=normalization, keep_inputs=frozenset({path}))
    (x,) = recorder.inputs[path]  # (1, C, H, W): what the convolution saw
    y = recorder.outputs[path]  # (1, O, OH, OW)
    dy = recorder.grads.get(path, np.zeros_like(y))  # (1, O, OH, OW) = dE/dy
    O, C, KH, KW = conv.weight.data.shape
    _, _, H, W = x.shape
    _, _, OH, OW = y.shape
    o = _index(channel, "channel", O)
    c = _index(in_channel, "in_channel", C)
    i, j = _index(row, "row", OH), _index(col, "col", OW)
    r = _index(min(i, H - 1) if input_row is None else input_row, "input_row", H)
    s = _index(min(j, W - 1) if input_col is None else input_col, "input_col", W)
    pads = resolve_padding(conv.padding, (H, W), conv.kernel_size, conv.stride, conv.dilation)
    (top, _), (left, _) = pads

    dx, dw, _ = F.conv2d_backward(dy, x, conv.weight.data, padding=conv.padding)  # the library's gradients
    xp = pad(x, pads)[0]  # (C, HP, WP): the zero-padded input the windows slide over
    kernel = conv.weight.data[o, c]  # (KH, KW)
    bias = 0.0
    if conv.bias is not None:  # one bias per channel, or per output position ("untied", seed 000)
        bias = float(conv.bias.data[o] if conv.bias_kind is True else conv.bias.data[o, i, j])
    window = xp[c, i : i + KH, j : j + KW]  # (KH, KW)
    dy_full = np.pad(dy[0], ((0, 0), (KH - 1, KH - 1), (KW - 1, KW - 1)))  # (O, OH + 2(KH-1), OW + 2(KW-1))
    rotated = conv.weight.data[:, c, ::-1, ::-1]  # (O, KH, KW): every kernel rotated by 180°
    grad_windows = dy_full[:, r + top : r + top + KH, s + left : s + left + KW]  # (O, KH, KW)
    contributions = np.einsum("okl,okl->o", grad_windows, rotated)  # (O,)
    rule = np.array(
        [[np.sum(xp[c, a : a + OH, b : b + OW] * dy[0, o]) for b in range(KW)] for a in range(KH)]
    )  # (KH, KW): the valid correlation of the input with dE/dy[o]

    def f64(a: Any) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    return ConvSteps(
        path=path,
        target=int(result.target[0]),
        channel=o,
        in_channel=c,
        row=i,
        col=j,
        input_row=r,
        input_col=s,
        pads=(top, left),
        x_padded=f64(xp[c]),
        kernel=f64(kernel),
        bias=bias,
        window=f64(window),
        value=float(y[0, o, i, j]),
        window_sum=float(np.sum(f64(window) * f64(kernel)) + bias),
        grad_output=f64(dy[0, o]),
        grad_output_full=f64(dy_full[o]),
        rotated=f64(rotated[o]),
        grad_window=f64(grad_windows[o]),
        contributions=f64(contributions),
        grad_input_value=float(dx[0, c, r, s]),
        grad_input=f64(dx[0, c]),
        grad_kernel=f64(dw[o, c]),
        grad_kernel_rule=f64(rule),
    )
