"""The model as :mod:`convprop.explain` runs it: the paths of its modules, and its *shadow* with probes.

The shadow is a shallow copy of each module sharing the model's arrays, with fresh ``Parameter`` objects
and in eval mode; each probed module (every convolution, and the Grad-CAM layer) is wrapped in a
:class:`_Probe` that records its output on the way forward and the gradient reaching it on the way back,
into one :class:`_Recorder` per call. Nothing is written to the model (the module docstring of
:mod:`convprop.explain` says why that matters, and what a container must do to be reached).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ArgumentError
from .nn import Conv2d, Graph, Module
from .nn.graph import Node
from .nn.module import Parameter


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def module_paths(model: Module) -> list[tuple[str, Module]]:
    """Every module below ``model`` with its path, depth first in registration order (a Graph: its
    nodes in order, so a shared module appears once per node using it)."""
    found: list[tuple[str, Module]] = []

    def walk(module: Module, path: str) -> None:
        if isinstance(module, Graph):
            children = [(node.name, node.module) for node in vars(module)["nodes"]]
        else:
            children = list(module.named_children())
        for name, child in children:
            found.append((_join(path, name), child))
            walk(child, _join(path, name))

    walk(model, "")
    return found


def conv_paths(model: Module) -> list[str]:
    """The paths of every ``nn.Conv2d`` of ``model``, in registration order."""
    return [path for path, module in module_paths(model) if isinstance(module, Conv2d)]


# --- the shadow model and its probes ----------------------------------------------------------------


@dataclass
class _Recorder:
    """What the probes saw in one call: outputs in execution order and the gradients reaching them."""

    keep_inputs: frozenset[str] = frozenset()  # the paths whose inputs are kept too (copies cost memory)
    inputs: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    grads: dict[str, np.ndarray] = field(default_factory=dict)


class _Probe(Module):
    """Runs ``inner`` unchanged; records its output (forward) and the gradient reaching it (backward)."""

    registered = False  # never in a checkpoint
    path: str
    recorder: _Recorder

    def __init__(self, inner: Module, path: str, recorder: _Recorder):
        super().__init__()
        self.inner = inner
        self.path = path  # settings: plain attributes
        self.recorder = recorder

    def forward_with_context(self, *inputs: Any) -> tuple[Any, Any]:
        if self.path in self.recorder.outputs:
            raise ArgumentError(
                f"the layer at path {self.path!r} ran twice in one forward pass; explain needs one output per path"
            )
        if self.path in self.recorder.keep_inputs:
            self.recorder.inputs[self.path] = tuple(np.array(a, copy=True) for a in inputs)
        y, context = self.inner.forward_with_context(*inputs)
        self.recorder.outputs[self.path] = np.array(y, copy=True)  # a later in-place ReLU must not change it
        return y, context

    def backward_with_context(self, context: Any, grad_output: Any, *, input_grad: bool = True) -> Any:
        self.recorder.grads[self.path] = grad_output
        return self.inner.backward_with_context(context, grad_output, input_grad=input_grad)


def _shadow(module: Module, path: str, probed: set[str], recorder: _Recorder) -> Module:
    """An eval-mode shallow copy of ``module`` sharing its arrays, with its own Parameter objects."""
    twin = copy.copy(module)  # the instance dict copied: settings and buffers shared, read only in eval mode
    object.__setattr__(twin, "training", False)
    object.__setattr__(twin, "_last_context", None)
    params = {}
    state = vars(module)  # Module keeps its tables in the instance dict (set with object.__setattr__)
    for name, p in state["_parameters"].items():
        params[name] = Parameter(p.data)  # the same array (already contiguous), a fresh .grad of None
        object.__setattr__(twin, name, params[name])
    object.__setattr__(twin, "_parameters", params)
    if isinstance(module, Graph):
        nodes = tuple(
            Node(n.name, _shadow(n.module, _join(path, n.name), probed, recorder), n.inputs) for n in state["nodes"]
        )
        by_name = {n.name: n.module for n in nodes}
        object.__setattr__(twin, "nodes", nodes)
        object.__setattr__(twin, "_modules", {name: by_name[name] for name in state["_modules"]})
    else:
        children = {}
        for name, child in state["_modules"].items():
            children[name] = _shadow(child, _join(path, name), probed, recorder)
            if state.get(name) is child:
                object.__setattr__(twin, name, children[name])
        object.__setattr__(twin, "_modules", children)
    return _Probe(twin, path, recorder) if path in probed else twin
