"""The base class of every optimizer: which parameters it holds, ``zero_grad``, ``step`` and the flat state.

An optimizer sees only parameters: objects with ``data`` (an ndarray, updated IN PLACE so every layer
holding a reference sees the change) and ``grad`` (an ndarray of the same shape, or ``None`` when no
gradient was computed; such parameters are skipped, their state untouched, as in PyTorch). Nothing here
imports ``convprop.nn``; layers never see optimizers (STYLE rule 7). The update rules are in
:mod:`convprop.optim`, which re-exports this class.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import ArgumentError, ArgumentTypeError
from .functional.validation import check_at_least, check_positive_int


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
