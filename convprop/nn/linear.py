"""nn.Linear and nn.Flatten."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..errors import ArgumentError
from ..functional.linear import linear, linear_backward, linear_param_grads
from ..init import RngLike, as_generator, torch_default
from .module import Module, Parameter
from .validate import check_dtype, check_positive_int


class Linear(Module):
    """Fully connected layer, ``torch.nn.Linear``: y = x Wᵀ + b, default init U(±1/√in_features).

    Shapes:
        x: (N, I); weight: (O, I); bias: (O,); y: (N, O)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        rng: RngLike = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        w, b = torch_default(
            (out_features, in_features), (out_features,) if bias else None, as_generator(rng), check_dtype(dtype)
        )
        self.weight = Parameter(w)
        self.bias = Parameter(b) if b is not None else None

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Context: the input x (dW = δᵀx needs it)."""
        return self.forward(x), x

    def forward(self, x: np.ndarray) -> np.ndarray:
        return linear(x, self.weight.data, self.bias.data if self.bias is not None else None)

    def backward_with_context(
        self, context: np.ndarray, grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        dx = None
        if input_grad:
            dx, dw, db = linear_backward(grad_output, context, self.weight.data)
        else:
            dw, db = linear_param_grads(grad_output, context, self.weight.data)
        self.weight.accumulate(dw, owned=True)  # dw and db are new arrays of this call: no copy
        if self.bias is not None:
            self.bias.accumulate(db, owned=True)
        return dx

    def config(self) -> dict[str, Any]:
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias is not None)


class Flatten(Module):
    """Flattens axes ``start_dim..end_dim`` into one, as ``torch.nn.Flatten`` (default: all but the batch)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        for name, v in (("start_dim", start_dim), ("end_dim", end_dim)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {v!r}")
        self.start_dim, self.end_dim = start_dim, end_dim

    def _axes(self, ndim: int) -> tuple[int, int]:
        """start and end as non-negative axes, refused when out of range (PyTorch: no wrap-around)."""
        axes = []
        for name, v in (("start_dim", self.start_dim), ("end_dim", self.end_dim)):
            if not -max(ndim, 1) <= v < max(ndim, 1):
                raise ArgumentError(
                    f"Flatten {name}={v} is out of range for an input of {ndim} dimensions "
                    f"(expected a value in [{-max(ndim, 1)}, {max(ndim, 1) - 1}])"
                )
            axes.append(v % ndim if ndim else 0)
        return axes[0], axes[1]

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        """Context: the input's shape (backward is a reshape back to it)."""
        x = np.asarray(x)
        return self.forward(x), x.shape

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        start, end = self._axes(x.ndim)
        if start > end:
            raise ArgumentError(
                f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}) is empty for input of shape {x.shape}"
            )
        if x.ndim == 0:
            return x.reshape(1)  # torch.flatten of a scalar is one element
        return x.reshape(*x.shape[:start], -1, *x.shape[end + 1 :])  # (..., prod(shape[start:end+1]), ...)

    def backward_with_context(
        self, context: tuple[int, ...], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            return None
        grad_output = np.asarray(grad_output)
        if grad_output.size != int(np.prod(context)):
            raise ArgumentError(
                f"Flatten.backward: grad_output of shape {grad_output.shape} cannot come from an input of shape "
                f"{context}"
            )
        return grad_output.reshape(context)  # back to the input's shape

    def config(self) -> dict[str, Any]:
        return dict(start_dim=self.start_dim, end_dim=self.end_dim)
