"""Exporters of the tensor-plumbing layers (``nn.tensor_ops``): each is one ONNX operator of the same name."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import nn
from .exporter import Builder, Exporter, exports, run


def _same(op_type: str) -> Exporter:
    def export_same(b: Builder, layer: Any, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
        return b.node(op_type, list(inputs), path or op_type.lower()), run(layer, values)

    return export_same


for _cls, _op in (
    (nn.Identity, "Identity"),
    (nn.MatMul, "MatMul"),
    (nn.Sub, "Sub"),
    (nn.Div, "Div"),
    (nn.GlobalMaxPool, "GlobalMaxPool"),
):
    exports(_cls)(_same(_op))


@exports(nn.Reshape)
def reshape(b: Builder, layer: nn.Reshape, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    path = path or "reshape"
    attrs = {"allowzero": 1} if layer.allowzero else {}
    if layer.allowzero:
        b.require(14, "Reshape(allowzero=True)")
    return b.node("Reshape", [inputs[0], b.ints(f"{path}.shape", layer.shape)], path, **attrs), run(layer, values)


@exports(nn.Transpose)
def transpose(
    b: Builder, layer: nn.Transpose, inputs: list[str], values: list[np.ndarray], path: str
) -> tuple[Any, Any]:
    attrs = {} if layer.perm is None else {"perm": list(layer.perm)}
    return b.node("Transpose", [inputs[0]], path or "transpose", **attrs), run(layer, values)


@exports(nn.Pad)
def pad(b: Builder, layer: nn.Pad, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    path = path or "pad"
    if layer.mode == "wrap":
        b.require(19, "Pad(mode='wrap')")
    pairs = [(0, 0)] * (values[0].ndim - len(layer.pads)) + [tuple(p) for p in layer.pads]
    operands = [inputs[0], b.ints(f"{path}.pads", [p[0] for p in pairs] + [p[1] for p in pairs])]
    if layer.mode == "constant":
        operands.append(b.weight(f"{path}.value", np.asarray(layer.value)))
    return b.node("Pad", operands, path, mode=layer.mode), run(layer, values)


@exports(nn.Gemm)
def gemm(b: Builder, layer: nn.Gemm, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    out = b.node(
        "Gemm",
        list(inputs),
        path or "gemm",
        alpha=layer.alpha,
        beta=layer.beta,
        transA=int(layer.trans_a),
        transB=int(layer.trans_b),
    )
    return out, run(layer, values)


@exports(nn.Constant)
def constant(b: Builder, layer: nn.Constant, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
    return b.weight(path or "constant", layer.value.data), layer.value.data
