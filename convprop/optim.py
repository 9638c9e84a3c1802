"""Optimizers over a list of parameters, and learning-rate schedules; update rules as ``torch.optim``.

An optimizer sees only parameters: objects with ``data`` (an ndarray, updated IN PLACE so every layer
holding a reference sees the change) and ``grad`` (an ndarray of the same shape, or ``None`` when no
gradient was computed; such parameters are skipped, their state untouched, as in PyTorch). Nothing here
imports ``convprop.nn``; layers never see optimizers (STYLE rule 7).

The arithmetic follows torch 2.13's single-tensor (``foreach=False``) code operation by operation, so
float64 trajectories agree with PyTorch to rounding. A schedule owns ``optimizer.lr``: each ``step()``
sets it from a closed form of the epoch count (one schedule per optimizer; they do not chain).

This module holds the update rules (SGD, Adam, AdamW); the base class they share is in
:mod:`convprop.optim_base` and the schedules are in :mod:`convprop.optim_schedules`, all imported from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import ArgumentError, ArgumentTypeError
from .functional.validation import check_at_least, check_probability
from .optim_base import Optimizer
from .optim_compiled import adam_step
from .optim_schedules import CosineAnnealingLR, LinearLR, LRScheduler, StepLR

__all__ = ["SGD", "Adam", "AdamW", "CosineAnnealingLR", "LRScheduler", "LinearLR", "Optimizer", "StepLR"]

# ---------------------------------------------------------------------------------- optimizers


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay.

    With g = grad + weight_decay * w, PyTorch's rule is

        b_1 = g_1,   b_t = momentum * b_{t-1} + (1 - dampening) * g_t      (if momentum != 0)
        d_t = g_t + momentum * b_t  (nesterov)  |  b_t  (momentum)  |  g_t  (plain)
        w  <- w - lr * d_t

    The seeds' plain update ``w -= dt * dE/dw`` is ``SGD(params, lr=dt)``.

    Args:
        params, lr: see ``Optimizer``.
        momentum: >= 0.  dampening: in [0, 1].  weight_decay: >= 0.
        nesterov: needs momentum > 0 and dampening == 0.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = check_at_least(momentum, "momentum", 0.0)
        self.dampening = check_probability(dampening, "dampening", allow_one=True)
        self.weight_decay = check_at_least(weight_decay, "weight_decay", 0.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ArgumentError(
                f"nesterov=True requires momentum > 0 and dampening == 0, "
                f"got momentum={momentum} and dampening={dampening}"
            )

    def _state_keys(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _update(self, w: np.ndarray, grad: np.ndarray, state: dict[str, Any]) -> None:
        g = grad + self.weight_decay * w if self.weight_decay != 0 else grad
        if self.momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=w.dtype, copy=True)  # never alias grad
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        w -= self.lr * g


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start <- start + weight * (end - start)`` in place, evaluated as ATen's ``lerp`` does."""
    diff = np.subtract(end, start)  # (end - start), one temporary reused below
    if abs(weight) < 0.5:
        diff *= weight
        start += diff
    else:
        diff *= 1 - weight
        np.subtract(end, diff, out=start)


def _one_contiguous_float_dtype(*arrays: np.ndarray) -> bool:
    """All C-contiguous, all float32 or all float64: what the compiled update takes."""
    dtype = arrays[0].dtype
    return dtype in (np.float32, np.float64) and all(a.dtype == dtype and a.flags.c_contiguous for a in arrays)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba), optionally AMSGrad, with L2 weight decay added to the gradient.

    At step t, with g = grad + weight_decay * w (``AdamW``: instead w <- w * (1 - lr * weight_decay)):

        m <- beta1 * m + (1 - beta1) * g            (as ATen's lerp(m, g, 1 - beta1))
        v <- beta2 * v + (1 - beta2) * g * g
        v_hat = max(v_hat, v) if amsgrad else v
        denom = sqrt(v_hat) / sqrt(1 - beta2^t) + eps
        w <- w - (lr / (1 - beta1^t)) * m / denom

    m, v start at zero; t counts the steps on which this parameter had a gradient.

    Args:
        params, lr: see ``Optimizer``.
        betas: (beta1, beta2), each in [0, 1).  eps: > 0.  weight_decay: >= 0.
        amsgrad: keep the running maximum of v.
    """

    _COUNTERS = ("step",)
    _decoupled = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ArgumentTypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (check_probability(betas[0], "betas[0]"), check_probability(betas[1], "betas[1]"))
        self.eps = check_at_least(eps, "eps", 0.0, strict=True)
        self.weight_decay = check_at_least(weight_decay, "weight_decay", 0.0)
        self.amsgrad = bool(amsgrad)

    def _state_keys(self) -> tuple[str, ...]:
        return ("step", "exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _update(self, w: np.ndarray, grad: np.ndarray, state: dict[str, Any]) -> None:
        beta1, beta2 = self.betas
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(w), exp_avg_sq=np.zeros_like(w))
            if self.amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(w)
        state["step"] += 1
        if self.weight_decay != 0:
            if self._decoupled:
                w *= 1 - self.lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * w
        m, v = state["exp_avg"], state["exp_avg_sq"]
        step = float(state["step"])
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = self.lr / bias_correction1
        if not self.amsgrad and _one_contiguous_float_dtype(w, grad, m, v):
            # the same operations in one compiled pass (optim_compiled): bit-identical, ~4× faster
            cast, weight = w.dtype.type, 1 - beta1
            from_start = abs(weight) < 0.5  # _lerp_'s two forms
            adam_step(
                w.reshape(-1),
                grad.reshape(-1),
                m.reshape(-1),
                v.reshape(-1),
                from_start,
                cast(weight if from_start else 1 - weight),
                cast(beta2),
                cast(1 - beta2),
                cast(bias_correction2**0.5),
                cast(self.eps),
                cast(-step_size),
            )
            return
        _lerp_(m, grad, 1 - beta1)
        v *= beta2
        tmp = np.multiply(grad, 1 - beta2)  # in-place steps, same arithmetic order as torch's addcmul_
        tmp *= grad
        v += tmp
        if self.amsgrad:
            np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        denom = np.sqrt(v, out=tmp)  # sqrt(v) / sqrt(bias_correction2) + eps
        denom /= bias_correction2**0.5
        denom += self.eps
        update = np.multiply(m, -step_size)  # (-step_size * m) / denom
        update /= denom
        w += update


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``w *= 1 - lr * weight_decay`` first.

    Same arguments as ``Adam``, but ``weight_decay`` defaults to 1e-2 as in PyTorch.
    """

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
