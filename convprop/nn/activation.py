"""Activation layers: each call's context is what its backward needs (the input, and the output when
that makes the backward cheaper)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..functional import activation as A
from .module import Module


class _Elementwise(Module):
    """An activation layer: ``_fn``/``_grad`` from ``functional.activation``, with the options of
    ``_kwargs()``. Its context is ``(x, y)``: the input, and with ``_uses_output`` the output, passed
    to the backward as ``output=`` (cheaper for sigmoid, tanh and softmax); else ``(x, None)``."""

    registered = False
    _fn = staticmethod(A.relu)
    _grad = staticmethod(A.relu_backward)
    _uses_output = False

    def _kwargs(self) -> dict[str, Any]:
        return {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._fn(x, **self._kwargs())

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray | None]]:
        y = self.forward(x)
        return y, (x, y if self._uses_output else None)

    def backward_with_context(
        self, context: tuple[np.ndarray, np.ndarray | None], grad_output: np.ndarray, *, input_grad: bool = True
    ) -> np.ndarray | None:
        if not input_grad:
            return None  # no parameters: nothing to do
        x, y = context
        extra = {"output": y} if self._uses_output else {}
        return self._grad(grad_output, x, **self._kwargs(), **extra)

    def config(self) -> dict[str, Any]:
        return self._kwargs()


class ReLU(_Elementwise):
    """max(x, 0); gradient 1 where x > 0, else 0 (PyTorch's choice at exactly 0).

    ``inplace=True`` (as ``torch.nn.ReLU``) overwrites its input instead of allocating the output:
    use it when nothing else needs that input (e.g. right after a convolution, which keeps its own
    input). The backward pass is unchanged: ``x <= 0`` exactly where ``max(x, 0) <= 0``.
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        if not isinstance(inplace, bool):
            raise TypeError(f"inplace must be True or False, got {inplace!r}")
        self.inplace = inplace

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.inplace:
            return super().forward(x)
        x = A.as_float_array(x, "x")
        np.maximum(x, 0, out=x)
        return x

    def forward_with_context(self, x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray | None]]:
        y = self.forward(x)
        return y, (y if self.inplace else x, None)  # in place: the output gives the same gradient mask

    def config(self) -> dict[str, Any]:
        return {"inplace": True} if self.inplace else {}


class LeakyReLU(_Elementwise):
    """x for x > 0, negative_slope·x otherwise."""

    _fn = staticmethod(A.leaky_relu)
    _grad = staticmethod(A.leaky_relu_backward)

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        A.leaky_relu(np.zeros(1), negative_slope)  # validates
        self.negative_slope = float(negative_slope)

    def _kwargs(self) -> dict[str, Any]:
        return dict(negative_slope=self.negative_slope)


class GELU(_Elementwise):
    """x·Φ(x) (``approximate="tanh"`` for the tanh approximation)."""

    _fn = staticmethod(A.gelu)
    _grad = staticmethod(A.gelu_backward)

    def __init__(self, approximate: str = "none"):
        super().__init__()
        A.gelu(np.zeros(1), approximate)  # validates
        self.approximate = approximate

    def _kwargs(self) -> dict[str, Any]:
        return dict(approximate=self.approximate)


class Sigmoid(_Elementwise):
    """σ(x) = 1 / (1 + e^{−x}); dσ/dx = σ(1 − σ)."""

    _fn = staticmethod(A.sigmoid)
    _grad = staticmethod(A.sigmoid_backward)
    _uses_output = True


class Tanh(_Elementwise):
    """tanh(x); d/dx = 1 − tanh²."""

    _fn = staticmethod(A.tanh)
    _grad = staticmethod(A.tanh_backward)
    _uses_output = True


class Softmax(_Elementwise):
    """Softmax along ``dim`` (PyTorch's name; the functional form calls it ``axis``)."""

    _fn = staticmethod(A.softmax)
    _grad = staticmethod(A.softmax_backward)
    _uses_output = True

    def __init__(self, dim: int = 1):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {dim!r}")
        self.dim = dim

    def _kwargs(self) -> dict[str, Any]:
        return dict(axis=self.dim)

    def config(self) -> dict[str, Any]:
        return dict(dim=self.dim)


class LogSoftmax(Softmax):
    """log softmax along ``dim``, computed stably (x − max − log Σ e^{x − max})."""

    _fn = staticmethod(A.log_softmax)
    _grad = staticmethod(A.log_softmax_backward)
