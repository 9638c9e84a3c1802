"""The state of one import: which ONNX values are constants, which are computed, and the graph so far.

ONNX values are of two kinds here. *Static* values — initializers and ``Constant`` outputs — are known
when the file is read: a converter takes a layer's weight, a Reshape's shape or a Pad's pads from them.
*Runtime* values are the graph inputs and the node outputs. A float constant that an operator consumes
as a runtime input (a MatMul's matrix, an Add's bias) becomes a ``Constant`` node whose value is a
parameter, so every imported weight stays trainable.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .. import nn
from ..errors import OnnxError
from ._require import require_onnx
from .reader import DTYPES, dtype_name, opset_version, to_array

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def node_label(node: Any) -> str:
    """How errors name a node: its name and operator, or its first output when it has no name."""
    name = node.name or (node.output[0] if getattr(node, "output", None) else "?")
    return f"{name!r} ({getattr(node, 'op_type', 'graph output')})"


class ImportContext:
    """Static values, runtime names, inferred shapes and the emitted ``(name, module, inputs)`` nodes.

    Args:
        model: a checked ``onnx.ModelProto``.
        bound: arrays for graph inputs that may be used as constants (the Backend binds the inputs it is
            given, so ONNX's node tests can pass a Conv's weight as a graph input).
    """

    def __init__(self, model: Any, bound: dict[str, np.ndarray] | None = None):
        onnx = require_onnx()
        self.model, self.graph = model, model.graph
        self.opset = opset_version(model)
        self.static_values: dict[str, np.ndarray] = {
            t.name: to_array(t, f"initializer {t.name!r}") for t in self.graph.initializer
        }
        self.bound = dict(bound or {})
        self.names: dict[str, str] = {}  # ONNX value name → graph name
        self.taken: set[str] = set()
        self.nodes: list[tuple[str, nn.Module, list[str]]] = []
        self.input_values: list[str] = []  # the ONNX names of self.inputs, in order
        self.shapes: dict[str, tuple[int | None, ...]] = {}
        self.dtypes: dict[str, np.dtype] = {}
        try:  # ONNX's own shape inference: the shapes converters need, and a check that they fit
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        except Exception as exc:  # (onnx raises InferenceError, or ValidationError, or others)
            message = str(exc).strip().replace("\n", " ")
            raise OnnxError(f"the graph's shapes or types do not fit together: {message[:500]}") from None
        g = inferred.graph
        for info in [*g.input, *g.value_info, *g.output]:
            tensor_type = info.type.tensor_type
            if info.type.HasField("tensor_type") and tensor_type.HasField("shape"):
                dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
                self.shapes[info.name] = dims
            if info.type.HasField("tensor_type") and tensor_type.elem_type in DTYPES:
                self.dtypes[info.name] = DTYPES[tensor_type.elem_type]
        self.runtime_inputs: set[str] = set()
        self.shared: dict[tuple[Any, ...], nn.Module] = {}
        self.uses: dict[str, int] = {}  # ONNX value → how many node inputs and graph outputs read it
        for node in self.graph.node:
            for value in node.input:
                self.uses[value] = self.uses.get(value, 0) + 1
        for info in self.graph.output:
            self.uses[info.name] = self.uses.get(info.name, 0) + 1
        for info in self.graph.input:
            if info.name in self.static_values:
                continue  # IR < 4: initializers are listed among the inputs too
            self.input_values.append(info.name)
            self.names[info.name] = self.unique(info.name)

    # --- names --------------------------------------------------------------------------------------
    def unique(self, hint: str) -> str:
        """A graph name made from an ONNX name: word characters only, not starting with a digit, unique."""
        base = re.sub(r"\W+", "_", hint.removesuffix("_output_0")).strip("_") or "node"
        if base[0].isdigit():
            base = "v" + base
        name, i = base, 1
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def graph_inputs(self) -> list[str]:
        """The graph's inputs: every ONNX input except those bound as constants and not used as data."""
        inputs = []
        for value in self.input_values:
            if value in self.bound and value not in self.runtime_inputs:
                continue
            if self.dtype(value) not in FLOAT_DTYPES or value not in self.dtypes:
                info = next(i for i in self.graph.input if i.name == value)
                raise OnnxError(
                    f"graph input {value!r} has {dtype_name(info.type.tensor_type.elem_type)} values; convprop "
                    "computes in float32 and float64"
                )
            inputs.append(self.names[value])
        return inputs

    # --- values -------------------------------------------------------------------------------------
    def is_static(self, value: str) -> bool:
        return value in self.static_values or value in self.bound

    def static(self, value: str, node: Any, what: str) -> np.ndarray:
        """The constant array of ``value``, or a clear error when it is computed at run time."""
        if value in self.static_values:
            return self.static_values[value]
        if value in self.bound:
            return np.asarray(self.bound[value])
        raise OnnxError(
            f"node {node_label(node)} needs its {what} {value!r} to be a constant (an initializer or a Constant "
            "node), but it is computed at run time; convprop does not support that"
        )

    def runtime(self, value: str, node: Any) -> str:
        """The graph name of a runtime value; a float constant becomes a trainable ``Constant`` node."""
        if value in self.names:
            if value in self.input_values:
                self.runtime_inputs.add(value)
            return self.names[value]
        if value in self.static_values:
            array = self.static(value, node, "input")
            if array.dtype not in FLOAT_DTYPES:
                raise OnnxError(
                    f"node {node_label(node)} takes the {array.dtype} constant {value!r} as data; convprop computes "
                    "in float32 and float64 only"
                )
            return self.emit(value, nn.Constant(array), [self.anchor()])
        raise OnnxError(f"node {node_label(node)} reads {value!r}, which no earlier node or graph input produces")

    def anchor(self) -> str:
        """A runtime value a Constant node can hang from (an nn.Graph node reads at least one value): the
        first graph input, which thereby stays an input of the graph."""
        if not self.input_values:
            raise OnnxError("the ONNX graph has no inputs: it computes a constant, which is not a model")
        self.runtime_inputs.add(self.input_values[0])
        return self.names[self.input_values[0]]

    def shape(self, value: str) -> tuple[int | None, ...] | None:
        if value in self.static_values:
            return tuple(self.static_values[value].shape)
        return self.shapes.get(value)

    def dtype(self, value: str) -> np.dtype:
        if value in self.static_values:
            return self.static_values[value].dtype
        return self.dtypes.get(value, np.dtype(np.float32))

    # --- emitting nodes -----------------------------------------------------------------------------
    def emit(self, value: str, module: nn.Module, inputs: list[str]) -> str:
        """Add a node computing the ONNX value ``value``; returns its graph name."""
        name = self.unique(value)
        self.nodes.append((name, module, list(inputs)))
        self.names[value] = name
        return name

    def share(self, weights: tuple[str, ...], layer: nn.Module) -> nn.Module:
        """The layer already built from the same weight initializers and settings, if any, else ``layer``:
        one weight read by two nodes stays one set of parameters (``nn.Graph`` shares the module)."""
        if not all(w in self.static_values for w in weights if w):
            return layer  # weights bound from the Backend's inputs are not stored weights
        key = (type(layer).__name__, weights, repr(sorted(layer.config().items())))
        return self.shared.setdefault(key, layer)

    def take_producer(self, value: str, kind: type[nn.Module]) -> tuple[nn.Module, list[str]] | None:
        """The ``kind`` node that computes ``value``, removed from the graph so that the caller can fold it
        into its own layer — only when nothing else reads ``value``; else None."""
        name = self.names.get(value)
        if self.uses.get(value) != 1 or not self.nodes or self.nodes[-1][0] != name:
            return None
        if not isinstance(self.nodes[-1][1], kind):
            return None
        _, module, inputs = self.nodes.pop()
        del self.names[value]
        return module, inputs

    def emit_hidden(self, hint: str, module: nn.Module, inputs: list[str]) -> str:
        """Add an intermediate node no ONNX value names (e.g. the Pad in front of an asymmetric Conv)."""
        name = self.unique(hint)
        self.nodes.append((name, module, list(inputs)))
        return name
