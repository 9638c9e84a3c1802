"""The exporter of each layer type: the ONNX nodes that compute what the layer computes (docs/onnx.md).

Each takes ``(builder, layer, input names, input sample values, path)`` and returns the output's name and
sample value. Padding is always written out explicitly: ``"same"`` becomes the pads it resolves to for
this input size (so stride > 1 is exact), and a padding mode other than zeros becomes a ``Pad`` node
(reflect, edge, wrap) in front of an unpadded Conv.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import nn
from ..errors import OnnxError
from ..functional.geometry import resolve_padding
from .exporter import Builder, Exporter, exports, run

PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}  # PyTorch's name → ONNX's


def _hint(path: str, default: str) -> str:
    return path or default


# --- containers -------------------------------------------------------------------------------------


@exports(nn.Sequential)
def sequential(
    b: Builder, model: nn.Sequential, inputs: list[str], values: list[np.ndarray], path: str
) -> tuple[Any, Any]:
    name, value = inputs[0], values[0]
    for child_name, layer in model.named_children():
        name, value = b.module(layer, [name], [value], f"{path}.{child_name}" if path else child_name)
    return name, value


@exports(nn.Residual)
def residual(b: Builder, model: nn.Residual, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    main, main_value = b.module(model.body, inputs, values, f"{path}.body" if path else "body")
    skip, skip_value = inputs[0], values[0]
    if model.shortcut is not None:
        skip, skip_value = b.module(model.shortcut, inputs, values, f"{path}.shortcut" if path else "shortcut")
    return b.node("Add", [main, skip], _hint(path, "residual")), main_value + skip_value


@exports(nn.Concat)
def concat(b: Builder, model: nn.Concat, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    outs = [b.module(branch, inputs, values, f"{path}.{i}" if path else str(i)) for i, branch in enumerate(model)]
    y = np.concatenate([v for _, v in outs], axis=model.dim)
    return b.node("Concat", [n for n, _ in outs], _hint(path, "concat"), axis=model.dim), y


@exports(nn.Graph)
def graph(b: Builder, model: Any, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    if len(inputs) != len(model.input_names):
        raise OnnxError(
            f"the graph at {path or 'the top'} takes {len(model.input_names)} inputs "
            f"{list(model.input_names)}; input_shape gave {len(inputs)}"
        )
    names = dict(zip(model.input_names, inputs, strict=True))
    samples = dict(zip(model.input_names, values, strict=True))
    for node in model.nodes:
        where = f"{path}.{node.name}" if path else node.name
        names[node.name], samples[node.name] = b.module(
            node.module, [names[s] for s in node.inputs], [samples[s] for s in node.inputs], where
        )
    outs = tuple(names[o] for o in model.output_names)
    outs_values = tuple(samples[o] for o in model.output_names)
    return (outs[0], outs_values[0]) if len(outs) == 1 else (outs, outs_values)


def _chain(op_type: str) -> Exporter:
    """ONNX's Add and Mul take two inputs: x1 + x2 + x3 is written (x1 + x2) + x3, as convprop sums."""

    def export_chain(b: Builder, layer: Any, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
        out = inputs[0]
        for i, other in enumerate(inputs[1:]):
            last = i == len(inputs) - 2
            out = b.node(op_type, [out, other], _hint(path, op_type.lower()) if last else f"{path}.{i}")
        return out, run(layer, values)

    return export_chain


exports(nn.Add)(_chain("Add"))
exports(nn.Mul)(_chain("Mul"))


@exports(nn.Cat)
def cat(b: Builder, layer: Any, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    return b.node("Concat", list(inputs), _hint(path, "cat"), axis=layer.dim), run(layer, values)


# --- convolution and dense layers ---------------------------------------------------------------------


def conv_pads(layer: Any, spatial: tuple[int, ...]) -> list[tuple[int, int]]:
    """The layer's padding as explicit (before, after) pairs for an input of this spatial size."""
    pads = resolve_padding(layer.padding, spatial, layer.kernel_size, layer.stride, layer.dilation)
    return [tuple(p) for p in pads]  # type: ignore[misc]


def _flat_pads(pairs: list[tuple[int, int]]) -> list[int]:
    return [p[0] for p in pairs] + [p[1] for p in pairs]  # ONNX's [x1_begin, x2_begin, ..., x1_end, ...]


def padded_input(b: Builder, x: str, pairs: list[tuple[int, int]], mode: str, path: str) -> str:
    """A Pad node in ``mode`` for the spatial axes (N and C unpadded); returns the padded tensor."""
    onnx_mode = PAD_MODES[mode]
    if onnx_mode == "wrap":
        b.require(19, "padding_mode='circular' (Pad mode 'wrap')")
    pads = b.ints(f"{path}.pads", [0, 0, *(p[0] for p in pairs), 0, 0, *(p[1] for p in pairs)])
    return b.node("Pad", [x, pads], f"{path}.padded", mode=onnx_mode)


@exports(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv(b: Builder, layer: Any, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    x, value = inputs[0], values[0]
    y = run(layer, [value])
    path = _hint(path, "conv")
    pairs = conv_pads(layer, value.shape[2:])
    if layer.padding_mode != "zeros" and any(p for pair in pairs for p in pair):
        x, pairs = padded_input(b, x, pairs, layer.padding_mode, path), [(0, 0)] * len(pairs)
    operands = [x, b.weight(f"{path}.weight", layer.weight.data)]
    if layer.bias is not None and layer.bias_kind is True:
        operands.append(b.weight(f"{path}.bias", layer.bias.data))
    out = b.node(
        "Conv",
        operands,
        path,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        dilations=list(layer.dilation),
        pads=_flat_pads(pairs),
        group=layer.groups,
    )
    if layer.bias_kind == "untied":  # one bias per output position: (O, OH, OW) broadcast over the batch
        out = b.node("Add", [out, b.weight(f"{path}.bias", layer.bias.data)], f"{path}.untied")
    return out, y


@exports(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv_transpose(b: Builder, layer: Any, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    path = _hint(path, "conv_transpose")
    pairs = [tuple(p) if isinstance(p, (tuple, list)) else (p, p) for p in layer.padding]
    operands = [inputs[0], b.weight(f"{path}.weight", layer.weight.data)]
    if layer.bias is not None:
        operands.append(b.weight(f"{path}.bias", layer.bias.data))
    out = b.node(
        "ConvTranspose",
        operands,
        path,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        dilations=list(layer.dilation),
        pads=_flat_pads(pairs),
        output_padding=list(layer.output_padding),
        group=layer.groups,
    )
    return out, run(layer, values)


@exports(nn.Linear)
def linear(b: Builder, layer: nn.Linear, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    x, value = inputs[0], values[0]
    path = _hint(path, "linear")
    weight = b.weight(f"{path}.weight", layer.weight.data)
    bias = [b.weight(f"{path}.bias", layer.bias.data)] if layer.bias is not None else []
    if value.ndim == 2:  # torch's own export: Gemm with the (out, in) weight transposed
        out = b.node("Gemm", [x, weight, *bias], path, transB=1)
    else:  # (..., I) @ (I, O) + b
        weight_t = b.node("Transpose", [weight], f"{path}.weight_t", perm=[1, 0])
        out = b.node("MatMul", [x, weight_t], path if not bias else f"{path}.matmul")
        if bias:
            out = b.node("Add", [out, bias[0]], path)
    return out, run(layer, [value])


# --- activations ------------------------------------------------------------------------------------


def _unary(op_type: str, **attrs: Any) -> Exporter:
    def export_unary(b: Builder, layer: Any, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
        extra = {k: (v(layer) if callable(v) else v) for k, v in attrs.items()}
        return b.node(op_type, [inputs[0]], _hint(path, op_type.lower()), **extra), run(layer, values)

    return export_unary


exports(nn.ReLU)(_unary("Relu"))
exports(nn.Sigmoid)(_unary("Sigmoid"))
exports(nn.Tanh)(_unary("Tanh"))
exports(nn.LeakyReLU)(_unary("LeakyRelu", alpha=lambda layer: layer.negative_slope))
exports(nn.Softmax)(_unary("Softmax", axis=lambda layer: layer.dim))
exports(nn.LogSoftmax)(_unary("LogSoftmax", axis=lambda layer: layer.dim))


@exports(nn.GELU)
def gelu(b: Builder, layer: nn.GELU, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    b.require(20, "GELU (the Gelu operator)")
    return b.node("Gelu", [inputs[0]], _hint(path, "gelu"), approximate=layer.approximate), run(layer, values)


# --- shape plumbing ---------------------------------------------------------------------------------


@exports(nn.Flatten)
def flatten(b: Builder, layer: nn.Flatten, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    value = values[0]
    y = run(layer, values)
    start, end = layer.start_dim % value.ndim, layer.end_dim % value.ndim
    path = _hint(path, "flatten")
    if start == 1 and end == value.ndim - 1:  # ONNX Flatten(axis=1): (N, rest)
        return b.node("Flatten", [inputs[0]], path, axis=1), y
    shape = [0] * start + [-1] + list(value.shape[end + 1 :])  # 0 copies an axis (the batch stays symbolic)
    if start == 0:
        shape = list(y.shape)
        shape[0] = -1
    return b.node("Reshape", [inputs[0], b.ints(f"{path}.shape", shape)], path), y


@exports(nn.Dropout)
def dropout(b: Builder, layer: nn.Dropout, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    ratio = b.constant(f"{_hint(path, 'dropout')}.ratio", np.asarray(layer.p, dtype=b.dtype))
    return b.node("Dropout", [inputs[0], ratio], _hint(path, "dropout")), values[0]


# --- normalisation and pooling ------------------------------------------------------------------------


@exports(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def batch_norm(b: Builder, layer: Any, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    if not layer.track_running_stats:
        raise OnnxError(
            f"cannot export {type(layer).__name__} at {path!r} with track_running_stats=False: it "
            "normalises with each batch's own statistics even in eval mode, which ONNX's "
            "BatchNormalization (inference) does not express"
        )
    path = _hint(path, "batchnorm")
    C = layer.num_features
    scale = layer.weight.data if layer.affine else np.ones(C)
    shift = layer.bias.data if layer.affine else np.zeros(C)
    operands = [
        inputs[0],
        b.weight(f"{path}.weight", scale),
        b.weight(f"{path}.bias", shift),
        b.weight(f"{path}.running_mean", layer.running_mean),
        b.weight(f"{path}.running_var", layer.running_var),
    ]
    momentum = 0.9 if layer.momentum is None else 1.0 - layer.momentum  # ONNX keeps the old value's share
    out = b.node("BatchNormalization", operands, path, epsilon=layer.eps, momentum=momentum)
    return out, run(layer, values)


def _pool_pads(layer: Any, ndim: int) -> list[int]:
    """A pool's padding (one int or one (before, after) pair per axis) as ONNX's begins-then-ends list."""
    pairs = [tuple(p) if isinstance(p, (tuple, list)) else (p, p) for p in layer.padding]
    return _flat_pads(pairs)


@exports(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
def max_pool(b: Builder, layer: Any, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    k = len(layer.kernel_size)
    out = b.node(
        "MaxPool",
        [inputs[0]],
        _hint(path, "maxpool"),
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        pads=_pool_pads(layer, k),
        dilations=list(layer.dilation),
        ceil_mode=int(layer.ceil_mode),
    )
    return out, run(layer, values)


@exports(nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def avg_pool(b: Builder, layer: Any, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    if layer.divisor_override is not None:
        raise OnnxError(
            f"cannot export {type(layer).__name__} at {path!r} with divisor_override: ONNX's "
            "AveragePool always divides by the window size"
        )
    k = len(layer.kernel_size)
    out = b.node(
        "AveragePool",
        [inputs[0]],
        _hint(path, "avgpool"),
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        pads=_pool_pads(layer, k),
        ceil_mode=int(layer.ceil_mode),
        count_include_pad=int(layer.count_include_pad),
    )
    return out, run(layer, values)


@exports(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
def adaptive_avg_pool(
    b: Builder, layer: Any, inputs: list[str], values: list[np.ndarray], path: str
) -> tuple[Any, Any]:
    value = values[0]
    y = run(layer, values)
    path = _hint(path, "adaptive_avgpool")
    in_size, out_size = value.shape[2:], y.shape[2:]
    if all(o == 1 for o in out_size):
        return b.node("GlobalAveragePool", [inputs[0]], path), y
    if any(i % o for i, o in zip(in_size, out_size, strict=True)):
        raise OnnxError(
            f"cannot export {type(layer).__name__} at {path!r}: output size {tuple(out_size)} does not "
            f"divide the input size {tuple(in_size)}, and ONNX has no adaptive pooling"
        )
    kernel = [i // o for i, o in zip(in_size, out_size, strict=True)]  # equal bins: a plain average pool
    return b.node("AveragePool", [inputs[0]], path, kernel_shape=kernel, strides=kernel), y
