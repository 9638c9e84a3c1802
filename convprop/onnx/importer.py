"""``convprop.onnx.load``: an ONNX model as a convprop ``nn.Graph`` with its weights.

Each ONNX node goes through the operator table (``ops``): the weights become the layers' parameters,
settings become constructor arguments, and the ONNX value names become the graph's node names
(word characters only, made unique). The result runs, is inspected and is trained like any convprop
model: backward reaches every imported weight.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .. import nn
from ..errors import OnnxError
from . import ops_tensor, ops_window  # noqa: F401  (they fill the operator table)
from ._require import require_onnx
from .context import ImportContext, node_label
from .ops import OPS, VERSIONS
from .reader import read_model


def load(source: str | os.PathLike | bytes | Any) -> nn.Module:
    """Import an ONNX model (a path, its bytes or an ``onnx.ModelProto``) as an ``nn.Graph`` in eval mode.

    Raises:
        FileNotFoundError: no file at the path.
        OnnxError: a malformed, truncated or hostile file, an operator or attribute convprop does not
            support (named with its node), an opset outside the supported range, or shapes that do not fit.
    """
    model = read_model(source)
    graph, _ = build(model)
    return graph


def load_with_metadata(source: str | os.PathLike | bytes | Any) -> tuple[nn.Module, dict[str, str]]:
    """:func:`load`, also returning the file's ``metadata_props`` as a dict (the training metadata that
    ``convprop export`` stores). A model without ``image_size`` metadata whose one input is declared
    (N, 1, H, W) gets ``image_size`` from that declaration."""
    model = read_model(source)
    graph, _ = build(model)
    meta = {p.key: p.value for p in model.metadata_props}
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if "image_size" not in meta and len(inputs) == 1:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
        if len(dims) == 4 and dims[1] == 1 and all(dims[2:]):
            meta["image_size"] = f"[{dims[2]}, {dims[3]}]"
    return graph, meta


def build(model: Any, bound: dict[str, np.ndarray] | None = None) -> tuple[nn.Module, list[str]]:
    """The graph for a checked ModelProto and the ONNX names of its inputs, in order.

    ``bound`` gives values for graph inputs that a layer needs as constants (see ``ImportContext``);
    those inputs are then not inputs of the graph.
    """
    onnx = require_onnx()
    for node in model.graph.node:
        if node.op_type not in OPS:
            raise OnnxError(
                f"node {node_label(node)} uses the operator {node.op_type!r}, which convprop does not implement "
                f"(it implements {', '.join(sorted(OPS))})"
            )
    ctx = ImportContext(model, bound)
    for node in model.graph.node:
        convert = OPS[node.op_type]
        try:
            version = onnx.defs.get_schema(node.op_type, ctx.opset).since_version
        except Exception:  # (the schema lookup raises its own SchemaError)
            version = None
        if version is not None and VERSIONS[node.op_type] and version not in VERSIONS[node.op_type]:
            raise OnnxError(
                f"node {node_label(node)}: {node.op_type} version {version} (opset {ctx.opset}) is not one convprop "
                f"reads (versions {', '.join(map(str, VERSIONS[node.op_type]))})"
            )
        try:
            convert(ctx, node)
        except OnnxError:
            raise
        except (ValueError, TypeError) as exc:  # a layer refused the node's settings: name the node
            raise OnnxError(f"node {node_label(node)}: {exc}") from None
    outputs = []
    for info in model.graph.output:
        if info.name not in ctx.names and not ctx.is_static(info.name):
            raise OnnxError(f"the graph output {info.name!r} is computed by no node")
        outputs.append(_own_node(ctx, ctx.runtime(info.name, info)))
    inputs = ctx.graph_inputs()
    input_values = [v for v in ctx.input_values if ctx.names[v] in inputs]
    graph = make_graph(inputs, ctx.nodes, outputs)
    return graph.eval(), input_values


def _own_node(ctx: ImportContext, name: str) -> str:
    """A graph output must be a node's output: an output that *is* an input gets an Identity node."""
    if name in {ctx.names[v] for v in ctx.input_values}:
        return ctx.emit_hidden(f"{name}_out", nn.Identity(), [name])
    return name


def make_graph(inputs: list[str], nodes: list[tuple[str, nn.Module, list[str]]], outputs: list[str]) -> nn.Module:
    """``nn.Graph(inputs, nodes, outputs)``; a graph that does not fit is an OnnxError."""
    try:
        return nn.Graph(inputs, nodes, outputs)
    except (ValueError, TypeError) as exc:
        raise OnnxError(f"the ONNX graph does not make a convprop graph: {exc}") from None
