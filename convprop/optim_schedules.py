"""Learning-rate schedules, as ``torch.optim.lr_scheduler``: each sets ``optimizer.lr`` from the epoch count.

A schedule owns ``optimizer.lr``: each ``step()`` sets it from a closed form of the epoch count (one
schedule per optimizer; they do not chain), so values equal PyTorch's recursive ones to rounding.
:mod:`convprop.optim` re-exports every class here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import ArgumentError, ArgumentTypeError
from .functional.validation import check_at_least, check_positive_int, check_probability, check_real
from .optim_base import Optimizer


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
