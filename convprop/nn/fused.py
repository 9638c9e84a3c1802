"""The inference path of a ``Sequential``: runs of Conv2d [→ BatchNorm2d (eval)] → ReLU [→ MaxPool2d] fused.

``Sequential.forward`` (the context-free path: eval, or training mode under ``no_grad``) hands its
layers here. Each run of a dense-or-grouped ``Conv2d`` (tied bias or none), an optional
``BatchNorm2d``, a ``ReLU`` and an optional ``MaxPool2d`` — or of a ``Conv2d`` and a ``BatchNorm2d``
with no ReLU after them — runs as: the convolution with its bias added
in place, the batch norm's own ``forward`` (any mode: in training mode under ``no_grad`` it normalises
with the batch and updates its running statistics, as always), then ReLU and pooling as one compiled
pass over an array this call owns, with no arg-max array (``functional.fused``). Every other layer
runs its own ``forward``. The result equals the layers' own forwards bit for bit; nothing is written
to any layer, so one eval-mode model still serves many threads.

The training path (``Sequential.forward_with_context``) fuses less: a ``ReLU`` directly followed by a
2×2, stride-2 ``MaxPool2d`` runs as one compiled pass that keeps, per window, only which of its four
taps won (int8), and its backward scatters each δ to that tap (:func:`relu_pool_with_context`). The
two layers' own passes would write the ReLU'd map, keep an int64 arg-max array, then mask the
scattered gradient with ReLU's: for lenet's two pairs 1.4 ms of a 10 ms step at batch 32. Same
outputs and gradients, bit for bit (``tests/test_fused.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from ..functional.fused import (
    SkipShapeError,
    conv2d_norm_relu,
    conv2d_relu_pool,
    pool_tiles,
    relu_max_pool2d,
)
from ..functional.norm import normalisation_affine
from ..functional.relu_pool import relu_max_pool_2x2_backward, relu_max_pool_2x2_with_taps
from .activation import ReLU
from .containers import Residual
from .conv import Conv2d
from .module import Module, Sequential
from .norm import BatchNorm2d
from .pooling import MaxPool2d


def _fused_run(layers: Sequence[Module], i: int) -> tuple[int, dict[str, Any]] | None:
    """If layers[i:] starts a fusable run, (index after it, its parts); else None."""
    conv = layers[i]
    if type(conv) is not Conv2d or conv.bias_kind == "untied":
        return None
    j = i + 1
    norm = layers[j] if j < len(layers) and type(layers[j]) is BatchNorm2d else None
    j += norm is not None
    relu = j < len(layers) and type(layers[j]) is ReLU
    if not relu:  # conv → batch norm alone (resnet's second conv of a block, its projection) still fuses
        return (j, {"conv": conv, "norm": norm, "relu": False, "pool": None}) if norm is not None else None
    j += 1
    pool = layers[j] if j < len(layers) and type(layers[j]) is MaxPool2d else None
    j += pool is not None
    return j, {"conv": conv, "norm": norm, "relu": True, "pool": pool}


def _options(conv: Conv2d) -> dict[str, Any]:
    return dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                padding_mode=conv.padding_mode, algorithm=conv.algorithm)  # fmt: skip


def _affine(norm: BatchNorm2d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(running mean, scale, shift) of an eval-mode batch norm, from the function the layer itself uses."""
    weight = norm.weight.data if norm.weight is not None else None
    bias = norm.bias.data if norm.bias is not None else None
    return (norm.running_mean, *normalisation_affine(norm.running_var, weight, bias, norm.eps))


def _joins(norm: BatchNorm2d, conv: Conv2d) -> bool:
    """Whether ``norm`` after ``conv`` can join the convolution's pass: eval mode (the running
    statistics) and as many features as the convolution has outputs (else the layers' own forwards,
    and their errors)."""
    eval_mode = not norm.training and norm.track_running_stats
    return eval_mode and norm.num_features == conv.weight.data.shape[0]


def _run(
    conv: Conv2d, norm: BatchNorm2d | None, relu: bool, pool: MaxPool2d | None, x: np.ndarray, rec: Any = None
) -> np.ndarray:
    """The fused run on x; ``rec`` (an ``nn.plan.Recorder``), if given, records the call it made."""
    options = _options(conv)
    pool_options = None
    if pool is not None:
        pool_options = dict(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding,
                            dilation=pool.dilation, ceil_mode=pool.ceil_mode)  # fmt: skip
    bias = conv.bias.data if conv.bias is not None else None
    again = None if rec is None else partial(_run, conv, norm, relu, pool)  # (a plan's step falls back on it)
    if norm is None:
        y = conv2d_relu_pool(x, conv.weight.data, bias, options, relu=True, pool=pool_options)
        if rec is not None:
            rec.conv(conv, None, options, x, relu=True, pool=pool_options, fallback=again)
        return y
    if pool is None and np.ndim(x) == 4 and _joins(norm, conv):
        affine = _affine(norm)
        y = conv2d_norm_relu(x, conv.weight.data, bias, options, affine, relu=relu)
        if rec is not None:
            rec.conv(conv, norm, options, x, relu=relu, affine=affine, fallback=again)
        return y
    if rec is not None:  # (the unplanned call each time)
        rec.call(again)
    y = conv2d_relu_pool(x, conv.weight.data, bias, options, relu=False)
    y = np.asarray(norm.forward(y))  # a new array (x̂·γ + β): this call owns it
    return relu_max_pool2d(y, relu=relu, pool=pool_options)


def _residual_relu(block: Residual, relu: ReLU, x: Any, rec: Any = None) -> np.ndarray | None:
    """``relu(block(x))`` with the block's sum and the ReLU in the epilogue of its body's last run, when
    that run is a Conv2d → eval-mode BatchNorm2d (resnet's blocks); else None, and nothing has run.

    The shortcut (or x) is computed first, then the body's other layers, then the last convolution
    with y_norm + skip and ReLU applied as each image's result is stored: the block's arithmetic in its
    order, without the body's output, the sum's array or ReLU's pass. ``rec`` as in :func:`_run`."""
    inner = list(block.body) if type(block.body) is Sequential else []
    start, last, i = None, None, 0
    while i < len(inner):  # the runs of the body: the last must end it
        run = _fused_run(inner, i)
        if run is None:
            start, last, i = None, None, i + 1
        else:
            start, (i, last) = i, run
    if start is None or last is None or last["relu"] or last["norm"] is None:
        return None
    conv, norm = last["conv"], last["norm"]
    if not _joins(norm, conv):
        return None
    shortcut, body = (None, None) if rec is None else (rec.child(), rec.child())
    skip = _forward(block.shortcut, x, shortcut) if block.shortcut is not None else x
    h = forward_fused(inner[:start], x, body)
    if np.ndim(h) != 4 or np.result_type(h) != np.result_type(skip):  # the layers' own paths (a sum of
        if rec is not None:  # two dtypes promotes)
            rec.call(partial(_residual_relu, block, relu))
        return relu.forward(block._add(_run(conv, norm, False, None, h), skip))
    affine = _affine(norm)
    y = _residual_tail(block, conv, norm, h, skip, affine)
    if rec is not None:
        tail = rec.child()
        tail.conv(conv, norm, _options(conv), h, relu=True, affine=affine, skip=skip,
                  fallback=partial(_residual_tail, block, conv, norm))  # fmt: skip
        rec.residual(shortcut if block.shortcut is not None else None, body, tail)
    return y


def _residual_tail(
    block: Residual, conv: Conv2d, norm: BatchNorm2d, h: np.ndarray, skip: np.ndarray, affine: Any = None
) -> np.ndarray:
    """relu(norm(conv(h)) + skip) as one pass of the body's last convolution (:func:`_residual_relu`)."""
    bias = conv.bias.data if conv.bias is not None else None
    affine = _affine(norm) if affine is None else affine
    try:
        return conv2d_norm_relu(h, conv.weight.data, bias, _options(conv), affine, skip=skip)
    except SkipShapeError as exc:  # the body's output and the shortcut's differ: the block's own message
        block._add(np.broadcast_to(np.zeros((), dtype=np.result_type(h)), exc.expected), skip)
        raise


def _forward(layer: Module, x: Any, rec: Any) -> Any:
    """``layer.forward(x)``; recorded, a plain Sequential's layers are walked in line (its forward is
    this walk in the batch scope the recorded forward already holds)."""
    if rec is None:
        return layer.forward(x)
    if type(layer) is Sequential:
        return forward_fused(list(layer), x, rec)
    rec.call(layer.forward)
    return layer.forward(x)


def forward_fused(layers: Sequence[Module], x: Any, rec: Any = None) -> Any:
    """The layers applied in order, fused runs as one call each; equal to ``layer.forward`` in turn.
    ``rec``, an ``nn.plan.Recorder``, is told each call made (a single image's trace)."""
    i = 0
    while i < len(layers):
        if type(layers[i]) is Residual and i + 1 < len(layers) and type(layers[i + 1]) is ReLU:
            y = _residual_relu(layers[i], layers[i + 1], x, rec)  # type: ignore[arg-type]
            if y is not None:
                x, i = y, i + 2
                continue
        run = _fused_run(layers, i)
        if run is None:
            x = _forward(layers[i], x, rec)
            i += 1
            continue
        i, parts = run
        x = _run(parts["conv"], parts["norm"], parts["relu"], parts["pool"], x, rec)
    return x


class ReluPoolContext:
    """What the backward of a fused ReLU → 2×2 max-pool needs: each window's winning tap, the input shape."""

    __slots__ = ("input_shape", "taps")

    def __init__(self, taps: np.ndarray, input_shape: tuple[int, ...]) -> None:
        self.taps = taps  # (N, C, PH, PW) int8: 0–3, or −1 where ReLU zeroed the window
        self.input_shape = input_shape


FUSED_WITH_NEXT = "fused with the next layer"  # the ReLU's slot in a Sequential's context list


def relu_pool_with_context(layers: Sequence[Module], i: int, x: Any) -> tuple[np.ndarray, ReluPoolContext] | None:
    """``layers[i]`` (a ReLU) and ``layers[i + 1]`` (a 2×2, stride-2 MaxPool2d) applied to ``x`` as one
    pass, with the context of both; None when they are not such a pair or ``x`` is not a float
    (N, C, H, W) batch without NaN — the layers then run as they are."""
    if type(layers[i]) is not ReLU or i + 1 >= len(layers) or type(layers[i + 1]) is not MaxPool2d:
        return None
    if not (isinstance(x, np.ndarray) and x.ndim == 4 and x.dtype in (np.float32, np.float64)):
        return None
    pool = layers[i + 1]
    assert isinstance(pool, MaxPool2d)  # (checked above; for the type checker)
    options = dict(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding,
                   dilation=pool.dilation, ceil_mode=pool.ceil_mode)  # fmt: skip
    if pool.kernel_size != (2, 2) or min(x.shape[2:]) < 2 or not pool_tiles(options, x.shape[2:]):
        return None
    fused = relu_max_pool_2x2_with_taps(np.ascontiguousarray(x))
    if fused is None:
        return None
    y, taps = fused
    return y, ReluPoolContext(taps, x.shape)


def relu_pool_backward(context: ReluPoolContext, grad_output: np.ndarray) -> np.ndarray:
    """The input gradient of :func:`relu_pool_with_context`'s pair."""
    return relu_max_pool_2x2_backward(np.asarray(grad_output), context.taps, context.input_shape)
