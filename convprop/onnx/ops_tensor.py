"""Converters for the activations, the dense and element-wise operators, normalisation and the tensor plumbing."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import nn
from ..errors import OnnxError
from .context import FLOAT_DTYPES, ImportContext, node_label
from .ops import attributes, check_setting, inputs_of, op, set_data, single_output, unsupported


def _module(node: Any, name: str) -> Any:
    cls = getattr(nn, name, None)
    if cls is None:
        raise unsupported(node, f"{node.op_type} (convprop has no nn.{name})")
    return cls


def _unary(ctx: ImportContext, node: Any, module: nn.Module) -> None:
    ctx.emit(single_output(node, ctx), module, [ctx.runtime(inputs_of(node, 1, 1)[0], node)])


def _rank(ctx: ImportContext, node: Any, value: str) -> int:
    shape = ctx.shape(value)
    if shape is None:
        raise unsupported(node, f"an input {value!r} of unknown rank here")
    return len(shape)


# --- activations ------------------------------------------------------------------------------------


@op("Relu", 6, 13, 14)
def relu(ctx: ImportContext, node: Any) -> None:
    attributes(node, {})
    _unary(ctx, node, nn.ReLU())


@op("LeakyRelu", 6, 16)
def leaky_relu(ctx: ImportContext, node: Any) -> None:
    _unary(ctx, node, nn.LeakyReLU(float(attributes(node, {"alpha": 0.01})["alpha"])))


@op("Sigmoid", 6, 13)
def sigmoid(ctx: ImportContext, node: Any) -> None:
    attributes(node, {})
    _unary(ctx, node, nn.Sigmoid())


@op("Tanh", 6, 13)
def tanh(ctx: ImportContext, node: Any) -> None:
    attributes(node, {})
    _unary(ctx, node, nn.Tanh())


@op("Gelu", 20)
def gelu(ctx: ImportContext, node: Any) -> None:
    _unary(ctx, node, nn.GELU(attributes(node, {"approximate": "none"})["approximate"]))


def _softmax(ctx: ImportContext, node: Any, cls: Any, version: int) -> None:
    x_name = inputs_of(node, 1, 1)[0]
    if version >= 13:
        _unary(ctx, node, cls(dim=int(attributes(node, {"axis": -1})["axis"])))
        return
    # before opset 13: the input is seen as 2-D, (d0·...·d[axis-1], d[axis]·...·d[r-1]), normalised per row
    axis = int(attributes(node, {"axis": 1})["axis"])
    shape = ctx.shape(x_name)
    if shape is None:
        raise unsupported(node, "Softmax before opset 13 on an input of unknown shape")
    axis %= len(shape)
    if axis == len(shape) - 1:
        _unary(ctx, node, cls(dim=-1))
        return
    if any(s is None for s in shape[axis:]):
        raise unsupported(node, "Softmax before opset 13 over axes of unknown size")
    x = ctx.runtime(x_name, node)
    rows = ctx.emit_hidden(f"{node.output[0]}_rows", nn.Reshape([0] * axis + [-1]), [x])
    y = ctx.emit_hidden(f"{node.output[0]}_2d", cls(dim=-1), [rows])
    ctx.emit(single_output(node, ctx), nn.Reshape([0] * axis + [int(s or 0) for s in shape[axis:]]), [y])


@op("Softmax", 11, 13)
def softmax(ctx: ImportContext, node: Any) -> None:
    _softmax(ctx, node, nn.Softmax, ctx.opset)


@op("LogSoftmax", 11, 13)
def log_softmax(ctx: ImportContext, node: Any) -> None:
    _softmax(ctx, node, nn.LogSoftmax, ctx.opset)


# --- dense and element-wise -------------------------------------------------------------------------


@op("Gemm", 11, 13)
def gemm(ctx: ImportContext, node: Any) -> None:
    attrs = attributes(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    a, b, c = inputs_of(node, 2, 3)
    alpha, beta, trans_a, trans_b = (
        float(attrs["alpha"]),
        float(attrs["beta"]),
        bool(attrs["transA"]),
        bool(attrs["transB"]),
    )
    if ctx.is_static(b) and (not c or ctx.is_static(c)) and not trans_a and alpha == 1.0 and (not c or beta == 1.0):
        weight = ctx.static(b, node, "B")
        bias = ctx.static(c, node, "C") if c else None
        if weight.ndim == 2 and weight.dtype in FLOAT_DTYPES:
            weight = weight if trans_b else weight.T  # Linear's (out, in)
            if bias is None or bias.shape in ((weight.shape[0],), (1, weight.shape[0])):
                layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, rng=0, dtype=weight.dtype)
                set_data(layer.weight, np.ascontiguousarray(weight), node, "B")
                if bias is not None:
                    set_data(layer.bias, bias.reshape(-1).astype(weight.dtype), node, "C")
                ctx.emit(single_output(node, ctx), ctx.share((b, c), layer), [ctx.runtime(a, node)])
                return
    inputs = [ctx.runtime(v, node) for v in (a, b, c) if v]
    ctx.emit(single_output(node, ctx), nn.Gemm(alpha, beta, trans_a, trans_b), inputs)


@op("MatMul", 9, 13)
def matmul(ctx: ImportContext, node: Any) -> None:
    attributes(node, {})
    a, b = inputs_of(node, 2, 2)
    ctx.emit(single_output(node, ctx), nn.MatMul(), [ctx.runtime(a, node), ctx.runtime(b, node)])


def _binary(ctx: ImportContext, node: Any, name: str) -> None:
    attributes(node, {})
    a, b = inputs_of(node, 2, 2)
    ctx.emit(single_output(node, ctx), _module(node, name)(), [ctx.runtime(a, node), ctx.runtime(b, node)])


@op("Add", 7, 13, 14)
def add(ctx: ImportContext, node: Any) -> None:
    _binary(ctx, node, "Add")


@op("Sub", 7, 13, 14)
def sub(ctx: ImportContext, node: Any) -> None:
    _binary(ctx, node, "Sub")


@op("Mul", 7, 13, 14)
def mul(ctx: ImportContext, node: Any) -> None:
    _binary(ctx, node, "Mul")


@op("Div", 7, 13, 14)
def div(ctx: ImportContext, node: Any) -> None:
    _binary(ctx, node, "Div")


@op("Concat", 11, 13)
def concat(ctx: ImportContext, node: Any) -> None:
    axis = attributes(node, {"axis": None})["axis"]
    if axis is None:
        raise OnnxError(f"node {node_label(node)} needs an axis")
    inputs = [ctx.runtime(v, node) for v in node.input if v]
    ctx.emit(single_output(node, ctx), _module(node, "Cat")(dim=int(axis)), inputs)


# --- normalisation and dropout ----------------------------------------------------------------------


@op("BatchNormalization", 9, 14, 15)
def batch_normalization(ctx: ImportContext, node: Any) -> None:
    attrs = attributes(node, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0})
    if attrs["training_mode"]:
        raise unsupported(node, "training_mode=1 (convprop imports batch normalisation in inference form)")
    x, scale, bias, mean, var = inputs_of(node, 5, 5)
    arrays = [ctx.static(v, node, what) for v, what in ((scale, "scale"), (bias, "B"), (mean, "mean"), (var, "var"))]
    rank = _rank(ctx, node, x)
    family = "BatchNorm1d" if rank in (2, 3) else f"BatchNorm{rank - 2}d"
    dtype = arrays[0].dtype if arrays[0].dtype in FLOAT_DTYPES else np.dtype(np.float32)
    layer = _module(node, family)(
        arrays[0].shape[0],
        eps=float(attrs["epsilon"]),
        momentum=float(f"{1.0 - float(attrs['momentum']):.7g}"),
        dtype=dtype,
    )
    for param, value, what in ((layer.weight, arrays[0], "scale"), (layer.bias, arrays[1], "B")):
        set_data(param, value.astype(dtype), node, what)
    for name, value in (("running_mean", arrays[2]), ("running_var", arrays[3])):
        if getattr(layer, name).shape != value.shape:
            raise OnnxError(f"node {node_label(node)}: {name} of shape {value.shape} does not fit {family}")
        getattr(layer, name)[...] = value
    ctx.emit(single_output(node, ctx), layer, [ctx.runtime(x, node)])


@op("Dropout", 10, 12, 13, 22)
def dropout(ctx: ImportContext, node: Any) -> None:
    attrs = attributes(node, {"ratio": 0.5, "seed": None})  # the seed only matters in training
    x, ratio, training = inputs_of(node, 1, 3)
    p = float(ctx.static(ratio, node, "ratio")) if ratio else float(attrs["ratio"])
    if training and bool(ctx.static(training, node, "training_mode")):
        raise unsupported(node, "training_mode=True (convprop imports dropout in inference form)")
    _unary_on(ctx, node, x, nn.Dropout(p))


# --- tensor plumbing --------------------------------------------------------------------------------


@op("Flatten", 11, 13, 21, 23, 24, 25)
def flatten(ctx: ImportContext, node: Any) -> None:
    axis = int(attributes(node, {"axis": 1})["axis"])
    x_name = inputs_of(node, 1, 1)[0]
    shape = ctx.shape(x_name)
    rank = len(shape) if shape is not None else None
    if axis < 0:
        axis += _rank(ctx, node, x_name)
    x = ctx.runtime(x_name, node)
    out = single_output(node, ctx)
    if axis == 0:
        ctx.emit(out, nn.Reshape([1, -1]), [x])
    elif rank is not None and axis == rank:
        ctx.emit(out, nn.Reshape([-1, 1]), [x])
    elif axis == 1:
        ctx.emit(out, nn.Flatten(), [x])  # (N, d1·...·dr), torch's own Flatten
    else:  # (d0·...·d[axis-1], d[axis]·...): collapse the leading axes, then the trailing ones
        leading = ctx.emit_hidden(f"{node.output[0]}_leading", nn.Flatten(0, axis - 1), [x])
        ctx.emit(out, nn.Flatten(1, -1), [leading])


@op("Reshape", 5, 13, 14, 19, 21, 23, 24, 25)
def reshape(ctx: ImportContext, node: Any) -> None:
    allowzero = bool(attributes(node, {"allowzero": 0})["allowzero"])
    data, shape = inputs_of(node, 2, 2)
    target = ctx.static(shape, node, "shape")
    _unary_on(ctx, node, data, nn.Reshape([int(s) for s in target.reshape(-1)], allowzero=allowzero))


def _unary_on(ctx: ImportContext, node: Any, value: str, module: nn.Module) -> None:
    ctx.emit(single_output(node, ctx), module, [ctx.runtime(value, node)])


@op("Transpose", 1, 13, 21, 23, 24, 25)
def transpose(ctx: ImportContext, node: Any) -> None:
    perm = attributes(node, {"perm": None})["perm"]
    _unary(ctx, node, nn.Transpose(None if perm is None else [int(p) for p in perm]))


@op("Pad", 11, 13, 18, 19, 21, 23, 24, 25)
def pad(ctx: ImportContext, node: Any) -> None:
    mode = attributes(node, {"mode": "constant"})["mode"]
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise unsupported(node, f"mode={mode!r}")
    data, pads_name, value_name, axes_name = inputs_of(node, 2, 4)
    pads = [int(p) for p in ctx.static(pads_name, node, "pads").reshape(-1)]
    check_setting(pads, node, "pads")
    value = float(ctx.static(value_name, node, "constant_value").reshape(-1)[0]) if value_name else 0.0
    if axes_name:
        rank = _rank(ctx, node, data)
        axes = [int(a) % rank for a in ctx.static(axes_name, node, "axes").reshape(-1)]
    else:
        axes = list(range(len(pads) // 2))
        rank = len(axes)
    if len(pads) != 2 * len(axes):
        raise OnnxError(f"node {node_label(node)}: pads {pads} need two values for each of the axes {axes}")
    pairs = [[0, 0] for _ in range(rank)]
    for i, a in enumerate(axes):
        pairs[a] = [pads[i], pads[i + len(axes)]]
    first = next((i for i, p in enumerate(pairs) if p != [0, 0]), rank - 1)  # the Pad layer pads the last axes
    _unary_on(ctx, node, data, nn.Pad(pairs[first:], mode, value))


@op("Identity", 1, 13, 14, 16, 19, 21, 23, 24, 25)
def identity(ctx: ImportContext, node: Any) -> None:
    attributes(node, {})
    x = inputs_of(node, 1, 1)[0]
    if ctx.is_static(x) and x not in ctx.input_values:  # a constant stays a constant (torch's exported buffers)
        ctx.static_values[single_output(node, ctx)] = ctx.static(x, node, "input")
        return
    _unary(ctx, node, nn.Identity())


@op("Constant", 11, 12, 13, 19, 21, 23, 24, 25)
def constant(ctx: ImportContext, node: Any) -> None:
    if len(node.attribute) != 1:
        raise OnnxError(f"node {node_label(node)} must have exactly one value attribute")
    attr = node.attribute[0]
    name = attr.name
    if name == "value":
        from .reader import to_array

        value = to_array(attr.t, f"the value of node {node_label(node)}")
    elif name in ("value_float", "value_floats"):
        value = np.array(attr.f if name == "value_float" else list(attr.floats), dtype=np.float32)
    elif name in ("value_int", "value_ints"):
        value = np.array(attr.i if name == "value_int" else list(attr.ints), dtype=np.int64)
    else:
        raise unsupported(node, f"a Constant given by {name!r}")
    ctx.static_values[single_output(node, ctx)] = value  # a Constant node is emitted if it is used as data
