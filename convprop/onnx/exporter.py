"""``convprop.onnx.export``: any convprop model as an ONNX file that ONNX Runtime runs with the same outputs.

The model is walked once with a sample input of ``input_shape`` (zeros, in eval mode): each layer's
exporter (``export_layers``) writes its nodes and initializers, and the sample flowing through gives
every intermediate shape, which pins down what depends on it ("same" padding, untied biases). The batch
axis stays symbolic (``N``); the other axes are those of ``input_shape``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, nn
from ..errors import OnnxError
from ..fileio import write_atomic
from ._require import require_onnx
from .reader import MAX_OPSET

DEFAULT_OPSET = 20  # the first with a Gelu operator; also has Pad's "wrap" mode (19)
MIN_EXPORT_OPSET = 13  # Softmax over one axis (before 13 it flattened the trailing axes)
IR_VERSION = 8  # readable by ONNX Runtime 1.14 and later

Exporter = Callable[["Builder", Any, list[str], list[np.ndarray], str], tuple[Any, Any]]  # → (name(s), value(s))
EXPORTERS: dict[type, Exporter] = {}


def exports(*classes: type) -> Callable[[Exporter], Exporter]:
    """Register the exporter of one or more layer classes."""

    def register(fn: Exporter) -> Exporter:
        for cls in classes:
            EXPORTERS[cls] = fn
        return fn

    return register


class Builder:
    """The ONNX graph being written: nodes, initializers, unique value names, the opset and the dtype."""

    def __init__(self, opset: int, dtype: np.dtype):
        self.onnx = require_onnx()
        self.opset, self.dtype = opset, dtype
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.taken: set[str] = set()
        self.shared: dict[int, tuple[np.ndarray, str]] = {}  # id(array) → (array, initializer name)

    def name(self, hint: str) -> str:
        base, i, name = hint or "v", 1, hint or "v"
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def constant(self, hint: str, value: np.ndarray) -> str:
        """An initializer (a weight, or an int64 shape/pads vector); returns its name."""
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.array(value, order="C"), name))  # (0-d stays 0-d)
        return name

    def weight(self, hint: str, value: np.ndarray) -> str:
        """A float initializer; one array used twice (a layer shared by two graph nodes) is written once."""
        key = id(value)
        if key in self.shared and self.shared[key][0] is value:
            return self.shared[key][1]
        name = self.constant(hint, np.asarray(value, dtype=self.dtype))
        self.shared[key] = (value, name)
        return name

    def ints(self, hint: str, values: Sequence[int]) -> str:
        return self.constant(hint, np.asarray(list(values), dtype=np.int64))

    def node(self, op_type: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        """Add one node; returns the name of its (one) output."""
        out = self.name(hint)
        self.nodes.append(
            self.onnx.helper.make_node(op_type, inputs, [out], name=self.name(f"{hint}/{op_type}"), **attrs)
        )
        return out

    def require(self, opset: int, what: str) -> None:
        if self.opset < opset:
            raise OnnxError(f"{what} needs ONNX opset {opset} or later; export with opset={max(opset, DEFAULT_OPSET)}")

    def module(self, module: nn.Module, inputs: list[str], values: list[np.ndarray], path: str) -> tuple[Any, Any]:
        """Write ``module`` applied to ``inputs`` (whose sample values are ``values``); returns the output's
        name and sample value."""
        for cls in type(module).__mro__:
            if cls in EXPORTERS:
                return EXPORTERS[cls](self, module, inputs, values, path)
        raise OnnxError(
            f"cannot export {type(module).__name__} at {path or 'the top'}: convprop has no ONNX "
            f"mapping for it (exportable: {', '.join(sorted(c.__name__ for c in EXPORTERS))})"
        )


def run(module: nn.Module, values: list[np.ndarray]) -> Any:
    """The module's output for the sample values (context-free forward)."""
    return module.forward(*values)


def export(
    model: nn.Module,
    path: str | os.PathLike,
    input_shape: Sequence[int] | Sequence[Sequence[int]],
    *,
    opset: int | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` (in eval mode) as an ONNX file at ``path``, atomically; returns the path.

    Args:
        model: any convprop model (containers, graphs and every layer type).
        input_shape: the shape of one input, batch axis first, e.g. ``(1, 1, 28, 28)``; the batch axis is
            symbolic in the file. A graph of several inputs takes a list of shapes.
        opset: the ONNX opset to write (``DEFAULT_OPSET`` when None).
        metadata: strings stored in the file's ``metadata_props`` (``convprop export`` writes a run's class
            names, image size and normalisation there, which ``convprop predict`` reads back).

    Raises:
        OnnxError: a layer or setting ONNX cannot express at that opset (the message says which).
    """
    onnx = require_onnx()
    from . import export_layers, export_tensor  # noqa: F401  (they fill EXPORTERS)

    if not isinstance(model, nn.Module):
        raise OnnxError(f"export needs a convprop Module, got {type(model).__name__}")
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_EXPORT_OPSET <= opset <= MAX_OPSET:
        raise OnnxError(f"opset must be an int from {MIN_EXPORT_OPSET} to {MAX_OPSET}, got {opset!r}")
    shapes = _input_shapes(input_shape)
    params = model.parameters()
    dtype = params[0].data.dtype if params else np.dtype(np.float32)
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    builder = Builder(opset, dtype)
    names = [builder.name("input" if len(shapes) == 1 else f"input{i}") for i in range(len(shapes))]
    values = [np.zeros(s, dtype) for s in shapes]
    was_training = bool(model.__dict__.get("training", False))
    model.eval()
    try:
        out, sample = builder.module(model, names, values, "")
    finally:
        model.train(was_training)
    outs, samples = ([out], [sample]) if not isinstance(out, tuple) else (list(out), list(sample))
    graph_inputs = [
        onnx.helper.make_tensor_value_info(n, elem, ["N", *s[1:]]) for n, s in zip(names, shapes, strict=True)
    ]
    final = []
    for i, name in enumerate(outs):
        if name in names or name in final:  # an output that is an input (or repeated) needs its own value
            name = builder.node("Identity", [name], f"output{i}")
        final.append(name)
    graph_outputs = [
        onnx.helper.make_tensor_value_info(n, elem, ["N", *np.shape(v)[1:]])
        for n, v in zip(final, samples, strict=True)
    ]
    graph = onnx.helper.make_graph(
        builder.nodes, type(model).__name__, graph_inputs, graph_outputs, builder.initializers
    )
    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name="convprop",
        producer_version=__version__,
    )
    proto.ir_version = IR_VERSION
    extra = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise OnnxError("metadata must map strings to strings")
    onnx.helper.set_model_props(proto, extra)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise RuntimeError(f"convprop wrote an ONNX graph that does not check: {exc}") from exc
    return write_atomic(path, proto.SerializeToString())


def _input_shapes(input_shape: Any) -> list[tuple[int, ...]]:
    def one(shape: Any) -> tuple[int, ...]:
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not shape:
            raise OnnxError(f"input_shape must be a sequence of positive ints, batch first; got {shape!r}")
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape):
            raise OnnxError(f"input_shape must be a sequence of positive ints, batch first; got {shape!r}")
        return tuple(int(s) for s in shape)

    if isinstance(input_shape, Sequence) and input_shape and all(isinstance(s, (list, tuple)) for s in input_shape):
        return [one(s) for s in input_shape]
    return [one(input_shape)]
