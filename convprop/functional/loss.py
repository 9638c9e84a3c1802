"""Loss functions. Each returns ``(loss, grad_input)``: the value and its gradient d(loss)/d(input).

A loss is the end of the graph, so its backward needs no ``grad_output``: computing the gradient
together with the value shares the work (the softmax, the sigmoid). Semantics are PyTorch's.

``reduction`` is ``"mean"`` (over every element; for cross-entropy over the N samples),
``"sum"`` or ``"none"``. The loss is a 0-d array (``float(loss)`` gives the number) for "mean" and
"sum", and per-element for "none"; with "none" the gradient is that of the *sum* of the per-element
losses (each element's loss depends only on its own input, so the gradient is element-wise).
float32 in, float32 out.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ArgumentError, ArgumentTypeError
from .activation import _sigmoid
from .validation import as_float_array, check_same_dtype

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ArgumentError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _reduce(losses: np.ndarray, grad: np.ndarray, reduction: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``reduction`` to per-element losses and the matching gradient of their sum."""
    if reduction == "none":
        return losses, grad
    total = losses.sum(dtype=losses.dtype)  # 0-d
    if reduction == "sum":
        return np.asarray(total), grad
    return np.asarray(total / count, dtype=losses.dtype), grad / count


def _input_and_target(input: Any, target: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate an element-wise loss's (input, target): float arrays of one shape and dtype."""
    input = as_float_array(input, name)
    target = as_float_array(target, "target")
    if target.shape != input.shape:
        raise ArgumentError(f"target must have {name}'s shape {input.shape}, got {target.shape}")
    check_same_dtype(**{name: input, "target": target})
    return input, target


def cross_entropy(
    logits: ArrayLike, target: ArrayLike, *, reduction: str = "mean", label_smoothing: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax cross-entropy from logits and class indices, as ``F.cross_entropy``.

    With log-probabilities ``ℓ = log_softmax(z)`` (log-sum-exp, stable), ε = label_smoothing and
    K classes, the target distribution is ``q = (1 - ε)·onehot(t) + ε/K`` and::

        loss_n = -Σ_k q[n, k] · ℓ[n, k]          d loss_n / d z[n] = softmax(z[n]) - q[n]

    (because Σ_k q = 1). "mean" divides by N.

    Shapes:
        logits: (N, K) float; target: (N,) int in [0, K); grad like logits; loss 0-d or (N,) for "none"

    Args:
        reduction: "mean", "sum" or "none". label_smoothing: ε in [0, 1].
    """
    logits = as_float_array(logits, "logits")
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ArgumentError(f"logits must be (N, K) with K >= 1 classes, got shape {logits.shape}")
    N, K = logits.shape
    target = np.asarray(target)
    if target.dtype.kind not in "iu":
        raise ArgumentTypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.shape != (N,):
        raise ArgumentError(f"target must have shape (N,) = ({N},), got {target.shape}")
    if target.size and (target.min() < 0 or target.max() >= K):
        bad = target[(target < 0) | (target >= K)][0]
        raise ArgumentError(f"target class indices must be in [0, {K}), got {bad}")
    reduction = _check_reduction(reduction)
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, numbers.Real)
        or not 0 <= float(label_smoothing) <= 1  # NaN fails this too
    ):
        raise ArgumentError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    eps = float(label_smoothing)
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), max 0
    exp = np.exp(shifted)  # (N, K)
    sum_exp = exp.sum(axis=1, keepdims=True)  # (N, 1)
    log_probs = shifted - np.log(sum_exp)  # (N, K)
    q = np.full_like(logits, eps / K)  # (N, K)
    q[np.arange(N), target] += 1 - eps
    losses = -(q * log_probs).sum(axis=1)  # (N,)
    grad = exp / sum_exp - q  # (N, K): softmax - q
    return _reduce(losses, grad, reduction, N)


def mse_loss(input: ArrayLike, target: ArrayLike, *, reduction: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Mean squared error, as ``F.mse_loss``: ``loss_i = (x_i - t_i)²``, ``d/dx_i = 2·(x_i - t_i)``.

    Shapes:
        input, target: the same shape (no broadcasting); grad like input. "mean" divides by input.size.
    """
    input, target = _input_and_target(input, target, "input")
    reduction = _check_reduction(reduction)
    diff = input - target
    return _reduce(diff * diff, 2 * diff, reduction, input.size)


def binary_cross_entropy_with_logits(
    logits: ArrayLike, target: ArrayLike, *, reduction: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid + binary cross-entropy in one stable step, as ``F.binary_cross_entropy_with_logits``.

    ``-(t·log σ(z) + (1 - t)·log(1 - σ(z)))`` simplifies to the overflow-free (PyTorch's form, so that
    infinite logits give PyTorch's inf or NaN: ``(1 - t)·z`` is NaN for z = -inf, t = 1)::

        loss_i = (1 - t_i)·z_i - log σ(z_i),   log σ(z) = min(z, 0) - log1p(exp(-|z|))
        d/dz_i = σ(z_i) - t_i

    Shapes:
        logits, target: the same shape; target in [0, 1] (soft labels allowed); grad like logits.
    """
    logits, target = _input_and_target(logits, target, "logits")
    reduction = _check_reduction(reduction)
    log_sigmoid = np.minimum(logits, 0) - np.log1p(np.exp(-np.abs(logits)))
    losses = (1 - target) * logits - log_sigmoid
    return _reduce(losses, _sigmoid(logits) - target, reduction, logits.size)


_LOG_FLOOR = -100.0  # PyTorch clamps each log at -100, so p = 0 or 1 gives a finite loss
# PyTorch's floor for p·(1 - p) in the gradient's denominator: 1e-12 held as a float32 constant
_GRAD_EPS = float(np.float32(1e-12))


def binary_cross_entropy(
    probs: ArrayLike, target: ArrayLike, *, reduction: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Binary cross-entropy from probabilities, as ``F.binary_cross_entropy`` (values included)::

        loss_i = -(t_i · max(log p_i, -100) + (1 - t_i) · max(log(1 - p_i), -100))
        d/dp_i = (p_i - t_i) / max(p_i · (1 - p_i), 1e-12)      (PyTorch's 1e-12 is a float32)

    The gradient is PyTorch's: the derivative of the unclamped loss with a floored denominator
    (so it stays finite, and huge, at p = 0 or 1). Prefer :func:`binary_cross_entropy_with_logits`
    after a sigmoid: it is exact where this one saturates.

    Shapes:
        probs, target: the same shape, both in [0, 1] (NaN refused, as PyTorch); grad like probs.
    """
    probs, target = _input_and_target(probs, target, "probs")
    reduction = _check_reduction(reduction)
    for name, values in (("probs", probs), ("target", target)):  # NaN fails both comparisons: refused, as PyTorch
        outside = ~((values >= 0) & (values <= 1))
        if outside.any():
            raise ArgumentError(f"{name} must all be in [0, 1], got {float(values[outside].flat[0])!r}")
    with np.errstate(divide="ignore"):  # log(0) = -inf, clamped just below
        log_p = np.maximum(np.log(probs), _LOG_FLOOR)
        log_1mp = np.maximum(np.log1p(-probs), _LOG_FLOOR)
    losses = -(target * log_p + (1 - target) * log_1mp)
    grad = (probs - target) / np.maximum(probs * (1 - probs), _GRAD_EPS)
    return _reduce(losses, grad, reduction, probs.size)
