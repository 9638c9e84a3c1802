"""A stand-in for ``nn.Graph`` until the graph container lands (removed then): nodes in topological order."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.module import Module


class Graph(Module):
    registered = False

    def __init__(self, inputs: list[str], nodes: list[tuple[str, Module, list[str]]], outputs: list[str]):
        super().__init__()
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.edges = [(name, list(args)) for name, _, args in nodes]
        for name, module, _ in nodes:
            setattr(self, name, module)

    def forward_with_context(self, *xs: np.ndarray) -> tuple[Any, Any]:
        values = dict(zip(self.inputs, xs, strict=True))
        contexts = {}
        for name, args in self.edges:
            values[name], contexts[name] = getattr(self, name).forward_with_context(*(values[a] for a in args))
        out = tuple(values[o] for o in self.outputs)
        return (out[0] if len(out) == 1 else out), contexts

    def forward(self, *xs: np.ndarray) -> Any:
        values = dict(zip(self.inputs, xs, strict=True))
        for name, args in self.edges:
            values[name] = getattr(self, name).forward(*(values[a] for a in args))
        out = tuple(values[o] for o in self.outputs)
        return out[0] if len(out) == 1 else out

    def backward_with_context(self, context: Any, grad_output: Any, *, input_grad: bool = True) -> Any:
        grads: dict[str, np.ndarray] = {}
        for name, g in zip(
            self.outputs, grad_output if isinstance(grad_output, tuple) else (grad_output,), strict=True
        ):
            grads[name] = grads[name] + g if name in grads else g
        for name, args in reversed(self.edges):
            if name not in grads:
                continue
            dx = getattr(self, name).backward_with_context(context[name], grads.pop(name))
            dx = dx if isinstance(dx, tuple) else (dx,)
            for a, g in zip(args, dx, strict=True):
                grads[a] = grads[a] + g if a in grads else g
        if not input_grad:
            return None
        out = tuple(grads.get(i) for i in self.inputs)
        return out[0] if len(out) == 1 else out
