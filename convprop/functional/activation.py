"""Element-wise activations and (log-)softmax, each with its backward pass.

Semantics are PyTorch's, including the derivative chosen at kinks (``relu'(0) = 0``,
``leaky_relu'(0) = negative_slope``). Every backward takes ``(grad_output, x, <options>)``; those whose
derivative is cheapest from the forward result also accept it as the keyword-only ``output=`` so a
layer that cached it need not recompute. float32 stays float32 (constants are Python floats, which
NumPy never lets promote an array).

Shapes: any shape; the output and every gradient have the shape of x.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError, ArgumentTypeError
from . import activation_compiled
from .validation import as_float_array, check_real, check_same_dtype


def _grad_and_x(grad_output: Any, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a backward's (grad_output, x) pair: float arrays of one shape and dtype."""
    x = as_float_array(x, "x")
    grad_output = as_float_array(grad_output, "grad_output")
    if grad_output.shape != x.shape:
        raise ArgumentError(f"grad_output must have x's shape {x.shape}, got {grad_output.shape}")
    check_same_dtype(grad_output=grad_output, x=x)
    return grad_output, x


def _cached(output: Any, x: np.ndarray, forward: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The forward result: the cached ``output=`` if given (checked), else recomputed from x."""
    if output is None:
        return forward(x)
    output = as_float_array(output, "output")
    if output.shape != x.shape or output.dtype != x.dtype:
        raise ArgumentError(
            f"output must be the forward result, shape {x.shape} dtype {x.dtype}; got {output.shape} {output.dtype}"
        )
    return output


def relu(x: ArrayLike) -> np.ndarray:
    """``y = max(x, 0)``."""
    x = as_float_array(x, "x")
    return np.maximum(x, 0)


def relu_backward(grad_output: ArrayLike, x: ArrayLike) -> np.ndarray:
    """``dx = δ · [x > 0]``: zero where x <= 0 (including x = 0, as PyTorch), δ elsewhere."""
    grad_output, x = _grad_and_x(grad_output, x)
    dx = np.empty_like(x, order="C")
    activation_compiled.relu_backward(np.ravel(grad_output), np.ravel(x), dx.reshape(-1))  # (flat views)
    return dx


def _check_slope(negative_slope: Any) -> float:
    return check_real(negative_slope, "negative_slope")


def leaky_relu(x: ArrayLike, negative_slope: float = 0.01) -> np.ndarray:
    """``y = x if x > 0 else negative_slope · x``."""
    x = as_float_array(x, "x")
    slope = _check_slope(negative_slope)
    return np.where(x > 0, x, x * slope)


def leaky_relu_backward(grad_output: ArrayLike, x: ArrayLike, negative_slope: float = 0.01) -> np.ndarray:
    """``dx = δ if x > 0 else negative_slope · δ`` (the slope at x = 0, as PyTorch)."""
    grad_output, x = _grad_and_x(grad_output, x)
    slope = _check_slope(negative_slope)
    return np.where(x > 0, grad_output, grad_output * slope)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid(x: ArrayLike) -> np.ndarray:
    """``y = 1 / (1 + exp(-x))``, computed without overflow.

    With ``e = exp(-|x|) <= 1``: ``y = 1 / (1 + e)`` for x >= 0 and ``e / (1 + e)`` for x < 0.
    """
    return _sigmoid(as_float_array(x, "x"))


def sigmoid_backward(grad_output: ArrayLike, x: ArrayLike, *, output: ArrayLike | None = None) -> np.ndarray:
    """``dx = δ · y · (1 - y)``; pass the forward's ``output=`` to skip recomputing y."""
    grad_output, x = _grad_and_x(grad_output, x)
    y = _cached(output, x, _sigmoid)
    return grad_output * y * (1 - y)


def tanh(x: ArrayLike) -> np.ndarray:
    """``y = tanh(x)``."""
    return np.tanh(as_float_array(x, "x"))


def tanh_backward(grad_output: ArrayLike, x: ArrayLike, *, output: ArrayLike | None = None) -> np.ndarray:
    """``dx = δ · (1 - y²)``; pass the forward's ``output=`` to skip recomputing y."""
    grad_output, x = _grad_and_x(grad_output, x)
    y = _cached(output, x, np.tanh)
    return grad_output * (1 - y * y)


_GELU_APPROXIMATIONS = ("none", "tanh")
_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_GELU_CUBIC = 0.044715


def _check_approximate(approximate: str) -> str:
    if approximate not in _GELU_APPROXIMATIONS:
        raise ArgumentError(f"approximate must be one of {_GELU_APPROXIMATIONS}, got {approximate!r}")
    return approximate


def gelu(x: ArrayLike, approximate: str = "none") -> np.ndarray:
    """Gaussian error linear unit, as ``F.gelu``.

    Exact (``approximate="none"``): ``y = x · Φ(x) = x/2 · (1 + erf(x/√2))``.
    ``approximate="tanh"``: ``y = x/2 · (1 + tanh(u))`` with ``u = √(2/π) · (x + 0.044715·x³)``.
    """
    x = as_float_array(x, "x")
    if _check_approximate(approximate) == "tanh":
        return 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3)))
    from scipy.special import erf  # here, not at import: scipy.special takes 0.3 s to import

    return 0.5 * x * (1 + erf(x * _SQRT_HALF))


def gelu_backward(grad_output: ArrayLike, x: ArrayLike, approximate: str = "none") -> np.ndarray:
    """Gradient of :func:`gelu`.

    Exact: ``dy/dx = Φ(x) + x · φ(x)`` with ``φ(x) = exp(-x²/2) / √(2π)``.
    tanh: ``dy/dx = (1 + t)/2 + x/2 · (1 - t²) · √(2/π) · (1 + 3·0.044715·x²)`` with ``t = tanh(u)``.
    """
    grad_output, x = _grad_and_x(grad_output, x)
    if _check_approximate(approximate) == "tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3))
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
        return grad_output * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
    from scipy.special import erf

    cdf = 0.5 * (1 + erf(x * _SQRT_HALF))
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
    return grad_output * (cdf + x * pdf)


def _check_axis(x: np.ndarray, axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ArgumentTypeError(f"axis must be an int, got {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ArgumentError(f"axis {axis} is out of range for x with shape {x.shape} ({x.ndim} axes)")
    return int(axis)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)  # largest entry 0: exp never overflows
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax(x: ArrayLike, axis: int = 1) -> np.ndarray:
    """``y_k = exp(x_k - m) / Σ_j exp(x_j - m)`` along ``axis``, with m the max (so nothing overflows).

    Shapes: x any shape with ``axis`` in range (default 1: the class axis of (N, K) or (N, C, H, W)).
    """
    x = as_float_array(x, "x")
    return _softmax(x, _check_axis(x, axis))


def softmax_backward(
    grad_output: ArrayLike, x: ArrayLike, axis: int = 1, *, output: ArrayLike | None = None
) -> np.ndarray:
    """``dx = y ⊙ (δ - Σ_axis δ ⊙ y)`` (the Jacobian ``diag(y) - y yᵀ`` applied to δ).

    Pass the forward's ``output=`` to skip recomputing y.
    """
    grad_output, x = _grad_and_x(grad_output, x)
    axis = _check_axis(x, axis)
    y = _cached(output, x, lambda v: _softmax(v, axis))
    return y * (grad_output - (grad_output * y).sum(axis=axis, keepdims=True))


def log_softmax(x: ArrayLike, axis: int = 1) -> np.ndarray:
    """``y_k = (x_k - m) - log Σ_j exp(x_j - m)`` along ``axis``, m the max (log-sum-exp, stable)."""
    x = as_float_array(x, "x")
    return _log_softmax(x, _check_axis(x, axis))


def log_softmax_backward(
    grad_output: ArrayLike, x: ArrayLike, axis: int = 1, *, output: ArrayLike | None = None
) -> np.ndarray:
    """``dx = δ - softmax(x) · Σ_axis δ``, with softmax = exp(y).

    Pass the forward's ``output=`` (the log-probabilities) to skip recomputing y.
    """
    grad_output, x = _grad_and_x(grad_output, x)
    axis = _check_axis(x, axis)
    y = _cached(output, x, lambda v: _log_softmax(v, axis))
    return grad_output - np.exp(y) * grad_output.sum(axis=axis, keepdims=True)
