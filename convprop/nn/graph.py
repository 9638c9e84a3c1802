"""``nn.Graph``: any directed acyclic network of modules, and the multi-input layers ``Add``, ``Mul``
and ``Cat`` (named as the torch functions).

A graph only routes gradients between the modules' own hand-derived backward functions: the forward
runs the nodes in the order given (a topological order, as ONNX requires); the backward runs them in
reverse and, where a tensor feeds several nodes, *sums* their gradients (the multivariable chain rule;
docs/graphs.md). A module instance used by several nodes is one set of parameters: it is registered
once, under its first node's name, and each use adds its gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError
from ..functional.threads import batch_scope
from .activation import ReLU
from .containers import concatenate, split
from .module import Module


def _unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient over the axes that broadcasting added or stretched, back to ``shape``."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and grad.shape[a] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


class _MultiInput(Module):
    """A layer of several inputs; its backward returns a tuple, one gradient per input."""

    registered = False
    min_inputs = 2

    def _check(self, inputs: tuple[Any, ...]) -> list[np.ndarray]:
        if len(inputs) < self.min_inputs:
            raise ArgumentError(f"{type(self).__name__} takes at least {self.min_inputs} inputs, got {len(inputs)}")
        return [np.asarray(x) for x in inputs]

    def _broadcast_shape(self, arrays: list[np.ndarray]) -> tuple[int, ...]:
        try:
            return np.broadcast_shapes(*(a.shape for a in arrays))
        except ValueError:
            raise ArgumentError(
                f"{type(self).__name__}: input shapes {[a.shape for a in arrays]} do not broadcast together"
            ) from None

    def _check_grad(self, grad_output: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        grad_output = np.asarray(grad_output)
        if grad_output.shape != shape:
            raise ArgumentError(
                f"{type(self).__name__}.backward: grad_output must have the output's shape {shape}, "
                f"got {grad_output.shape}"
            )
        return grad_output


class Add(_MultiInput):
    """``y = x_1 + x_2 + ...`` (broadcasting as NumPy); each input's gradient is δ, summed over the
    axes its broadcast stretched.

    Shapes:
        inputs: shapes that broadcast together; y: the broadcast shape
    """

    def forward_with_context(self, *inputs: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Context: the inputs' shapes."""
        arrays = self._check(inputs)
        self._broadcast_shape(arrays)
        y = arrays[0] + arrays[1]  # a new array: no input is overwritten
        for a in arrays[2:]:
            y += a
        return y, [a.shape for a in arrays]

    def backward_with_context(
        self, context: list[tuple[int, ...]], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> tuple[np.ndarray, ...] | None:
        g = self._check_grad(grad_output, np.broadcast_shapes(*context))
        return tuple(_unbroadcast(g, shape) for shape in context) if input_grad else None


class Mul(_MultiInput):
    """``y = x_1 · x_2 · ...`` element-wise (broadcasting); ``dL/dx_i = δ · Π_{j≠i} x_j``, summed over
    the axes broadcasting stretched (e.g. a channel gate (N, C, 1, 1) times maps (N, C, H, W)).

    Shapes:
        inputs: shapes that broadcast together; y: the broadcast shape
    """

    def forward_with_context(self, *inputs: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Context: the inputs themselves (each one's gradient is the product of the others)."""
        arrays = self._check(inputs)
        self._broadcast_shape(arrays)
        y = arrays[0] * arrays[1]
        for a in arrays[2:]:
            y *= a
        return y, arrays

    def backward_with_context(
        self, context: list[np.ndarray], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> tuple[np.ndarray, ...] | None:
        g = self._check_grad(grad_output, self._broadcast_shape(context))
        if not input_grad:
            return None
        grads = []
        for i, x in enumerate(context):
            part = g
            for j, other in enumerate(context):
                if j != i:
                    part = part * other  # δ · Π_{j≠i} x_j
            grads.append(_unbroadcast(part, x.shape))
        return tuple(grads)


class Cat(_MultiInput):
    """``y = concatenate(x_1, x_2, ..., axis=dim)`` (``torch.cat``); δ is split back along ``dim``.

    Shapes:
        inputs: equal on every axis but ``dim``; y: their sizes along ``dim`` added
    """

    min_inputs = 1

    def __init__(self, dim: int = 1):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ArgumentTypeError(f"Cat dim must be an int, got {dim!r}")
        self.dim = dim

    def forward_with_context(self, *inputs: np.ndarray) -> tuple[np.ndarray, tuple[list[int], int]]:
        """Context: ``(each input's size along dim, the resolved axis)``."""
        y, sizes = concatenate(self._check(inputs), self.dim, "Cat")
        return y, (sizes, self.dim % y.ndim)

    def backward_with_context(
        self, context: tuple[list[int], int], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> tuple[np.ndarray, ...] | None:
        sizes, axis = context
        parts = split(grad_output, sizes, axis, "Cat")
        return tuple(parts) if input_grad else None

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim}


@dataclass(frozen=True)
class Node:
    """One step of a graph: ``name = module(*inputs)``."""

    name: str
    module: Module
    inputs: tuple[str, ...]


@dataclass
class GraphContext:
    """What a graph's backward needs: each node's own context (in node order), the shapes of the
    graph's inputs (for the zero gradient of an input nothing used) and of every node's output
    (to check incoming gradients). The values themselves are not kept: each node keeps what it needs."""

    contexts: list[Any]
    input_shapes: list[tuple[int, ...]]
    shapes: dict[str, tuple[int, ...]]


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise ArgumentError(f"{what} must be a non-empty string without '.', got {name!r}")
    return name


class Graph(Module):
    """A directed acyclic network: ``Graph(inputs, nodes, outputs)``.

    ``inputs`` and ``outputs`` are lists of names; ``nodes`` a list of ``(name, module, [input names])``
    in topological order (each node's inputs are graph inputs or earlier nodes; anything else — a
    cycle, a dangling name — is refused, naming the node). Called with one array per input; returns
    one array for one output, else a tuple in ``outputs`` order. ``backward(dy)`` takes one array or
    a tuple likewise and returns the input gradient (a tuple for several inputs).

    Backward, in reverse node order: node v receives ``δ_v = Σ_{u consumes v} (dL/d v through u)``
    (plus the caller's gradient when v is an output) and passes it to ``v.module.backward``. A node
    whose output reaches no graph output gets no gradient and is skipped. With ``input_grad=False``
    the nodes that read only graph inputs skip their input gradient.

    A module used by several nodes is registered once under its first node's name (``parameters()``
    lists it once, as PyTorch) and receives the sum of its uses' gradients. Parameter names are
    ``"<node>.<parameter>"``, as attributes of a PyTorch module named after the nodes.
    """

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    nodes: tuple[Node, ...]
    owner: dict[str, str]  # node name → the node whose name its module is registered under

    def __init__(self, inputs: list[str], nodes: list[tuple[str, Module, list[str]]], outputs: list[str]):
        super().__init__()
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise ArgumentError(f"Graph inputs must be a non-empty list of names, got {inputs!r}")
        if not isinstance(outputs, (list, tuple)) or not outputs:
            raise ArgumentError(f"Graph outputs must be a non-empty list of names, got {outputs!r}")
        known: set[str] = set()
        for name in inputs:
            _check_name(name, "a Graph input name")
            if name in known:
                raise ArgumentError(f"Graph input {name!r} is listed twice")
            known.add(name)
        uses: dict[str, int] = dict.fromkeys(known, 0)
        built: list[Node] = []
        owner: dict[int, str] = {}
        for i, entry in enumerate(nodes):
            if not (isinstance(entry, (tuple, list)) and len(entry) == 3):
                raise ArgumentError(f"Graph node {i} must be (name, module, [input names]), got {entry!r:.200}")
            name, module, node_inputs = entry
            _check_name(name, f"Graph node {i}'s name")
            if name in known:
                raise ArgumentError(f"Graph node {name!r}: the name is already used by an input or an earlier node")
            if not isinstance(module, Module):
                raise ArgumentTypeError(f"Graph node {name!r}: module must be a convprop Module, got {module!r:.100}")
            if isinstance(node_inputs, str) or not isinstance(node_inputs, (list, tuple)) or not node_inputs:
                raise ArgumentError(
                    f"Graph node {name!r}: inputs must be a non-empty list of names, got {node_inputs!r}"
                )
            for source in node_inputs:
                if source not in known:
                    raise ArgumentError(
                        f"Graph node {name!r} takes {source!r}, which is neither a graph input nor an earlier node "
                        "(nodes must be listed in topological order; a cycle has none)"
                    )
                uses[source] += 1
            built.append(Node(name, module, tuple(node_inputs)))
            known.add(name)
            uses[name] = 0
            if id(module) not in owner:
                owner[id(module)] = name
                self._modules[name] = module  # registered once: shared weights are one parameter set
        for name in outputs:
            if name not in known:
                raise ArgumentError(f"Graph output {name!r} is never computed: no input or node has that name")
            uses[name] += 1
        for node in built:
            if isinstance(node.module, ReLU) and node.module.inplace and uses[node.inputs[0]] > 1:
                raise ArgumentError(
                    f"Graph node {node.name!r}: ReLU(inplace=True) would overwrite {node.inputs[0]!r}, which "
                    "other nodes also read; use ReLU()"
                )
        object.__setattr__(self, "input_names", tuple(inputs))
        object.__setattr__(self, "output_names", tuple(outputs))
        object.__setattr__(self, "nodes", tuple(built))
        object.__setattr__(self, "owner", {node.name: owner[id(node.module)] for node in built})

    # --- running -----------------------------------------------------------------------------------
    def _bind(self, inputs: tuple[Any, ...]) -> dict[str, Any]:
        if len(inputs) != len(self.input_names):
            raise ArgumentError(
                f"Graph takes {len(self.input_names)} input(s) {list(self.input_names)}, got {len(inputs)}"
            )
        return dict(zip(self.input_names, inputs, strict=True))

    def _result(self, values: dict[str, Any]) -> Any:
        outs = tuple(values[name] for name in self.output_names)
        return outs[0] if len(outs) == 1 else outs

    def forward_with_context(self, *inputs: np.ndarray) -> tuple[Any, GraphContext]:
        """Each node's ``forward_with_context``, inside ``batch_scope`` as :meth:`forward`."""
        values = self._bind(inputs)
        contexts = []
        with batch_scope(inputs[0] if inputs else None):
            for node in self.nodes:
                values[node.name], ctx = node.module.forward_with_context(*(values[s] for s in node.inputs))
                contexts.append(ctx)
        shapes = {name: np.shape(v) for name, v in values.items()}
        return self._result(values), GraphContext(contexts, [np.shape(x) for x in inputs], shapes)

    def forward(self, *inputs: np.ndarray) -> Any:
        """Each node's ``forward``, with BLAS on one thread and the products split between convprop's
        threads (``functional/threads.py``), as ``Sequential.forward``."""
        values = self._bind(inputs)
        with batch_scope(inputs[0] if inputs else None):
            for node in self.nodes:
                values[node.name] = node.module.forward(*(values[s] for s in node.inputs))
        return self._result(values)

    def backward_with_context(self, context: GraphContext, grad_output: Any, *, input_grad: bool = True) -> Any:
        grads_out = (grad_output,) if len(self.output_names) == 1 else grad_output
        if not isinstance(grads_out, (tuple, list)) or len(grads_out) != len(self.output_names):
            raise ArgumentError(
                f"Graph.backward takes one gradient per output {list(self.output_names)} (a tuple), "
                f"got {type(grad_output).__name__}"
                + (f" of {len(grad_output)}" if isinstance(grad_output, (tuple, list)) else "")
            )
        grads: dict[str, np.ndarray] = {}

        def add(name: str, g: np.ndarray, source: str) -> None:
            expected = context.shapes[name]
            if np.shape(g) != expected:
                raise ArgumentError(f"gradient for {name!r} from {source} has shape {np.shape(g)}, expected {expected}")
            grads[name] = g if name not in grads else grads[name] + g  # a fan-out: sum (never in place)

        for name, g in zip(self.output_names, grads_out, strict=True):
            add(name, np.asarray(g), "the caller (Graph.backward)")
        graph_inputs = set(self.input_names)
        with batch_scope(grads_out[0]):  # (as forward_with_context)
            for node, ctx in zip(reversed(self.nodes), reversed(context.contexts), strict=True):
                g = grads.pop(node.name, None)
                if g is None:
                    continue  # this node's output reaches no output: zero gradient, nothing to do
                need = input_grad or any(s not in graph_inputs for s in node.inputs)
                d = node.module.backward_with_context(ctx, g, input_grad=need)
                if not need:
                    continue
                parts = d if isinstance(d, tuple) else (d,)
                if len(parts) != len(node.inputs):
                    raise ArgumentError(
                        f"Graph node {node.name!r}: {type(node.module).__name__}.backward returned {len(parts)} "
                        f"gradient(s) for {len(node.inputs)} input(s)"
                    )
                for source, part in zip(node.inputs, parts, strict=True):
                    add(source, part, f"node {node.name!r}")
        if not input_grad:
            return None
        result = tuple(
            grads.get(name, np.zeros(shape)) for name, shape in zip(self.input_names, context.input_shapes, strict=True)
        )
        return result[0] if len(result) == 1 else result

    def config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        lines = []
        for node in self.nodes:
            shared = "" if self.owner[node.name] == node.name else f"  [shares {self.owner[node.name]}]"
            body = repr(node.module).replace("\n", "\n  ")
            lines.append(f"  ({node.name}) <- {', '.join(node.inputs)}: {body}{shared}")
        head = f"Graph(inputs={list(self.input_names)}, outputs={list(self.output_names)},"
        return head + "\n" + "\n".join(lines) + "\n)"
