"""An inference forward of any model that shows each leaf layer's output to a visitor, with its path.

``trace(model, inputs, visit)`` runs the model as its ``forward`` would (the containers' routing,
again) and calls ``visit(path, layer, output)`` for every leaf layer in execution order; paths are
those of ``named_parameters`` (``"3.0.body.0"``; a shared Graph module: the path of the node using
it). Nothing is written to the model and nothing is kept for backward, so it is safe from many
threads on one eval-mode model. ``nn.summary``, ``models.feature_maps`` and the server use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .containers import Concat, Residual
from .graph import Graph
from .module import Module, Sequential

Visitor = Callable[[str, Module, Any], None]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def trace(model: Module, inputs: tuple[Any, ...], visit: Visitor, path: str = "") -> Any:
    """The model's output for ``inputs``; ``visit`` sees every leaf's (path, layer, output)."""
    if isinstance(model, Sequential):
        (x,) = inputs
        for name, layer in model.named_children():
            x = trace(layer, (x,), visit, _join(path, name))
        return x
    if isinstance(model, Residual):
        (x,) = inputs
        main = trace(model.body, (x,), visit, _join(path, "body"))
        skip = x if model.shortcut is None else trace(model.shortcut, (x,), visit, _join(path, "shortcut"))
        return model._add(main, skip)
    if isinstance(model, Concat):
        return model._concat([trace(b, inputs, visit, _join(path, str(i))) for i, b in enumerate(model)])[0]
    if isinstance(model, Graph):
        values = model._bind(inputs)
        for node in model.nodes:
            args = tuple(values[s] for s in node.inputs)
            values[node.name] = trace(node.module, args, visit, _join(path, node.name))
        return model._result(values)
    y = model.forward(*inputs)
    visit(path, model, y)
    return y
