"""Optimizers over a list of parameters, and learning-rate schedules; update rules as ``torch.optim``.

An optimizer sees only parameters: objects with ``data`` (an ndarray, updated IN PLACE so every layer
holding a reference sees the change) and ``grad`` (an ndarray of the same shape, or ``None`` when no
gradient was computed; such parameters are skipped, their state untouched, as in PyTorch). Nothing here
imports ``convprop.nn``; layers never see optimizers (STYLE rule 7).

The arithmetic follows torch 2.13's single-tensor (``foreach=False``) code operation by operation, so
float64 trajectories agree with PyTorch to rounding. A schedule owns ``optimizer.lr``: each ``step()``
sets it from a closed form of the epoch count (one schedule per optimizer; they do not chain).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import ArgumentError, ArgumentTypeError
from .functional.validation import check_at_least, check_positive_int, check_probability, check_real
from .optim_compiled import adam_step

# ---------------------------------------------------------------------------------- optimizers


class Optimizer:
    """Base class: holds the parameters, ``lr`` and per-parameter state; subclasses define ``_update``.

    Args:
        params: iterable of parameters (``data``: floating ndarray, ``grad``: ndarray or None);
            materialised to a list, which must be non-empty and hold each parameter once.
        lr: learning rate, > 0 (a schedule may later lower it, even to 0).
    """

    _COUNTERS: tuple[str, ...] = ()  # state entries that are numbers; all others are arrays like ``data``

    def __init__(self, params: Iterable[Any], lr: float) -> None:
        if isinstance(params, np.ndarray) or not isinstance(params, Iterable):
            raise ArgumentTypeError(f"params must be an iterable of parameters, got {type(params).__name__}")
        self.params = list(params)
        if not self.params:
            raise ArgumentError("params is empty: the optimizer needs at least one parameter")
        seen: dict[int, int] = {}
        for i, p in enumerate(self.params):
            data = getattr(p, "data", None)
            if not hasattr(p, "grad") or not isinstance(data, np.ndarray):
                raise ArgumentTypeError(
                    f"parameter {i} must have `data` (an ndarray) and `grad`, got {type(p).__name__}"
                )
            if not np.issubdtype(data.dtype, np.floating):
                raise ArgumentTypeError(f"parameter {i} data must be floating point, got dtype {data.dtype}")
            if id(p) in seen:
                raise ArgumentError(f"parameter {i} is the same object as parameter {seen[id(p)]}; pass each once")
            seen[id(p)] = i
        self.lr = check_at_least(lr, "lr", 0.0, strict=True)
        self.state: list[dict[str, Any]] = [{} for _ in self.params]  # empty until the first gradient

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget gradients before the next backward pass.

        By default every ``grad`` becomes ``None`` (PyTorch's default ``set_to_none=True``): no memory
        is kept, ``Parameter.accumulate`` starts afresh, and a parameter that then receives no gradient
        is skipped by ``step`` instead of decaying under zero gradients. ``set_to_none=False`` fills the
        existing arrays with zeros in place instead.
        """
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def step(self) -> None:
        """Update every parameter whose ``grad`` is not None, in place; check all shapes first."""
        live = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        for i, p in live:
            if np.shape(p.grad) != p.data.shape:
                raise ArgumentError(
                    f"parameter {i}: grad shape {np.shape(p.grad)} does not match data shape {p.data.shape}"
                )
        for i, p in live:
            self._update(p.data, np.asarray(p.grad), self.state[i])

    def _update(self, w: np.ndarray, grad: np.ndarray, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _state_keys(self) -> tuple[str, ...]:
        """The entries a parameter's state holds once it has been updated."""
        return ()

    def state_dict(self) -> dict[str, Any]:
        """A flat copy of the optimizer's state: ``{"lr": float, "<entry>.<param index>": array | int}``.

        Flat string keys to numbers and arrays, so a checkpoint can store it as is.
        """
        out: dict[str, Any] = {"lr": self.lr}
        for i, st in enumerate(self.state):
            for key, value in st.items():
                out[f"{key}.{i}"] = value if key in self._COUNTERS else value.copy()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore ``lr`` and per-parameter state from ``state_dict()`` output (copied, validated first)."""
        if "lr" not in state_dict:
            raise ArgumentError(f"state_dict has no 'lr'; keys are {sorted(state_dict)}")
        lr = check_at_least(state_dict["lr"], "state_dict['lr']", 0.0)
        expected = set(self._state_keys())
        new: list[dict[str, Any]] = [{} for _ in self.params]
        for full_key, value in state_dict.items():
            if full_key == "lr":
                continue
            key, _, index = full_key.rpartition(".")
            if key not in expected or not index.isdigit() or int(index) >= len(self.params):
                raise ArgumentError(
                    f"unexpected state_dict key {full_key!r}: expected 'lr' or '<entry>.<index>' with "
                    f"entry in {sorted(expected)} and index < {len(self.params)}"
                )
            i = int(index)
            if key in self._COUNTERS:
                new[i][key] = check_positive_int(value, f"state_dict[{full_key!r}]")
            else:
                shape = self.params[i].data.shape
                if np.shape(value) != shape:
                    raise ArgumentError(f"state_dict[{full_key!r}] has shape {np.shape(value)}, expected {shape}")
                new[i][key] = np.array(value, dtype=self.params[i].data.dtype, copy=True)
        for i, st in enumerate(new):
            if st and set(st) != expected:
                raise ArgumentError(
                    f"state for parameter {i} has entries {sorted(st)}, expected all of {sorted(expected)}"
                )
        self.lr, self.state = lr, new


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


# ---------------------------------------------------------------------------------- schedules


class LRScheduler:
    """Base class: sets ``optimizer.lr = lr_at(epoch)`` from the lr the optimizer had at construction.

    Construction applies epoch 0; each ``step()`` (once per epoch, or per iteration if ``T_max`` etc.
    count iterations) advances the epoch and applies it. Closed forms of the epoch, so values equal
    PyTorch's recursive ones to rounding, but a change to ``optimizer.lr`` from elsewhere is overwritten.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ArgumentTypeError(f"optimizer must be a convprop.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> float:
        """The lr last set (a float: convprop optimizers have one lr, not PyTorch's list per group)."""
        return self.optimizer.lr

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "base_lr": self.base_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        missing = {"last_epoch", "base_lr"} - set(state_dict)
        if missing:
            raise ArgumentError(f"scheduler state_dict is missing {sorted(missing)}; got keys {sorted(state_dict)}")
        epoch = state_dict["last_epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ArgumentError(f"state_dict['last_epoch'] (={epoch!r}) must be an int >= 0")
        self.base_lr = check_at_least(state_dict["base_lr"], "state_dict['base_lr']", 0.0)
        self.last_epoch = int(epoch)
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``.  step_size: int >= 1; gamma: > 0."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = check_positive_int(step_size, "step_size")
        self.gamma = check_at_least(gamma, "gamma", 0.0, strict=True)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` (SGDR, no restarts).

    Past ``T_max`` the cosine rises again, as in PyTorch.  T_max: int >= 1; eta_min: >= 0.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = check_positive_int(T_max, "T_max")
        self.eta_min = check_at_least(eta_min, "eta_min", 0.0)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class LinearLR(LRScheduler):
    """Linear warm-up (or decay) of a factor, as ``torch.optim.lr_scheduler.LinearLR``:

    ``lr = base_lr * (start_factor + (end_factor - start_factor) * min(epoch, total_iters) / total_iters)``.

    Args:
        start_factor: in (0, 1].  end_factor: in [0, 1].  total_iters: int >= 1.
    """

    def __init__(
        self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5
    ) -> None:
        self.start_factor = check_real(start_factor, "start_factor")
        if not 0 < self.start_factor <= 1:
            raise ArgumentError(f"start_factor must be in (0, 1], got {start_factor!r}")
        self.end_factor = check_probability(end_factor, "end_factor", allow_one=True)
        self.total_iters = check_positive_int(total_iters, "total_iters")
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        rise = (self.end_factor - self.start_factor) * min(self.total_iters, epoch) / self.total_iters
        return self.base_lr * (self.start_factor + rise)
