"""The inference path of a ``Sequential``: runs of Conv2d [→ BatchNorm2d (eval)] → ReLU [→ MaxPool2d] fused.

``Sequential.forward`` (the context-free path: eval, or training mode under ``no_grad``) hands its
layers here. Each run of a dense-or-grouped ``Conv2d`` (tied bias or none), an optional
``BatchNorm2d``, a ``ReLU`` and an optional ``MaxPool2d`` runs as: the convolution with its bias added
in place, the batch norm's own ``forward`` (any mode: in training mode under ``no_grad`` it normalises
with the batch and updates its running statistics, as always), then ReLU and pooling as one compiled
pass over an array this call owns, with no arg-max array (``functional.fused``). Every other layer
runs its own ``forward``. The result equals the layers' own forwards bit for bit; nothing is written
to any layer, so one eval-mode model still serves many threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..functional.fused import conv2d_relu_pool, relu_max_pool2d
from .activation import ReLU
from .conv import Conv2d
from .module import Module
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
    if j >= len(layers) or type(layers[j]) is not ReLU:
        return None
    j += 1
    pool = layers[j] if j < len(layers) and type(layers[j]) is MaxPool2d else None
    j += pool is not None
    return j, {"conv": conv, "norm": norm, "pool": pool}


def _run(conv: Conv2d, norm: BatchNorm2d | None, pool: MaxPool2d | None, x: np.ndarray) -> np.ndarray:
    options = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                   padding_mode=conv.padding_mode, algorithm=conv.algorithm)  # fmt: skip
    pool_options = None
    if pool is not None:
        pool_options = dict(kernel_size=pool.kernel_size, stride=pool.stride, padding=pool.padding,
                            dilation=pool.dilation, ceil_mode=pool.ceil_mode)  # fmt: skip
    bias = conv.bias.data if conv.bias is not None else None
    if norm is None:
        return conv2d_relu_pool(x, conv.weight.data, bias, options, relu=True, pool=pool_options)
    y = conv2d_relu_pool(x, conv.weight.data, bias, options, relu=False)
    y = np.asarray(norm.forward(y))  # a new array (x̂·γ + β): this call owns it
    return relu_max_pool2d(y, relu=True, pool=pool_options)


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
