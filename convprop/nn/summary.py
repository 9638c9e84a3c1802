"""A Keras-style model summary: each layer, its output shape and its parameter count."""

from __future__ import annotations

import numpy as np

from .module import Module, Sequential


def _rows(model: Module, x: np.ndarray, prefix: str, depth: int, rows: list[tuple[str, str, str, int]]) -> np.ndarray:
    if isinstance(model, Sequential):
        for name, layer in model.named_children():
            label = f"{prefix}{name}"
            if isinstance(layer, Sequential):
                rows.append(
                    ("  " * depth + label, type(layer).__name__, "", sum(p.data.size for p in layer.parameters()))
                )
                x = _rows(layer, x, label + ".", depth + 1, rows)
            else:
                x = layer(x)
                count = sum(p.data.size for p in layer.parameters())
                rows.append(("  " * depth + label, type(layer).__name__, str(tuple(x.shape)), count))
        return x
    y = model(x)
    rows.append(
        (prefix or "-", type(model).__name__, str(tuple(y.shape)), sum(p.data.size for p in model.parameters()))
    )
    return y


def summary(model: Module, input_shape: tuple[int, ...], dtype=None) -> str:
    """A table of layers with output shapes (for a batch of one) and parameter counts.

    Runs one forward pass on zeros of shape ``(1, *input_shape)`` in eval mode (the model's mode is
    restored afterwards). ``dtype`` defaults to the model's parameter dtype.
    """
    if not isinstance(model, Module):
        raise TypeError(f"summary needs a convprop Module, got {type(model).__name__}")
    if not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(f"input_shape must be positive ints (without the batch axis), got {input_shape!r}")
    params = model.parameters()
    dtype = dtype or (params[0].data.dtype if params else np.float32)
    was_training = model.training
    model.eval()
    try:
        rows: list[tuple[str, str, str, int]] = []
        _rows(model, np.zeros((1, *input_shape), dtype=dtype), "", 0, rows)
    finally:
        model.train(was_training)
    header = ("layer", "type", "output shape", "params")
    table = [header] + [(a, b, c, f"{d:,}") for a, b, c, d in rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    line = "-" * (sum(widths) + 6)
    fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"  # noqa: E731
    total = sum(p.data.size for p in params)
    out = [
        fmt(header),
        line,
        *(fmt(r) for r in table[1:]),
        line,
        f"total parameters: {total:,}  (input {tuple(input_shape)})",
    ]
    return "\n".join(out)
