"""A Keras-style model summary of any model: each layer (by path), its output shape and parameter count."""

from __future__ import annotations

from typing import Any

import numpy as np

from .module import Module
from .trace import trace


def layer_rows(model: Module, input_shapes: list[tuple[int, ...]], dtype: Any = None) -> list[dict[str, Any]]:
    """One row per leaf layer in execution order: path, type, config, output shape (without the batch
    axis), parameter count (a module shared by several Graph nodes counts once, at its first use).

    Runs one forward pass on zeros ``(1, *shape)`` per input, in eval mode (restored afterwards).
    """
    params = model.parameters()
    dtype = dtype or (params[0].data.dtype if params else np.float32)
    rows: list[dict[str, Any]] = []
    counted: set[int] = set()

    def visit(path: str, layer: Module, y: Any) -> None:
        own = [p for p in layer.parameters() if id(p) not in counted]
        counted.update(id(p) for p in own)
        shape = list(np.shape(y)[1:]) if np.ndim(y) else []
        rows.append(
            {
                "path": path or "-",
                "type": type(layer).__name__,
                "config": layer.config(),
                "output_shape": shape,
                "parameters": int(sum(p.data.size for p in own)),
            }
        )

    was_training = any(m.training for m in model.modules())
    model.eval()
    try:
        trace(model, tuple(np.zeros((1, *s), dtype=dtype) for s in input_shapes), visit)
    finally:
        model.train(was_training)
    return rows


def summary(model: Module, input_shape: tuple[int, ...] | list[tuple[int, ...]], dtype: Any = None) -> str:
    """A table of layers with output shapes (for a batch of one) and parameter counts.

    Runs one forward pass on zeros of shape ``(1, *input_shape)`` in eval mode (the model's mode is
    restored afterwards); a Graph of several inputs takes a list of shapes. ``dtype`` defaults to
    the model's parameter dtype. Layers are named by their path, as in ``named_parameters``.
    """
    if not isinstance(model, Module):
        raise TypeError(f"summary needs a convprop Module, got {type(model).__name__}")
    shapes: list[Any] = (  # as given: checked below
        list(input_shape) if input_shape and isinstance(input_shape[0], (tuple, list)) else [input_shape]
    )
    for shape in shapes:
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"input_shape must be positive ints (without the batch axis), got {input_shape!r}")
    rows = layer_rows(model, [tuple(s) for s in shapes], dtype)  # (each shape checked above)
    header = ("layer", "type", "output shape", "params")
    table = [header] + [
        ("  " * r["path"].count(".") + r["path"], r["type"], str((1, *r["output_shape"])), f"{r['parameters']:,}")
        for r in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    line = "-" * (sum(widths) + 6)
    fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"  # noqa: E731
    total = sum(p.data.size for p in model.parameters())
    shown = tuple(shapes[0]) if len(shapes) == 1 else [tuple(s) for s in shapes]
    out = [fmt(header), line, *(fmt(r) for r in table[1:]), line, f"total parameters: {total:,}  (input {shown})"]
    return "\n".join(out)
