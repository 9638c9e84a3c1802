"""nn.Linear and nn.Flatten."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..functional.linear import linear, linear_backward, linear_param_grads
from ..init import as_generator, torch_default
from .module import Module, Parameter
from .validate import check_dtype, check_positive_int


class Linear(Module):
    """Fully connected layer, ``torch.nn.Linear``: y = x Wᵀ + b, default init U(±1/√in_features).

    Shapes:
        x: (N, I); weight: (O, I); bias: (O,); y: (N, O)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        w, b = torch_default(
            (out_features, in_features), (out_features,) if bias else None, as_generator(rng), check_dtype(dtype)
        )
        self.weight = Parameter(w)
        self.bias = Parameter(b) if bias else None
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = linear(x, self.weight.data, self.bias.data if self.bias is not None else None)
        self._x = x
        return y

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._x is None:
            raise RuntimeError("Linear.backward called before forward")
        dx, dw, db = linear_backward(grad_output, self._x, self.weight.data)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx

    def backward_params(self, grad_output: np.ndarray) -> None:
        if self._x is None:
            raise RuntimeError("Linear.backward_params called before forward")
        dw, db = linear_param_grads(grad_output, self._x, self.weight.data)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)

    def config(self) -> dict[str, Any]:
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias is not None)


class Flatten(Module):
    """Flattens axes ``start_dim..end_dim`` into one, as ``torch.nn.Flatten`` (default: all but the batch)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        for name, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {v!r}")
        self.start_dim, self.end_dim = start_dim, end_dim
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        start, end = self.start_dim % x.ndim, self.end_dim % x.ndim
        if start > end:
            raise ValueError(
                f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) is empty for input of shape {x.shape}"
            )
        self._shape = x.shape
        return x.reshape(*x.shape[:start], -1, *x.shape[end + 1 :])  # (..., prod(shape[start:end+1]), ...)

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        if self._shape is None:
            raise RuntimeError("Flatten.backward called before forward")
        return grad_output.reshape(self._shape)  # back to the input's shape

    def config(self) -> dict[str, Any]:
        return dict(start_dim=self.start_dim, end_dim=self.end_dim)
