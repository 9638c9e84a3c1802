"""The fully connected layer as a forward/backward pair: y = x Wᵀ + b (PyTorch's (out, in) weight)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError
from . import linear_tiles, threads
from .validation import as_float_array, check_same_dtype


def _check(x: Any, weight: Any, bias: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x, weight = as_float_array(x, "x"), as_float_array(weight, "weight")
    if weight.ndim != 2:
        raise ArgumentError(f"weight must be (out_features, in_features), got shape {weight.shape}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ArgumentError(f"x must end with in_features={weight.shape[1]}, got shape {x.shape}")
    if bias is not None:
        bias = as_float_array(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ArgumentError(f"bias must have shape (out_features,) = ({weight.shape[0]},), got {bias.shape}")
    check_same_dtype(x=x, weight=weight, bias=bias)
    return x, weight, bias


def linear(x: ArrayLike, weight: ArrayLike, bias: ArrayLike | None = None) -> np.ndarray:
    """y[..., o] = Σ_i x[..., i] · w[o, i] + b[o].

    Shapes:
        x: (..., I); weight: (O, I); bias: (O,) or None; y: (..., O)
    """
    x, weight, bias = _check(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1]) if x.ndim >= 2 else x  # (B, I), B the product of the leading axes
    if threads.held() and linear_tiles.applies(rows, weight):  # in a model's pass, 16 rows or more: tiles
        y = linear_tiles.forward(rows, weight).reshape(*x.shape[:-1], weight.shape[0])
    else:
        y = threads.matmul(x, weight.T)  # (..., O); inside threads.batch_scope a large one split by rows
    if bias is not None:
        y += bias
    return y


def linear_backward(
    grad_output: ArrayLike, x: ArrayLike, weight: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dx = δ W, dW = Σ_batch δᵀ x, db = Σ_batch δ (δ = grad_output).

    Shapes:
        grad_output: (..., O); returns (dx (..., I), dw (O, I), db (O,))
    """
    grad_output, x, weight = _check_backward(grad_output, x, weight)
    dw, db = _param_grads(grad_output, x, weight)
    return threads.matmul(grad_output, weight), dw, db  # (..., O)·(O, I) → (..., I)


def linear_param_grads(grad_output: ArrayLike, x: ArrayLike, weight: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(dw, db) of :func:`linear_backward` without dx, for a first layer whose input is data."""
    return _param_grads(*_check_backward(grad_output, x, weight))


def _check_backward(grad_output: Any, x: Any, weight: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, weight, _ = _check(x, weight)
    grad_output = as_float_array(grad_output, "grad_output")
    if grad_output.shape != (*x.shape[:-1], weight.shape[0]):
        raise ArgumentError(f"grad_output must have shape {(*x.shape[:-1], weight.shape[0])}, got {grad_output.shape}")
    check_same_dtype(grad_output=grad_output, x=x)
    return grad_output, x, weight


def _param_grads(grad_output: np.ndarray, x: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dy = grad_output.reshape(-1, weight.shape[0])  # (B, O), B = prod of leading axes
    xf = x.reshape(-1, weight.shape[1])  # (B, I)
    return threads.matmul(dy.T, xf), dy.sum(axis=0)  # (O, B)·(B, I) → (O, I), split by rows of W; (O,)
