"""Converters for the windowed operators: Conv, ConvTranspose, MaxPool, AveragePool and the global pools."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import nn
from ..errors import OnnxError
from .context import ImportContext, node_label
from .ops import attributes, inputs_of, layer_class, op, set_data, single_output, unsupported

# --- window geometry shared by Conv, ConvTranspose and the pools -------------------------------------


def window_geometry(
    ctx: ImportContext, node: Any, attrs: dict[str, Any], x: str, kernel: list[int]
) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """(stride, dilation, pads as (before, after) per axis) with ``auto_pad`` resolved."""
    k = len(kernel)
    stride = list(attrs.get("strides") or [1] * k)
    dilation = list(attrs.get("dilations") or [1] * k)
    pads = list(attrs.get("pads") or [0] * (2 * k))
    if len(stride) != k or len(dilation) != k or len(pads) != 2 * k:
        raise OnnxError(
            f"node {node_label(node)}: strides {stride}, dilations {dilation} or pads {pads} "
            f"do not fit a {k}-D kernel {kernel}"
        )
    auto_pad = attrs.get("auto_pad", "NOTSET")
    pairs = [(pads[i], pads[i + k]) for i in range(k)]
    if auto_pad == "VALID":
        pairs = [(0, 0)] * k
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        shape = ctx.shape(x)
        if shape is None or any(s is None for s in shape[2:]):
            raise unsupported(node, f"auto_pad={auto_pad} on an input of unknown spatial size")
        pairs = []
        for size, kk, s, d in zip((int(n) for n in shape[2:] if n is not None), kernel, stride, dilation, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + d * (kk - 1) + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pairs.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
    elif auto_pad != "NOTSET":
        raise unsupported(node, f"auto_pad={auto_pad!r}")
    if any(p < 0 for pair in pairs for p in pair):
        raise unsupported(node, f"negative pads {pads}")
    return stride, dilation, pairs


def as_padding(pairs: list[tuple[int, int]]) -> tuple[Any, ...]:
    """A layer's ``padding``: one int per axis when symmetric, else one (before, after) pair per axis."""
    return tuple(b for b, _ in pairs) if symmetric(pairs) else tuple((int(b), int(a)) for b, a in pairs)


def half_kernel(pairs: list[tuple[int, int]], kernel: list[int]) -> bool:
    """PyTorch's pooling rule: every pad at most half the kernel."""
    return all(p <= k // 2 for pair, k in zip(pairs, kernel, strict=True) for p in pair)


def symmetric(pairs: list[tuple[int, int]]) -> bool:
    return all(b == a for b, a in pairs)


def pad_in_front(ctx: ImportContext, node: Any, x: str, pairs: list[tuple[int, int]], value: float = 0.0) -> str:
    """A Pad node for the spatial axes (asymmetric ``pads``); returns the padded tensor's graph name."""
    return ctx.emit_hidden(f"{node.output[0]}_pad", nn.Pad([list(p) for p in pairs], "constant", value), [x])


PADDING_MODES = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}  # ONNX Pad mode → PyTorch's


def fold_pad(
    ctx: ImportContext, x_name: str, x: str, pairs: list[tuple[int, int]]
) -> tuple[str, list[tuple[int, int]], str]:
    """A reflect/edge/wrap Pad of the spatial axes read only by this Conv becomes the Conv's padding_mode
    (how PyTorch's and convprop's padding modes are exported); returns (input, pads, padding_mode)."""
    k = len(pairs)
    found = ctx.take_producer(x_name, nn.Pad)
    if found is None:
        return x, pairs, "zeros"
    pad: Any = found[0]
    inputs = found[1]
    pads = [(int(p[0]), int(p[1])) for p in pad.pads]
    if pad.mode not in PADDING_MODES or len(pads) > k or not symmetric(pads):
        ctx.nodes.append((x, pad, inputs))  # not a padding mode: keep the Pad node as it was
        ctx.names[x_name] = x
        return x, pairs, "zeros"
    return inputs[0], [(0, 0)] * (k - len(pads)) + pads, PADDING_MODES[pad.mode]


# --- convolutions -----------------------------------------------------------------------------------


@op("Conv", 11, 22)
def conv(ctx: ImportContext, node: Any) -> None:
    attrs = attributes(
        node, {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None, "pads": None, "strides": None}
    )
    x_name, w_name, b_name = inputs_of(node, 2, 3)
    weight = ctx.static(w_name, node, "weight")
    bias = ctx.static(b_name, node, "bias") if b_name else None
    if weight.ndim < 3:
        raise OnnxError(f"node {node_label(node)}: weight of shape {weight.shape} has no spatial axes")
    kernel = list(weight.shape[2:])
    if attrs["kernel_shape"] is not None and list(attrs["kernel_shape"]) != kernel:
        raise OnnxError(f"node {node_label(node)}: kernel_shape {list(attrs['kernel_shape'])} != weight's {kernel}")
    stride, dilation, pairs = window_geometry(ctx, node, attrs, x_name, kernel)
    x = ctx.runtime(x_name, node)
    padding_mode = "zeros"
    if not any(p for pair in pairs for p in pair):
        x, pairs, padding_mode = fold_pad(ctx, x_name, x, pairs)
    group = int(attrs["group"])
    cls = layer_class(node, "Conv", len(kernel))
    layer = cls(
        weight.shape[1] * group,
        weight.shape[0],
        tuple(kernel),
        stride=tuple(stride),
        padding=as_padding(pairs),
        dilation=tuple(dilation),
        groups=group,
        bias=bias is not None,
        padding_mode=padding_mode,
        rng=0,
        dtype=weight.dtype,
    )
    set_data(layer.weight, weight, node, "weight")
    if bias is not None:
        set_data(layer.bias, bias.astype(weight.dtype), node, "bias")
    ctx.emit(single_output(node, ctx), ctx.share((w_name, b_name), layer), [x])


@op("ConvTranspose", 11, 22)
def conv_transpose(ctx: ImportContext, node: Any) -> None:
    attrs = attributes(
        node,
        {
            "auto_pad": "NOTSET",
            "dilations": None,
            "group": 1,
            "kernel_shape": None,
            "output_padding": None,
            "output_shape": None,
            "pads": None,
            "strides": None,
        },
    )
    x_name, w_name, b_name = inputs_of(node, 2, 3)
    weight = ctx.static(w_name, node, "weight")
    bias = ctx.static(b_name, node, "bias") if b_name else None
    kernel = list(weight.shape[2:])
    k = len(kernel)
    if attrs["kernel_shape"] is not None and list(attrs["kernel_shape"]) != kernel:
        raise OnnxError(f"node {node_label(node)}: kernel_shape {list(attrs['kernel_shape'])} != weight's {kernel}")
    auto_pad = attrs["auto_pad"]
    geometry = dict(attrs, auto_pad="NOTSET", output_padding=None, output_shape=None)
    stride, dilation, pairs = window_geometry(ctx, node, geometry, x_name, kernel)
    out_pad = list(attrs["output_padding"] or [0] * k)
    if attrs["output_shape"] is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        shape = ctx.shape(x_name)
        if shape is None or any(s is None for s in shape[2:]):
            raise unsupported(node, "output_shape or auto_pad on an input of unknown spatial size")
        sizes = [int(v or 0) for v in shape[2:]]
        full = [
            s * (n - 1) + op_ + d * (kk - 1) + 1
            for s, n, op_, d, kk in zip(stride, sizes, out_pad, dilation, kernel, strict=True)
        ]
        target = (
            list(attrs["output_shape"])[-k:]
            if attrs["output_shape"] is not None
            else [n * s for n, s in zip(sizes, stride, strict=True)]
        )
        pairs = []
        for axis, (f, t) in enumerate(zip(full, target, strict=True)):
            total = f - t  # ONNX's split (its reference implementation's floor division)
            b, a = (total // 2, total - total // 2) if auto_pad == "SAME_UPPER" else (total - total // 2, total // 2)
            if a < 0:  # a larger output than the full one: output padding at the end
                out_pad[axis] -= a
                a = 0
            if b < 0:
                raise unsupported(node, f"output_shape {target} that extends the output before its start")
            pairs.append((b, a))
    elif auto_pad == "VALID":
        pairs = [(0, 0)] * k
    group = int(attrs["group"])
    cls = layer_class(node, "ConvTranspose", k)
    layer = cls(
        weight.shape[0],
        weight.shape[1] * group,
        tuple(kernel),
        stride=tuple(stride),
        padding=as_padding(pairs),
        output_padding=tuple(out_pad),
        groups=group,
        bias=bias is not None,
        dilation=tuple(dilation),
        rng=0,
        dtype=weight.dtype,
    )
    set_data(layer.weight, weight, node, "weight")
    if bias is not None:
        set_data(layer.bias, bias.astype(weight.dtype), node, "bias")
    layer = ctx.share((w_name, b_name), layer)
    ctx.emit(single_output(node, ctx), layer, [ctx.runtime(x_name, node)])


# --- pooling ----------------------------------------------------------------------------------------


def _pool_geometry(
    ctx: ImportContext, node: Any, attrs: dict[str, Any]
) -> tuple[list[int], list[int], list[int], list[tuple[int, int]]]:
    kernel = list(attrs["kernel_shape"] or [])
    if not kernel:
        raise OnnxError(f"node {node_label(node)} needs a kernel_shape")
    if attrs.get("storage_order", 0) != 0:
        raise unsupported(node, "storage_order=1 (it only changes the indices output)")
    stride, dilation, pairs = window_geometry(ctx, node, attrs, node.input[0], kernel)
    return kernel, stride, dilation, pairs


@op("MaxPool", 11, 12, 22)
def max_pool(ctx: ImportContext, node: Any) -> None:
    attrs = attributes(
        node,
        {
            "auto_pad": "NOTSET",
            "ceil_mode": 0,
            "dilations": None,
            "kernel_shape": None,
            "pads": None,
            "storage_order": 0,
            "strides": None,
        },
    )
    kernel, stride, dilation, pairs = _pool_geometry(ctx, node, attrs)
    x = ctx.runtime(inputs_of(node, 1, 1)[0], node)
    if not half_kernel(pairs, kernel):  # −∞ padding, then an unpadded pool: the max never picks the padding
        x, pairs = pad_in_front(ctx, node, x, pairs, value=-np.inf), [(0, 0)] * len(kernel)
    cls = layer_class(node, "MaxPool", len(kernel))
    layer = cls(
        tuple(kernel),
        stride=tuple(stride),
        padding=as_padding(pairs),
        dilation=tuple(dilation),
        ceil_mode=bool(attrs["ceil_mode"]),
    )
    ctx.emit(single_output(node, ctx), layer, [x])


@op("AveragePool", 11, 19, 22)
def average_pool(ctx: ImportContext, node: Any) -> None:
    attrs = attributes(
        node,
        {
            "auto_pad": "NOTSET",
            "ceil_mode": 0,
            "count_include_pad": 0,
            "dilations": None,
            "kernel_shape": None,
            "pads": None,
            "strides": None,
        },
    )
    kernel, stride, dilation, pairs = _pool_geometry(ctx, node, attrs)
    if any(d != 1 for d in dilation):
        raise unsupported(
            node, f"AveragePool with dilations {dilation} (convprop's average pool, like PyTorch's, has no dilation)"
        )
    include = bool(attrs["count_include_pad"])
    x = ctx.runtime(inputs_of(node, 1, 1)[0], node)
    if not half_kernel(pairs, kernel):  # zero padding counted in the divisor, then an unpadded pool
        if not include:
            raise unsupported(node, f"AveragePool with pads {pairs} beyond half the kernel and count_include_pad=0")
        x, pairs = pad_in_front(ctx, node, x, pairs), [(0, 0)] * len(kernel)
    cls = layer_class(node, "AvgPool", len(kernel))
    layer = cls(
        tuple(kernel),
        stride=tuple(stride),
        padding=as_padding(pairs),
        ceil_mode=bool(attrs["ceil_mode"]),
        count_include_pad=include,
    )
    ctx.emit(single_output(node, ctx), layer, [x])


@op("GlobalAveragePool", 1, 22)
def global_average_pool(ctx: ImportContext, node: Any) -> None:
    attributes(node, {})
    x_name = inputs_of(node, 1, 1)[0]
    shape = ctx.shape(x_name)
    if shape is None:
        raise unsupported(node, "GlobalAveragePool of an input of unknown rank")
    layer = layer_class(node, "AdaptiveAvgPool", len(shape) - 2)(1)  # PyTorch's idiom, which it exports so
    ctx.emit(single_output(node, ctx), layer, [ctx.runtime(x_name, node)])


@op("GlobalMaxPool", 1, 22)
def global_max_pool(ctx: ImportContext, node: Any) -> None:
    attributes(node, {})
    ctx.emit(single_output(node, ctx), nn.GlobalMaxPool(), [ctx.runtime(inputs_of(node, 1, 1)[0], node)])
