"""``convprop.onnx.Backend``: convprop as an ONNX backend, so ``onnx.backend.test.BackendTest`` runs ONNX's
own node tests against it (tests/test_onnx_backend.py; the operators and the few exclusions are listed in
``convprop.onnx.coverage``).

ONNX's node tests pass every operand as a graph input, a Conv's weight included, while a convprop layer
holds its weight as a parameter. So a prepared model is imported when it is run: the inputs given to
``run`` are offered to the importer as constants, the operands a layer needs as constants (weights,
shapes, pads) are taken from them, and the rest are the graph's inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx.helper
from onnx.backend.base import Backend as OnnxBackend
from onnx.backend.base import BackendRep

from .importer import build
from .reader import read_model


class ConvpropRep(BackendRep):
    """A checked ONNX model, imported and run by convprop on each ``run``."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        initializers = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in initializers]
        self.anchor: list[np.ndarray] = []
        if not self.input_names:  # a graph of constants: give its Constant nodes an input to hang from
            self.model = onnx.ModelProto()
            self.model.CopyFrom(model)
            self.model.graph.input.append(onnx.helper.make_tensor_value_info("anchor", onnx.TensorProto.FLOAT, []))
            self.input_names, self.anchor = ["anchor"], [np.zeros((), np.float32)]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Outputs in the graph's order, for inputs given as a list (graph order), a dict or one array."""
        if isinstance(inputs, Mapping):
            values = {name: np.asarray(v) for name, v in inputs.items()}
        else:
            if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
                inputs = [inputs]
            values = {name: np.asarray(v) for name, v in zip(self.input_names, [*inputs, *self.anchor], strict=False)}
        graph, used = build(self.model, bound=values)
        outputs = graph.forward(*(values[name] for name in used))
        return tuple(outputs) if isinstance(outputs, tuple) else (outputs,)


class Backend(OnnxBackend):
    """convprop as an ``onnx.backend.base.Backend`` (CPU only)."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> ConvpropRep:
        if not cls.supports_device(device):
            raise ValueError(f"convprop runs on the CPU only, got device {device!r}")
        return ConvpropRep(read_model(model))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().startswith("CPU")
