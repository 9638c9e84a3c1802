"""The inference path of a ``Sequential``: runs of Conv2d [→ BatchNorm2d (eval)] → ReLU [→ MaxPool2d] fused.

``Sequential.forward`` (the context-free path: eval, or training mode under ``no_grad``) hands its
layers here. Each run of a dense-or-grouped ``Conv2d`` (tied bias or none), an optional eval-mode
``BatchNorm2d`` with running statistics, a ``ReLU`` and an optional ``MaxPool2d`` becomes one call
of ``functional.fused.conv2d_relu_pool``: the batch norm folded into the kernel and bias, ReLU and
pooling one compiled pass, no arg-max array. Every other layer runs its own ``forward``. Nothing is
written to any layer (the folded kernel is a temporary of the call), so one eval-mode model still
serves many threads. A BatchNorm in training mode is never folded: under ``no_grad`` in training mode
it normalises with the batch and updates its running statistics, as its own forward does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..functional.fused import conv2d_relu_pool, fold_batch_norm
from .activation import ReLU
from .conv import Conv2d
from .module import Module
from .norm import BatchNorm2d
from .pooling import MaxPool2d


def _foldable(layer: Module) -> bool:
    return type(layer) is BatchNorm2d and not layer.training and layer.track_running_stats


def _fused_run(layers: Sequence[Module], i: int) -> tuple[int, dict[str, Any]] | None:
    """If layers[i:] starts a fusable run, (index after it, its parts); else None."""
    conv = layers[i]
    if type(conv) is not Conv2d or conv.bias_kind == "untied":
        return None
    j = i + 1
    norm = layers[j] if j < len(layers) and _foldable(layers[j]) else None
    j += norm is not None
    if j >= len(layers) or type(layers[j]) is not ReLU:
        return None
    j += 1
    pool = layers[j] if j < len(layers) and type(layers[j]) is MaxPool2d else None
    j += pool is not None
    return j, {"conv": conv, "norm": norm, "pool": pool}


def _run(conv: Conv2d, norm: BatchNorm2d | None, pool: MaxPool2d | None, x: np.ndarray) -> np.ndarray:
    weight = conv.weight.data
    bias = conv.bias.data if conv.bias is not None else None
    if norm is not None:
        gamma = norm.weight.data if norm.weight is not None else None
        beta = norm.bias.data if norm.bias is not None else None
        weight, bias = fold_batch_norm(weight, bias, norm.running_mean, norm.running_var, gamma, beta, norm.eps)
    options = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                   padding_mode=conv.padding_mode, algorithm=conv.algorithm)  # fmt: skip
    pool_options = None
    if pool is not None:
        pool_options = dict(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding,
                            dilation=pool.dilation, ceil_mode=pool.ceil_mode)  # fmt: skip
    return conv2d_relu_pool(x, weight, bias, options, relu=True, pool=pool_options)


def forward_fused(layers: Sequence[Module], x: Any) -> Any:
    """The layers applied in order, fused runs as one call each; equal to ``layer.forward`` in turn."""
    i = 0
    while i < len(layers):
        run = _fused_run(layers, i)
        if run is None:
            x = layers[i].forward(x)
            i += 1
            continue
        i, parts = run
        x = _run(parts["conv"], parts["norm"], parts["pool"], x)
    return x
